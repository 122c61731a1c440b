#!/usr/bin/env bash
# Contract test: runs schemathesis (pinned, in a venv under target/) with every check against
# /openapi.json of a fresh embedded `ipay serve` (temporary data directory, loopback, a free
# port, stopped at exit), authenticated with a test API key, the admin token and a last-mile
# JWT (each operation gets the credential its security scheme names; scripts/schemathesis.toml).
# Any failure exits non-zero. Part of scripts/test.sh.
#
# usage: scripts/contract.sh [IPAY_BINARY]     (default target/debug/ipay)
#   IPAY_CONTRACT_EXAMPLES  test cases per operation and phase (default 25; bounds the run time)
#   IPAY_CONTRACT_SEED      schemathesis seed (default 1; failures print theirs)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-target/debug/ipay}"
VERSION=4.32.5
VENV=target/contract-venv
EXAMPLES="${IPAY_CONTRACT_EXAMPLES:-25}"
SEED="${IPAY_CONTRACT_SEED:-1}"
ADMIN_TOKEN="adm_contract_$(date +%s)"

say() { echo "contract.sh: $*" >&2; }
[ -x "$BIN" ] || { say "$BIN not found; build it first (cargo build --workspace)"; exit 1; }

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $VERSION" ]; then
  say "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION"
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$BIN" merchants create --name Contract --json --data-dir "$tmp/data" >"$tmp/merchant.json"
# No outbound calls: no webhook dispatcher, and every PSP endpoint on a closed loopback port
# (a channel a generated request configures fails at once instead of reaching the internet).
IPAY_ADMIN__TOKEN="$ADMIN_TOKEN" IPAY_WEBHOOKS__DISPATCH=false \
  IPAY_CHANNELS__RETRY_DELAYS_MS='[]' \
  IPAY_CHANNELS__ENDPOINTS__ALIPAY=http://127.0.0.1:9/alipay \
  IPAY_CHANNELS__ENDPOINTS__WECHAT=http://127.0.0.1:9/wechat \
  IPAY_CHANNELS__ENDPOINTS__PROMPTPAY=http://127.0.0.1:9/promptpay \
  IPAY_CHANNELS__ENDPOINTS__STRIPE=http://127.0.0.1:9/stripe \
  IPAY_CHANNELS__ENDPOINTS__MULTISAFEPAY=http://127.0.0.1:9/multisafepay \
  RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  >"$tmp/serve.out" 2>"$tmp/serve.err" </dev/null &
server_pid=$!

base=""
for _ in $(seq 1 300); do
  base="$(grep -o 'http://[0-9.:]*' "$tmp/serve.out" 2>/dev/null | head -n1 || true)"
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.err" >&2; say "ipay serve exited"; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { cat "$tmp/serve.err" >&2; say "ipay serve printed no address"; exit 1; }

# Credentials: the merchant's test key, a spare key for the operations that revoke or rotate
# keys (so the run does not lock itself out), and a last-mile merchant account's JWT.
eval "$(BASE="$base" python3 - "$tmp/merchant.json" <<'PY'
import json, os, sys, urllib.request

base = os.environ["BASE"]
key = json.load(open(sys.argv[1]))["test_secret_key"]

def post(path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)

spare = post("/v1/api-keys", {"label": "contract spare"}, key)["id"]
jwt = post("/api/auth/register",
           {"email": "contract@example.com", "password": "contract-password-1", "name": "Contract"})["token"]
print("export IPAY_CONTRACT_API_KEY=%s" % key)
print("export IPAY_CONTRACT_SPARE_KEY_ID=%s" % spare)
print("export IPAY_CONTRACT_JWT=%s" % jwt)
PY
)"
export IPAY_CONTRACT_ADMIN_TOKEN="$ADMIN_TOKEN"

say "schemathesis $VERSION against $base/openapi.json ($EXAMPLES examples per operation, seed $SEED)"
started=$SECONDS
status=0
"$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml --no-color run \
  "$base/openapi.json" --max-examples "$EXAMPLES" --seed "$SEED" --workers 2 \
  || status=$?
say "finished in $((SECONDS - started)) s (exit $status)"
if [ "$status" -ne 0 ]; then
  say "server log (last lines):"
  tail -n 20 "$tmp/serve.err" >&2
fi
exit "$status"
