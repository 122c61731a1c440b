#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/integration tests (including the
# kill -9 durability test of the real binary), then the API contract (schemathesis against
# /openapi.json, scripts/contract.sh). Idempotent; safe to run again at any time.
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
# Each also has a `tls` variant (TLS only, with a login) for the TLS/auth tests; the TLS
# Cassandra node starts in the background while formatting and lints run.
services=scripts/services
mkdir -p target
started=()
tls_cassandra_pid=""
cleanup() {
  if [ -n "$tls_cassandra_pid" ]; then wait "$tls_cassandra_pid" 2>/dev/null || true; fi
  for svc in "${started[@]+"${started[@]}"}"; do
    # shellcheck disable=SC2086 # "name variant" splits into the script and its argument
    set -- $svc
    "$services/$1.sh" stop ${2:-} >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
for svc in "redis" "cassandra" "redis tls"; do
  set -- $svc
  if ! "$services/$1.sh" status ${2:-} >/dev/null 2>&1; then
    echo "==> starting $svc"
    "$services/$1.sh" start ${2:-}
    started+=("$svc")
  fi
  eval "$("$services/$1.sh" env ${2:-})"
done
if ! "$services/cassandra.sh" status tls >/dev/null 2>&1; then
  echo "==> starting cassandra tls (in the background; log in target/cassandra-tls-start.log)"
  "$services/cassandra.sh" start tls >target/cassandra-tls-start.log 2>&1 &
  tls_cassandra_pid=$!
  started+=("cassandra tls")
fi
export IPAY_TEST_REDIS_URL IPAY_TEST_CQL_ADDR IPAY_TEST_REDIS_TLS_URL IPAY_TEST_TLS_DIR

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

if [ -n "$tls_cassandra_pid" ]; then
  if ! wait "$tls_cassandra_pid"; then
    tls_cassandra_pid=""
    cat target/cassandra-tls-start.log >&2
    echo "test.sh: the TLS Cassandra node did not start" >&2
    exit 1
  fi
  tls_cassandra_pid=""
fi
eval "$("$services/cassandra.sh" env tls)"
export IPAY_TEST_CQL_TLS_ADDR IPAY_TEST_CQL_TLS_USER IPAY_TEST_CQL_TLS_PASSWORD IPAY_TEST_TLS_DIR

echo "==> cargo test"
# A failing test must not stop the script here (pipefail + -e would): the summary and the
# contract run below still belong to the report.
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' target/test-output.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.log | awk '{s+=$1} END {print s+0}')

# The binary the tests just built serves the contract run.
echo "==> API contract (schemathesis)"
if scripts/contract.sh target/debug/ipay; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  status=1
fi
echo "${passed} passed, ${failed} failed"
exit "$status"
