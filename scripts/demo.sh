#!/usr/bin/env bash
# README command one: starts the local stack (ClickHouse 26.9 + tansu), the collector and the
# built-in sample feed, and shows rows arriving in ClickHouse every 2 s until Ctrl-C, which stops
# the feed, the collector (SIGTERM: flush + commit) and the stack.
#
#   ./scripts/demo.sh                 run until Ctrl-C
#   DEMO_SECONDS=30 ./scripts/demo.sh run for 30 s, then stop by itself
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export STACK_DIR=${STACK_DIR:-$ROOT/.stack}

./scripts/stack.sh up
# shellcheck disable=SC1091
source "$STACK_DIR/env"
export LEADSTREAM_KAFKA__BROKERS LEADSTREAM_CLICKHOUSE__URL
export LEADSTREAM_NORMALIZE__PII_SALT=${LEADSTREAM_NORMALIZE__PII_SALT:-demo-only-salt-change-me}
echo "[demo] building the services"
cargo build --locked --bins -q

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo; echo "[demo] stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ./scripts/stack.sh down
}
trap stop_all INT TERM EXIT

./target/debug/leadstream-collector --config config/collector.yaml >"$STACK_DIR/collector.log" 2>&1 &
pids+=($!)
./target/debug/leadstream-sample-feed --interval-ms 1000 >"$STACK_DIR/sample-feed.log" 2>&1 &
pids+=($!)
echo "[demo] collector metrics: http://127.0.0.1:9464/metrics  logs: $STACK_DIR/collector.log"

q() { curl -sf "$LEADSTREAM_CLICKHOUSE__URL/" --data-binary "$1" 2>/dev/null || echo "(clickhouse not answering)"; }
start=$(date +%s)
while :; do
  sleep 2
  printf '\n=== %s  collector %s\n' "$(date +%T)" "$(curl -sf http://127.0.0.1:9464/readyz || echo 'starting')"
  echo "-- lead_events (unique events by type)"
  q "SELECT event_type, count() AS events, max(event_time) AS newest FROM leadstream.lead_events_unique GROUP BY event_type ORDER BY event_type FORMAT PrettyCompactMonoBlock"
  echo "-- ingest_errors (dead letters by category)"
  q "SELECT category, count() AS messages FROM leadstream.ingest_errors FINAL GROUP BY category ORDER BY messages DESC FORMAT PrettyCompactMonoBlock"
  if [[ -n ${DEMO_SECONDS:-} ]] && (($(date +%s) - start >= DEMO_SECONDS)); then break; fi
done
