#!/usr/bin/env bash
# Noisy neighbour: does a merchant whose webhook endpoints are all dead slow down another
# merchant's creates? Two runs of one engine each, identical load from two load generators at
# once (a "quiet" merchant and a "noisy" merchant creating intents concurrently):
#   1. baseline: neither merchant has a webhook endpoint;
#   2. noisy:    the noisy merchant has 16 endpoints that refuse every connection.
# Prints the quiet merchant's creates/s in both runs and their ratio, and the data directory's
# size per pending delivery after run 2 (measured after a clean stop).
#
# Usage (from the repo root):  scripts/bench-noisy-neighbour.sh
# Environment:
#   PROFILE      debug (default) or release: which binaries of target/ to use (built if missing)
#   CONNECTIONS  keep-alive connections per merchant (default 32)
#   DURATION     measured phase (default 10s)
#   WARMUP       discarded warmup (default 2s)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE="${PROFILE:-debug}"
CONNECTIONS="${CONNECTIONS:-32}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
IPAY="$TARGET_DIR/$PROFILE/ipay"
LOADTEST="$TARGET_DIR/$PROFILE/ipay-loadtest"
if [[ ! -x "$IPAY" || ! -x "$LOADTEST" ]]; then
    log "building $PROFILE binaries"
    if [[ "$PROFILE" == release ]]; then
        cargo build --workspace --bins --release
    else
        cargo build --workspace --bins
    fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ipay-noisy.XXXXXX")"
ENGINE_PID=""
cleanup() {
    if [[ -n "$ENGINE_PID" ]]; then kill -KILL "$ENGINE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts the engine on data dir $1; sets ENGINE_PID and ENGINE_URL.
start_engine() {
    IPAY_LIMITS__RATE_PER_KEY_PER_SEC=0 IPAY_LIMITS__RATE_PER_MERCHANT_PER_SEC=0 \
        IPAY_WEBHOOKS__ALLOW_INSECURE_LOOPBACK=true \
        "$IPAY" serve --data-dir "$1" --listen 127.0.0.1:0 >"$WORK/engine.log" 2>&1 &
    ENGINE_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        ENGINE_URL="$(grep -Eo 'listening on http://127\.0\.0\.1:[0-9]+' "$WORK/engine.log" | head -n 1 || true)"
        if [[ -n "$ENGINE_URL" ]]; then
            ENGINE_URL="${ENGINE_URL#listening on }"
            return 0
        fi
        sleep 0.1
    done
    cat "$WORK/engine.log" >&2
    die "the engine did not start"
}

# Stops the engine cleanly (SIGTERM) so the data directory is complete.
stop_engine() {
    kill -TERM "$ENGINE_PID"
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=""
}

# api KEY METHOD PATH BODY: prints the response body.
api() {
    local args=(-sS -X "$2" -H "Authorization: Bearer $1" "$ENGINE_URL$3")
    [[ -n "${4:-}" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$4")
    curl "${args[@]}"
}

# A new merchant in data dir $1 named $2: prints its test secret key.
merchant() {
    "$IPAY" merchants create --name "$2" --data-dir "$1" --json | json_field test_secret_key
}

# An active sandbox service of the merchant with key $1: prints its id.
service() {
    local key="$1" svc
    svc="$(api "$key" POST /v1/services '{"name":"noisy-bench","accepted_channels":["sandbox"]}' | json_field id)"
    api "$key" PATCH "/v1/services/$svc/activate" >/dev/null
    printf '%s\n' "$svc"
}

# Intents of the merchant with key $1.
intents() {
    api "$1" GET '/v1/payment-intents?limit=1' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["pagination"]["total"])'
}

# run NAME ENDPOINTS: one engine run; prints
# "quiet_rps noisy_rps quiet_intents noisy_intents data_bytes".
run() {
    local name="$1" endpoints="$2" data="$WORK/$1"
    local quiet noisy qsvc nsvc i
    quiet="$(merchant "$data" quiet)"
    noisy="$(merchant "$data" noisy)"
    start_engine "$data"
    qsvc="$(service "$quiet")"
    nsvc="$(service "$noisy")"
    for ((i = 0; i < endpoints; i++)); do
        # Port 1 on loopback: nothing listens, every connection is refused.
        api "$noisy" POST /v1/webhook-endpoints "{\"url\":\"http://127.0.0.1:1/dead$i\"}" >/dev/null
    done
    local common=(--target "$ENGINE_URL" --connections "$CONNECTIONS" --duration "$DURATION"
        --warmup "$WARMUP" --channel sandbox --idempotency)
    "$LOADTEST" create-intents "${common[@]}" --key "$quiet" --service-id "$qsvc" \
        --json-out "$WORK/$name-quiet.json" >"$WORK/$name-quiet.txt" &
    local qpid=$!
    "$LOADTEST" create-intents "${common[@]}" --key "$noisy" --service-id "$nsvc" \
        --json-out "$WORK/$name-noisy.json" >"$WORK/$name-noisy.txt"
    wait "$qpid"
    local qn nn
    qn="$(intents "$quiet")"
    nn="$(intents "$noisy")"
    stop_engine
    printf '%s %s %s %s %s\n' \
        "$(json_field throughput_rps <"$WORK/$name-quiet.json")" \
        "$(json_field throughput_rps <"$WORK/$name-noisy.json")" \
        "$qn" "$nn" "$(du -sb "$data" | cut -f1)"
}

log "run 1: no endpoints ($PROFILE binaries, $CONNECTIONS connections per merchant, $DURATION)"
read -r base_q base_n base_qi base_ni base_bytes < <(run baseline 0)
log "run 2: the noisy merchant has 16 dead endpoints"
read -r noisy_q noisy_n noisy_qi noisy_ni noisy_bytes < <(run noisy 16)

python3 - "$base_q" "$base_n" "$base_qi" "$base_ni" "$base_bytes" \
    "$noisy_q" "$noisy_n" "$noisy_qi" "$noisy_ni" "$noisy_bytes" <<'PY'
import sys
bq, bn, bqi, bni, bb, nq, nn, nqi, nni, nb = map(float, sys.argv[1:])
print(f"quiet merchant creates/s: baseline {bq:.1f}, with 16 dead endpoints next door {nq:.1f}"
      f" (ratio {nq / bq:.3f})")
print(f"noisy merchant creates/s: baseline {bn:.1f}, with its 16 dead endpoints {nn:.1f}")
# Each noisy create commits one event, fanned out to 16 endpoints that never answer.
pending = nni * 16
per_intent = bb / (bqi + bni)
extra = nb - per_intent * (nqi + nni)
print(f"data dir: baseline {bb / 1e6:.1f} MB for {bqi + bni:.0f} intents ({per_intent:.0f} B each);"
      f" noisy run {nb / 1e6:.1f} MB for {nqi + nni:.0f} intents and {pending:.0f} pending"
      f" deliveries: {extra / pending:.0f} B per pending delivery beyond the intents")
PY
