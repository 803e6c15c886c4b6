#!/usr/bin/env bash
# README command one: starts the local stack (ClickHouse 26.9 + tansu), the collector, the
# aggregator and the traffic generator in continuous mode, and shows every 2 s the funnels (stage
# counts, conversion by channel), the ingest rate per topic, freshness, dead letters and where the
# API is, until Ctrl-C, which stops the generator, the collector and the aggregator (SIGTERM:
# flush + commit) and the stack.
#
#   ./scripts/demo.sh                 run until Ctrl-C
#   DEMO_SECONDS=30 ./scripts/demo.sh run for 30 s, then stop by itself
#   DEMO_RATE=50 ./scripts/demo.sh    new leads per second (default 20)
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
# Where cargo put them (CARGO_TARGET_DIR, e.g. a cache outside the clone, or ./target).
BIN=${CARGO_TARGET_DIR:-./target}/debug

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo; echo "[demo] stopping"
  # The generator first, so the collector can drain what was sent before it stops.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ./scripts/stack.sh down
}
trap stop_all INT TERM EXIT

"$BIN/leadstream-generator" --continuous --rate "${DEMO_RATE:-20}" --delay-scale 0.2 \
  --truth "$STACK_DIR/demo.truth.json" >"$STACK_DIR/generator.log" 2>&1 &
pids+=($!)
"$BIN/leadstream-collector" --config config/collector.yaml >"$STACK_DIR/collector.log" 2>&1 &
pids+=($!)
"$BIN/leadstream-aggregator" --config config/aggregator.yaml >"$STACK_DIR/aggregator.log" 2>&1 &
pids+=($!)
API=http://127.0.0.1:9465
echo "[demo] collector metrics: http://127.0.0.1:9464/metrics"
echo "[demo] wallboard (open in a browser; ?lang=zh for Chinese): $API/wallboard"
echo "[demo] aggregator API: $API/api/v1/funnels/b2c/cohort?breakdown=first_touch (README: Aggregator API)"
echo "[demo] logs: $STACK_DIR/{generator,collector,aggregator}.log; truth of what was sent: $STACK_DIR/demo.truth.json (written at stop)"

# The funnels as the aggregator answers them: stages with reached / now-in counts, conversion to
# the last stage by first-touch channel, and freshness.
funnels() {
  python3 - "$API" <<'PY' || echo "(aggregator not answering yet)"
import json, sys, time, urllib.request
api = sys.argv[1]
get = lambda p: json.load(urllib.request.urlopen(api + p, timeout=5))
st = get("/api/v1/status")
age = st.get("freshness_seconds")
print(f"-- funnels (API {api}; newest event in the answers {'%.1f s ago' % age if age is not None else 'none yet'})")
for f in get("/api/v1/funnels")["funnels"]:
    name, stages = f["name"], f["stages"]
    co = get(f"/api/v1/funnels/{name}/cohort?breakdown=first_touch")
    oc = get(f"/api/v1/funnels/{name}/occupancy")
    reached = co["total"]["reached"]
    now = (oc.get("total") or {}).get("occupancy", [0] * len(stages))
    print(f"{name:6} " + "  ".join(f"{s} {r}/{n}" for s, r, n in zip(stages, reached, now)) + f"  lost {co['total']['lost']}   (reached/now)")
    rows = sorted(co["groups"], key=lambda g: -g["leads"])[:8]
    conv = lambda g: g["overall_conversion"][-1]
    print("       " + "  ".join(f"{g['key']} {100 * (conv(g) or 0):.1f}%" for g in rows) + f"   ({stages[0]}→{stages[-1]} by first touch)")
PY
}

q() { curl -sf "$LEADSTREAM_CLICKHOUSE__URL/" --data-binary "$1" 2>/dev/null || echo "(clickhouse not answering yet)"; }
start=$(date +%s)
while :; do
  sleep 2
  printf '\n=== %s  collector %s  aggregator %s\n' "$(date +%T)" "$(curl -sf http://127.0.0.1:9464/readyz || echo 'starting')" "$(curl -sf $API/readyz || echo 'starting')"
  funnels
  echo "-- ingest by source topic (unique events; rate over the last 10 s of arrival)"
  q "SELECT source_topic AS topic, round(countIf(received_at > now64(3) - INTERVAL 10 SECOND) / 10, 1) AS \`events/s\`,
       count() AS rows, max(event_time) AS newest_event
     FROM leadstream.lead_events_unique GROUP BY topic ORDER BY topic FORMAT PrettyCompactMonoBlock"
  echo "-- dead letters by category"
  q "SELECT category, count() AS messages, max(received_at) AS latest
     FROM leadstream.ingest_errors FINAL GROUP BY category ORDER BY messages DESC FORMAT PrettyCompactMonoBlock"
  if [[ -n ${DEMO_SECONDS:-} ]] && (($(date +%s) - start >= DEMO_SECONDS)); then break; fi
done
