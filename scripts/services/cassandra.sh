#!/usr/bin/env bash
# Single-node Apache Cassandra 5.0 for integration tests, run straight from the
# org.apache.cassandra:cassandra-all Maven artifact on Java 17 (no Docker, no tarball).
# Everything binds to 127.0.0.1. Usage: cassandra.sh {start|stop|status|env} [tls]
#
# `tls` selects a second, separate node whose clients must use TLS (client_encryption_options
# with a Java keystore made from tls_certs.sh's throwaway CA) and log in (PasswordAuthenticator,
# the built-in superuser `cassandra`/`cassandra`): the TLS/auth tests' server. It runs with a
# 1G heap unless IPAY_CASSANDRA_HEAP says otherwise. Its env prints IPAY_TEST_CQL_TLS_ADDR,
# IPAY_TEST_CQL_TLS_USER, IPAY_TEST_CQL_TLS_PASSWORD and IPAY_TEST_TLS_DIR (ca.pem, …).
#
#   IPAY_CASSANDRA_PORT     CQL (native transport) port (default: a free port picked at start)
#   IPAY_SERVICES_DIR       state root (default: REPO/target/services); state in .../cassandra/
#   IPAY_CASSANDRA_CACHE    generated pom + cached classpath (default: ~/.cache/ipay/cassandra);
#                           the jars themselves live in Maven's local repository (~/.m2)
#   IPAY_CASSANDRA_VERSION  cassandra-all version (default below)
#   IPAY_CASSANDRA_HEAP     -Xms/-Xmx (default 2G)
#   IPAY_CASSANDRA_JAMM     1 = add the jamm jar as -javaagent (default 0: not needed on 5.0)
#   IPAY_CASSANDRA_COMMITLOG_SYNC  periodic (default: writes are acknowledged before the commit
#                           log is synced; a kill -9 loses up to 10 s of them) | batch (sync
#                           before acknowledging: nothing acknowledged is lost on kill -9) |
#                           group (like batch, one sync per 10 ms window)
#   IPAY_CASSANDRA_UNSAFE_SYSTEM  1 (default) = -Dcassandra.unsafesystem=true: faster schema
#                           changes, but system tables (the schema!) skip the commit log, so a
#                           kill -9 loses keyspaces not yet flushed; 0 = durable schema (for
#                           crash tests)
#   IPAY_CASSANDRA_START_TIMEOUT  seconds to wait for a CQL answer (default 150)
#   IPAY_CASSANDRA_STOP_TIMEOUT   seconds between TERM and KILL (default 30)
#   IPAY_CASSANDRA_JAVA     java binary (default: $JAVA_HOME/bin/java, else java on PATH);
#                           Cassandra 5.0 needs Java 11 or 17
#
# Data is kept across stop/start in STATE/data; delete STATE to start from scratch.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
# 5.0.9 was the newest 5.0.x in Maven Central when this was written (6.0 is alpha).
VERSION="${IPAY_CASSANDRA_VERSION:-5.0.9}"
VARIANT="${2:-}"
case "$VARIANT" in "" | tls) ;; *) echo "usage: $0 {start|stop|status|env} [tls]" >&2; exit 2 ;; esac
STATE="${IPAY_SERVICES_DIR:-$REPO/target/services}/cassandra${VARIANT:+-$VARIANT}"
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
# Test certificates, shared with redis.sh's tls variant (one CA for both).
CERTS="${IPAY_SERVICES_DIR:-$REPO/target/services}/tls-certs"
case "$CERTS" in /*) ;; *) CERTS="$PWD/$CERTS" ;; esac
# The tls variant's login: the superuser PasswordAuthenticator creates on first start.
TLS_USER=cassandra
TLS_PASSWORD=cassandra
CACHE="${IPAY_CASSANDRA_CACHE:-$HOME/.cache/ipay/cassandra}/$VERSION"
case "$CACHE" in /*) ;; *) CACHE="$PWD/$CACHE" ;; esac
CLASSPATH_FILE="$CACHE/classpath.txt"
PIDFILE="$STATE/cassandra.pid"
PORTFILE="$STATE/port"
LOGDIR="$STATE/logs"
SYSLOG="$LOGDIR/system.log"
OUTLOG="$LOGDIR/stdout.log"
LOCKFILE="$STATE/.lock"
if [ -n "$VARIANT" ]; then HEAP="${IPAY_CASSANDRA_HEAP:-1G}"; else HEAP="${IPAY_CASSANDRA_HEAP:-2G}"; fi
START_TIMEOUT="${IPAY_CASSANDRA_START_TIMEOUT:-150}"
STOP_TIMEOUT="${IPAY_CASSANDRA_STOP_TIMEOUT:-30}"
MAIN_CLASS=org.apache.cassandra.service.CassandraDaemon
READY_LINE="Starting listening for CQL clients"

say() { echo "cassandra.sh: $*" >&2; }
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

# pid from our pidfile if that process is alive and is a CassandraDaemon using our state dir.
our_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid cmd
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [ -n "$pid" ] || return 1
  alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$cmd" in
    *" -Dcassandra.storagedir=$STATE/data "*" $MAIN_CLASS "*) echo "$pid" ;;
    *) return 1 ;;
  esac
}

our_port() {
  [ -f "$PORTFILE" ] || return 1
  local port
  port="$(tr -dc '0-9' <"$PORTFILE")"
  [ -n "$port" ] || return 1
  echo "$port"
}

answers() { # port; prints release_version on success
  if [ -n "$VARIANT" ]; then
    IPAY_CQL_PING_PASSWORD="$TLS_PASSWORD" python3 "$SCRIPT_DIR/cql_ping.py" --quiet --timeout 5 \
      --cafile "$CERTS/ca.pem" --user "$TLS_USER" "127.0.0.1:$1"
  else
    python3 "$SCRIPT_DIR/cql_ping.py" --quiet --timeout 5 "127.0.0.1:$1"
  fi
}

is_running() {
  local port
  our_pid >/dev/null && port="$(our_port)" && answers "$port" >/dev/null
}

# Two distinct free ports on 127.0.0.1 (both sockets held open while choosing).
free_ports() {
  python3 -c 'import socket
socks = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()'
}

find_java() {
  local java="${IPAY_CASSANDRA_JAVA:-}"
  if [ -z "$java" ]; then
    if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then java="$JAVA_HOME/bin/java"; else java=java; fi
  fi
  command -v "$java" >/dev/null 2>&1 || die "java not found (Cassandra 5.0 needs Java 11 or 17)"
  local major
  major="$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  case "$major" in
    11 | 17) ;;
    *) die "$java is Java '${major:-?}'; Cassandra 5.0 needs Java 11 or 17 (set IPAY_CASSANDRA_JAVA)" ;;
  esac
  echo "$java"
}

# Resolve the classpath once with Maven; later starts reuse $CLASSPATH_FILE and need no network.
classpath_ok() {
  [ -s "$CLASSPATH_FILE" ] || return 1
  local jar
  while IFS= read -r jar; do
    [ -f "$jar" ] || return 1
  done < <(tr ':' '\n' <"$CLASSPATH_FILE")
}

resolve_classpath() {
  if classpath_ok; then
    say "reusing cached classpath $CLASSPATH_FILE"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch cassandra-all $VERSION)"
  mkdir -p "$CACHE"
  cat >"$CACHE/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/services/cassandra.sh: only used to resolve the classpath. -->
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ipay</groupId>
  <artifactId>cassandra-test-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.6.1</version>
      </plugin>
    </plugins>
  </build>
</project>
POM
  say "resolving org.apache.cassandra:cassandra-all:$VERSION with Maven (first run downloads jars)"
  local tmp="$CLASSPATH_FILE.tmp.$$"
  if ! mvn -B -q -f "$CACHE/pom.xml" dependency:build-classpath \
    -Dmdep.outputFile="$tmp" -Dmdep.includeScope=runtime >"$CACHE/mvn.log" 2>&1 9>&-; then
    tail -n 40 "$CACHE/mvn.log" >&2
    rm -f "$tmp"
    die "Maven could not resolve cassandra-all $VERSION (log: $CACHE/mvn.log)"
  fi
  mv "$tmp" "$CLASSPATH_FILE"
  classpath_ok || die "resolved classpath names missing jars: $CLASSPATH_FILE"
}

write_config() { # cql_port storage_port
  local sync
  case "${IPAY_CASSANDRA_COMMITLOG_SYNC:-periodic}" in
    periodic) sync=$'commitlog_sync: periodic\ncommitlog_sync_period: 10000ms' ;;
    batch) sync='commitlog_sync: batch' ;;
    group) sync=$'commitlog_sync: group\ncommitlog_sync_group_window: 10ms' ;;
    *) die "IPAY_CASSANDRA_COMMITLOG_SYNC must be periodic, batch or group" ;;
  esac
  cat >"$STATE/conf/cassandra.yaml" <<YAML
# Generated by scripts/services/cassandra.sh for local integration tests. Cassandra rejects
# unknown keys; sizes and durations use 4.1+ unit-suffixed names.
cluster_name: ipay-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $2
native_transport_port: $1
start_native_transport: true
$sync
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
# Every test keyspace prepares its own statements; the default cache (10 MiB with this heap)
# evicts them while a test still uses them once many keyspaces have run.
prepared_statements_cache_size: 64MiB
concurrent_compactors: 1
auto_snapshot: false
YAML
  if [ -n "$VARIANT" ]; then
    cat >>"$STATE/conf/cassandra.yaml" <<YAML
authenticator: PasswordAuthenticator
authorizer: AllowAllAuthorizer
client_encryption_options:
  enabled: true
  optional: false
  keystore: $CERTS/server.jks
  keystore_password: $(cat "$CERTS/store.pass")
  require_client_auth: false
YAML
  fi
  cat >"$STATE/conf/logback.xml" <<'XML'
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <append>false</append>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
XML
}

log_tail() {
  if [ -s "$SYSLOG" ] && grep -q '^ERROR' "$SYSLOG"; then
    say "ERROR lines in $SYSLOG:"
    grep '^ERROR' "$SYSLOG" | tail -n 10 >&2
  fi
  local f
  for f in "$SYSLOG" "$OUTLOG"; do
    if [ -s "$f" ]; then
      say "last lines of $f:"
      tail -n 20 "$f" >&2
    fi
  done
}

cmd_start() {
  if is_running; then
    say "already running on 127.0.0.1:$(our_port) (pid $(our_pid))"
    return 0
  fi
  local pid
  if pid="$(our_pid)"; then
    die "pid $pid from $PIDFILE runs but does not answer CQL; run '$0 stop' first"
  fi
  rm -f "$PIDFILE"
  local java
  java="$(find_java)"
  command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for the CQL check)"
  resolve_classpath
  local classpath
  classpath="$(cat "$CLASSPATH_FILE")"

  local cql_port storage_port picked
  picked="$(free_ports)"
  storage_port="${picked#* }"
  cql_port="${IPAY_CASSANDRA_PORT:-${picked%% *}}"
  [ "$cql_port" != "$storage_port" ] || storage_port="${picked%% *}"

  mkdir -p "$STATE/conf" "$STATE/data" "$LOGDIR"
  if [ -n "$VARIANT" ]; then
    "$SCRIPT_DIR/tls_certs.sh" "$CERTS" || die "cannot make test certificates in $CERTS"
  fi
  write_config "$cql_port" "$storage_port"
  if [ -f "$SYSLOG" ]; then mv -f "$SYSLOG" "$SYSLOG.1"; fi
  : >"$OUTLOG"

  local jvm=(
    -Xms"$HEAP" -Xmx"$HEAP" -Xss256k -XX:+UseG1GC -XX:+PerfDisableSharedMem
    -XX:+ExitOnOutOfMemoryError
    -Djava.net.preferIPv4Stack=true
    # From Cassandra's conf/jvm17-server.options: without these the JVM dies early.
    -Djdk.attach.allowAttachSelf=true
    --add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports=java.sql/java.sql=ALL-UNNAMED
    --add-exports=java.base/java.lang.ref=ALL-UNNAMED
    --add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens=java.base/java.lang.module=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
  )
  if [ "${IPAY_CASSANDRA_JAMM:-0}" = 1 ]; then
    local jamm
    jamm="$(tr ':' '\n' <"$CLASSPATH_FILE" | grep '/jamm-[^/]*\.jar$' | head -n1)"
    [ -n "$jamm" ] || die "no jamm jar in $CLASSPATH_FILE"
    jvm+=(-javaagent:"$jamm")
  fi
  jvm+=(
    -Dcassandra.config="file://$STATE/conf/cassandra.yaml"
    -Dlogback.configurationFile="file://$STATE/conf/logback.xml"
    -Dcassandra.storagedir="$STATE/data"
    -Dcassandra.logdir="$LOGDIR"
    -Dcassandra-foreground=yes
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.initial_token=0
    -Dcassandra.ring_delay_ms=1000
  )
  if [ -n "$VARIANT" ]; then
    # Create the default superuser at once instead of 10 s after start.
    jvm+=(-Dcassandra.superuser_setup_delay_ms=0)
  fi
  if [ "${IPAY_CASSANDRA_UNSAFE_SYSTEM:-1}" = 1 ]; then
    # Test node: no commit log / fsync for system tables (faster schema changes).
    jvm+=(-Dcassandra.unsafesystem=true)
  fi
  jvm+=(
    -cp "$classpath"
    "$MAIN_CLASS"
  )

  # New session (not killed with the caller's terminal); fd 9 (our lock) is not inherited.
  # setsid does not fork here (we are no process-group leader), so $! is the JVM's pid.
  setsid "$java" "${jvm[@]}" >"$OUTLOG" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$cql_port" >"$PORTFILE"
  echo "$storage_port" >"$STATE/storage_port"
  say "launched pid $pid (CQL 127.0.0.1:$cql_port, storage $storage_port); waiting up to ${START_TIMEOUT}s"

  local deadline=$((SECONDS + START_TIMEOUT)) started=$SECONDS release
  while :; do
    if ! alive "$pid"; then
      rm -f "$PIDFILE" "$PORTFILE"
      log_tail
      die "the JVM exited during startup (logs in $LOGDIR)"
    fi
    if grep -q "$READY_LINE" "$SYSLOG" 2>/dev/null && release="$(answers "$cql_port")"; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      die "no CQL answer on 127.0.0.1:$cql_port within ${START_TIMEOUT}s (pid $pid left running; '$0 stop' ends it)"
    fi
    sleep 0.5
  done
  our_pid >/dev/null || die "pid $pid answers CQL but is not recognised as our CassandraDaemon"
  say "Cassandra $release ready on 127.0.0.1:$cql_port after $((SECONDS - started))s (pid $pid); state in $STATE"
}

cmd_stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PIDFILE" "$PORTFILE" "$STATE/storage_port"
    say "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "pid $pid still alive ${STOP_TIMEOUT}s after TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      local kdeadline=$((SECONDS + 10))
      while alive "$pid" && [ "$SECONDS" -lt "$kdeadline" ]; do sleep 0.2; done
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDFILE" "$PORTFILE" "$STATE/storage_port"
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
    echo "export IPAY_TEST_CQL_TLS_ADDR=127.0.0.1:$(our_port)"
    echo "export IPAY_TEST_CQL_TLS_USER=$TLS_USER"
    echo "export IPAY_TEST_CQL_TLS_PASSWORD=$TLS_PASSWORD"
    echo "export IPAY_TEST_TLS_DIR=$CERTS"
  else
    echo "export IPAY_TEST_CQL_ADDR=127.0.0.1:$(our_port)"
  fi
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
mkdir -p "$STATE"
# Serialise concurrent invocations (two test runs starting at once).
exec 9>"$LOCKFILE"
flock -w 300 9 || die "another cassandra.sh holds $LOCKFILE"
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
