#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration tests (including the
# kill -9 durability test of the real binary). Idempotent; safe to run again at any time.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "test.sh: cargo not found; install Rust (rustup) first" >&2
    exit 1
  fi
fi

# Cluster-mode backends are tested against real servers: a private Redis (Debian package) and a
# single-node Cassandra 5 (Maven jars on Java 17), installed and started when missing, stopped at
# the end if this run started them. The test binaries read their addresses from the environment.
services=scripts/services
started=()
cleanup() {
  for svc in "${started[@]+"${started[@]}"}"; do
    "$services/$svc.sh" stop >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
for svc in redis cassandra; do
  if ! "$services/$svc.sh" status >/dev/null 2>&1; then
    echo "==> starting $svc"
    "$services/$svc.sh" start
    started+=("$svc")
  fi
  eval "$("$services/$svc.sh" env)"
done
export IPAY_TEST_REDIS_URL IPAY_TEST_CQL_ADDR

# The pages are tested in headless Chromium over WebDriver (gateway/tests/pages_browser.rs):
# Debian's chromium and chromium-driver, installed when missing, with a CJK font so the
# Chinese pay page's screenshots show text.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
  || [ ! -d /usr/share/fonts/truetype/wqy ]; then
  echo "==> installing chromium, chromium-driver and fonts-wqy-zenhei"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "test.sh: not root and no sudo: install chromium chromium-driver by hand" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null
  command -v chromedriver >/dev/null 2>&1 || { echo "test.sh: chromedriver still missing after apt-get install" >&2; exit 1; }
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> cargo test"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.log | awk '{s+=$1} END {print s+0}')
echo "${passed} passed, ${failed} failed"
exit "$status"
