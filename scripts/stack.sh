#!/usr/bin/env bash
# The local stack without Docker: ClickHouse 26.9 (chdb-core wheel) and the tansu Kafka broker.
#
#   scripts/stack.sh install          install both into the tools cache (first run ~15 min, then instant)
#   scripts/stack.sh up               start both, create the topics, wait until ready
#   scripts/stack.sh down             stop both
#   scripts/stack.sh status           show what runs
#   scripts/stack.sh start-kafka | stop-kafka | start-clickhouse | stop-clickhouse
#                                     one server (the fault tests restart them; data persists)
#   scripts/stack.sh env              print the connection settings as shell exports
#
# Settings (environment):
#   LEADSTREAM_CACHE     tools cache, shared by every clone   (default ~/.cache/leadstream)
#   STACK_DIR            pid files, logs and data              (default <repo>/.stack)
#   CH_HTTP_PORT CH_TCP_PORT KAFKA_PORT                        (default 8123 9000 9092)
#   PARTITIONS           partitions per topic                  (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LEADSTREAM_CACHE:-$HOME/.cache/leadstream}
TANSU_VERSION=0.6.0
CHDB_VERSION=26.9.0
TANSU=$CACHE/tansu-$TANSU_VERSION/bin/tansu
CH_VENV=$CACHE/chdb-$CHDB_VERSION
PY=$CH_VENV/bin/python
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
CH_HTTP_PORT=${CH_HTTP_PORT:-8123}
CH_TCP_PORT=${CH_TCP_PORT:-9000}
KAFKA_PORT=${KAFKA_PORT:-9092}
PARTITIONS=${PARTITIONS:-3}
TOPICS=(leads.exposure leads.ad_click leads.signup leads.trial leads.call leads.contract leads.order leads.normalized leads.dlq leads.stitch)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

install() {
  mkdir -p "$CACHE"
  # One installer at a time per cache (parallel CI runs share it).
  exec 9>"$CACHE/.install.lock"
  flock 9
  if [[ ! -x $TANSU ]]; then
    log "installing tansu $TANSU_VERSION into $CACHE (about 14 minutes on 2 cores, once)"
    command -v cargo >/dev/null || die "cargo is needed to install tansu"
    # dynostore: in-memory storage; libsql: sqlite storage that survives broker restarts.
    CARGO_TARGET_DIR=$CACHE/tansu-build cargo install tansu --version "$TANSU_VERSION" --locked \
      --features dynostore,libsql --root "$CACHE/tansu-$TANSU_VERSION" >"$CACHE/tansu-install.log" 2>&1 \
      || { tail -30 "$CACHE/tansu-install.log" >&2; die "tansu install failed (log: $CACHE/tansu-install.log)"; }
    rm -rf "$CACHE/tansu-build"
  fi
  if [[ ! -x $PY ]] || ! "$PY" -c 'import chdb' 2>/dev/null; then
    log "installing chdb-core $CHDB_VERSION (ClickHouse 26.9) into $CH_VENV"
    command -v python3 >/dev/null || die "python3 (>= 3.9) is needed for ClickHouse"
    rm -rf "$CH_VENV"
    python3 -m venv "$CH_VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "chdb-core==$CHDB_VERSION" \
      || die "pip install chdb-core==$CHDB_VERSION failed"
  fi
  flock -u 9
}

pidfile() { echo "$STACK_DIR/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

wait_for() { # name seconds command...
  local name=$1 secs=$2; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    running "$name" || { tail -20 "$STACK_DIR/$name.log" >&2; die "$name exited during start (log: $STACK_DIR/$name.log)"; }
    sleep 0.2
  done
  tail -20 "$STACK_DIR/$name.log" >&2
  die "$name not ready after ${secs}s (log: $STACK_DIR/$name.log)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_clickhouse() {
  running clickhouse && { log "clickhouse already running"; return; }
  port_free "$CH_HTTP_PORT" || die "port $CH_HTTP_PORT is taken; set CH_HTTP_PORT"
  mkdir -p "$STACK_DIR/clickhouse"
  setsid "$PY" "$ROOT/scripts/clickhouse_server.py" --dir "$STACK_DIR/clickhouse" \
    --http-port "$CH_HTTP_PORT" --tcp-port "$CH_TCP_PORT" >"$STACK_DIR/clickhouse.log" 2>&1 &
  echo $! >"$(pidfile clickhouse)"
  wait_for clickhouse 60 curl -sf "http://127.0.0.1:$CH_HTTP_PORT/ping"
  log "clickhouse 26.9 ready on http://127.0.0.1:$CH_HTTP_PORT"
}

# tansu 0.6's sqlite schema has no index on header (topition, offset_id), and every fetched
# record looks its headers up by those columns: a full scan of all headers ever written per
# record, so fetches slow down linearly with the dead letters (the only messages with headers)
# until the broker crawls (measured: 0.7 ms per record at 8.5k header rows, 12 us with the index).
index_tansu_db() {
  "$PY" - "$1" <<'PYEOF' >>"$STACK_DIR/kafka.log" 2>&1 || die "indexing the tansu database failed (see $STACK_DIR/kafka.log)"
import sqlite3, sys, time
for attempt in range(100):
    try:
        c = sqlite3.connect(sys.argv[1], timeout=10)
        c.execute("create index if not exists leadstream_header_record on header (topition, offset_id)")
        c.execute("create index if not exists leadstream_watermark_topition on watermark (topition)")
        c.commit()
        print("tansu database indexed")
        break
    except sqlite3.OperationalError as e:  # schema not created yet, or busy
        time.sleep(0.1)
else:
    sys.exit(f"could not index {sys.argv[1]}: {e}")
PYEOF
}

start_kafka() {
  running kafka && { log "kafka already running"; return; }
  port_free "$KAFKA_PORT" || die "port $KAFKA_PORT is taken; set KAFKA_PORT"
  mkdir -p "$STACK_DIR/kafka"
  # tansu doubles an absolute sqlite path (0.6), so the path is relative to its working directory.
  (cd "$STACK_DIR/kafka" && exec setsid "$TANSU" broker --storage-engine "sqlite://tansu.db" \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    >"$STACK_DIR/kafka.log" 2>&1) &
  echo $! >"$(pidfile kafka)"
  wait_for kafka 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"
  index_tansu_db "$STACK_DIR/kafka/tansu.db"
  for t in "${TOPICS[@]}"; do
    "$TANSU" topic create --broker "tcp://127.0.0.1:$KAFKA_PORT" --partitions "$PARTITIONS" "$t" >>"$STACK_DIR/kafka.log" 2>&1 || true
  done
  log "kafka (tansu $TANSU_VERSION) ready on 127.0.0.1:$KAFKA_PORT, topics: ${TOPICS[*]}"
}

stop() {
  local name=$1 f
  f=$(pidfile "$name")
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
  log "$name stopped"
}

print_env() {
  cat <<ENV
export LEADSTREAM_KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT
export LEADSTREAM_CLICKHOUSE__URL=http://127.0.0.1:$CH_HTTP_PORT
export LEADSTREAM_STACK_PYTHON=$PY
ENV
}

cmd=${1:-}
case $cmd in
  install) install ;;
  up) install; mkdir -p "$STACK_DIR"; start_clickhouse; start_kafka; print_env >"$STACK_DIR/env" ;;
  down) stop kafka; stop clickhouse ;;
  start-clickhouse) mkdir -p "$STACK_DIR"; start_clickhouse ;;
  stop-clickhouse) stop clickhouse ;;
  start-kafka) mkdir -p "$STACK_DIR"; start_kafka ;;
  stop-kafka) stop kafka ;;
  status)
    for s in clickhouse kafka; do if running $s; then echo "$s: running (pid $(cat "$(pidfile $s)"))"; else echo "$s: stopped"; fi; done ;;
  env) print_env ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; [[ -z $cmd || $cmd == -h || $cmd == --help ]] || exit 2 ;;
esac
