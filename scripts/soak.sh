#!/usr/bin/env bash
# The fault suite's kill scenarios as a soak: the collector and the aggregator each killed with
# SIGKILL SOAK_KILLS times (default 20) while a feed of SOAK_LEADS leads (default 240,000, about
# 1M events) arrives, each ending with the suite's verdict (nothing lost, nothing counted twice,
# answers equal to the truth, offsets committed). Release build, private stack on free ports.
#   ./scripts/soak.sh [extra cargo test args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/private-stack.sh
source "$ROOT/scripts/private-stack.sh"
private_stack soak
export LEADSTREAM_FAULT_LEADS=${SOAK_LEADS:-240000} LEADSTREAM_FAULT_KILLS=${SOAK_KILLS:-20}
export LEADSTREAM_FAULT_SETTLE_SECS=${SOAK_SETTLE_SECS:-3600}
cargo build --release --locked --bins
started=$(date +%s)
cargo test --release --locked -p leadstream-tests --test faults -- \
  --test-threads 1 the_collector_killed the_aggregator_killed "$@"
echo "soak: ${LEADSTREAM_FAULT_LEADS} leads, ${LEADSTREAM_FAULT_KILLS} kills per service, $(( $(date +%s) - started )) s"
