#!/usr/bin/env bash
# Throwaway TLS material for the test servers' TLS variants, made with openssl (and keytool for
# Cassandra's Java keystore). Usage: tls_certs.sh DIR
#
# Writes into DIR (once; an existing complete set is kept):
#   ca.pem, ca.key            a private test CA
#   server.pem, server.key    signed by it, for 127.0.0.1 and localhost (IP and DNS names)
#   client.pem, client.key    a client certificate signed by it (for mutual TLS)
#   other-ca.pem              an unrelated CA that signed nothing here (an "untrusted CA")
#   server.p12, server.jks    the server key and chain as PKCS#12 and Java keystore
#   store.pass                the keystores' password
# Everything is valid for 10 days and for tests only; a set expiring within a day is made anew
# (restart servers that still use the old one).
set -euo pipefail

DIR="${1:?usage: tls_certs.sh DIR}"
mkdir -p "$DIR"
cd "$DIR"
# Two servers' scripts may ask at once: one makes the set, the other waits and reuses it.
exec 8>"$DIR/.lock"
flock -w 60 8 || { echo "tls_certs.sh: $DIR/.lock is held" >&2; exit 1; }
# Kept while valid for another day; an older set (the state directory outlived it) is replaced.
if [ -s server.jks ] && [ -s client.pem ] && [ -s other-ca.pem ] \
  && openssl x509 -checkend 86400 -noout -in server.pem >/dev/null 2>&1; then
  exit 0
fi
command -v openssl >/dev/null 2>&1 || { echo "tls_certs.sh: openssl not found" >&2; exit 1; }
umask 077
DAYS=10
quiet() { "$@" >/dev/null 2>&1 || { echo "tls_certs.sh: failed: $*" >&2; "$@" >&2; exit 1; }; }

quiet openssl req -x509 -newkey rsa:2048 -nodes -days "$DAYS" -subj "/CN=ipay test CA" \
  -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
quiet openssl req -x509 -newkey rsa:2048 -nodes -days "$DAYS" -subj "/CN=ipay untrusted CA" \
  -keyout other-ca.key -out other-ca.pem -addext "basicConstraints=critical,CA:TRUE"

sign() { # name subject extensions
  quiet openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" >"$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$DAYS" \
    -out "$1.pem" -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
sign server "/CN=localhost" \
  "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
sign client "/CN=ipay test client" \
  "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"

openssl rand -hex 12 >store.pass
quiet openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name server \
  -passout "file:store.pass" -out server.p12
if command -v keytool >/dev/null 2>&1; then
  pass="$(cat store.pass)"
  rm -f server.jks
  quiet keytool -importkeystore -noprompt -srckeystore server.p12 -srcstoretype PKCS12 \
    -srcstorepass "$pass" -destkeystore server.jks -deststoretype JKS -deststorepass "$pass"
else
  # Java 9+ reads PKCS#12 keystores too; the .jks name is only a convention here.
  cp server.p12 server.jks
fi
# Readable by the servers we start as this user; the CA key is never needed again.
rm -f ca.key other-ca.key ca.srl
chmod 600 ./*.pem ./*.key ./*.p12 ./*.jks store.pass
