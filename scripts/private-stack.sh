# Sourced by test.sh, bench.sh and soak.sh: `private_stack NAME` starts a private stack
# (ClickHouse 26.9 and tansu, installed on first use) on free ports under STACK_DIR (default a
# fresh temporary folder), stops it when the calling script exits, and exports what the tests
# and tools read (LEADSTREAM_KAFKA__BROKERS, LEADSTREAM_CLICKHOUSE__URL, LEADSTREAM_STACK_PYTHON).
# STACK_DIR, CH_HTTP_PORT, CH_TCP_PORT and KAFKA_PORT given by the caller are kept.
_private_stack_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

private_stack() {
  export STACK_DIR=${STACK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/leadstream-$1.XXXXXX")}
  export CH_HTTP_PORT=${CH_HTTP_PORT:-$(free_port)} CH_TCP_PORT=${CH_TCP_PORT:-$(free_port)} \
    KAFKA_PORT=${KAFKA_PORT:-$(free_port)}
  # shellcheck disable=SC2064
  trap "\"$_private_stack_root/scripts/stack.sh\" down || true" EXIT
  "$_private_stack_root/scripts/stack.sh" up
  # shellcheck disable=SC1091
  source "$STACK_DIR/env"
  export LEADSTREAM_KAFKA__BROKERS LEADSTREAM_CLICKHOUSE__URL LEADSTREAM_STACK_PYTHON
}
