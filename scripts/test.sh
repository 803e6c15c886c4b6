#!/usr/bin/env bash
# Runs every test: installs the tools on first use (cached), starts a private ClickHouse 26.9 and
# tansu broker on free ports, builds the workspace, runs `cargo test`, and stops the stack again.
#
#   ./scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# shellcheck source=scripts/private-stack.sh
source "$ROOT/scripts/private-stack.sh"

# Headless Chromium and chromedriver for the wallboard test (Debian's packages), and a CJK font
# so its Chinese labels render in the screenshots.
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
fc-list 2>/dev/null | grep -qiE 'wenquanyi|wqy|noto sans cjk' || need+=(fonts-wqy-zenhei)
if ((${#need[@]})); then
  echo "[test] installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

private_stack test

echo "[test] building"
cargo build --workspace --bins --locked
echo "[test] running tests against clickhouse $LEADSTREAM_CLICKHOUSE__URL and kafka $LEADSTREAM_KAFKA__BROKERS"
results=$STACK_DIR/cargo-test.log
cargo test --workspace --locked "$@" 2>&1 | tee "$results"
echo "[test] cargo fmt --check and clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One summary line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "leadstream: %d passed, %d failed\n", p, f }' "$results"
