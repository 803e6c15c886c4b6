#!/usr/bin/env bash
# The fault suite's kill scenarios as a soak: the collector and the aggregator each killed with
# SIGKILL SOAK_KILLS times (default 20) while a feed of SOAK_LEADS leads (default 240,000, about
# 1M events) arrives, each ending with the suite's verdict (nothing lost, nothing counted twice,
# answers equal to the truth, offsets committed). Release build, private stack on free ports.
#   ./scripts/soak.sh [extra cargo test args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export STACK_DIR=${STACK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/leadstream-soak.XXXXXX")}
export CH_HTTP_PORT=$(free_port) CH_TCP_PORT=$(free_port) KAFKA_PORT=$(free_port)
trap '"$ROOT/scripts/stack.sh" down || true' EXIT
"$ROOT/scripts/stack.sh" up
# shellcheck disable=SC1091
source "$STACK_DIR/env"
export LEADSTREAM_KAFKA__BROKERS LEADSTREAM_CLICKHOUSE__URL LEADSTREAM_STACK_PYTHON
export LEADSTREAM_FAULT_LEADS=${SOAK_LEADS:-240000} LEADSTREAM_FAULT_KILLS=${SOAK_KILLS:-20}
export LEADSTREAM_FAULT_SETTLE_SECS=${SOAK_SETTLE_SECS:-3600}
cargo build --release --locked --bins
started=$(date +%s)
cargo test --release --locked -p leadstream-tests --test faults -- \
  --test-threads 1 the_collector_killed the_aggregator_killed "$@"
echo "soak: ${LEADSTREAM_FAULT_LEADS} leads, ${LEADSTREAM_FAULT_KILLS} kills per service, $(( $(date +%s) - started )) s"
