#!/usr/bin/env bash
# Waiting-room throughput: token issue and status poll against a release users-api, side by
# side with a bare endpoint of the same server (GET /health/live) in the same run.
#
#   bench/queue/run.sh            # DURATION=10s CONNECTIONS=64 THREADS=2 by default
#
# Needs the local infrastructure (deploy/local/ensure-infra.sh) and wrk (apt-get install wrk).
# Sessions are seeded straight into Redis, so argon2 log-ins are not part of the figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DURATION="${DURATION:-10s}" CONNECTIONS="${CONNECTIONS:-64}" THREADS="${THREADS:-2}"
PORT="${BENCH_PORT:-18081}" STUB_PORT="${BENCH_STUB_PORT:-18082}"
work="$(mktemp -d)"
prefix="bench$RANDOM$RANDOM:"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli del >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
deploy/local/ensure-infra.sh >/dev/null
cargo build --release -p users-api --quiet

# concert-api stand-in: GET /api/concerts/{1..20} answers 200.
python3 bench/queue/catalogue_stub.py "$STUB_PORT" &
pids+=($!)

USERS_API_PORT="$PORT" REDIS_KEY_PREFIX="$prefix" KAFKA_TOPIC_PREFIX="$prefix" \
CONCERT_API_URL="http://127.0.0.1:$STUB_PORT" RUST_LOG=warn \
    target/release/users-api serve > "$work/users-api.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done

python3 bench/queue/seed.py "$prefix" 50000 "$work/sessions" "$PORT" "$work/tokens" 5000

run() {
    echo "== $1"
    shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" | grep -E "Requests/sec|Latency  |50%|99%|non-2xx|Socket errors"
}
export BENCH_SESSIONS="$work/sessions" BENCH_TOKENS="$work/tokens"
run "baseline: GET /health/live (bare endpoint, same server)" "http://127.0.0.1:$PORT/health/live"
run "token issue: POST /api/queue/tokens" -s bench/queue/join.lua "http://127.0.0.1:$PORT"
run "status poll: GET /api/queue/tokens/{token}" -s bench/queue/poll.lua "http://127.0.0.1:$PORT"
echo "== users-api peak RSS: $(grep VmHWM "/proc/${pids[1]}/status" | awk '{print $2, $3}')"
