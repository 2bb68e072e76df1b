#!/usr/bin/env bash
# The waiting room at scale: FANS fans wait in one line on open status streams (SSE), held by
# REPLICAS users-api processes, and are admitted at ADMIT_RATE a second
# (`loadtest run waiting-room`, docs/SCALING.md).
#
#   bench/waiting-room.sh 10000
#   bench/waiting-room.sh 100000            # 7 replicas, 7 generator processes
#   REPLICAS=4 ADMIT_RATE=1000 DURATION=20 bench/waiting-room.sh 50000
#
# A process here may hold at most 20,000 files, so the crowd is spread: a users-api replica
# per 15,000 fans (REPLICAS overrides), a generator process per 15,000 streams, and the
# streams come from loopback source addresses 127.0.0.10, .11, ... (10,000 each). The
# replicas are reached directly, not through the gateway; batch does not run (the tool is
# the only one admitting, so it knows whom each admission let in). Only users-api runs, on
# the local PostgreSQL, Redis and Kafka (deploy/local/ensure-infra.sh); its ports are
# 8181, 8182, ..., and the fans open their streams on each replica's lean stream listener
# (USERS_API_STREAM_PORT) 8281, 8282, ... — as the gateway sends them; STREAMS=main opens them
# on the main ports instead (actix-web), to compare. Its Redis keys carry the prefix
# wr-<pid>- and are deleted at the end.
# Reports go to .bench/waiting-room-<FANS>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[waiting-room] %s\n' "$*"; }
die() { printf '[waiting-room] ERROR: %s\n' "$*" >&2; exit 1; }

FANS="${1:-10000}"
[[ $FANS =~ ^[1-9][0-9]*$ ]] || die "FANS must be a positive number, not '$FANS'"
PER_PROCESS=15000
REPLICAS="${REPLICAS:-$(((FANS + PER_PROCESS - 1) / PER_PROCESS))}"
ADMIT_RATE="${ADMIT_RATE:-500}"
DURATION="${DURATION:-20}"
HOLD_SECS="${HOLD_SECS:-15}"
STREAMS="${STREAMS:-lean}"
[[ $STREAMS == lean || $STREAMS == main ]] || die "STREAMS must be lean or main, not '$STREAMS'"
FIRST_PORT=8181
FIRST_STREAM_PORT=8281
state=.bench/waiting-room
mkdir -p "$state"

# Every process started here may hold up to the hard limit of files.
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= PER_PROCESS + 1000)) ||
    die "this shell may open $(ulimit -n) files; $PER_PROCESS streams per process need more"

deploy/local/ensure-infra.sh >/dev/null
if [[ -z ${STACK_SKIP_BUILD:-} ]]; then
    log "building users-api and loadtest (release)"
    cargo build --release --locked --quiet -p users-api -p loadtest
fi

export USERS_DATABASE_URL="${USERS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ticketing_users}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export INTERNAL_API_TOKEN="${INTERNAL_API_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
export RUST_LOG="${RUST_LOG:-warn}"
# The run's keys (its sessions and its line) under a prefix of their own, deleted at the end:
# a line of 100,000 tokens left behind would be drained by the next stack's batch.
export REDIS_KEY_PREFIX="wr-$$-"
target/release/users-api migrate >/dev/null

pids=() urls=() streams=()
stop_replicas() {
    if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_KEY_PREFIX*" |
        xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null || true
}
trap stop_replicas EXIT
for ((i = 0; i < REPLICAS; i++)); do
    port=$((FIRST_PORT + i)) stream_port=$((FIRST_STREAM_PORT + i))
    USERS_API_PORT=$port USERS_API_STREAM_PORT=$stream_port \
        target/release/users-api serve >"$state/users-api-$port.log" 2>&1 &
    pids+=("$!") urls+=("http://127.0.0.1:$port")
    if [[ $STREAMS == lean ]]; then
        streams+=("http://127.0.0.1:$stream_port")
    else
        streams+=("http://127.0.0.1:$port")
    fi
done
for url in "${urls[@]}"; do
    for ((t = 0; t < 100; t++)); do
        curl -fsS -o /dev/null "$url/health/ready" && break
        sleep 0.2
    done
    curl -fsS -o /dev/null "$url/health/ready" || die "$url is not ready; see $state/"
done
log "$REPLICAS users-api replica(s) ready: ${urls[*]}"

join() { local IFS=,; echo "$*"; }
suffix=""
[[ $STREAMS == main ]] && suffix=-main
report=".bench/waiting-room-$FANS$suffix.json"
target/release/loadtest run waiting-room --fans "$FANS" \
    --users-api "$(join "${urls[@]}")" --streams "$(join "${streams[@]}")" \
    --users-api-pid "$(join "${pids[@]}")" \
    --admit-rate "$ADMIT_RATE" --duration "$DURATION" --hold-secs "$HOLD_SECS" \
    --fans-per-generator "$PER_PROCESS" --json "$report"
log "report: $report"
