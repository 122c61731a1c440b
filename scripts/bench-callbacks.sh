#!/usr/bin/env bash
# Measures verified Stripe-signed callbacks applied by IPAY Engine against the trivial
# "ceiling" server of ipay-loadtest, with the same connections and duration, in one run.
#
# The engine runs embedded, with its Stripe endpoint on the PSP simulator (psp-sim). A merchant
# configures the simulator's Stripe credentials; `ipay-loadtest callbacks` pre-creates INTENTS
# pending Stripe intents (not measured), then posts one `payment_intent.succeeded` event per
# intent, signed `Stripe-Signature: t=…,v1=HMAC-SHA256` with the endpoint secret. Each 2xx is
# one payment applied (verified, deduplicated, state change and events made durable).
#
# Usage (from the repo root):  scripts/bench-callbacks.sh
# Environment:
#   CONNECTIONS  keep-alive connections            (default 64)
#   DURATION     measured phase, e.g. 10s          (default 10s)
#   WARMUP       discarded warmup phase            (default 2s)
#   INTENTS      intents to pre-create; must cover warmup + duration (default 150000)
#   NO_BUILD     1 = use the release binaries already built (default: build them)
# Everything listens on and talks to 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNECTIONS="${CONNECTIONS:-64}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
INTENTS="${INTENTS:-150000}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ipay-bench-cb.XXXXXX")"
PIDS=()
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
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the "listening on http://127.0.0.1:PORT" URL of process $2 from log $1 (30 s limit).
wait_for_url() {
    local logfile="$1" pid="$2" name="$3" i url
    for ((i = 0; i < 300; i++)); do
        url="$(grep -Eo 'listening on http://127\.0\.0\.1:[0-9]+' "$logfile" 2>/dev/null | head -n 1 || true)"
        if [[ -n "$url" ]]; then
            printf '%s\n' "${url#listening on }"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "$name exited before it was ready"; }
        sleep 0.1
    done
    cat "$logfile" >&2
    die "$name did not print \"listening on\" within 30 s"
}

if [[ "${NO_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    cargo build --release --workspace --bins
fi
BIN="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"
for b in ipay ipay-loadtest psp-sim; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b was not built"
done

log "starting psp-sim"
"$BIN/psp-sim" --bind 127.0.0.1:0 >"$WORK/sim.log" 2>&1 &
PIDS+=("$!")
SIM_URL="$(wait_for_url "$WORK/sim.log" "${PIDS[-1]}" psp-sim)"
"$BIN/psp-sim" credentials stripe >"$WORK/stripe.json"
SECRET="$(json_field webhook_secret <"$WORK/stripe.json")"

DATA="$WORK/data"
"$BIN/ipay" merchants create --name bench --data-dir "$DATA" --json >"$WORK/merchant.json"
KEY="$(json_field test_secret_key <"$WORK/merchant.json")"
# The load itself is the subject: request and callback rate limits would measure themselves.
export IPAY_LIMITS__RATE_PER_KEY_PER_SEC=0 IPAY_LIMITS__RATE_PER_MERCHANT_PER_SEC=0
export IPAY_CHANNELS__CALLBACK_RATE_PER_PROVIDER=4000000000
export IPAY_CHANNELS__CALLBACK_RATE_PER_MERCHANT=4000000000
export IPAY_CHANNELS__ENDPOINTS__STRIPE="$SIM_URL/stripe"
log "starting ipay serve (Stripe at $SIM_URL/stripe)"
"$BIN/ipay" serve --data-dir "$DATA" --listen 127.0.0.1:0 >"$WORK/engine.log" 2>&1 &
ENGINE_PID=$!
PIDS+=("$ENGINE_PID")
ENGINE_URL="$(wait_for_url "$WORK/engine.log" "$ENGINE_PID" "ipay serve")"

# Sends $1 to $2 with JSON body $3, expects status $4, prints the body.
api() {
    local code
    code="$(curl -sS -o "$WORK/response.json" -w '%{http_code}' -X "$1" \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        ${3:+--data-binary "$3"} "$ENGINE_URL$2")" || die "$1 $2: curl failed"
    [[ "$code" == "$4" ]] || { cat "$WORK/response.json" >&2; die "$1 $2 answered $code, expected $4"; }
    cat "$WORK/response.json"
}
api POST /v1/channels "{\"channel\":\"stripe\",\"credentials\":$(cat "$WORK/stripe.json"),\"notify_url\":\"$ENGINE_URL/api/payments/webhook\"}" 201 >/dev/null
SERVICE_ID="$(api POST /v1/services '{"name":"bench-cb","accepted_channels":["stripe"]}' 201 | json_field id)"
api PATCH "/v1/services/$SERVICE_ID/activate" '' 200 >/dev/null

log "load: callbacks (connections=$CONNECTIONS duration=$DURATION warmup=$WARMUP intents=$INTENTS)"
"$BIN/ipay-loadtest" callbacks --channel stripe --target "$ENGINE_URL" --key "$KEY" \
    --service-id "$SERVICE_ID" --webhook-secret "$SECRET" --intents "$INTENTS" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" \
    --json-out "$WORK/engine.json" >"$WORK/engine.txt" ||
    { cat "$WORK/engine.txt"; tail -n 30 "$WORK/engine.log" >&2; die "the callbacks run failed"; }
stop_pid "$ENGINE_PID"

log "starting the ceiling server"
"$BIN/ipay-loadtest" ceiling-server --listen 127.0.0.1:0 >"$WORK/ceiling.log" 2>&1 &
PIDS+=("$!")
CEILING_URL="$(wait_for_url "$WORK/ceiling.log" "${PIDS[-1]}" "ceiling server")"
"$BIN/ipay-loadtest" create-intents --target "$CEILING_URL" --key "$KEY" --service-id "$SERVICE_ID" \
    --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --idempotency \
    --json-out "$WORK/ceiling.json" >"$WORK/ceiling.txt" || die "the ceiling run failed"

echo "=== engine: verified Stripe callbacks applied ==="
cat "$WORK/engine.txt"
echo
echo "=== ceiling (trivial axum handler) ==="
cat "$WORK/ceiling.txt"
echo
python3 - "$WORK/engine.json" "$WORK/ceiling.json" <<'PY'
import json, sys
e, c = (json.load(open(p)) for p in sys.argv[1:3])
r = e["throughput_rps"] / c["throughput_rps"] if c["throughput_rps"] else float("nan")
print(f"callbacks applied/ceiling: {r:.3f} ({e['throughput_rps']:.1f} vs {c['throughput_rps']:.1f} req/s, 2xx)")
print(f"p99 latency engine/ceiling: {e['latency_ms']['p99']:.3f} ms vs {c['latency_ms']['p99']:.3f} ms")
PY
