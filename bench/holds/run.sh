#!/usr/bin/env bash
# Hold throughput against a release concert-api in a scratch database:
#   hold-distinct  — every request a different seat (DURATION, CONNECTIONS)
#   hold-contended — CONTENDED_CLIENTS clients all wanting the one seat of a schedule;
#                    afterwards the database must show exactly one holder
#
#   bench/holds/run.sh    # DURATION=10s CONNECTIONS=64 CONTENDED_CLIENTS=1000 by default
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DURATION="${DURATION:-10s}" CONNECTIONS="${CONNECTIONS:-64}" THREADS="${THREADS:-2}"
CONTENDED_CLIENTS="${CONTENDED_CLIENTS:-1000}" PORT="${BENCH_PORT:-18082}"
SCHEDULES=60 SEATS=1000
ulimit -n 65536 2>/dev/null || true
work="$(mktemp -d)"
prefix="benchholds$RANDOM$RANDOM:"
db="bench_concert_$RANDOM$RANDOM"
api=""
cleanup() {
    [ -n "$api" ] && kill "$api" 2>/dev/null && wait "$api" 2>/dev/null || true
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli del >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
deploy/local/ensure-infra.sh >/dev/null
cargo build --release -p concert-api --quiet
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null

CONCERT_API_PORT="$PORT" CONCERT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
REDIS_KEY_PREFIX="$prefix" KAFKA_TOPIC_PREFIX="$prefix" DATABASE_POOL_SIZE="${DATABASE_POOL_SIZE:-32}" RUST_LOG=warn \
    target/release/concert-api serve > "$work/concert-api.log" 2>&1 &
api=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done

python3 bench/holds/seed.py "$prefix" "$PORT" "$SCHEDULES" "$SEATS" 2000 "$work/seed"
export BENCH_BUYERS="$work/seed.buyers" BENCH_SCHEDULES="$work/seed.schedules" BENCH_CONTENDED="$work/seed.contended"
export BENCH_SEATS="$SEATS" BENCH_THREADS="$THREADS"

report() { grep -E "Requests/sec|Latency  |50%|99%|non-2xx|Socket errors"; }
echo "== hold-distinct: POST /api/reservations, one new seat per request ($CONNECTIONS connections)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/holds/distinct.lua "http://127.0.0.1:$PORT" | report
sql() { psql -tA -h 127.0.0.1 -U postgres -d "$db" -c "$1"; }
echo "   seats held: $(sql "SELECT count(*) FROM seats WHERE status = 'HELD'")," \
     "double-booked seats: $(sql "SELECT count(*) FROM (SELECT seat_id FROM reservation_seats WHERE active GROUP BY seat_id HAVING count(*) > 1) d")"

echo "== hold-contended: $CONTENDED_CLIENTS clients, one seat"
wrk -t"$THREADS" -c"$CONTENDED_CLIENTS" -d"$DURATION" --latency -s bench/holds/contended.lua "http://127.0.0.1:$PORT" | report
contended="$(cat "$work/seed.contended")"
echo "   winners: $(sql "SELECT count(*) FROM reservations WHERE schedule_id = $contended") reservation(s)," \
     "$(sql "SELECT count(*) FROM seats WHERE schedule_id = $contended AND status = 'HELD'") seat held"
echo "== concert-api peak RSS: $(grep VmHWM "/proc/$api/status" | awk '{print $2, $3}')"
