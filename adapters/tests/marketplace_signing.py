#!/usr/bin/env python3
"""Independent signer for the marketplace request-signing schemes (stdlib only).

Reads one JSON object per line on stdin: {"scheme": "aliexpress"|"temu", "secret": str,
"path": str|null, "params": {name: value}} and prints one signature per line.

AliExpress (IOP): upper(hex(HMAC-SHA256(secret, path + concat(sorted name+value))))
Temu: upper(hex(MD5(secret + concat(sorted name+value) + secret))), values that are not
strings written as compact JSON.
"""
import hashlib
import hmac
import json
import sys


def text(v):
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def concat(params):
    return "".join(k + text(params[k]) for k in sorted(params, key=lambda k: k.encode()) if k != "sign")


for line in sys.stdin:
    req = json.loads(line)
    s = concat(req["params"])
    if req["scheme"] == "aliexpress":
        msg = (req.get("path") or "") + s
        sig = hmac.new(req["secret"].encode(), msg.encode(), hashlib.sha256).hexdigest()
    else:
        sig = hashlib.md5((req["secret"] + s + req["secret"]).encode()).hexdigest()
    print(sig.upper())
