#!/usr/bin/env bash
# Scale figures of the embedded engine (release binaries): RSS growth per pending (live)
# intent, then disk per intent and RSS after COUNT creates with sessions passivated, and the
# restart after `kill -9` until /readyz is 200.
#
# Usage (from the repo root, release binaries built):  scripts/bench-scale.sh
# Environment:
#   COUNT        creates of the passivated phase           (default 1000000)
#   LIVE_COUNT   creates of the live-sessions phase         (default 200000)
#   CONNECTIONS  keep-alive connections of the load         (default 64)
#   CHUNK        length of one load run; runs repeat until the count is reached (default 10s)
# Each phase uses a fresh data dir, one merchant and one sandbox service; the creates carry a
# unique Idempotency-Key each (so the disk figure includes the idempotency records).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

COUNT="${COUNT:-1000000}"
LIVE_COUNT="${LIVE_COUNT:-200000}"
CONNECTIONS="${CONNECTIONS:-64}"
CHUNK="${CHUNK:-10s}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

BIN="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release"
[[ -x "$BIN/ipay" && -x "$BIN/ipay-loadtest" ]] || die "build the release binaries first"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ipay-scale.XXXXXX")"
ENGINE_PID=""
cleanup() {
    [[ -n "$ENGINE_PID" ]] && kill -KILL "$ENGINE_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$ENGINE_PID/status"; }

# Starts `ipay serve` on data dir $1 and prints nothing; sets ENGINE_PID and ENGINE_URL.
start_engine() {
    local i url
    "$BIN/ipay" serve --data-dir "$1" --listen 127.0.0.1:0 >"$WORK/engine.log" 2>&1 &
    ENGINE_PID=$!
    for ((i = 0; i < 600; i++)); do
        url="$(grep -Eo 'listening on http://127\.0\.0\.1:[0-9]+' "$WORK/engine.log" | head -n 1 || true)"
        [[ -n "$url" ]] && { ENGINE_URL="${url#listening on }"; return 0; }
        kill -0 "$ENGINE_PID" 2>/dev/null || { cat "$WORK/engine.log" >&2; die "ipay serve exited"; }
        sleep 0.05
    done
    die "ipay serve did not start within 30 s"
}

# Fresh data dir $1 with one merchant and an active sandbox service; sets KEY and SERVICE_ID.
setup() {
    "$BIN/ipay" merchants create --name scale --data-dir "$1" --json >"$WORK/merchant.json"
    KEY="$(json_field test_secret_key <"$WORK/merchant.json")"
    start_engine "$1"
    SERVICE_ID="$(curl -sS -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        --data-binary '{"name":"scale","accepted_channels":["sandbox"]}' "$ENGINE_URL/v1/services" |
        json_field id)"
    curl -sS -f -o /dev/null -X PATCH -H "Authorization: Bearer $KEY" \
        "$ENGINE_URL/v1/services/$SERVICE_ID/activate"
}

# Creates at least $1 intents in closed-loop runs of CHUNK; prints how many were created.
create_n() {
    local want="$1" done=0 n
    while ((done < want)); do
        "$BIN/ipay-loadtest" create-intents --target "$ENGINE_URL" --key "$KEY" \
            --service-id "$SERVICE_ID" --connections "$CONNECTIONS" --duration "$CHUNK" \
            --warmup 0s --idempotency --json >"$WORK/chunk.json"
        n="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status_counts"].get("201", 0))' "$WORK/chunk.json")"
        done=$((done + n))
        log "created $done / $want"
    done
    echo "$done"
}

metric() {
    curl -sS "$ENGINE_URL/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

export IPAY_LIMITS__RATE_PER_KEY_PER_SEC=0 IPAY_LIMITS__RATE_PER_MERCHANT_PER_SEC=0

# --- phase 1: RSS growth per live (pending) intent ---------------------------------------
log "phase 1: $LIVE_COUNT creates with sessions kept live; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
export IPAY_SESSIONS__PASSIVATE_AFTER_MS=86400000
setup "$WORK/live"
RSS0="$(rss_kib)"
LIVE_DONE="$(create_n "$LIVE_COUNT")"
RSS1="$(rss_kib)"
LIVE="$(metric ipay_live_sessions)"
kill -KILL "$ENGINE_PID"; wait "$ENGINE_PID" 2>/dev/null || true; ENGINE_PID=""
echo "live phase: $LIVE_DONE creates, live sessions $LIVE, RSS $((RSS0 / 1024)) MiB -> $((RSS1 / 1024)) MiB," \
    "$(( (RSS1 - RSS0) * 1024 / LIVE_DONE )) bytes per pending intent"

# --- phase 2: COUNT creates, sessions passivated ------------------------------------------
log "phase 2: $COUNT creates, sessions passivated after 5 s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
export IPAY_SESSIONS__PASSIVATE_AFTER_MS=5000
setup "$WORK/big"
STARTED=$SECONDS
DONE="$(create_n "$COUNT")"
ELAPSED=$((SECONDS - STARTED))
for ((i = 0; i < 600; i++)); do
    [[ "$(metric ipay_live_sessions)" == 0 ]] && break
    sleep 0.1
done
RSS2="$(rss_kib)"
DISK_LIVE="$(du -sb "$WORK/big" | cut -f1)"
echo "passivated phase: $DONE creates in ${ELAPSED} s, live sessions $(metric ipay_live_sessions)," \
    "RSS $((RSS2 / 1024)) MiB, data dir $((DISK_LIVE / 1048576)) MiB" \
    "($((DISK_LIVE / DONE)) bytes per intent, journal included)"

# --- restart after kill -9 ----------------------------------------------------------------
kill -KILL "$ENGINE_PID"; wait "$ENGINE_PID" 2>/dev/null || true
T0="$(date +%s.%N)"
start_engine "$WORK/big"
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$ENGINE_URL/readyz")" == 200 ]]; do sleep 0.02; done
T1="$(date +%s.%N)"
echo "restart after kill -9 holding $DONE intents: $(python3 -c "print(f'{$T1 - $T0:.2f}')") s until /readyz 200"
DISK_AFTER="$(du -sb "$WORK/big" | cut -f1)"
echo "data dir after the restart: $((DISK_AFTER / 1048576)) MiB ($((DISK_AFTER / DONE)) bytes per intent)"
curl -sS -o /dev/null -w 'an intent read back after the restart: %{http_code}\n' \
    -H "Authorization: Bearer $KEY" "$ENGINE_URL/v1/payment-intents?limit=1"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
