#!/usr/bin/env python3
"""Minimal CQL readiness check, Python standard library only.

Speaks CQL native protocol v4 over one TCP connection:
OPTIONS -> SUPPORTED, STARTUP {"CQL_VERSION": ...} -> READY,
QUERY "SELECT release_version FROM system.local" (consistency ONE) -> RESULT (Rows),
and prints the release_version. Exit 0 on success, 1 on any failure (reason on stderr).

With --cafile the connection is TLS, the node's certificate checked against that CA and the
address connected to. With --user the node's AUTHENTICATE is answered with SASL PLAIN
(AUTH_RESPONSE -> AUTH_SUCCESS); the password comes from $IPAY_CQL_PING_PASSWORD so that it
never shows on a command line.

usage: cql_ping.py [HOST:PORT | HOST PORT | PORT] [--timeout SECONDS] [--quiet]
                   [--cafile PEM] [--user NAME]
Default address: $IPAY_TEST_CQL_ADDR, else 127.0.0.1:9042.
"""

import argparse
import os
import socket
import ssl
import struct
import sys

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_OPTIONS, OP_SUPPORTED = 0x05, 0x06
OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0F, 0x10
OP_QUERY, OP_RESULT = 0x07, 0x08
CONSISTENCY_ONE = 0x0001
RESULT_ROWS = 0x0002


class CqlError(Exception):
    pass


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise CqlError("truncated frame body")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8", "replace")

    def bytes_(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def string_list(self):
        return [self.string() for _ in range(self.short())]

    def string_multimap(self):
        return {self.string(): self.string_list() for _ in range(self.short())}

    def option(self):
        """Skip one [option] type descriptor; return its id."""
        kind = self.short()
        if kind == 0x0000:  # custom
            self.string()
        elif kind in (0x0020, 0x0022):  # list, set
            self.option()
        elif kind == 0x0021:  # map
            self.option()
            self.option()
        elif kind == 0x0030:  # UDT
            self.string()
            self.string()
            for _ in range(self.short()):
                self.string()
                self.option()
        elif kind == 0x0031:  # tuple
            for _ in range(self.short()):
                self.option()
        return kind


def enc_string(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def enc_long_string(s):
    b = s.encode("utf-8")
    return struct.pack(">i", len(b)) + b


def enc_string_map(m):
    out = struct.pack(">H", len(m))
    for k, v in m.items():
        out += enc_string(k) + enc_string(v)
    return out


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise CqlError("connection closed by server")
        buf += chunk
    return buf


def request(sock, stream, opcode, body=b""):
    sock.sendall(struct.pack(">BBhBi", VERSION, 0, stream, opcode, len(body)) + body)
    version, flags, rstream, ropcode, length = struct.unpack(">BBhBi", recv_exact(sock, 9))
    if version & 0x7F != VERSION or not version & 0x80:
        raise CqlError("unexpected response version byte 0x%02x" % version)
    body = recv_exact(sock, length)
    if flags & 0x01:
        raise CqlError("server sent a compressed frame; none was asked for")
    # Optional prefixes, in the order the server writes them: tracing id, warnings, payload.
    if flags & 0x02:  # tracing id [uuid]
        body = body[16:]
    if flags & 0x08:  # warnings [string list]
        r = Reader(body)
        r.string_list()
        body = body[r.pos:]
    if flags & 0x04:  # custom payload precedes the body
        r = Reader(body)
        for _ in range(r.short()):
            r.string()
            r.bytes_()
        body = body[r.pos:]
    if rstream != stream:
        raise CqlError("response for stream %d, expected %d" % (rstream, stream))
    if ropcode == OP_ERROR:
        r = Reader(body)
        code = r.int()
        raise CqlError("server error 0x%04x: %s" % (code, r.string()))
    return ropcode, body


def connect(host, port, timeout, cafile):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    if not cafile:
        return sock
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx.wrap_socket(sock, server_hostname=host)


def login(sock, user):
    if user is None:
        raise CqlError("the node asks for a login (AUTHENTICATE); pass --user")
    password = os.environ.get("IPAY_CQL_PING_PASSWORD", "")
    token = b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
    op, _ = request(sock, 4, OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token)
    if op != OP_AUTH_SUCCESS:
        raise CqlError("AUTH_RESPONSE answered with opcode 0x%02x, expected AUTH_SUCCESS" % op)


def ping(host, port, timeout, cafile=None, user=None):
    with connect(host, port, timeout, cafile) as sock:
        op, body = request(sock, 1, OP_OPTIONS)
        if op != OP_SUPPORTED:
            raise CqlError("OPTIONS answered with opcode 0x%02x, expected SUPPORTED" % op)
        supported = Reader(body).string_multimap()
        cql_version = (supported.get("CQL_VERSION") or ["3.0.0"])[0]

        op, _ = request(sock, 2, OP_STARTUP, enc_string_map({"CQL_VERSION": cql_version}))
        if op == OP_AUTHENTICATE:
            login(sock, user)
        elif op != OP_READY:
            raise CqlError("STARTUP answered with opcode 0x%02x, expected READY "
                           "(authentication required?)" % op)

        query = "SELECT release_version FROM system.local"
        body = enc_long_string(query) + struct.pack(">HB", CONSISTENCY_ONE, 0)
        op, body = request(sock, 3, OP_QUERY, body)
        if op != OP_RESULT:
            raise CqlError("QUERY answered with opcode 0x%02x, expected RESULT" % op)
        r = Reader(body)
        kind = r.int()
        if kind != RESULT_ROWS:
            raise CqlError("RESULT kind %d, expected Rows" % kind)
        flags, ncols = r.int(), r.int()
        global_spec = flags & 0x0001
        if flags & 0x0002:
            r.bytes_()  # paging state
        if global_spec:
            r.string()
            r.string()
        if not flags & 0x0004:
            for _ in range(ncols):
                if not global_spec:
                    r.string()
                    r.string()
                r.string()
                r.option()
        nrows = r.int()
        if nrows < 1 or ncols < 1:
            raise CqlError("system.local returned no row")
        cell = r.bytes_()
        return "" if cell is None else cell.decode("utf-8", "replace")


def parse_addr(args):
    if not args:
        args = [os.environ.get("IPAY_TEST_CQL_ADDR", "127.0.0.1:9042")]
    if len(args) == 2:
        return args[0], int(args[1])
    a = args[0]
    if a.isdigit():
        return "127.0.0.1", int(a)
    host, _, port = a.rpartition(":")
    return host or "127.0.0.1", int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("addr", nargs="*", help="HOST:PORT, HOST PORT or PORT")
    p.add_argument("--timeout", type=float, default=5.0, help="socket timeout in seconds")
    p.add_argument("--quiet", action="store_true", help="print nothing on failure")
    p.add_argument("--cafile", help="connect with TLS, trusting this CA (PEM)")
    p.add_argument("--user", help="log in as this user ($IPAY_CQL_PING_PASSWORD)")
    a = p.parse_args()
    try:
        host, port = parse_addr(a.addr)
        print(ping(host, port, a.timeout, a.cafile, a.user))
        return 0
    except (OSError, CqlError, ValueError, struct.error) as e:
        if not a.quiet:
            print("cql_ping: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
