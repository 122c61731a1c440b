#!/usr/bin/env bash
# The parcel-day replay with every piece in its own process: the release `ipay` server (one node
# on its own embedded data directory, or two cluster nodes on the project's Redis + Cassandra),
# the PSP simulator `psp-sim`, and `ipay-loadtest replay` (generator + webhook sink), all on free
# loopback ports. The replay creates its accounts over HTTP (--provision), runs, does its
# accounting, and everything is stopped again. While it runs, the server's resident memory and
# the load average are sampled once a second.
#
# Usage (from anywhere):
#   scripts/bench-replay.sh [replay arguments…]
#   MODE=cluster OUT=out/cluster scripts/bench-replay.sh --parcels-per-day 1260000 --compress 60m --duration 60s
# Arguments are passed to `ipay-loadtest replay` after the ones this script sets (--target,
# --sim, --provision, --admin-token, --setup-out, --plots, --json-out, --quiet); default
# `--parcels-per-day 1260000 --compress 60m --duration 30s` (350 lifecycles/s on a flat curve
# needs `--curve`; see docs/loadtest-replay.md).
#
# Environment:
#   MODE          embedded (default) or cluster (two nodes; needs scripts/services/redis.sh and
#                 cassandra.sh started, or IPAY_TEST_REDIS_URL and IPAY_TEST_CQL_ADDR exported;
#                 a fresh keyspace replay_<time> and Redis db $REDIS_DB)
#   OUT           output directory (default target/bench-replay/<mode>-<UTC time>): replay.json
#                 (the report), replay-*.svg|png (plots), rss.csv, summary.txt, setup.json, logs
#   NO_BUILD=1    build nothing; use the binaries already in target/release
#   MERCHANTS     merchant accounts to create (default 8)
#   DRIVERS       driver accounts to create (default 16)
#   REDIS_DB      cluster mode: Redis database index of the run (default 11)
# Exit status: the replay's (1 when its accounting fails), or 2 when a piece does not start.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

MODE="${MODE:-embedded}"
MERCHANTS="${MERCHANTS:-8}"
DRIVERS="${DRIVERS:-16}"
REDIS_DB="${REDIS_DB:-11}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/target/bench-replay/$MODE-$STAMP}"
if [[ $# -eq 0 ]]; then
    set -- --parcels-per-day 1260000 --compress 60m --duration 30s
fi

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 2
}

case "$MODE" in
embedded | cluster) ;;
*) die "MODE must be embedded or cluster, not $MODE" ;;
esac

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release"
if [[ "${NO_BUILD:-0}" != 1 ]]; then
    log "building release binaries (cargo build --release --workspace --bins)"
    cargo build --release --workspace --bins
fi
for b in ipay psp-sim ipay-loadtest; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing (run without NO_BUILD=1 to build it)"
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ipay-replay.XXXXXX")"
PIDS=()
SAMPLER=""
cleanup() {
    [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null || true
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for_line FILE REGEX: prints the first match of REGEX in FILE (waits up to 60 s).
wait_for_line() {
    local i line
    for ((i = 0; i < 600; i++)); do
        line="$(grep -Eo "$2" "$1" | head -n 1 || true)"
        if [[ -n "$line" ]]; then
            printf '%s\n' "$line"
            return 0
        fi
        sleep 0.1
    done
    cat "$1" >&2
    die "no line matching '$2' in $1"
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

ADMIN_TOKEN="replay-admin-$(random_hex 16)"

# 1. The PSP simulator.
"$BIN/psp-sim" --bind 127.0.0.1:0 >"$OUT/psp-sim.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
SIM_URL="$(wait_for_line "$OUT/psp-sim.log" 'http://127\.0\.0\.1:[0-9]+' | head -n 1)"
log "psp-sim on $SIM_URL"

# 2. The engine's configuration: channels pointed at the simulator, the sink on loopback
# allowed, limits that fit a load test (per-driver OTP rate, callback rates).
CONFIG="$WORK/ipay.toml"
cat >"$CONFIG" <<EOF
[server]
listen = "127.0.0.1:0"

[storage]
mode = "$MODE"
data_dir = "$WORK/data"

[webhooks]
allow_insecure_loopback = true

[lastmile.sessions]
channels = ["stripe", "multisafepay"]
driver_attempts_per_minute = 100000

[channels]
callback_rate_per_provider = 1000000
callback_rate_per_merchant = 1000000

[channels.endpoints]
stripe = "$SIM_URL/stripe"
multisafepay = "$SIM_URL/multisafepay"
EOF

ENGINE_ENV=(IPAY_ADMIN__TOKEN="$ADMIN_TOKEN")
NODES=1
if [[ "$MODE" == cluster ]]; then
    NODES=2
    # The test servers' addresses: from the environment when exported already (the shared
    # servers of another checkout), else from this checkout's service scripts.
    [[ -n "${IPAY_TEST_REDIS_URL:-}" ]] || eval "$("$ROOT/scripts/services/redis.sh" env || true)"
    [[ -n "${IPAY_TEST_CQL_ADDR:-}" ]] || eval "$("$ROOT/scripts/services/cassandra.sh" env || true)"
    [[ -n "${IPAY_TEST_REDIS_URL:-}" ]] || die "Redis is not running: scripts/services/redis.sh start"
    [[ -n "${IPAY_TEST_CQL_ADDR:-}" ]] || die "Cassandra is not running: scripts/services/cassandra.sh start"
    KEYSPACE="replay_$(date -u +%Y%m%d%H%M%S)_$(random_hex 2)"
    cat >>"$CONFIG" <<EOF

[cluster]
cql_contact_points = ["$IPAY_TEST_CQL_ADDR"]
keyspace = "$KEYSPACE"
redis_url = "$IPAY_TEST_REDIS_URL/$REDIS_DB"
EOF
    ENGINE_ENV+=(IPAY_CLUSTER__NODE_TOKEN="$(random_hex 16)"
        IPAY_CHANNELS__MASTER_KEY="$(head -c 32 /dev/urandom | base64)")
    log "cluster: keyspace $KEYSPACE on $IPAY_TEST_CQL_ADDR, Redis $IPAY_TEST_REDIS_URL/$REDIS_DB"
    env "${ENGINE_ENV[@]}" "$BIN/ipay" migrate --config "$CONFIG" >"$OUT/migrate.log" 2>&1 ||
        { cat "$OUT/migrate.log" >&2; die "ipay migrate failed"; }
fi

# 3. The engine node(s).
ENGINE_PIDS=()
TARGETS=()
for ((n = 0; n < NODES; n++)); do
    env "${ENGINE_ENV[@]}" "$BIN/ipay" serve --config "$CONFIG" >"$OUT/ipay-$n.log" 2>&1 &
    ENGINE_PIDS+=("$!")
    PIDS+=("$!")
    url="$(wait_for_line "$OUT/ipay-$n.log" 'listening on http://127\.0\.0\.1:[0-9]+')"
    TARGETS+=("${url#listening on }")
    log "ipay node $n on ${TARGETS[$n]} (pid ${ENGINE_PIDS[$n]})"
done
TARGET="$(IFS=,; printf '%s' "${TARGETS[*]}")"

# 4. Resident memory of every node and the load average, once a second.
sample() {
    local t0 now p rss
    t0="$(date +%s.%N)"
    printf 'elapsed_s,node,rss_kib,load1\n'
    while true; do
        now="$(date +%s.%N)"
        for ((p = 0; p < ${#ENGINE_PIDS[@]}; p++)); do
            rss="$(awk '/^VmRSS:/ {print $2}' "/proc/${ENGINE_PIDS[$p]}/status" 2>/dev/null || echo 0)"
            printf '%s,%d,%s,%s\n' "$(awk -v a="$now" -v b="$t0" 'BEGIN {printf "%.1f", a - b}')" \
                "$p" "${rss:-0}" "$(cut -d' ' -f1 /proc/loadavg)"
        done
        sleep 1
    done
}
sample >"$OUT/rss.csv" &
SAMPLER=$!

# 5. The replay.
log "replay against $TARGET: $*"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
set +e
"$BIN/ipay-loadtest" replay --target "$TARGET" --sim "$SIM_URL" \
    --provision "$MERCHANTS,$DRIVERS" --admin-token "$ADMIN_TOKEN" --setup-out "$OUT/setup.json" \
    --plots "$OUT" --json-out "$OUT/replay.json" --quiet "$@" | tee "$OUT/replay.txt"
STATUS=${PIPESTATUS[0]}
set -e
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=""

# 6. Stop everything (the engine cleanly, so a data directory would be complete).
for p in "${ENGINE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${ENGINE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
kill -INT "$SIM_PID" 2>/dev/null || true
wait "$SIM_PID" 2>/dev/null || true
PIDS=()

# 7. Summary: memory over the run and the load average around it.
python3 - "$OUT" "$MODE" "$LOAD_BEFORE" "$LOAD_AFTER" "$*" <<'PY' | tee "$OUT/summary.txt"
import csv, json, os, sys
out, mode, before, after, args = sys.argv[1:]
rows = list(csv.DictReader(open(os.path.join(out, "rss.csv"))))
print(f"mode {mode}; replay arguments: {args}")
print(f"load average (1/5/15 min) before {before}, after {after}")
loads = [float(r["load1"]) for r in rows]
if loads:
    print(f"1-min load average during the run: min {min(loads):.2f}, max {max(loads):.2f}")
for node in sorted({r["node"] for r in rows}):
    mib = [int(r["rss_kib"]) / 1024 for r in rows if r["node"] == node and int(r["rss_kib"]) > 0]
    if not mib:
        continue
    third = max(1, len(mib) // 3)
    print(f"node {node} RSS MiB: first {mib[0]:.0f}, max {max(mib):.0f}, last {mib[-1]:.0f}; "
          f"mean of first third {sum(mib[:third]) / third:.0f}, of last third "
          f"{sum(mib[-third:]) / third:.0f} ({len(mib)} samples)")
try:
    rep = json.load(open(os.path.join(out, "replay.json")))
except (OSError, ValueError):
    sys.exit(0)
a = rep["accounting"]
st = rep["stages"]
p99 = lambda s: st.get(s, {}).get("latency_ms", {}).get("p99", float("nan"))
print(f"lifecycles/s {rep['lifecycles_per_sec']:.1f} (delivered/s {rep['delivered_per_sec']:.1f}); "
      f"peak intended rate {rep['peak_rate']:.1f}/s")
print(f"generated {a['generated']}, delivered {a['delivered']}, known unpaid "
      f"{sum(a['known_unpaid'].values())}, lost {sum(a['lost'].values())}, not sent {a['not_sent']}")
print(f"HTTP 503 {a['http_503']} (without Retry-After {a['http_503_without_retry_after']}), "
      f"other 5xx {a['http_5xx'] - a['http_503']}, retried {a['retried']}, "
      f"transport errors {a['transport_errors']}, callbacks re-sent {a['callbacks_refused']}")
print(f"p99 ms: lifecycle {p99('lifecycle')}, callback -> webhook delivered {p99('webhook_delivered')}, "
      f"paid after callback {p99('paid_after_callback')}")
print(f"accounting {'OK' if a['ok'] else 'FAILED'}; money {'matches' if a['money_matches'] else 'DIFFERS'}")
PY
log "wrote $OUT"
exit "$STATUS"
