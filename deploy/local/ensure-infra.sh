#!/usr/bin/env bash
# Make sure the local infrastructure of the ticketing platform is installed and
# running, then create the service databases:
#
#   PostgreSQL  127.0.0.1:5432  (trust auth, user postgres)
#   Redis       127.0.0.1:6379
#   Kafka       127.0.0.1:9092  (Apache Kafka 4, one KRaft node, data in .stack/kafka)
#
#   ensure-infra.sh             the above, nginx, curl and jq
#   ensure-infra.sh --browser   also Chromium (/usr/bin/chromium), for the web app's browser
#                               tests (deploy/local/test.sh asks for it; the stack needs none)
#   ensure-infra.sh --redis-cluster
#                               also a 3-master Redis Cluster on 127.0.0.1:7101-7103 for tests
#                               (deploy/local/redis-cluster.sh start; its REDIS_URL:
#                               deploy/local/redis-cluster.sh url)
#
# The flags combine (ensure-infra.sh --browser --redis-cluster).
#
# Idempotent: whatever is already running is left alone, so a second run is a
# no-op. Works non-interactively (CI=true, no stdin). See README.md beside it.
set -euo pipefail

readonly SCRIPT_NAME="ensure-infra"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

STATE_DIR="${STACK_DIR:-$REPO_ROOT/.stack}"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
readonly STATE_DIR

readonly PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
readonly REDIS_HOST=127.0.0.1 REDIS_PORT=6379
readonly KAFKA_HOST=127.0.0.1 KAFKA_PORT="${KAFKA_PORT:-9092}"
readonly DATABASES=(ticketing_users ticketing_concert ticketing_payment)

# The broker's directory (config, pid, log, and data/: topics and offsets survive a restart).
readonly KAFKA_DIR="$STATE_DIR/kafka"
readonly KAFKA_HEAP="${KAFKA_HEAP:-512m}"

export DEBIAN_FRONTEND=noninteractive


log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

SUDO=()
if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: cannot manage system services"
    SUDO=(sudo -n)
fi

# wait_for TIMEOUT_SECS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
    log "$what is ready"
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    # shellcheck disable=SC2016 # $1/$2 expand in the child bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

pg_psql() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres "$@" </dev/null
}

# Newest PostgreSQL major version that has a cluster configured (or installed).
pg_version() {
    local v
    if [[ -d /etc/postgresql ]]; then
        v="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1)"
        [[ -n $v ]] && { echo "$v"; return; }
    fi
    find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1
}

pg_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1 \
        && command -v psql >/dev/null 2>&1 && [[ -n "$(pg_version)" ]]
}

# Prepend trust rules for the local socket and loopback to pg_hba.conf (first
# match wins). Only called when we installed PostgreSQL ourselves or when the
# passwordless connection used by the services is refused.
pg_set_trust_auth() {
    local version=$1 hba="/etc/postgresql/$1/main/pg_hba.conf"
    local marker="# ticketing: trust rules added by deploy/local/ensure-infra.sh"
    [[ -f $hba ]] || die "$hba not found"
    if grep -qF "$marker" "$hba"; then
        return 0
    fi
    log "configuring trust auth for local and loopback connections in $hba"
    local tmp
    tmp="$(mktemp)"
    {
        echo "$marker"
        echo "local   all   all                  trust"
        echo "host    all   all   127.0.0.1/32   trust"
        echo "host    all   all   ::1/128        trust"
        echo
        cat "$hba"
    } >"$tmp"
    "${SUDO[@]}" cp "$tmp" "$hba"
    rm -f "$tmp"
    if pg_ready; then
        "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload </dev/null >/dev/null 2>&1 \
            || warn "pg_ctlcluster reload failed"
    fi
}

pg_start() {
    local version=$1 out rc=0
    log "starting PostgreSQL $version (cluster main)"
    # Output goes to a file, never to a pipe: a daemon that inherits our
    # stdout would keep a CI log pipe open forever.
    out="$STATE_DIR/postgres-start.out"
    "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start </dev/null >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        # rc 2 = "already running" (e.g. still starting up); anything else is
        # reported but we still wait below, the server may come up anyway.
        warn "pg_ctlcluster start exited with $rc: $(tr '\n' ' ' <"$out")"
    fi
}

ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL is already accepting connections on $PG_HOST:$PG_PORT"
    else
        local installed_now=0 version
        if ! pg_installed; then
            log "PostgreSQL is not installed; installing it from Debian packages"
            # postgresql pulls in postgresql-<version>, whose bin/ also holds pgbench
            # (bench/pgbench-hold.sh).
            apt_install postgresql postgresql-client
            installed_now=1
        fi
        version="$(pg_version)"
        [[ -n $version ]] || die "could not determine the installed PostgreSQL version"
        if [[ ! -d /etc/postgresql/$version/main ]]; then
            log "creating PostgreSQL cluster $version/main"
            "${SUDO[@]}" pg_createcluster "$version" main --port "$PG_PORT" </dev/null
            installed_now=1
        fi
        if ((installed_now)); then
            pg_set_trust_auth "$version"
        fi
        pg_start "$version"
        if ! wait_for 60 "PostgreSQL" pg_ready; then
            tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2 2>/dev/null || true
            die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within 60 s"
        fi
    fi

    # The services connect as postgres without a password: make sure that works.
    if ! pg_psql -c 'SELECT 1' >/dev/null 2>"$STATE_DIR/psql.err"; then
        if grep -qiE 'password|authentication' "$STATE_DIR/psql.err"; then
            warn "passwordless login as $PG_USER over $PG_HOST was refused"
            pg_set_trust_auth "$(pg_version)"
            sleep 1
            pg_psql -c 'SELECT 1' >/dev/null \
                || die "still cannot connect as $PG_USER to $PG_HOST:$PG_PORT after enabling trust auth"
        else
            cat "$STATE_DIR/psql.err" >&2
            die "cannot run queries as $PG_USER on $PG_HOST:$PG_PORT"
        fi
    fi
    rm -f "$STATE_DIR/psql.err"
    pg_ensure_max_connections
}

# Two replicas of every service (deploy/local/stack.sh with STACK_REPLICAS=2: eight processes,
# each with pools of DATABASE_POOL_SIZE, 16, and batch with one per database), the load tool
# and the test suite's own databases need more than PostgreSQL's default of 100 connections.
readonly PG_MAX_CONNECTIONS=400
pg_ensure_max_connections() {
    local now
    now="$(pg_psql -tA -c 'SHOW max_connections')" || die "cannot read PostgreSQL's max_connections"
    ((now >= PG_MAX_CONNECTIONS)) && return 0
    log "raising PostgreSQL's max_connections from $now to $PG_MAX_CONNECTIONS (ALTER SYSTEM, a restart)"
    pg_psql -c "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS" >/dev/null
    "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main restart </dev/null \
        >"$STATE_DIR/postgres-restart.out" 2>&1 || warn "pg_ctlcluster restart: $(tr '\n' ' ' <"$STATE_DIR/postgres-restart.out")"
    wait_for 60 "PostgreSQL" pg_ready || die "PostgreSQL did not come back after raising max_connections"
}

ensure_databases() {
    local db exists
    for db in "${DATABASES[@]}"; do
        exists="$(pg_psql -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")"
        if [[ $exists == 1 ]]; then
            log "database $db already exists"
        else
            log "creating database $db"
            pg_psql -c "CREATE DATABASE \"$db\""
        fi
    done
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------
redis_ready() {
    [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null </dev/null)" == PONG ]]
}

ensure_redis() {
    if command -v redis-cli >/dev/null 2>&1 && redis_ready; then
        log "Redis is already answering PONG on $REDIS_HOST:$REDIS_PORT"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        log "Redis is not installed; installing it from Debian packages"
        apt_install redis-server
        # The package's maintainer script may already have started it.
        if redis_ready; then
            log "Redis is answering PONG on $REDIS_HOST:$REDIS_PORT"
            return 0
        fi
    fi
    log "starting redis-server on $REDIS_HOST:$REDIS_PORT"
    "${SUDO[@]}" mkdir -p /var/lib/redis /var/log/redis
    local rc=0
    # --daemonize: redis forks and detaches itself (stdio -> /dev/null).
    "${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        </dev/null >"$STATE_DIR/redis-start.out" 2>&1 || rc=$?
    ((rc == 0)) || warn "redis-server exited with $rc: $(tr '\n' ' ' <"$STATE_DIR/redis-start.out")"
    if ! wait_for 30 "Redis" redis_ready; then
        tail -n 30 /var/log/redis/ci.log >&2 2>/dev/null || true
        die "Redis did not answer PONG on $REDIS_HOST:$REDIS_PORT within 30 s"
    fi
}

# ---------------------------------------------------------------------------
# Apache Kafka (one KRaft node; jars from Maven Central, run on Java 17)
# ---------------------------------------------------------------------------

# Java 17 (the broker's runtime) and Maven (resolves the broker's jars once) from Debian.
ensure_java() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from Debian's packages (for the Kafka broker)"
        apt_install "${missing[@]}"
    fi
    local major
    major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')"
    [[ -n $major && $major -ge 17 ]] || die "Kafka 4 needs Java 17 or newer; 'java' is version ${major:-unknown}"
}

ensure_kafka() {
    local pid
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        if pid="$("$SCRIPT_DIR/kafka-node.sh" pid "$KAFKA_DIR" 2>/dev/null)"; then
            log "Kafka is already running on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
        else
            log "a broker not started by this script is listening on $KAFKA_HOST:$KAFKA_PORT; using it"
        fi
        return 0
    fi
    ensure_java
    "$SCRIPT_DIR/kafka-node.sh" start "$KAFKA_DIR" "$KAFKA_PORT" "$KAFKA_HEAP"
}

# The local API gateway is nginx from Debian's packages (nginx-light is enough).
ensure_nginx() {
    if command -v nginx >/dev/null 2>&1; then
        log "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')"
        return
    fi
    log "nginx: not installed; installing nginx-light from Debian's packages"
    apt_install nginx-light
    command -v nginx >/dev/null 2>&1 || die "nginx did not install"
}

# curl and jq: the stack's readiness checks, its demo data and the README's walk use them.
ensure_tools() {
    local missing=() tool
    for tool in curl jq; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]} from Debian's packages"
    apt_install "${missing[@]}"
}

# Chromium from Debian's packages: the browser Playwright drives in the web app's tests
# (web/playwright.config.ts). Playwright's own browser download is never used: its install
# scripts do not run (npm ci --ignore-scripts) and nothing fetches a browser at test time.
readonly CHROMIUM=/usr/bin/chromium
ensure_chromium() {
    if [[ -x $CHROMIUM ]]; then
        # The package's wrapper script prints a harmless shell warning on stderr.
        log "chromium: $("$CHROMIUM" --version 2>/dev/null </dev/null || echo "$CHROMIUM")"
        return
    fi
    log "chromium: not installed; installing it from Debian's packages (the browser tests)"
    apt_install chromium
    [[ -x $CHROMIUM ]] || die "chromium did not install ($CHROMIUM is missing)"
}

# The test Redis Cluster (three masters, no replicas), beside the stack's single Redis: its
# own script starts it (idempotent) once ensure_redis has installed redis-server.
ensure_redis_cluster() {
    STACK_DIR="$STATE_DIR" "$SCRIPT_DIR/redis-cluster.sh" start
}

main() {
    local browser=0 redis_cluster=0 arg
    for arg in "$@"; do
        case $arg in
            --browser) browser=1 ;;
            --redis-cluster) redis_cluster=1 ;;
            *) die "unknown argument '$arg' (only --browser, --redis-cluster)" ;;
        esac
    done
    log "state dir: $STATE_DIR"
    ensure_tools
    ensure_postgres
    ensure_redis
    if ((redis_cluster)); then
        ensure_redis_cluster
    fi
    ensure_kafka
    ensure_nginx
    if ((browser)); then
        ensure_chromium
    fi
    ensure_databases
    log "infrastructure is ready: postgres $PG_HOST:$PG_PORT, redis $REDIS_HOST:$REDIS_PORT, kafka $KAFKA_HOST:$KAFKA_PORT"
}

main "$@"
