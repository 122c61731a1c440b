#!/usr/bin/env bash
# Private Redis for integration tests: bound to 127.0.0.1 only, no persistence, not the
# system service. Usage: redis.sh {start|stop|status|env} [tls]
#
# `tls` selects a second, separate instance that speaks only TLS (a throwaway CA and server
# certificate from tls_certs.sh; client certificates optional) and requires a password: the
# TLS/auth tests' server. Its env prints IPAY_TEST_REDIS_TLS_URL (rediss://:PASSWORD@…),
# IPAY_TEST_REDIS_TLS_CA and the directory with the test certificates, IPAY_TEST_TLS_DIR.
#
#   IPAY_REDIS_PORT      port to use (default: a free port picked at start, then kept in
#                        STATE/port while the instance runs)
#   IPAY_SERVICES_DIR    state root (default: REPO/target/services); state in .../redis/
#   IPAY_REDIS_START_TIMEOUT  seconds to wait for PONG (default 30)
#
# Idempotent: start on a running, answering instance does nothing; stop on a stopped one
# does nothing. Only the process in our pidfile is ever signalled.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
VARIANT="${2:-}"
case "$VARIANT" in "" | tls) ;; *) echo "usage: $0 {start|stop|status|env} [tls]" >&2; exit 2 ;; esac
STATE="${IPAY_SERVICES_DIR:-$REPO/target/services}/redis${VARIANT:+-$VARIANT}"
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
# Test certificates, shared with cassandra.sh's tls variant (one CA for both).
CERTS="${IPAY_SERVICES_DIR:-$REPO/target/services}/tls-certs"
case "$CERTS" in /*) ;; *) CERTS="$PWD/$CERTS" ;; esac
PASSFILE="$STATE/password"
PIDFILE="$STATE/redis.pid"
PORTFILE="$STATE/port"
LOGFILE="$STATE/redis.log"
LOCKFILE="$STATE/.lock"
START_TIMEOUT="${IPAY_REDIS_START_TIMEOUT:-30}"

say() { echo "redis.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { echo "usage: $0 {start|stop|status|env} [tls]" >&2; exit 2; }

# True if pid exists and is not a zombie (our daemons are reparented to PID 1, which may
# reap them late; kill -0 alone would report a dead server as alive).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)"
  [ -n "$st" ] && [ "$st" != Z ]
}

# pid from our pidfile if that process is alive and is a redis-server; else nothing.
our_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [ -n "$pid" ] || return 1
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'redis-server' || return 1
  echo "$pid"
}

our_port() {
  [ -f "$PORTFILE" ] || return 1
  local port
  port="$(tr -dc '0-9' <"$PORTFILE")"
  [ -n "$port" ] || return 1
  echo "$port"
}

answers() { # port
  if [ -n "$VARIANT" ]; then
    [ -s "$PASSFILE" ] || return 1
    [ "$(REDISCLI_AUTH="$(cat "$PASSFILE")" redis-cli --tls --cacert "$CERTS/ca.pem" \
      -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
  else
    [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
  fi
}

is_running() {
  local port
  our_pid >/dev/null && port="$(our_port)" && command -v redis-cli >/dev/null 2>&1 \
    && answers "$port"
}

free_port() {
  python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ensure_installed() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return 0
  fi
  say "redis-server not found; installing Debian's redis-server package"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install redis-server by hand"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
}

# The `tls` variant's settings, written to a config file (mode 0600) so that the password
# never appears on a command line: TLS only, on the given port, with a password.
write_tls_config() { # port; prints the file's path
  "$SCRIPT_DIR/tls_certs.sh" "$CERTS" || die "cannot make test certificates in $CERTS"
  [ -s "$PASSFILE" ] || (umask 077 && openssl rand -hex 16 >"$PASSFILE")
  local conf="$STATE/redis-tls.conf"
  (
    umask 077
    cat >"$conf" <<CONF
port 0
tls-port $1
tls-cert-file $CERTS/server.pem
tls-key-file $CERTS/server.key
tls-ca-cert-file $CERTS/ca.pem
tls-auth-clients optional
requirepass $(cat "$PASSFILE")
CONF
  )
  echo "$conf"
}

log_tail() {
  if [ -f "$LOGFILE" ]; then
    say "last lines of $LOGFILE:"
    tail -n 30 "$LOGFILE" >&2
  fi
}

cmd_start() {
  if is_running; then
    say "already running on 127.0.0.1:$(our_port) (pid $(our_pid))"
    return 0
  fi
  ensure_installed
  local pid
  # A stale or foreign pidfile: never signal it, just forget it.
  if ! our_pid >/dev/null; then rm -f "$PIDFILE"; fi
  if pid="$(our_pid)"; then
    die "pid $pid from $PIDFILE runs but does not answer PING; run '$0 stop' first"
  fi
  local port="${IPAY_REDIS_PORT:-}"
  [ -n "$port" ] || port="$(free_port)"
  : >"$LOGFILE"
  local args=(--port "$port")
  if [ -n "$VARIANT" ]; then
    local conf
    conf="$(write_tls_config "$port")" || die "cannot set up the TLS variant in $STATE"
    args=("$conf")
  fi
  redis-server "${args[@]}" \
    --bind 127.0.0.1 --protected-mode yes \
    --save '' --appendonly no \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$STATE" 9>&- \
    || { log_tail; die "redis-server failed to launch"; }
  echo "$port" >"$PORTFILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until answers "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      die "no PONG from 127.0.0.1:$port within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  # redis writes its pidfile right after daemonizing; it is there by now.
  our_pid >/dev/null || { log_tail; die "answers on $port but $PIDFILE names no redis-server"; }
  say "started on 127.0.0.1:$port (pid $(our_pid)); state in $STATE"
}

cmd_stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PIDFILE" "$PORTFILE"
    say "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "pid $pid ignored TERM for 15s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$PIDFILE" "$PORTFILE"
  say "stopped (pid $pid)"
}

cmd_status() {
  if is_running; then
    say "running on 127.0.0.1:$(our_port) (pid $(our_pid))"
    return 0
  fi
  say "not running"
  return 1
}

cmd_env() {
  is_running || die "not running; run '$0 start${VARIANT:+ $VARIANT}' first"
  if [ -n "$VARIANT" ]; then
    echo "export IPAY_TEST_REDIS_TLS_URL=rediss://:$(cat "$PASSFILE")@127.0.0.1:$(our_port)"
    echo "export IPAY_TEST_REDIS_TLS_CA=$CERTS/ca.pem"
    echo "export IPAY_TEST_TLS_DIR=$CERTS"
  else
    echo "export IPAY_TEST_REDIS_URL=redis://127.0.0.1:$(our_port)"
  fi
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
mkdir -p "$STATE"
# Serialise concurrent invocations (two test runs starting at once).
exec 9>"$LOCKFILE"
flock -w 120 9 || die "another redis.sh holds $LOCKFILE"
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
