#!/usr/bin/env bash
# Run the whole ticketing platform locally, without containers.
#
#   stack.sh up            ensure infra, build release binaries and the web app, start every
#                          service instance that is not running (so it also restarts a killed one)
#   stack.sh down [--all]  stop the instances started by `up` (--all: + the Kafka broker)
#                          and the local Prometheus
# STACK_PROMETHEUS=1 (with `up`) also starts a Prometheus on 127.0.0.1:9090 scraping every
# instance with the alert rules of the Kubernetes manifests (deploy/local/prometheus.sh).
#   stack.sh status        state, pid and /health/ready code of everything (and whether
#                          users-api's stream listeners listen)
#   stack.sh logs [inst]   tail -f one log (users-api, ..., users-api-2, ..., kafka) or all logs
#
# STACK_REPLICAS=2 runs two instances of each service (users-api + users-api-2 on 8091, ...,
# batch + batch-2 on 8094) behind the gateway; the count is recorded in the state dir at `up`
# and kept by later `up`s until `down`.
# Each users-api instance also runs its stream listener (USERS_API_STREAM_PORT: only the
# waiting room's status streams, GET /api/queue/tokens/{token}/events) on 8085 (users-api-2:
# 8095), and the gateway sends the streams there (render.sh's USERS_STREAM_ADDR).
# USERS_API_STREAM_PORT= (set, empty) runs none: the streams stay on the main ports.
#
# See README.md beside this script for the state dir layout and env vars.
set -euo pipefail

readonly SCRIPT_NAME="stack"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

STATE_DIR="${STACK_DIR:-$REPO_ROOT/.stack}"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
readonly STATE_DIR
readonly PID_DIR="$STATE_DIR/pids" LOG_DIR="$STATE_DIR/logs"
readonly KAFKA_DIR="$STATE_DIR/kafka" KAFKA_LOG="$STATE_DIR/kafka/kafka.log"
# The services' binaries: this checkout's release build, or STACK_BIN_DIR (another build of
# the same services, e.g. bench/trace-cost.sh's build of an earlier commit; nothing is built
# then).
readonly BIN_DIR="${STACK_BIN_DIR:-$REPO_ROOT/target/release}"
readonly KAFKA_PORT="${KAFKA_PORT:-9092}"

readonly SERVICES=(users-api concert-api payment-api batch)
declare -rA PORTS=([users-api]=8081 [concert-api]=8082 [payment-api]=8083 [batch]=8084)
# The variable each service reads its port from (set for every instance it starts).
declare -rA PORT_VARS=([users-api]=USERS_API_PORT [concert-api]=CONCERT_API_PORT
    [payment-api]=PAYMENT_API_PORT [batch]=BATCH_PORT)
# users-api's second listener, for the waiting room's status streams alone, and its variable.
declare -rA STREAM_PORTS=([users-api]=8085)
declare -rA STREAM_PORT_VARS=([users-api]=USERS_API_STREAM_PORT)
# Replicas: instance N>1 of a service is "<svc>-N" on its port + 10*(N-1) (users-api-2: 8091;
# its stream port likewise: 8095).
readonly MAX_REPLICAS=2
readonly REPLICAS_FILE="$STATE_DIR/replicas"
# With several replicas the services reach concert-api through the gateway's internal
# listener (failover between its replicas) instead of one instance's port.
readonly INTERNAL_LISTEN_DEFAULT=127.0.0.1:8070
# Set by `up`: the replica count, and the internal listener's address ("" with one replica,
# unless GATEWAY_INTERNAL_LISTEN asks for it).
REPLICAS=1
INTERNAL_LISTEN=""

readonly READY_TIMEOUT="${STACK_READY_TIMEOUT:-60}"  # seconds, for `up`
readonly STOP_TIMEOUT="${STACK_STOP_TIMEOUT:-15}"    # seconds before SIGKILL, for `down`

# Launcher for detached daemons: `bash -c "$LAUNCHER" NAME PIDFILE CMD ARGS...`
# writes its own pid to PIDFILE, closes every inherited fd above 2 (so the
# daemon never holds a caller's pipe or lock open) and execs CMD: the pid file
# then holds the daemon's pid even when setsid had to fork.
# shellcheck disable=SC2016 # expanded by the launcher bash, not here
readonly LAUNCHER='echo $$ >"$1"; shift
for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null; fi; done
exec "$@"'

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: deploy/local/stack.sh <command>

  up              ensure PostgreSQL/Redis/Kafka (ensure-infra.sh), build the
                  release binaries and the web app (web/dist), start every
                  service instance that is not running (a killed one too), wait
                  until all answer GET /health/ready, start the gateway on :8080
                  (the app at /), create the admin (STACK_ADMIN_PASSWORD,
                  default admin-pass-local) and demo concerts (STACK_DEMO=0: none).
                  STACK_REPLICAS=2: two instances of each service (users-api-2
                  on 8091, concert-api-2 8092, payment-api-2 8093, batch-2
                  8094); the count is kept by later 'up's until 'down'.
                  users-api instances also serve the status streams on a
                  stream listener, 8085 (users-api-2: 8095), where the
                  gateway sends them; USERS_API_STREAM_PORT= (empty) runs
                  none and leaves the streams on the main ports.
                  STACK_PROMETHEUS=1: also a Prometheus on 127.0.0.1:9090 with
                  the manifests' alert rules (deploy/local/prometheus.sh).
                  STACK_BIN_DIR=DIR: run the services' binaries from DIR
                  instead of target/release (with STACK_SKIP_BUILD=1).
                  Every other variable set (e.g. OTEL_EXPORTER_OTLP_ENDPOINT)
                  reaches the services
  down [--all]    stop every instance started by 'up' (SIGTERM, SIGKILL after
                  ${STOP_TIMEOUT}s) and the Prometheus; --all also stops Kafka if
                  ensure-infra started it
  status          running/stopped, pid and /health/ready code per instance
  logs [instance] tail -n \${LOG_LINES:-100} -F an instance's log (or kafka), or all

state dir: $STATE_DIR
EOF
}

is_service() {
    local s
    for s in "${SERVICES[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

# An instance is a service's name (its first replica) or "<svc>-N" (replica N, 2..MAX_REPLICAS).
is_instance() {
    is_service "$1" && return 0
    [[ $1 =~ -([2-9])$ ]] && ((BASH_REMATCH[1] <= MAX_REPLICAS)) && is_service "${1%-*}"
}
# replica_of INSTANCE: N (1 for the bare name).
replica_of() {
    if ! is_service "$1" && [[ $1 =~ -([2-9])$ ]]; then echo "${BASH_REMATCH[1]}"; else echo 1; fi
}
# service_of INSTANCE: the service, i.e. the binary, it runs.
service_of() {
    if is_service "$1"; then echo "$1"; else echo "${1%-*}"; fi
}
# instances N: every instance of every service with N replicas each.
instances() {
    local svc n max="${1:-1}"
    for svc in "${SERVICES[@]}"; do
        echo "$svc"
        for ((n = 2; n <= max; n++)); do echo "$svc-$n"; done
    done
}

port_of() {
    local svc n
    svc="$(service_of "$1")"
    n="$(replica_of "$1")"
    echo $((PORTS[$svc] + 10 * (n - 1)))
}
# stream_port_of INSTANCE: its stream listener's port (USERS_API_STREAM_PORT; users-api-2:
# 8095); fails when its service has none, or when the caller turned them off
# (USERS_API_STREAM_PORT set and empty).
stream_port_of() {
    local svc n var
    svc="$(service_of "$1")"
    [[ -n ${STREAM_PORTS[$svc]:-} ]] || return 1
    var="${STREAM_PORT_VARS[$svc]}"
    if [[ -n ${!var+x} && -z ${!var} ]]; then
        return 1
    fi
    n="$(replica_of "$1")"
    echo $((STREAM_PORTS[$svc] + 10 * (n - 1)))
}
pid_file() { echo "$PID_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# The replica count: STACK_REPLICAS when set, else what the last `up` recorded in the state
# dir (kept until `down`), else 1.
recorded_replicas() {
    local n
    [[ -s $REPLICAS_FILE ]] || return 1
    n="$(tr -dc '0-9' <"$REPLICAS_FILE")" || return 1
    [[ $n =~ ^[1-9]$ ]] && ((n <= MAX_REPLICAS)) && echo "$n"
}
replica_count() {
    local n="${STACK_REPLICAS:-}"
    if [[ -z $n ]]; then
        recorded_replicas || echo 1
        return 0
    fi
    { [[ $n =~ ^[0-9]{1,3}$ ]] && ((10#$n >= 1 && 10#$n <= MAX_REPLICAS)); } ||
        die "STACK_REPLICAS=$n: must be 1..$MAX_REPLICAS"
    echo $((10#$n))
}

# is_alive PID: the process exists and is not a zombie (a dead child nobody
# reaped yet, possible when PID 1 of a container does not reap).
is_alive() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ $st != Z ]]
}

# exe_of PID: the binary a process runs, without the " (deleted)" suffix
# Linux adds once the file was replaced (e.g. by a rebuild).
exe_of() {
    local exe
    exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
    echo "${exe% (deleted)}"
}

# pid_runs PID BINARY_PATH: PID is alive and runs exactly that binary.
pid_runs() {
    local pid=$1 want=$2 exe
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    is_alive "$pid" || return 1
    exe="$(exe_of "$pid")" || return 1
    [[ $exe == "$want" ]]
}

read_pid() { [[ -s $1 ]] && tr -dc '0-9' <"$1"; }

# service_pid INSTANCE: prints the pid when INSTANCE runs from our pid file (its service's
# binary: concert-api-2 runs target/release/concert-api), else fails.
service_pid() {
    local pid
    pid="$(read_pid "$(pid_file "$1")")" || return 1
    pid_runs "$pid" "$BIN_DIR/$(service_of "$1")" || return 1
    echo "$pid"
}

# started_pid INSTANCE: prints the pid of our pid file when it runs the instance's service
# from any directory, else fails. `down` stops and `status` shows what `up` started whatever
# STACK_BIN_DIR says now, and `up` refuses to start over it: with service_pid's exact path, a
# stack started from another directory was taken for stale pid files, forgotten and left
# running on its ports.
started_pid() {
    local pid exe
    pid="$(read_pid "$(pid_file "$1")")" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && is_alive "$pid" || return 1
    exe="$(exe_of "$pid")" || return 1
    [[ ${exe##*/} == "$(service_of "$1")" ]] || return 1
    echo "$pid"
}

# pid_file_instances: the instances that have a pid file, whatever the replica count now.
pid_file_instances() {
    local f name
    for f in "$PID_DIR"/*.pid; do
        [[ -e $f ]] || continue
        name="$(basename "$f" .pid)"
        if is_instance "$name"; then echo "$name"; fi
    done
}

kafka_pid() { "$SCRIPT_DIR/kafka-node.sh" pid "$KAFKA_DIR" 2>/dev/null; }

port_open() {
    # shellcheck disable=SC2016 # $1/$2 expand in the child bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# http_code INSTANCE: HTTP status of GET /health/ready ("000" = no answer).
http_code() {
    local code
    code="$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$(port_of "$1")/health/ready" 2>/dev/null)" || true
    echo "${code:-000}"
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------

# The API gateway: nginx on 127.0.0.1:8080 in front of the services
# (deploy/gateway/nginx.conf.template), with its pid, config and logs under
# $STATE_DIR/gateway. Started after the services are ready, stopped before them.
GATEWAY_DIR="$STATE_DIR/gateway"

gateway_pid() {
    local pid
    pid="$(cat "$GATEWAY_DIR/nginx.pid" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# The API reference the gateway serves (GET /api/openapi.json, GET /api/docs): the merged
# document from the release build of apidoc, and swagger-ui-dist installed from the
# committed package-lock.json (`npm ci --ignore-scripts`: no install scripts, nothing fetched
# at run time). Without npm the page is a placeholder; the document is served either way.
build_api_reference() {
    local docs="$REPO_ROOT/deploy/gateway/docs"
    mkdir -p "$GATEWAY_DIR"
    [[ -x $REPO_ROOT/target/release/apidoc ]] || die "target/release/apidoc is missing (cargo build --release --bins)"
    "$REPO_ROOT/target/release/apidoc" >"$GATEWAY_DIR/openapi.json.new" || die "apidoc failed: the services' OpenAPI documents do not merge"
    mv "$GATEWAY_DIR/openapi.json.new" "$GATEWAY_DIR/openapi.json"
    if [[ $docs/node_modules/.package-lock.json -nt $docs/package-lock.json ]]; then
        return # installed from this lock file already
    fi
    if command -v npm >/dev/null 2>&1; then
        log "npm ci in deploy/gateway/docs (swagger-ui-dist, the /api/docs page's assets)"
        (cd "$docs" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error </dev/null) \
            || die "npm ci in $docs failed"
    else
        warn "npm is missing: /api/docs is a placeholder page (apt-get install -y npm, then up again)"
    fi
}

# The web app the gateway serves at / (web/): installed from the committed package-lock.json
# (`npm ci --ignore-scripts`: no install scripts, so Playwright never downloads a browser; the
# stack needs none) and built into web/dist, which render.sh copies into the gateway's state
# dir. Without npm, / is a page saying how to build it; the API is served either way.
build_web() {
    local web="$REPO_ROOT/web" out="$LOG_DIR/web-build.log"
    if ! command -v npm >/dev/null 2>&1; then
        warn "npm is missing: / is a placeholder page (install Node.js >= 20.19 with npm, then up again)"
        return
    fi
    if [[ ${STACK_SKIP_BUILD:-0} == 1 && -f $web/dist/index.html ]]; then
        log "STACK_SKIP_BUILD=1: serving web/dist as it is"
        return
    fi
    if [[ ! $web/node_modules/.package-lock.json -nt $web/package-lock.json ]]; then
        log "npm ci in web/ (the web app's dependencies)"
        (cd "$web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error </dev/null) \
            || die "npm ci in $web failed"
    fi
    log "npm run build in web/ (the web app, into web/dist; output in $out)"
    if ! (cd "$web" && npm run build </dev/null >"$out" 2>&1); then
        tail -n 30 "$out" >&2
        die "the web app does not build (Vite 8 needs Node.js >= 20.19; this is $(node --version 2>/dev/null)); see $out"
    fi
}

# upstream_addrs SVC: the comma-separated host:port list of SVC's instances (render.sh's
# *_API_ADDR: one upstream server each).
upstream_addrs() {
    local inst list=()
    for inst in $(instances "$REPLICAS"); do
        [[ $(service_of "$inst") == "$1" ]] && list+=("127.0.0.1:$(port_of "$inst")")
    done
    local IFS=,
    echo "${list[*]}"
}

# stream_addrs: render.sh's USERS_STREAM_ADDR, the stream listeners of every users-api
# instance; "" (the gateway then sends the status streams to the main ports, as every other
# users-api path) when they are turned off or one of them does not listen within 5 s of the
# instances being ready (a build without USERS_API_STREAM_PORT, e.g. STACK_BIN_DIR's, or an
# instance started before the stack set it).
stream_addrs() {
    local inst port list=() deadline=$((SECONDS + 5))
    for inst in $(instances "$REPLICAS"); do
        [[ $(service_of "$inst") == users-api ]] || continue
        port="$(stream_port_of "$inst")" || return 0
        until port_open 127.0.0.1 "$port"; do
            if ((SECONDS >= deadline)); then
                warn "$inst does not listen on its stream port $port (a build without USERS_API_STREAM_PORT?): the gateway sends the status streams to users-api's main port(s)"
                return 0
            fi
            sleep 0.2
        done
        list+=("127.0.0.1:$port")
    done
    local IFS=,
    echo "${list[*]}"
}

start_gateway() {
    command -v nginx >/dev/null 2>&1 || die "nginx is missing (deploy/local/ensure-infra.sh installs it)"
    build_api_reference
    local conf streams
    streams="$(stream_addrs)"
    # Every instance of a service is a server of its upstream (failover between them); the
    # status streams go to users-api's stream listeners (USERS_STREAM_ADDR). With several
    # replicas, the internal listener too: the services' CONCERT_API_URL.
    # Rendering also refreshes the document, the page's assets and the web app a running
    # gateway serves (nginx reads the files at each request: no reload needed).
    # Every local client (browser, curl, the load tool) is one address, 127.0.0.1: the cap on
    # requests in flight per address (256 in production) is raised to the gateway's
    # worker_connections, so a local load test is not turned away by it.
    conf="$(GATEWAY_OPENAPI="$GATEWAY_DIR/openapi.json" GATEWAY_WEB="$REPO_ROOT/web/dist" \
        GATEWAY_CONN_PER_ADDR="${GATEWAY_CONN_PER_ADDR:-4096}" \
        USERS_API_ADDR="$(upstream_addrs users-api)" USERS_STREAM_ADDR="$streams" \
        CONCERT_API_ADDR="$(upstream_addrs concert-api)" \
        PAYMENT_API_ADDR="$(upstream_addrs payment-api)" GATEWAY_INTERNAL_LISTEN="$INTERNAL_LISTEN" \
        "$REPO_ROOT/deploy/gateway/render.sh" "$GATEWAY_DIR")"
    if gateway_pid >/dev/null; then
        log "gateway already running (pid $(gateway_pid)); API reference and web app refreshed"
        return
    fi
    nginx -t -q -c "$conf" -p "$GATEWAY_DIR" || die "gateway config does not pass nginx -t"
    nginx -c "$conf" -p "$GATEWAY_DIR"
    local i
    for i in $(seq 1 50); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/api/concerts)" == 200 ]] && break
        sleep 0.2
    done
    log "gateway ready on http://127.0.0.1:8080 (pid $(gateway_pid)): the web app at /, the API under /api/"
    if [[ -n $streams ]]; then
        log "gateway: the status streams (GET /api/queue/tokens/{token}/events) go to users-api's stream listeners $streams"
    else
        log "gateway: the status streams (GET /api/queue/tokens/{token}/events) go to users-api's main port(s)"
    fi
    if [[ -n $INTERNAL_LISTEN ]]; then
        log "gateway internal listener on http://$INTERNAL_LISTEN: concert-api's /internal/** and GET /api/concerts/{id} (the services' CONCERT_API_URL)"
    fi
}

stop_gateway() {
    local pid
    if pid="$(gateway_pid)"; then
        kill -QUIT "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        log "gateway stopped"
    fi
}

# ---------------------------------------------------------------------------
# demo data
# ---------------------------------------------------------------------------

# The admin account of API.md (created, or its password reset, on every `up`) and, unless
# STACK_DEMO=0, demo concerts that each keep two upcoming 50-seat schedules open for booking,
# so a new user can walk the whole flow through the gateway right after `up`. Idempotent:
# concerts are found by title; schedules are added only when a concert has none available.
readonly GATEWAY_URL="http://127.0.0.1:8080"
readonly DEMO_CONCERTS=(
    "Demo: Aurora Nights|Aurora"
    "Demo: The Midnight Strings|The Midnight Strings"
    "Demo: Han River Jazz|Han River Quartet"
)
readonly DEMO_SEATS=50 DEMO_PRICE=50000

# gateway METHOD PATH [JSON]: the response body; fails (with the problem printed) on non-2xx.
gateway() {
    local args=(-sS -m 10 --fail-with-body -X "$1" -H 'Content-Type: application/json')
    [[ -n ${DEMO_TOKEN:-} ]] && args+=(-H "Authorization: Bearer $DEMO_TOKEN")
    [[ -n ${3:-} ]] && args+=(--data "$3")
    curl "${args[@]}" "$GATEWAY_URL$2"
}

# demo_concert_id TITLE: the id of the first concert with exactly that title, if any.
demo_concert_id() {
    local cursor="" page id
    while :; do
        page="$(gateway GET "/api/concerts?limit=100${cursor:+&cursor=$cursor}")" || return 1
        id="$(jq -r --arg t "$1" '[.items[] | select(.title == $t) | .id][0] // empty' <<<"$page")"
        [[ -n $id ]] && { echo "$id"; return 0; }
        cursor="$(jq -r '.next_cursor // empty' <<<"$page")"
        [[ -n $cursor ]] || return 0
    done
}

seed_demo() {
    local password="${STACK_ADMIN_PASSWORD:-admin-pass-local}"
    ADMIN_PASSWORD="$password" "$BIN_DIR/users-api" create-admin --username admin >>"$(log_file users-api)" 2>&1 ||
        die "users-api create-admin failed; see $(log_file users-api)"
    if [[ -n ${STACK_ADMIN_PASSWORD:-} ]]; then
        log "admin account: admin (password from STACK_ADMIN_PASSWORD)"
    else
        log "admin account: admin / admin-pass-local (set STACK_ADMIN_PASSWORD to choose another)"
    fi
    if [[ ${STACK_DEMO:-1} == 0 ]]; then
        log "STACK_DEMO=0: no demo concerts"
        return
    fi

    local login
    login="$(jq -nc --arg p "$password" '{username: "admin", password: $p}')"
    DEMO_TOKEN="$(gateway POST /api/sessions "$login" | jq -r .token)" || die "admin log-in through the gateway failed"
    local entry title performer id available body starts opens day
    opens="$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)"
    for entry in "${DEMO_CONCERTS[@]}"; do
        title=${entry%%|*} performer=${entry#*|}
        id="$(demo_concert_id "$title")" || die "cannot list concerts through the gateway"
        if [[ -z $id ]]; then
            body="$(jq -nc --arg t "$title" --arg p "$performer" '{title: $t, performer: $p}')"
            id="$(gateway POST /api/admin/concerts "$body" | jq -r .id)" || die "cannot create demo concert '$title'"
        fi
        available="$(gateway GET "/api/concerts/$id/schedules?available=true" | jq '.items | length')" ||
            die "cannot list the schedules of concert $id"
        if ((available == 0)); then
            for day in 30 31; do
                starts="$(date -u -d "+$day days" +%Y-%m-%dT19:00:00Z)"
                body="$(jq -nc --arg s "$starts" --arg o "$opens" --argjson n "$DEMO_SEATS" --argjson p "$DEMO_PRICE" \
                    '{starts_at: $s, booking_opens_at: $o, seat_count: $n, price: $p}')"
                gateway POST "/api/admin/concerts/$id/schedules" "$body" >/dev/null ||
                    die "cannot create a schedule for demo concert $id"
            done
            available=2
        fi
        log "demo concert $id '$title': $available upcoming schedule(s) of $DEMO_SEATS seats open for booking"
    done
    DEMO_TOKEN=""
}

export_defaults() {
    export USERS_DATABASE_URL="${USERS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ticketing_users}"
    export CONCERT_DATABASE_URL="${CONCERT_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ticketing_concert}"
    export PAYMENT_DATABASE_URL="${PAYMENT_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ticketing_payment}"
    export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
    export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:$KAFKA_PORT}"
    # The services share this machine's cores with each other and with PostgreSQL, Redis,
    # Kafka and nginx: one actix worker per two cores, not the service's default of one per
    # core. More workers than that only pass requests between threads; measured on 2 cores
    # (docs/BENCHMARKS.md, "What limits the figures"), one worker instead of two made every
    # scenario faster.
    export HTTP_WORKERS="${HTTP_WORKERS:-$((($(nproc) + 1) / 2))}"
    # The service credential of /internal/** (X-Internal-Token): one random token, made once
    # into the state dir (mode 600), shared by every service.
    if [[ ! -s $STATE_DIR/internal-token ]]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$STATE_DIR/internal-token")
    fi
    chmod 600 "$STATE_DIR/internal-token"
    export INTERNAL_API_TOKEN="${INTERNAL_API_TOKEN:-$(<"$STATE_DIR/internal-token")}"
    # batch's leader backs the three databases up there (docs/OPERATIONS.md, "Backups and
    # restore (local and small deployments)"); only batch reads it. BACKUP_DIR= (empty) turns
    # backups off.
    export BACKUP_DIR="${BACKUP_DIR-$STATE_DIR/backups}"
    # Several concert-api replicas: the services call it through the gateway's internal
    # listener (failover, as a Kubernetes Service), not one instance's port. They do not call
    # it while starting, so starting them before the gateway is fine.
    if [[ -n $INTERNAL_LISTEN ]] && ((REPLICAS > 1)); then
        export CONCERT_API_URL="${CONCERT_API_URL:-http://$INTERNAL_LISTEN}"
    fi
}

# start_service INSTANCE: runs its service's binary with its port variable set (users-api-2:
# target/release/users-api serve, USERS_API_PORT=8091, and its stream port,
# USERS_API_STREAM_PORT=8095), its own pid file and log.
start_service() {
    local inst=$1 svc bin port stream pidf log pid
    svc="$(service_of "$inst")"
    bin="$BIN_DIR/$svc"
    port="$(port_of "$inst")"
    stream="$(stream_port_of "$inst")" || stream=""
    pidf="$(pid_file "$inst")"
    log="$(log_file "$inst")"
    [[ -x $bin ]] || die "$bin not found: did the build produce it?"
    if port_open 127.0.0.1 "$port"; then
        die "port $port ($inst) is already in use by a process this script did not start; stop it first (see: ss -ltnp 'sport = :$port')"
    fi
    if [[ -n $stream ]] && port_open 127.0.0.1 "$stream"; then
        die "port $stream ($inst's stream listener) is already in use by a process this script did not start; stop it first (see: ss -ltnp 'sport = :$stream')"
    fi
    rm -f "$pidf"
    printf '\n=== %s: %s serve as %s, port %s%s (started by %s) ===\n' "$(date -Is)" "$svc" "$inst" "$port" \
        "${stream:+, stream port $stream}" "$SCRIPT_NAME" >>"$log"
    # setsid + nohup: own session, survives this script and its terminal.
    # The bash launcher writes its own pid and execs the service, so the pid
    # file holds the service's pid even when setsid has to fork.
    # The whole environment (defaults exported above + the caller's) passes on, plus the
    # instance's port (and stream port).
    (
        cd "$REPO_ROOT"
        export "${PORT_VARS[$svc]}=$port"
        if [[ -n $stream ]]; then export "${STREAM_PORT_VARS[$svc]}=$stream"; fi
        nohup setsid bash -c "$LAUNCHER" "$inst-launcher" \
            "$pidf" "$bin" serve </dev/null >>"$log" 2>&1 &
    )
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $pidf ]] && break
        sleep 0.1
    done
    pid="$(read_pid "$pidf")" || die "$inst did not write $pidf"
    log "started $inst (pid $pid, port $port${stream:+, stream port $stream}), log: $log"
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) svc pending still=() failed=()
    mapfile -t pending < <(instances "$REPLICAS")
    log "waiting up to ${READY_TIMEOUT}s for /health/ready of: ${pending[*]}"
    while ((${#pending[@]})); do
        still=()
        for svc in "${pending[@]}"; do
            if curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$(port_of "$svc")/health/ready" 2>/dev/null; then
                log "$svc is ready"
            elif ! service_pid "$svc" >/dev/null; then
                failed+=("$svc")
                warn "$svc is not running (it exited?)"
            else
                still+=("$svc")
            fi
        done
        pending=("${still[@]+"${still[@]}"}")
        ((${#failed[@]})) && break
        ((${#pending[@]})) || break
        if ((SECONDS >= deadline)); then
            failed+=("${pending[@]}")
            warn "timed out after ${READY_TIMEOUT}s waiting for: ${pending[*]}"
            break
        fi
        sleep 1
    done
    if ((${#failed[@]})); then
        for svc in "${failed[@]}"; do
            printf '\n[%s] ---- last 40 lines of %s ----\n' "$SCRIPT_NAME" "$(log_file "$svc")" >&2
            tail -n 40 "$(log_file "$svc")" >&2 2>/dev/null || true
        done
        die "not ready: ${failed[*]} (other services are left running; stop them with: deploy/local/stack.sh down)"
    fi
}

# running_replicas: when any instance (or the gateway) runs, the replica count of that stack:
# the recorded one, or more if a higher replica runs; fails when nothing runs.
running_replicas() {
    local inst n=0 any=0
    for inst in $(pid_file_instances); do
        if service_pid "$inst" >/dev/null; then
            any=1
            (($(replica_of "$inst") > n)) && n=$(replica_of "$inst")
        fi
    done
    gateway_pid >/dev/null && any=1
    ((any)) || return 1
    local recorded
    recorded="$(recorded_replicas)" || recorded=1
    ((recorded > n)) && n=$recorded
    echo "$n"
}

cmd_up() {
    command -v curl >/dev/null 2>&1 || die "curl is required for the readiness checks (apt-get install -y curl)"
    mkdir -p "$PID_DIR" "$LOG_DIR"
    # The replica count of a running stack cannot change: its services were started with
    # their CONCERT_API_URL and the gateway with its upstreams.
    REPLICAS="$(replica_count)"
    local running
    if running="$(running_replicas)" && ((running != REPLICAS)); then
        die "the running stack has $running instance(s) of each service, STACK_REPLICAS asks for $REPLICAS: 'deploy/local/stack.sh down' first"
    fi
    if ((REPLICAS > 1)); then
        INTERNAL_LISTEN="${GATEWAY_INTERNAL_LISTEN:-$INTERNAL_LISTEN_DEFAULT}"
    else
        INTERNAL_LISTEN="${GATEWAY_INTERNAL_LISTEN:-}"
    fi
    log "$REPLICAS instance(s) of each service (recorded in $REPLICAS_FILE: later 'up's keep it until 'down')"
    log "ensuring infrastructure"
    STACK_DIR="$STATE_DIR" "$SCRIPT_DIR/ensure-infra.sh"

    if [[ ${STACK_SKIP_BUILD:-0} == 1 ]]; then
        log "STACK_SKIP_BUILD=1: not building"
    else
        log "cargo build --release --bins"
        (cd "$REPO_ROOT" && cargo build --release --bins </dev/null)
    fi
    build_web

    echo "$REPLICAS" >"$REPLICAS_FILE"
    export_defaults
    local svc pid exe
    for svc in $(instances "$REPLICAS"); do
        if pid="$(service_pid "$svc")"; then
            log "$svc is already running (pid $pid); leaving it alone"
            exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
            if [[ $exe == *" (deleted)" ]]; then
                warn "$svc (pid $pid) runs a binary that was rebuilt since it started; 'stack.sh down && stack.sh up' to restart it"
            fi
        elif pid="$(started_pid "$svc")"; then
            die "$svc runs $(exe_of "$pid") (pid $pid), not $BIN_DIR/$(service_of "$svc"): 'deploy/local/stack.sh down' first"
        else
            if [[ -e $(pid_file "$svc") ]]; then
                log "removing stale pid file $(pid_file "$svc")"
                rm -f "$(pid_file "$svc")"
            fi
            start_service "$svc"
        fi
    done

    wait_ready
    start_gateway
    if [[ ${STACK_PROMETHEUS:-0} == 1 ]]; then
        "$SCRIPT_DIR/prometheus.sh" start "$STATE_DIR" "$REPLICAS"
    fi
    seed_demo

    log "all services are ready:"
    local stream
    for svc in $(instances "$REPLICAS"); do
        stream="$(stream_port_of "$svc")" || stream=""
        printf '[%s]   %-14s http://127.0.0.1:%s  (pid %s)%s\n' "$SCRIPT_NAME" "$svc" "$(port_of "$svc")" \
            "$(service_pid "$svc" || echo '?')" "${stream:+  status streams: http://127.0.0.1:$stream}"
    done
    if [[ -n $INTERNAL_LISTEN ]]; then
        log "services call concert-api at ${CONCERT_API_URL:-http://127.0.0.1:8082} (gateway internal listener: $INTERNAL_LISTEN)"
    fi
    log "infra: postgres 127.0.0.1:5432, redis 127.0.0.1:6379, kafka 127.0.0.1:$KAFKA_PORT"
    log "logs: $LOG_DIR (deploy/local/stack.sh logs [service]); stop: deploy/local/stack.sh down"
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------

# stop_pids NAME=PID...: SIGTERM all, wait up to STOP_TIMEOUT, SIGKILL leftovers.
stop_pids() {
    local entry name pid alive
    for entry in "$@"; do
        name=${entry%%=*} pid=${entry#*=}
        log "stopping $name (pid $pid) with SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        alive=()
        for entry in "$@"; do
            pid=${entry#*=}
            is_alive "$pid" && alive+=("$entry")
        done
        ((${#alive[@]})) || break
        if ((SECONDS >= deadline)); then
            for entry in "${alive[@]}"; do
                name=${entry%%=*} pid=${entry#*=}
                warn "$name (pid $pid) still running after ${STOP_TIMEOUT}s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            done
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    for entry in "$@"; do
        name=${entry%%=*} pid=${entry#*=}
        if is_alive "$pid"; then warn "$name (pid $pid) is still alive"; else log "$name stopped"; fi
    done
}

cmd_down() {
    local all=0 arg
    for arg in "$@"; do
        case $arg in
            --all) all=1 ;;
            *) die "down: unknown argument '$arg' (only --all)" ;;
        esac
    done

    stop_gateway
    if [[ -e $STATE_DIR/prometheus/prometheus.pid ]]; then
        "$SCRIPT_DIR/prometheus.sh" stop "$STATE_DIR"
    fi

    # Every instance with a pid file, replicas included, whatever STACK_REPLICAS says now.
    local svc pidf pid targets=() files=()
    for svc in $(pid_file_instances); do
        pidf="$(pid_file "$svc")"
        if pid="$(started_pid "$svc")"; then
            targets+=("$svc=$pid")
        else
            log "$svc: pid file $pidf is stale (process gone or not $svc); removing it"
        fi
        files+=("$pidf")
    done
    if ((${#targets[@]})); then
        stop_pids "${targets[@]}"
    else
        log "no running services started by this script"
    fi
    ((${#files[@]})) && rm -f "${files[@]}"
    rm -f "$REPLICAS_FILE"

    if ((all)); then
        if kafka_pid >/dev/null; then
            # A clean shutdown: the broker flushes its logs and keeps topics and offsets.
            "$SCRIPT_DIR/kafka-node.sh" stop "$KAFKA_DIR"
        else
            log "Kafka was not started by ensure-infra.sh; leaving any broker alone"
        fi
        log "PostgreSQL and Redis are left running"
    else
        log "infrastructure (Kafka, PostgreSQL, Redis) left running; 'down --all' also stops Kafka"
    fi
}

# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------
cmd_status() {
    local svc pid state code count stream
    count="$(replica_count)"
    # READY: the code of GET /health/ready; stream=PORT: the instance's stream listener
    # (users-api), "(closed)" when nothing listens there.
    printf '%-14s %-8s %-8s %-6s %s\n' SERVICE STATE PID PORT READY
    # The instances of the replica count, and any other one that has a pid file.
    for svc in $(instances "$MAX_REPLICAS"); do
        if (($(replica_of "$svc") > count)) && [[ ! -e $(pid_file "$svc") ]]; then
            continue
        fi
        if pid="$(started_pid "$svc")"; then
            state=running
        else
            state=stopped pid=-
            [[ -e $(pid_file "$svc") ]] && state=stale
        fi
        code="$(http_code "$svc")"
        if stream="$(stream_port_of "$svc")"; then
            port_open 127.0.0.1 "$stream" || stream+="(closed)"
            code+=" stream=$stream"
        fi
        printf '%-14s %-8s %-8s %-6s %s\n' "$svc" "$state" "$pid" "$(port_of "$svc")" "$code"
    done

    # The gateway: READY is the code of GET /api/concerts through it; internal= its internal
    # listener, if it has one.
    local internal=""
    if pid="$(gateway_pid)"; then
        state=running
        if [[ -s $GATEWAY_DIR/internal.conf ]]; then
            internal="internal=$(sed -nE 's/^ *listen +([^ ;]+).*/\1/p' "$GATEWAY_DIR/internal.conf")"
        fi
    else
        state=stopped pid=-
    fi
    code="$(curl -s -o /dev/null -m 3 -w '%{http_code}' http://127.0.0.1:8080/api/concerts 2>/dev/null)" || true
    printf '%-14s %-8s %-8s %-6s %s\n' gateway "$state" "$pid" 8080 "${code:-000}${internal:+ $internal}"

    local prom
    read -r state pid prom <<<"$("$SCRIPT_DIR/prometheus.sh" status "$STATE_DIR")"
    if [[ $state == running ]]; then
        printf '%-14s %-8s %-8s %-6s %s\n' prometheus "$state" "$pid" "$prom" "alerts: $("$SCRIPT_DIR/prometheus.sh" alerts 2>/dev/null | grep -c '^firing' || true) firing"
    fi

    local listening=no
    port_open 127.0.0.1 "$KAFKA_PORT" && listening=yes
    if pid="$(kafka_pid)"; then
        state=running
    elif [[ $listening == yes ]]; then
        state=external pid=-
    else
        state=stopped pid=-
    fi
    printf '%-14s %-8s %-8s %-6s %s\n' kafka "$state" "$pid" "$KAFKA_PORT" "listening=$listening"

    local pg=down redis=down
    pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && pg=up
    [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null </dev/null)" == PONG ]] && redis=up
    printf '%-14s %-8s %-8s %-6s\n' postgres "$pg" - 5432
    printf '%-14s %-8s %-8s %-6s\n' redis "$redis" - 6379
    printf '(state dir: %s)\n' "$STATE_DIR"
}

# ---------------------------------------------------------------------------
# logs
# ---------------------------------------------------------------------------
cmd_logs() {
    local lines="${LOG_LINES:-100}" follow=(-F) files=() f svc
    [[ $lines =~ ^[0-9]+$ ]] || die "LOG_LINES must be a number, got '$lines'"
    [[ ${LOG_FOLLOW:-1} == 0 ]] && follow=()
    if (($# > 1)); then
        die "logs takes at most one service name"
    elif (($# == 1)); then
        if [[ $1 == kafka ]]; then
            files=("$KAFKA_LOG")
        elif is_instance "$1"; then
            files=("$(log_file "$1")")
        else
            die "unknown service '$1' (one of: $(instances "$MAX_REPLICAS" | tr '\n' ' ')kafka)"
        fi
        [[ -e ${files[0]} ]] || die "no log yet: ${files[0]}"
    else
        for svc in $(instances "$(replica_count)"); do
            f="$(log_file "$svc")"
            [[ -e $f ]] && files+=("$f")
        done
        [[ -e $KAFKA_LOG ]] && files+=("$KAFKA_LOG")
        ((${#files[@]})) || die "no logs yet under $STATE_DIR (run: deploy/local/stack.sh up)"
    fi
    exec tail -n "$lines" "${follow[@]}" "${files[@]}"
}

main() {
    local cmd="${1:-}"
    (($#)) && shift
    case $cmd in
        up) (($# == 0)) || die "up takes no arguments"; cmd_up ;;
        down) cmd_down "$@" ;;
        status) cmd_status ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        "") usage >&2; exit 2 ;;
        *) printf '[%s] ERROR: unknown command %s\n' "$SCRIPT_NAME" "$cmd" >&2; usage >&2; exit 2 ;;
    esac
}

main "$@"
