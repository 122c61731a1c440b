"""A loopback webhook receiver for the gateway's webhook tests.

It shares no code with the signer: signatures are checked with Python's own hmac module, using
the merchant spec's `verify_webhook` exactly as published, a check of every `v1` in
`X-ItPay-Signature`, and the Standard Webhooks scheme (key = base64 after `whsec_`, HMAC over
"{webhook-id}.{webhook-timestamp}.{body}", space-separated `v1,<base64>` entries).

Usage: python3 webhook_receiver.py   (prints "listening <port>" once ready)

Control (JSON over HTTP on the same port):
  POST /_config   {"secrets": [...], "rules": [...], "default_status": 200}
      a rule: {"path": "/x" | "type": "payment_intent.succeeded", "status": 500,
               "first_only": false, "delay_ms": 0, "retry_after": "120"}
  GET  /_received  every webhook received, with the verification results per secret.
"""

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify_webhook(payload: bytes, signature_header: str, secret: str) -> bool:
    # Signature format: "t={timestamp},v1={hex}"
    parts = dict(p.split("=") for p in signature_header.split(","))
    timestamp = parts["t"]
    expected_sig = parts["v1"]

    # Build signing payload: timestamp.payload
    signed_payload = f"{timestamp}.{payload.decode('utf-8')}".encode("utf-8")

    # Compute HMAC-SHA256
    computed = hmac.new(
        secret.encode("utf-8"),
        signed_payload,
        hashlib.sha256
    ).hexdigest()

    # Constant-time comparison
    return hmac.compare_digest(computed, expected_sig)


def any_v1_matches(payload: bytes, header: str, secret: str) -> bool:
    """Stripe-style: accept if any v1 in the header matches (what rotation relies on)."""
    items = [p.split("=", 1) for p in header.split(",")]
    ts = [v for k, v in items if k == "t"]
    if len(ts) != 1:
        return False
    signed = ts[0].encode() + b"." + payload
    want = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, want) for k, v in items)


def standard_verify(payload: bytes, msg_id: str, ts: str, header: str, secret: str) -> bool:
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{msg_id}.{ts}.".encode() + payload
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in header.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, want):
            return True
    return False


STATE = {"secrets": [], "rules": [], "default_status": 200}
RECEIVED = []
SEEN = set()
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body=b"{}", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_received":
            with LOCK:
                body = json.dumps(RECEIVED).encode()
            return self._reply(200, body)
        self._reply(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(n)
        if self.path == "/_config":
            with LOCK:
                STATE.update(json.loads(payload))
            return self._reply(200)
        h = self.headers
        sig = h.get("X-ItPay-Signature", "")
        results = {}
        for s in STATE["secrets"]:
            try:
                spec = verify_webhook(payload, sig, s)
            except Exception:
                spec = False
            results[s] = {
                "spec": spec,
                "any_v1": any_v1_matches(payload, sig, s),
                "standard": standard_verify(
                    payload,
                    h.get("webhook-id", ""),
                    h.get("webhook-timestamp", ""),
                    h.get("webhook-signature", ""),
                    s,
                ),
            }
        try:
            event = json.loads(payload)
        except ValueError:
            event = {}
        record = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in h.items()},
            "body": payload.decode("utf-8", "replace"),
            "verified": results,
            "received_at": time.time(),
        }
        status, delay, extra = STATE["default_status"], 0, []
        with LOCK:
            RECEIVED.append(record)
            for rule in STATE["rules"]:
                if "path" in rule and rule["path"] != self.path:
                    continue
                if "type" in rule and rule["type"] != event.get("type"):
                    continue
                key = (json.dumps(rule, sort_keys=True), event.get("id"))
                if rule.get("first_only") and key in SEEN:
                    continue
                SEEN.add(key)
                status = rule.get("status", 200)
                delay = rule.get("delay_ms", 0)
                if "retry_after" in rule:
                    extra.append(("Retry-After", rule["retry_after"]))
                break
        if delay:
            time.sleep(delay / 1000)
        try:
            self._reply(status, b'{"received": true}', extra)
        except OSError:
            pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
