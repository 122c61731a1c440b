#!/usr/bin/env bash
# Measures `POST /v1/payment-intents` on IPAY Engine against the trivial
# "ceiling" server of ipay-loadtest, with identical load, in one run.
#
# Usage (from the repo root):  scripts/bench-create-intents.sh
#                              MODE=cluster scripts/bench-create-intents.sh
# Environment:
#   MODE         embedded (default): ledger on local disk in a temp dir;
#                cluster: ledger in Cassandra/ScyllaDB, hot state in Redis (below)
#   CONNECTIONS  keep-alive connections            (default 64)
#   DURATION     measured phase, e.g. 10s, 1m      (default 10s)
#   WARMUP       discarded warmup phase            (default 2s)
#   RATE         total req/s, 0 = closed loop      (default 0)
#   CURRENCY     currency of the intents           (default EUR)
#   EXTRA_ARGS   extra ipay-loadtest arguments, split on whitespace
#   NO_BUILD     1 = use the release binaries already built (default: build them)
# Cluster mode only:
#   IPAY_TEST_CQL_ADDR    host:port of a CQL node, and
#   IPAY_TEST_REDIS_URL   redis://host:port; each one unset means the instance of
#                         scripts/services/{cassandra,redis}.sh (started when it is not running,
#                         and then stopped again at the end)
#   KEYSPACE     keyspace for the ledger (default ipay_bench; created and migrated by
#                `ipay migrate`, kept afterwards: each run uses a fresh merchant)
# Everything listens on and talks to 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
RATE="${RATE:-0}"
CURRENCY="${CURRENCY:-EUR}"
MODE="${MODE:-embedded}"
KEYSPACE="${KEYSPACE:-ipay_bench}"
read -r -a EXTRA <<<"${EXTRA_ARGS:-}"

STARTUP_TIMEOUT_TENTHS=300 # 30 s

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Prints field $1 of the JSON object on stdin.
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

case "$MODE" in
embedded | cluster) ;;
*) die "MODE must be embedded or cluster, not '$MODE'" ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ipay-bench.XXXXXX")"
PIDS=()
STARTED_SERVICES=()

# Stops one background process we started: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        stop_pid "$pid"
    done
    local svc
    for svc in "${STARTED_SERVICES[@]+"${STARTED_SERVICES[@]}"}"; do
        scripts/services/"$svc".sh stop || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until log file $1 of process $2 contains "listening on http://127.0.0.1:PORT"
# and prints that URL; fails with the log if it does not appear within 30 s.
wait_for_url() {
    local logfile="$1" pid="$2" name="$3" i url
    for ((i = 0; i < STARTUP_TIMEOUT_TENTHS; i++)); do
        url="$(grep -Eo 'listening on http://127\.0\.0\.1:[0-9]+' "$logfile" 2>/dev/null | head -n 1 || true)"
        if [[ -n "$url" ]]; then
            printf '%s\n' "${url#listening on }"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            printf '%s exited before it was ready; its log:\n' "$name" >&2
            cat "$logfile" >&2
            return 1
        fi
        sleep 0.1
    done
    printf '%s did not print "listening on" within 30 s; its log:\n' "$name" >&2
    cat "$logfile" >&2
    return 1
}

# Runs the create-intents load against $1 with key $2 and service $3,
# writing the JSON report to $4.
run_load() {
    "$LOADTEST" create-intents \
        --target "$1" --key "$2" --service-id "$3" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" \
        --rate "$RATE" --currency "$CURRENCY" --channel sandbox --idempotency \
        --json-out "$4" "${EXTRA[@]+"${EXTRA[@]}"}"
}

# Prints the address of service $1 (redis | cassandra): variable $2 when set, else the
# scripts/services instance, started (and remembered for cleanup) when it is not running.
service_addr() {
    local svc="$1" var="$2" line
    if [[ -n "${!var:-}" ]]; then
        printf '%s\n' "${!var}"
        return 0
    fi
    if ! scripts/services/"$svc".sh status 2>/dev/null; then
        log "starting $svc (scripts/services/$svc.sh)"
        scripts/services/"$svc".sh start >&2 || return 1
        STARTED_SERVICES+=("$svc")
    fi
    line="$(scripts/services/"$svc".sh env)" || return 1
    printf '%s\n' "${line#*=}"
}

command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"

if [[ "${NO_BUILD:-0}" != 1 ]]; then
    log "building release binaries (ipay, ipay-loadtest)"
    cargo build --release -p ipay-gateway -p ipay-loadtest
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
IPAY="$TARGET_DIR/release/ipay"
LOADTEST="$TARGET_DIR/release/ipay-loadtest"
[[ -x "$IPAY" ]] || die "$IPAY was not built"
[[ -x "$LOADTEST" ]] || die "$LOADTEST was not built"

# --- cluster backends -------------------------------------------------------
if [[ "$MODE" == cluster ]]; then
    # Not in $(...): the services started here must be remembered for cleanup.
    service_addr cassandra IPAY_TEST_CQL_ADDR >"$WORK/cql-addr"
    service_addr redis IPAY_TEST_REDIS_URL >"$WORK/redis-url"
    CQL_ADDR="$(cat "$WORK/cql-addr")"
    REDIS_URL="$(cat "$WORK/redis-url")"
    # Every ipay command below (migrate, merchants create, serve) reads these.
    export IPAY_STORAGE__MODE=cluster
    export IPAY_CLUSTER__CQL_CONTACT_POINTS="[\"$CQL_ADDR\"]"
    export IPAY_CLUSTER__KEYSPACE="$KEYSPACE"
    export IPAY_CLUSTER__REDIS_URL="$REDIS_URL"
    log "cluster mode: CQL $CQL_ADDR keyspace $KEYSPACE, Redis $REDIS_URL"
    "$IPAY" migrate >&2
fi

# --- engine ---------------------------------------------------------------
DATA="$WORK/data"
log "creating a merchant in $DATA"
"$IPAY" merchants create --name bench --data-dir "$DATA" --json >"$WORK/merchant.json"
KEY="$(json_field test_secret_key <"$WORK/merchant.json")"

# One key drives the whole load: the per-key and per-merchant rate limits (429 rate_limited)
# would measure themselves, not the write path, so they are off for this run.
export IPAY_LIMITS__RATE_PER_KEY_PER_SEC=0 IPAY_LIMITS__RATE_PER_MERCHANT_PER_SEC=0
log "starting ipay serve ($MODE mode)"
"$IPAY" serve --data-dir "$DATA" --listen 127.0.0.1:0 >"$WORK/engine.log" 2>&1 &
ENGINE_PID=$!
PIDS+=("$ENGINE_PID")
ENGINE_URL="$(wait_for_url "$WORK/engine.log" "$ENGINE_PID" "ipay serve")"
log "engine at $ENGINE_URL"

# Sends $1 to $2 with JSON body $3 (may be empty), expects status $4, prints the body.
api() {
    local method="$1" path="$2" body="$3" want="$4" code
    local args=(-sS -o "$WORK/response.json" -w '%{http_code}' -X "$method"
        -H "Authorization: Bearer $KEY" "$ENGINE_URL$path")
    if [[ -n "$body" ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$body")
    fi
    code="$(curl "${args[@]}")" || die "$method $path: curl failed"
    if [[ "$code" != "$want" ]]; then
        printf '%s %s answered %s (expected %s):\n' "$method" "$path" "$code" "$want" >&2
        cat "$WORK/response.json" >&2
        echo >&2
        return 1
    fi
    cat "$WORK/response.json"
}

log "creating and activating a sandbox service"
SERVICE_ID="$(api POST /v1/services '{"name":"bench","accepted_channels":["sandbox"]}' 201 | json_field id)"
api PATCH "/v1/services/$SERVICE_ID/activate" '' 200 >/dev/null

log "load: engine (connections=$CONNECTIONS duration=$DURATION warmup=$WARMUP rate=$RATE)"
if ! run_load "$ENGINE_URL" "$KEY" "$SERVICE_ID" "$WORK/engine-report.json" >"$WORK/engine-report.txt"; then
    cat "$WORK/engine-report.txt"
    echo "last lines of the engine log:" >&2
    tail -n 50 "$WORK/engine.log" >&2
    die "the load run against the engine failed"
fi
# Stop the engine so the ceiling run gets the machine to itself.
stop_pid "$ENGINE_PID"

# --- ceiling --------------------------------------------------------------
log "starting the ceiling server"
"$LOADTEST" ceiling-server --listen 127.0.0.1:0 >"$WORK/ceiling.log" 2>&1 &
CEILING_PID=$!
PIDS+=("$CEILING_PID")
CEILING_URL="$(wait_for_url "$WORK/ceiling.log" "$CEILING_PID" "ceiling server")"

log "load: ceiling (same settings)"
run_load "$CEILING_URL" "$KEY" "$SERVICE_ID" "$WORK/ceiling-report.json" >"$WORK/ceiling-report.txt" ||
    { cat "$WORK/ceiling-report.txt"; die "the load run against the ceiling failed"; }
stop_pid "$CEILING_PID"

# --- results --------------------------------------------------------------
echo "=== engine (ipay serve, $MODE mode) ==="
cat "$WORK/engine-report.txt"
echo
echo "=== ceiling (trivial axum handler) ==="
cat "$WORK/ceiling-report.txt"
echo
python3 - "$WORK/engine-report.json" "$WORK/ceiling-report.json" <<'PY'
import json, sys

with open(sys.argv[1]) as f:
    engine = json.load(f)
with open(sys.argv[2]) as f:
    ceiling = json.load(f)
e, c = engine["throughput_rps"], ceiling["throughput_rps"]
ratio = e / c if c else float("nan")
print(f"engine/ceiling throughput: {ratio:.3f} ({e:.1f} vs {c:.1f} req/s, 2xx)")
print(
    "p99 latency engine/ceiling: "
    f"{engine['latency_ms']['p99']:.3f} ms vs {ceiling['latency_ms']['p99']:.3f} ms"
)
PY
