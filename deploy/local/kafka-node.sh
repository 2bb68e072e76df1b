#!/usr/bin/env bash
# One Apache Kafka node (KRaft, broker + controller in one process) on loopback.
#
#   kafka-node.sh install                 resolve the broker's jars into the cache (once)
#   kafka-node.sh start DIR PORT [HEAP]   format DIR once, start the node detached, wait
#   kafka-node.sh stop DIR [--kill]       SIGTERM (a clean shutdown), or SIGKILL
#   kafka-node.sh pid DIR                 print the pid of a running node, or fail
#
# The broker listens on 127.0.0.1:PORT, its controller on PORT+1. Topics and offsets live
# in DIR/data, so a restart keeps them. The jars come from Maven Central through Maven
# (`org.apache.kafka:kafka_2.13` and its runtime dependencies, log4j as the logging
# backend) into $KAFKA_CACHE_DIR, outside the repository. ensure-infra.sh starts the
# stack's node with this script; the test kit starts its private node with it too.
set -euo pipefail

readonly SCRIPT_NAME="kafka-node"
readonly KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
readonly LOG4J_VERSION="2.24.3"
CACHE_ROOT="${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing}"
readonly CACHE_ROOT
readonly LIBS_DIR="$CACHE_ROOT/kafka-$KAFKA_VERSION/libs"

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# Launcher for a detached daemon: `bash -c "$LAUNCHER" NAME PIDFILE CMD ARGS...` writes
# its own pid to PIDFILE, closes every inherited fd above 2 (so the daemon never holds a
# caller's pipe open: a test runner or CI would wait on it forever) and execs CMD.
# shellcheck disable=SC2016 # expanded by the launcher bash, not here
readonly LAUNCHER='echo $$ >"$1"; shift
for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null; fi; done
exec "$@"'

port_open() {
    # shellcheck disable=SC2016 # $1/$2 expand in the child bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

is_alive() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ $st != Z ]]
}

# install: the jars, resolved once. A marker file makes a half-finished download redo.
install() {
    [[ -f $LIBS_DIR/.complete ]] && return 0
    command -v java >/dev/null 2>&1 || die "java not found (deploy/local/ensure-infra.sh installs it)"
    command -v mvn >/dev/null 2>&1 || die "mvn not found (deploy/local/ensure-infra.sh installs it)"
    local work="$CACHE_ROOT/kafka-$KAFKA_VERSION"
    mkdir -p "$work"
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ticketing</groupId>
  <artifactId>kafka-node-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    log "resolving Apache Kafka $KAFKA_VERSION and its runtime dependencies with Maven into $LIBS_DIR"
    rm -rf "$LIBS_DIR"
    (cd "$work" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$LIBS_DIR" </dev/null >"$work/mvn.log" 2>&1) \
        || { tail -n 30 "$work/mvn.log" >&2; die "Maven could not resolve the Kafka jars (log: $work/mvn.log)"; }
    ls "$LIBS_DIR"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null 2>&1 || die "kafka_2.13-$KAFKA_VERSION.jar missing after resolution"
    touch "$LIBS_DIR/.complete"
    log "Kafka $KAFKA_VERSION: $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars, $(du -sh "$LIBS_DIR" | cut -f1)"
}

# java_args DIR: the JVM command line shared by the storage tool and the broker, in JAVA.
# Only the JIT's first tier (C1): on two shared cores the second (C2) spent more compiling the
# broker than it saved at a few hundred messages a second. Three flash sales each (after a
# warm-up sale, on a freshly started broker): the broker's CPU per purchase 0.33, 0.33 and
# 0.40 ms with C1 only, against 0.71, 0.48 and 0.53 ms with both tiers.
java_args() {
    JAVA=(java -Djava.awt.headless=true -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1
        "-Dlog4j2.configurationFile=$1/log4j2.properties" -cp "$LIBS_DIR/*")
}

# write_config DIR PORT: the settings of a single node. Replication 1 everywhere, no
# initial rebalance delay (a consumer group forms as soon as its members join), topics
# only created explicitly (the services create theirs; a deleted test topic must not come
# back because some client asked for its metadata), small indexes for many small topics,
# and a 16 MiB log cleaner buffer (only Kafka's own offsets and transaction topics are
# compacted here): the default 128 MiB is one array on the heap, and a restarted test node
# (256 MiB heap) holding many topics failed to allocate it and died (OutOfMemoryError).
write_config() {
    local dir=$1 port=$2 controller=$(($2 + 1))
    cat >"$dir/server.properties" <<EOF
# Written by deploy/local/kafka-node.sh; rewritten at every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.index.size.max.bytes=1048576
log.segment.bytes=67108864
log.retention.hours=48
log.cleaner.dedupe.buffer.size=16777216
num.network.threads=2
num.io.threads=4
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
EOF
}

node_pid() {
    local dir=$1 pid
    [[ -f $dir/kafka.pid ]] || return 1
    pid="$(cat "$dir/kafka.pid")"
    [[ $pid =~ ^[0-9]+$ ]] && is_alive "$pid" && grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    local dir=$1 port=$2 heap=${3:-512m}
    install
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if node_pid "$dir" >/dev/null; then
        log "node in $dir is already running (pid $(node_pid "$dir"))"
    else
        port_open 127.0.0.1 "$port" && die "127.0.0.1:$port is taken by another process"
        write_config "$dir" "$port"
        local JAVA
        java_args "$dir"
        if [[ ! -f $dir/data/meta.properties ]]; then
            local cluster_id
            cluster_id="$("${JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
            log "formatting $dir/data (cluster $cluster_id)"
            "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
                -c "$dir/server.properties" </dev/null >>"$dir/kafka.log" 2>&1 \
                || { tail -n 20 "$dir/kafka.log" >&2; die "formatting $dir/data failed"; }
        fi
        log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$port (controller $((port + 1))), log: $dir/kafka.log"
        printf '\n=== %s: started by %s ===\n' "$(date -Is)" "$SCRIPT_NAME" >>"$dir/kafka.log"
        # A pid file left by a node that died with its machine names a dead process: the
        # wait below would read it before the launcher writes the new one.
        rm -f "$dir/kafka.pid"
        # setsid + nohup: the node outlives this script, its terminal and the caller's
        # process group (a test run or a CI step).
        nohup setsid bash -c "$LAUNCHER" kafka-launcher "$dir/kafka.pid" \
            "${JAVA[@]}" "-Xms128m" "-Xmx$heap" kafka.Kafka "$dir/server.properties" \
            </dev/null >>"$dir/kafka.log" 2>&1 &
    fi
    local deadline=$((SECONDS + 60)) pid=""
    until port_open 127.0.0.1 "$port"; do
        [[ -z $pid && -s $dir/kafka.pid ]] && pid="$(cat "$dir/kafka.pid")"
        if [[ -n $pid ]] && ! is_alive "$pid"; then
            tail -n 30 "$dir/kafka.log" >&2 || true
            die "Kafka (pid $pid) exited during startup; log: $dir/kafka.log"
        fi
        ((SECONDS < deadline)) || { tail -n 30 "$dir/kafka.log" >&2; die "Kafka is not listening on $port after 60 s"; }
        sleep 0.2
    done
    log "Kafka is ready on 127.0.0.1:$port (pid $(cat "$dir/kafka.pid"))"
}

stop() {
    local dir=$1 signal=TERM pid
    [[ ${2:-} == --kill ]] && signal=KILL
    pid="$(node_pid "$dir")" || { log "no node running in $dir"; return 0; }
    kill -CONT "$pid" 2>/dev/null || true # a paused node cannot shut down
    kill -"$signal" "$pid"
    local deadline=$((SECONDS + 30))
    while is_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "Kafka (pid $pid) still running after 30 s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    # The main thread may be a zombie while the JVM's other threads still hold the broker's
    # sockets (tens of ms after a SIGKILL): a restart right now would find its port taken.
    while (($(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) > 1)); do
        sleep 0.05
    done
    rm -f "$dir/kafka.pid"
    log "Kafka (pid $pid) stopped ($signal)"
}

case "${1:-}" in
    install) install ;;
    start) [[ $# -ge 3 ]] || die "usage: kafka-node.sh start DIR PORT [HEAP]"; start "$2" "$3" "${4:-512m}" ;;
    stop) [[ $# -ge 2 ]] || die "usage: kafka-node.sh stop DIR [--kill]"; stop "$2" "${3:-}" ;;
    pid) [[ $# -ge 2 ]] || die "usage: kafka-node.sh pid DIR"; node_pid "$2" ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
