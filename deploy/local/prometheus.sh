#!/usr/bin/env bash
# The local stack's Prometheus (opt-in: STACK_PROMETHEUS=1 deploy/local/stack.sh up), scraping
# every service instance every 5 s and evaluating the same alert rules the Kubernetes
# manifests ship (deploy/k8s/base/alerts.yaml, written out by deploy/monitoring/check-rules.sh).
#
#   prometheus.sh start STATE_DIR REPLICAS   start it for REPLICAS instances per service; one
#                                            running with that config and those rules is left
#                                            alone (its alerts' state lives in its memory)
#   prometheus.sh stop STATE_DIR
#   prometheus.sh status STATE_DIR           "running PID PORT" or "stopped"
#   prometheus.sh alerts                     the alerts firing or pending now, one per line
#
# Prometheus is Debian's `prometheus` package, installed on first use by
# deploy/monitoring/check-rules.sh (which stops and disables the package's own daemon). Config, rules, data and log live in
# STATE_DIR/prometheus; it listens on 127.0.0.1:$PROMETHEUS_PORT (default 9090).
#
# Locally there is no Kubernetes relabelling: `job` is the service's name (as the
# ServiceMonitor makes it), `instance` the instance's address, and there is no `namespace`
# (the rules group by it; an absent label is one empty group).
set -euo pipefail

readonly SCRIPT_NAME="prometheus"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly PORT="${PROMETHEUS_PORT:-9090}"
# Each service's first port; replica N listens 10*(N-1) above it (deploy/local/stack.sh).
readonly SERVICES=("users-api 8081" "concert-api 8082" "payment-api 8083" "batch 8084")

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

pid_of() {
    local pid
    pid="$(tr -dc '0-9' 2>/dev/null <"$1/prometheus/prometheus.pid")" || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == prometheus ]] \
        && echo "$pid"
}

write_config() {
    local dir=$1 replicas=$2 entry name port n targets
    {
        printf 'global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n'
        printf 'rule_files:\n  - alerts.rules.yaml\n'
        printf 'scrape_configs:\n'
        for entry in "${SERVICES[@]}"; do
            read -r name port <<<"$entry"
            targets=()
            for ((n = 0; n < replicas; n++)); do
                targets+=("'127.0.0.1:$((port + 10 * n))'")
            done
            printf '  - job_name: %s\n    static_configs:\n      - targets: [%s]\n' \
                "$name" "$(IFS=,; echo "${targets[*]}")"
        done
    } >"$dir/prometheus.yml"
}

cmd_stop() {
    local state=$1 pid i
    pid="$(pid_of "$state")" || { log "not running"; return 0; }
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    rm -f "$state/prometheus/prometheus.pid"
    log "stopped"
}

cmd_start() {
    local state=$1 replicas=$2 dir i pid
    dir="$state/prometheus"
    mkdir -p "$dir/data" "$dir/next"
    # It installs Debian's prometheus package when promtool is missing: prometheus comes with it.
    "$REPO_ROOT/deploy/monitoring/check-rules.sh" --rules-to "$dir/next/alerts.rules.yaml"
    command -v prometheus >/dev/null 2>&1 || die "prometheus is not installed (Debian's prometheus package)"
    write_config "$dir/next" "$replicas"
    if pid="$(pid_of "$state")" && cmp -s "$dir/next/prometheus.yml" "$dir/prometheus.yml" \
        && cmp -s "$dir/next/alerts.rules.yaml" "$dir/alerts.rules.yaml"; then
        log "already running (pid $pid) with this config and these rules; left alone"
        return
    fi
    cmd_stop "$state" >/dev/null
    mv "$dir/next/prometheus.yml" "$dir/next/alerts.rules.yaml" "$dir/"
    promtool check config "$dir/prometheus.yml" >/dev/null || die "promtool rejects $dir/prometheus.yml"
    setsid nohup prometheus \
        --config.file="$dir/prometheus.yml" \
        --storage.tsdb.path="$dir/data" \
        --storage.tsdb.retention.time=2d \
        --web.listen-address="127.0.0.1:$PORT" \
        </dev/null >"$dir/prometheus.log" 2>&1 &
    echo $! >"$dir/prometheus.pid"
    for ((i = 0; i < 150; i++)); do
        if curl -fsS "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1; then
            log "Prometheus on http://127.0.0.1:$PORT: $replicas instance(s) of each service every 5 s, the alerts of deploy/k8s/base/alerts.yaml (log: $dir/prometheus.log)"
            return
        fi
        kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null || { tail -5 "$dir/prometheus.log" >&2; die "Prometheus exited"; }
        sleep 0.2
    done
    die "Prometheus not ready on 127.0.0.1:$PORT after 30 s (log: $dir/prometheus.log)"
}

cmd_alerts() {
    curl -fsS "http://127.0.0.1:$PORT/api/v1/alerts" \
        | python3 -c 'import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")
    print(a["state"], a["labels"]["alertname"], labels)'
}

main() {
    local cmd="${1:-}"
    case $cmd in
        start) (($# == 3)) || die "usage: prometheus.sh start STATE_DIR REPLICAS"; cmd_start "$2" "$3" ;;
        stop) (($# == 2)) || die "usage: prometheus.sh stop STATE_DIR"; cmd_stop "$2" ;;
        status)
            (($# == 2)) || die "usage: prometheus.sh status STATE_DIR"
            local pid
            if pid="$(pid_of "$2")"; then echo "running $pid $PORT"; else echo "stopped"; fi
            ;;
        alerts) cmd_alerts ;;
        *) die "usage: prometheus.sh start STATE_DIR REPLICAS | stop STATE_DIR | status STATE_DIR | alerts" ;;
    esac
}

main "$@"
