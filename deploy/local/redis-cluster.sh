#!/usr/bin/env bash
# A local Redis Cluster for tests: three masters, no replicas, on loopback.
#
#   redis-cluster.sh start    start the nodes and create the cluster; a no-op when a healthy
#                             cluster of these nodes already answers; a broken one (dead
#                             nodes, stale nodes.conf, half-created) is wiped and recreated
#   redis-cluster.sh stop     stop the nodes this script started (SIGTERM, SIGKILL after 10 s);
#                             the state dir is kept (logs), the next start recreates it
#   redis-cluster.sh status   per node: pid, PING, cluster_state, slots; exit 0 when healthy
#   redis-cluster.sh url      print the REDIS_URL that points the services at the cluster
#
# REDIS_URL for a cluster (the decision both sides follow): the scheme `redis+cluster://`
# followed by a comma-separated list of seed nodes host:port, e.g.
#
#     redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
#
# The Rust side (common::config::RedisConfig) treats that scheme as "cluster mode" and hands
# every host:port of the list to the cluster client as a seed node (`redis://host:port`
# each); a plain `redis://` or `rediss://` URL stays a single server. No database number:
# a cluster has database 0 only.
#
# Each node is `redis-server` from Debian's `redis-server` package (deploy/local/ensure-infra.sh
# installs it) with cluster-enabled yes, its own dir and nodes.conf, no persistence
# (appendonly no, save ""), cluster-node-timeout 5000, bound to 127.0.0.1 only (protected-mode
# no), daemonized with a pid file and a log file. The cluster bus of a node listens on its
# port + 10000 (17101..17103).
#
# Environment:
#   REDIS_CLUSTER_PORTS    the nodes' ports, default "7101 7102 7103" (at least 3: a cluster
#                          needs three masters)
#   REDIS_CLUSTER_DIR      state dir, default $STACK_DIR/redis-cluster (<repo root>/.stack/...)
#   REDIS_CLUSTER_TIMEOUT  seconds to wait for the nodes and for cluster_state:ok, default 30
#
# State dir layout:  <dir>/.redis-cluster  marker (the only kind of dir `start` ever wipes)
#                    <dir>/<port>/         redis.conf, nodes.conf, redis.pid, redis.log
#                    <dir>/create.out      output of the last `redis-cli --cluster create`
set -euo pipefail

readonly SCRIPT_NAME="redis-cluster"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

readonly HOST=127.0.0.1
readonly NODE_TIMEOUT_MS=5000
readonly TIMEOUT="${REDIS_CLUSTER_TIMEOUT:-30}"
readonly MARKER=".redis-cluster"
CLUSTER_DIR="${REDIS_CLUSTER_DIR:-${STACK_DIR:-$REPO_ROOT/.stack}/redis-cluster}"
read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7101 7102 7103}"
readonly PORTS

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

check_settings() {
    local port
    ((${#PORTS[@]} >= 3)) || die "REDIS_CLUSTER_PORTS='${PORTS[*]}': a cluster needs at least 3 masters"
    for port in "${PORTS[@]}"; do
        if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 55535)); then
            die "REDIS_CLUSTER_PORTS: '$port' is not a port (1..55535, its bus port is +10000)"
        fi
    done
    [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "REDIS_CLUSTER_TIMEOUT='$TIMEOUT': a number of seconds"
    [[ -n $CLUSTER_DIR && $CLUSTER_DIR != / ]] || die "REDIS_CLUSTER_DIR='$CLUSTER_DIR' is not a usable state dir"
}

require_redis() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        die "redis-server/redis-cli not found: run deploy/local/ensure-infra.sh first (it installs Debian's redis-server)"
    fi
}

# The dir as an absolute path (created first with --create); sets CLUSTER_DIR.
resolve_dir() {
    [[ ${1:-} == --create ]] && mkdir -p "$CLUSTER_DIR"
    if [[ -d $CLUSTER_DIR ]]; then
        CLUSTER_DIR="$(cd "$CLUSTER_DIR" && pwd)"
    fi
}

node_dir() { echo "$CLUSTER_DIR/$1"; }
pid_file() { echo "$CLUSTER_DIR/$1/redis.pid"; }
log_file() { echo "$CLUSTER_DIR/$1/redis.log"; }

url() {
    local port nodes=()
    for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
    local IFS=,
    echo "redis+cluster://${nodes[*]}"
}

# rcli PORT ARGS...: redis-cli against one node, no stdin, a short timeout.
rcli() {
    local port=$1
    shift
    timeout 3 redis-cli -h "$HOST" -p "$port" "$@" </dev/null 2>/dev/null
}

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

# node_pid PORT: the pid of the redis-server this script started for PORT (its pid file names
# a live redis-server process serving that port), else fails.
node_pid() {
    local port=$1 pid file
    file="$(pid_file "$port")"
    [[ -s $file ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n $pid ]] && is_alive "$pid" || return 1
    # The daemon's title is "redis-server 127.0.0.1:PORT [cluster]".
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "redis-server.*:$port([^0-9]|\$)" || return 1
    echo "$pid"
}

is_dead() { ! is_alive "$1"; }
port_closed() { ! port_open "$HOST" "$1"; }

pong() { [[ "$(rcli "$1" ping)" == PONG ]]; }

# info_field PORT FIELD: one field of CLUSTER INFO ("" when the node does not answer).
info_field() {
    rcli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"
}

# node_healthy PORT: the node answers, is in cluster mode, and sees the whole cluster of our
# nodes as ok with every slot assigned.
node_healthy() {
    local port=$1 info
    info="$(rcli "$port" cluster info | tr -d '\r')" || return 1
    grep -qx 'cluster_state:ok' <<<"$info" \
        && grep -qx 'cluster_slots_assigned:16384' <<<"$info" \
        && grep -qx "cluster_known_nodes:${#PORTS[@]}" <<<"$info" \
        && grep -qx "cluster_size:${#PORTS[@]}" <<<"$info"
}

# cluster_members PORT: the host:port of every node PORT knows, sorted.
cluster_members() {
    rcli "$1" cluster nodes | awk '{ sub(/@.*/, "", $2); print $2 }' | sort
}

expected_members() {
    local port
    for port in "${PORTS[@]}"; do echo "$HOST:$port"; done | sort
}

# cluster_healthy: every node is healthy and the cluster is made of exactly our nodes.
cluster_healthy() {
    local port
    for port in "${PORTS[@]}"; do
        node_healthy "$port" || return 1
    done
    [[ "$(cluster_members "${PORTS[0]}")" == "$(expected_members)" ]]
}

# all_ours_running: every node is a live redis-server started by this script and answers.
all_ours_running() {
    local port
    for port in "${PORTS[@]}"; do
        node_pid "$port" >/dev/null && pong "$port" || return 1
    done
}

# never_created: no node has a slot or knows another node (started, `create` not yet run).
never_created() {
    local port
    for port in "${PORTS[@]}"; do
        [[ "$(info_field "$port" cluster_slots_assigned)" == 0 ]] || return 1
        [[ "$(info_field "$port" cluster_known_nodes)" == 1 ]] || return 1
    done
}

# wait_until SECS COMMAND...: poll COMMAND every 0.2 s; fails after SECS.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# A launcher that closes every inherited fd above 2 before exec'ing redis-server: the daemon
# (daemonize yes forks it off) must not keep a caller's pipe or lock open (a test runner or a
# CI step would wait on it forever).
# shellcheck disable=SC2016 # expanded by the launcher bash, not here
readonly LAUNCHER='for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null; fi; done
exec "$@"'

# maxclients: redis-server wants maxclients + 32 descriptors; keep under this process's
# open-files limit (20000 here), so it never has to lower the setting itself.
max_clients() {
    local limit
    limit="$(ulimit -n)"
    if [[ $limit == unlimited ]] || ((limit >= 10032)); then
        echo 10000
    elif ((limit > 1056)); then
        echo $((limit - 32))
    else
        die "the open-files limit ($limit) is too low for redis-server (ulimit -n 10032 or more)"
    fi
}

write_config() {
    local port=$1 dir clients
    dir="$(node_dir "$port")"
    clients="$(max_clients)" || exit 1
    mkdir -p "$dir"
    cat >"$dir/redis.conf" <<EOF
# Written by deploy/local/redis-cluster.sh: one master of the local test cluster.
bind $HOST
port $port
protected-mode no
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
loglevel notice
dir $dir
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $NODE_TIMEOUT_MS
appendonly no
save ""
maxclients $clients
EOF
}

launch_node() {
    local port=$1 dir rc=0
    dir="$(node_dir "$port")"
    write_config "$port"
    rm -f "$dir/redis.pid"
    printf '\n=== %s: started by %s ===\n' "$(date -Is)" "$SCRIPT_NAME" >>"$dir/redis.log"
    bash -c "$LAUNCHER" redis-launcher redis-server "$dir/redis.conf" \
        </dev/null >"$dir/start.out" 2>&1 || rc=$?
    ((rc == 0)) || { cat "$dir/start.out" >&2; die "redis-server on port $port exited with $rc"; }
}

# stop_node PORT: stop our redis-server on PORT, if any.
stop_node() {
    local port=$1 pid
    pid="$(node_pid "$port")" || { rm -f "$(pid_file "$port")"; return 0; }
    kill -CONT "$pid" 2>/dev/null || true # a paused node cannot shut down
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 10 is_dead "$pid"; then
        warn "redis-server on port $port (pid $pid) still running after 10 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 is_dead "$pid" || die "redis-server pid $pid does not die"
    fi
    wait_until 5 port_closed "$port" || die "port $port still open after its redis-server (pid $pid) exited"
    rm -f "$(pid_file "$port")"
    log "stopped the node on port $port (pid $pid)"
}

# wipe: remove the state dir, which must be ours (the marker) or empty.
wipe() {
    if [[ -d $CLUSTER_DIR && ! -e $CLUSTER_DIR/$MARKER ]] \
        && [[ -n "$(find "$CLUSTER_DIR" -mindepth 1 -maxdepth 1 -print -quit)" ]]; then
        die "$CLUSTER_DIR is not empty and was not made by this script ($MARKER missing): not wiping it"
    fi
    rm -rf "$CLUSTER_DIR"
    mkdir -p "$CLUSTER_DIR"
    : >"$CLUSTER_DIR/$MARKER"
}

# launch_all: a fresh state dir and every node started, answering PING, none in a cluster yet.
launch_all() {
    local port pid
    for port in "${PORTS[@]}"; do stop_node "$port"; done
    for port in "${PORTS[@]}"; do
        if port_open "$HOST" "$port"; then
            die "$HOST:$port is taken by a process this script did not start (not a healthy cluster of ${PORTS[*]})"
        fi
        if port_open "$HOST" $((port + 10000)); then
            die "$HOST:$((port + 10000)) (the cluster bus of node $port) is taken by another process"
        fi
    done
    wipe
    for port in "${PORTS[@]}"; do launch_node "$port"; done
    for port in "${PORTS[@]}"; do
        if ! wait_until "$TIMEOUT" pong "$port"; then
            tail -n 20 "$(log_file "$port")" >&2 2>/dev/null || true
            die "the node on port $port does not answer PING after $TIMEOUT s (log: $(log_file "$port"))"
        fi
        pid="$(node_pid "$port")" || die "the node on port $port answers but its pid file $(pid_file "$port") does not name it"
        log "node $HOST:$port is up (pid $pid)"
    done
}

create_cluster() {
    local port nodes=() out="$CLUSTER_DIR/create.out"
    for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
    log "redis-cli --cluster create ${nodes[*]} --cluster-replicas 0 --cluster-yes"
    if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes </dev/null >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        die "redis-cli --cluster create failed (output: $out)"
    fi
}

wait_healthy() {
    if ! wait_until "$TIMEOUT" cluster_healthy; then
        status >&2 || true
        die "the cluster did not reach cluster_state:ok on every node within $TIMEOUT s (logs: $CLUSTER_DIR/<port>/redis.log)"
    fi
}

start() {
    require_redis
    resolve_dir --create
    if cluster_healthy; then
        log "a healthy cluster already answers on ${PORTS[*]}: nothing to do"
        log "REDIS_URL=$(url)"
        return 0
    fi
    if all_ours_running && never_created; then
        log "the nodes run but form no cluster yet"
    elif all_ours_running && wait_until 10 cluster_healthy; then
        # Just restarted or a node briefly flagged: the cluster converged on its own.
        log "the cluster is healthy again: nothing to do"
        log "REDIS_URL=$(url)"
        return 0
    else
        if [[ -e $CLUSTER_DIR/$MARKER ]]; then
            log "no healthy cluster on ${PORTS[*]}: wiping $CLUSTER_DIR and starting from scratch"
        else
            log "starting a new cluster on ${PORTS[*]} in $CLUSTER_DIR"
        fi
        launch_all
    fi
    create_cluster
    wait_healthy
    log "cluster is ready: cluster_state:ok on ${PORTS[*]}"
    log "REDIS_URL=$(url)"
}

stop() {
    local port
    resolve_dir
    for port in "${PORTS[@]}"; do
        if node_pid "$port" >/dev/null; then
            stop_node "$port"
        elif pong "$port"; then
            warn "a redis-server on port $port was not started by this script (no pid file in $CLUSTER_DIR): left alone"
        fi
    done
    log "stopped (state kept in $CLUSTER_DIR; the next start recreates the cluster)"
}

status() {
    local port pid state slots known rc=0
    require_redis
    resolve_dir
    printf '%-6s %-9s %-5s %-8s %-7s %s\n' port pid ping state known slots
    for port in "${PORTS[@]}"; do
        pid="$(node_pid "$port")" || pid="-"
        if pong "$port"; then
            state="$(info_field "$port" cluster_state)"
            known="$(info_field "$port" cluster_known_nodes)"
            # Slots this node serves: the ranges in its own line of CLUSTER NODES.
            slots="$(rcli "$port" cluster nodes | awk '$3 ~ /myself/ { s = ""; for (i = 9; i <= NF; i++) s = s (s ? "," : "") $i; print (s ? s : "none") }')"
            printf '%-6s %-9s %-5s %-8s %-7s %s\n' "$port" "$pid" PONG "${state:--}" "${known:--}" "${slots:--}"
        else
            printf '%-6s %-9s %-5s %-8s %-7s %s\n' "$port" "$pid" - - - -
        fi
    done
    if cluster_healthy; then
        log "healthy: ${#PORTS[@]} masters, cluster_state:ok, 16384 slots; REDIS_URL=$(url)"
    else
        log "not healthy (deploy/local/redis-cluster.sh start recreates it)"
        rc=1
    fi
    return "$rc"
}

main() {
    [[ $# -eq 1 ]] || usage
    check_settings
    case $1 in
        start) start ;;
        stop) stop ;;
        status) status ;;
        url) url ;;
        *) usage ;;
    esac
}

main "$@"
