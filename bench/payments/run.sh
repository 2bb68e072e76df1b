#!/usr/bin/env bash
# Payment throughput and payment -> CONFIRMED latency, with release concert-api and
# payment-api as separate processes talking through the real broker (tansu).
#
#   bench/payments/run.sh     # PAYMENTS=4000 CONNECTIONS=32 by default
#
# Setup (not measured): PAYMENTS buyers are funded and each holds one seat. Measured: wrk
# pays each reservation once; then the script waits until every reservation is CONFIRMED and
# reads, per reservation, confirmation time - payment time from the two databases.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PAYMENTS="${PAYMENTS:-4000}" CONNECTIONS="${CONNECTIONS:-32}" THREADS="${THREADS:-2}"
CPORT=18082 PPORT=18083
work="$(mktemp -d)"; prefix="benchpay$RANDOM$RANDOM:"; tag="$RANDOM$RANDOM"
cdb="bench_concert_$tag" pdb="bench_payment_$tag"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for d in "$cdb" "$pdb"; do psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
    redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli del >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
deploy/local/ensure-infra.sh >/dev/null
cargo build --release -p concert-api -p payment-api --quiet
for d in "$cdb" "$pdb"; do psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $d" >/dev/null; done

export REDIS_KEY_PREFIX="$prefix" KAFKA_TOPIC_PREFIX="$prefix" RUST_LOG=warn
CONCERT_API_PORT=$CPORT CONCERT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$cdb" \
    target/release/concert-api serve > "$work/concert.log" 2>&1 & pids+=($!)
PAYMENT_API_PORT=$PPORT PAYMENT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$pdb" CONCERT_API_URL="http://127.0.0.1:$CPORT" \
    target/release/payment-api serve > "$work/payment.log" 2>&1 & pids+=($!)
for port in $CPORT $PPORT; do
    for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.2; done
done

schedules=$(( (PAYMENTS + 999) / 1000 ))
python3 bench/holds/seed.py "$prefix" "$CPORT" "$schedules" 1000 "$PAYMENTS" "$work/seed"
python3 bench/payments/prepare.py "$CPORT" "$PPORT" "$work/seed"
export BENCH_PAYABLE="$work/seed.payable" BENCH_THREADS="$THREADS"

# Each reservation is paid once: ask wrk for about the time that takes, then count.
echo "== pay: POST /api/payments, each request a different held reservation ($CONNECTIONS connections)"
started=$(date +%s.%N)
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION:-3s}" --latency -s bench/payments/pay.lua "http://127.0.0.1:$PPORT" \
    | grep -E "Requests/sec|Latency  |50%|99%|non-2xx"
sql() { psql -tA -h 127.0.0.1 -U postgres -d "$1" -c "$2"; }
paid=$(sql "$pdb" "SELECT count(*) FROM payments")
window=$(sql "$pdb" "SELECT EXTRACT(EPOCH FROM max(created_at) - min(created_at)) FROM payments")
echo "   payments taken: $paid of $PAYMENTS; first to last in ${window}s => $(python3 -c "print(round($paid / max($window, 1e-9)))") payments/s"

for _ in $(seq 1 600); do
    done_n=$(sql "$cdb" "SELECT count(*) FROM reservations WHERE status = 'CONFIRMED'")
    [ "$done_n" -ge "$paid" ] && break
    sleep 0.1
done
echo "   confirmed: $done_n of $paid"
sql "$pdb" "SELECT reservation_id || ' ' || (EXTRACT(EPOCH FROM created_at) * 1000)::bigint FROM payments" > "$work/paid"
sql "$cdb" "SELECT id || ' ' || (EXTRACT(EPOCH FROM updated_at) * 1000)::bigint FROM reservations WHERE status = 'CONFIRMED'" > "$work/confirmed"
python3 - "$work/paid" "$work/confirmed" <<'PY'
import sys
paid = dict(l.split() for l in open(sys.argv[1]) if l.strip())
conf = dict(l.split() for l in open(sys.argv[2]) if l.strip())
lat = sorted(int(conf[r]) - int(t) for r, t in paid.items() if r in conf)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"   payment -> CONFIRMED ms: p50 {pct(0.50)}  p95 {pct(0.95)}  p99 {pct(0.99)}  max {lat[-1]}  (n={len(lat)})")
PY
ledger=$(sql "$pdb" "SELECT count(*) FROM ledger WHERE kind = 'PAYMENT'")
echo "   ledger PAYMENT rows: $ledger (one per payment); negative wallets: $(sql "$pdb" "SELECT count(*) FROM wallets WHERE balance < 0")"
echo "== peak RSS: concert-api $(grep VmHWM /proc/${pids[0]}/status | awk '{print $2, $3}'), payment-api $(grep VmHWM /proc/${pids[1]}/status | awk '{print $2, $3}')"
