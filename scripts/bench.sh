#!/usr/bin/env bash
# Benchmarks (figures only; tests never assert timings):
#   1. criterion: normalize-and-encode per topic, one core
#   2. generator: 50,000 leads (~210k messages) generated to /dev/null, then produced to the broker
#   3. end to end: N mixed events (default 1,000,000; exposure-heavy: BENCH_EXPOSURES exposures
#      per lead, default 20, then a click, signup, trial, call, contract and order; new leads at
#      a fixed rate, so 1M events are 60 days of history, the leads active within the 30-day
#      `state.idle_after` are the same at any N and older ones go idle) from the local broker
#      into ClickHouse with one collector: events/s and collector CPU
#      seconds; then one aggregator started on that N-event backlog: time to catch up (rebuild
#      from ClickHouse + the normalized topic); then the aggregator binary killed with SIGKILL
#      and restarted, from its checkpoints (idle leads evicted) and, with checkpoints and
#      evictions removed, rebuilding from history holding every lead: time until ready and
#      current, leads held, RSS
#   4. stage machine: events/s on one core and memory per tracked lead
#   5. fuzzer: FUZZ_INPUTS (default 10,000,000) mutated inputs through the normalizer and the
#      aggregator's decoder and engine; count, time, and any input that panicked
#   ./scripts/bench.sh [N]
# The fault soak (20 kills, about 1M events) is scripts/soak.sh.
# Experiment knobs for the end-to-end part: BENCH_MAX_ROWS (batch.max_rows),
# BENCH_KAFKA_PROPS="k=v,k=v" (extra librdkafka properties for the collector) and
# BENCH_LEAD_GAP_MS (event time between new leads, default 36000 × events per lead / 7) and
# BENCH_EXPOSURES.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo bench -p leadstream-schemas --bench normalize -- --noplot 2>&1 | grep -E "^normalize|time:|thrpt:"
# shellcheck source=scripts/private-stack.sh
source "$ROOT/scripts/private-stack.sh"
private_stack bench
cargo build --release --locked -q -p leadstream-generator -p leadstream-aggregator
gen="${CARGO_TARGET_DIR:-$ROOT/target}/release/leadstream-generator"
echo "generator, 50000 leads, no broker (--dry-run /dev/null):"
RUST_LOG=warn,leadstream_generator=info "$gen" --leads 50000 --seed 1 --no-progress --dry-run /dev/null 2>&1 | grep finished
echo "generator, 50000 leads, produced to the local broker:"
RUST_LOG=warn,leadstream_generator=info "$gen" --leads 50000 --seed 1 --no-progress 2>&1 | grep finished
cargo run --release --locked -p leadstream-tests --bin e2e-bench -- "${1:-1000000}"
cargo bench -p leadstream-aggregator --bench machine 2>&1 | grep -E "^stage machine|events/s|bytes per lead|lead"
cargo run --release --locked -q -p leadstream-tests --bin fuzz -- "${FUZZ_INPUTS:-10000000}"
