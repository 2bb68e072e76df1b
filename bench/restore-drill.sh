#!/usr/bin/env bash
# The restore drill: a backup taken in the middle of a flash sale, the platform lost, the
# backup restored into fresh databases and a fresh stack started on them.
#
#   bench/restore-drill.sh
#   DRILL_USERS=2000 DRILL_SCHEDULES=20 bench/restore-drill.sh     # a smaller sale
#
# 1. Restarts the local stack with the benchmark's settings (bench/lib.sh) on three fresh
#    databases, `ticketing_<db>_live<time>` (so the figures are those of one sale, not of
#    every benchmark the stack's own databases have seen), with a Redis key prefix and Kafka
#    topics of its own (left in the broker afterwards), and starts
#    `loadtest run flash-sale --users DRILL_USERS --schedules DRILL_SCHEDULES` (defaults
#    10,000 and 100: 5,000 seats) in the background.
# 2. DRILL_BACKUP_AFTER_SECS (default 5) after the sale opens, runs `batch backup` into the
#    drill's folder, while the sale goes on.
# 3. DRILL_LOSS_AFTER_SECS (default 10) after the backup is written, the platform is lost:
#    every service and batch SIGKILLed, the load tool stopped. What the live databases held
#    at that moment is recorded: that is what the restore is measured against.
# 4. `batch restore` of the backup into `ticketing_<db>_live<time>_drill` databases.
# 5. The stack started again on them, with a Redis key prefix and Kafka topics of its own
#    (nothing of the lost minutes in Redis or in the broker reaches it), and waited on until
#    every payment is settled (confirmed or refunded) and batch's invariant watchdog sees no
#    violation.
# 6. The audit, across the restored databases: every SOLD seat in one CONFIRMED reservation,
#    every COMPLETED payment confirming its reservation and every CONFIRMED reservation paid
#    by one, every refunded payment credited once, and the money conserved to the unit.
#
# Figures (summary.txt in .bench/restore-drill-<time>/, and on stdout): each database's
# backup size and time, the recovery point (how much of the sale was lost: seconds, payments,
# seats), the restore time, the time until every payment settled, and what reconciliation
# did. The stack is stopped at the end and the drill's six databases are dropped
# (DRILL_KEEP=1 keeps them, and the stack running on the restored ones). The next
# `deploy/local/stack.sh up` runs on the stack's own databases again.
#
# Exit status: 0 when the audit passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

readonly USERS="${DRILL_USERS:-10000}" SCHEDULES="${DRILL_SCHEDULES:-100}"
readonly BACKUP_AFTER_SECS="${DRILL_BACKUP_AFTER_SECS:-5}" LOSS_AFTER_SECS="${DRILL_LOSS_AFTER_SECS:-10}"
readonly KEEP="${DRILL_KEEP:-0}"
# How long the restored platform may take to settle every payment: the direct settlement
# runs PAYMENT_SETTLE_DIRECT_AFTER_SECS (120 s by default) after a payment was made.
readonly SETTLE_TIMEOUT_SECS=600
readonly PID_DIR="${STACK_DIR:-.stack}/pids"
readonly PG="postgres://postgres@127.0.0.1:5432"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
readonly STAMP OUT=".bench/restore-drill-$STAMP"
# The databases the sale runs on, and the suffix `batch restore` adds to their names.
LIVE="_live$(date -u +%H%M%S)"
readonly LIVE SUFFIX="_drill"
readonly DATABASES=(ticketing_users ticketing_concert ticketing_payment)

log() { printf '[restore-drill] %s\n' "$*"; }
die() { printf '[restore-drill] ERROR: %s\n' "$*" >&2; exit 1; }
summary=()
# figure FORMAT ARGS...: one line of the summary, printed now.
# shellcheck disable=SC2059 # the format is the caller's
figure() { summary+=("$(printf "$@")"); log "${summary[-1]}"; }

# q DB SQL: one value (or rows, `|`-separated) from a database of the local server.
q() { psql -X -q -tA -v ON_ERROR_STOP=1 "$PG/$1" -c "$2"; }

loadtest_pid=""
stop_loadtest() {
    if [[ -n $loadtest_pid ]] && kill -0 "$loadtest_pid" 2>/dev/null; then
        kill -TERM "$loadtest_pid" 2>/dev/null || true
        wait "$loadtest_pid" 2>/dev/null || true
    fi
}
cleanup() {
    stop_loadtest
    ((KEEP)) && return 0
    deploy/local/stack.sh down >/dev/null 2>&1 || true
    local db
    for db in "${DATABASES[@]}"; do
        q postgres "DROP DATABASE IF EXISTS $db$LIVE$SUFFIX WITH (FORCE)" >/dev/null 2>&1 || true
        q postgres "DROP DATABASE IF EXISTS $db$LIVE WITH (FORCE)" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# lose_platform: SIGKILL every service instance and batch, as losing the machine would.
lose_platform() {
    local f pid
    for f in "$PID_DIR"/*.pid; do
        [[ $(basename "$f") == gateway.pid ]] && continue
        pid="$(tr -dc '0-9' <"$f" 2>/dev/null)" || continue
        if [[ -n $pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    stop_loadtest
}

# state DB_SUFFIX: the sale as the three databases (the live ones, or with DB_SUFFIX the
# restored ones) hold it.
state() {
    local c="ticketing_concert$LIVE$1" p="ticketing_payment$LIVE$1"
    printf 'payments %s, completed %s, refunded %s, unsettled %s; confirmed reservations %s, held %s; seats sold %s' \
        "$(q "$p" "SELECT count(*) FROM payments")" \
        "$(q "$p" "SELECT count(*) FROM payments WHERE status = 'COMPLETED'")" \
        "$(q "$p" "SELECT count(*) FROM payments WHERE status = 'REFUNDED'")" \
        "$(q "$p" "SELECT count(*) FROM payments WHERE status = 'COMPLETED' AND confirmed_at IS NULL")" \
        "$(q "$c" "SELECT count(*) FROM reservations WHERE status = 'CONFIRMED'")" \
        "$(q "$c" "SELECT count(*) FROM reservations WHERE status = 'HELD'")" \
        "$(q "$c" "SELECT count(*) FROM seats WHERE status = 'SOLD'")"
}

# audit: the invariants across the restored databases; prints each check, fails on any.
audit() {
    local c="ticketing_concert$LIVE$SUFFIX" p="ticketing_payment$LIVE$SUFFIX" failed=0 n
    check() {
        if [[ $2 == "$3" ]]; then log "audit ok: $1"; else log "audit FAILED: $1 (got $2, want $3)"; failed=1; fi
    }
    check "every SOLD seat belongs to a CONFIRMED reservation" \
        "$(q "$c" "SELECT count(*) FROM seats s LEFT JOIN reservations r ON r.id = s.reservation_id
                    WHERE s.status = 'SOLD' AND r.status IS DISTINCT FROM 'CONFIRMED'")" 0
    check "the seats sold are the confirmed reservations' seats" \
        "$(q "$c" "SELECT count(*) FROM seats WHERE status = 'SOLD'")" \
        "$(q "$c" "SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM reservations WHERE status = 'CONFIRMED'")"
    # The confirmed reservations (id, payment, amount) and the completed payments
    # (reservation, id, amount) are one and the same list.
    q "$c" "SELECT id || ',' || payment_id || ',' || amount FROM reservations WHERE status = 'CONFIRMED' ORDER BY 1" >"$OUT/confirmed.txt"
    q "$p" "SELECT reservation_id || ',' || id || ',' || amount FROM payments WHERE status = 'COMPLETED' ORDER BY 1" >"$OUT/completed.txt"
    n="$(diff "$OUT/confirmed.txt" "$OUT/completed.txt" | grep -c '^[<>]' || true)"
    check "confirmed reservations = completed payments (see confirmed.txt, completed.txt)" "$n" 0
    check "no payment left unsettled" \
        "$(q "$p" "SELECT count(*) FROM payments WHERE status = 'COMPLETED' AND confirmed_at IS NULL")" 0
    # Joins on grouped ledger rows: the ledger has no index on `ref`.
    check "every payment debited once, and no debit without its payment" \
        "$(q "$p" "SELECT count(*) FROM payments p FULL JOIN (SELECT ref, count(*) AS n, sum(amount) AS a
                    FROM ledger WHERE kind = 'PAYMENT' GROUP BY ref) l ON l.ref = 'payment:' || p.id
                    WHERE p.id IS NULL OR l.n IS DISTINCT FROM 1 OR l.a <> p.amount")" 0
    check "every refunded payment credited once, and no other credited" \
        "$(q "$p" "SELECT count(*) FROM payments p FULL JOIN (SELECT ref, count(*) AS n, sum(amount) AS a
                    FROM ledger WHERE kind = 'REFUND' GROUP BY ref) l ON l.ref = 'refund:' || p.id
                    WHERE p.id IS NULL OR coalesce(l.n, 0) <> CASE p.status WHEN 'REFUNDED' THEN 1 ELSE 0 END
                       OR l.a <> p.amount")" 0
    check "every wallet equals its ledger" \
        "$(q "$p" "SELECT count(*) FROM wallets w FULL JOIN (SELECT user_id, sum(CASE kind WHEN 'PAYMENT'
                    THEN -amount ELSE amount END) AS s FROM ledger GROUP BY user_id) l USING (user_id)
                    WHERE coalesce(w.balance, 0) <> coalesce(l.s, 0)")" 0
    check "money conserved: charges - payments + refunds - balances" \
        "$(q "$p" "SELECT (SELECT coalesce(sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END), 0) FROM ledger)
                    - (SELECT coalesce(sum(balance), 0) FROM wallets)")" 0
    return "$failed"
}

# watchdog_clean: batch's invariant watchdog has checked and every invariant holds.
watchdog_clean() {
    local m
    m="$(curl -s -m 2 http://127.0.0.1:8084/metrics)" || return 1
    grep -q '^invariant_violations{' <<<"$m" || return 1
    ! grep '^invariant_violations{' <<<"$m" | grep -qv ' 0$'
}

main() {
    mkdir -p "$OUT/backups"
    # The fresh databases are made before the stack starts: PostgreSQL, Redis and Kafka first
    # (installed and started on a fresh machine).
    deploy/local/ensure-infra.sh >>"$OUT/infra.log" 2>&1 || die "deploy/local/ensure-infra.sh failed: $OUT/infra.log"
    log "building"
    cargo build --release --locked --bins --quiet
    local db
    for db in "${DATABASES[@]}"; do
        q postgres "CREATE DATABASE $db$LIVE" >/dev/null
    done
    export USERS_DATABASE_URL="$PG/ticketing_users$LIVE" CONCERT_DATABASE_URL="$PG/ticketing_concert$LIVE" \
        PAYMENT_DATABASE_URL="$PG/ticketing_payment$LIVE"
    # A Redis prefix and topics of its own too: fresh databases hand out ids the stack's own
    # already used, and neither their seat counts in Redis nor events the kill leaves
    # unconsumed may meet another stack's rows.
    export REDIS_KEY_PREFIX="drill$LIVE:" KAFKA_TOPIC_PREFIX="drill$LIVE."
    log "restarting the stack with the benchmark settings on fresh databases (*$LIVE)"
    STACK_SKIP_BUILD=1 bench_restart_stack >/dev/null
    # batch's commands check the service credential like `batch serve` does.
    INTERNAL_API_TOKEN="$(<"${STACK_DIR:-.stack}/internal-token")"
    export INTERNAL_API_TOKEN

    log "flash sale: $USERS fans, $SCHEDULES schedules × 50 seats; output in $OUT"
    target/release/loadtest run flash-sale --users "$USERS" --schedules "$SCHEDULES" \
        --json "$OUT/report.json" >"$OUT/report.txt" 2>"$OUT/loadtest.log" &
    loadtest_pid=$!
    until grep -q 'the sale opens' "$OUT/loadtest.log" 2>/dev/null; do
        kill -0 "$loadtest_pid" 2>/dev/null || { cat "$OUT/loadtest.log" >&2; die "loadtest ended before the sale opened"; }
        sleep 0.2
    done
    local opened backup_started backup_done lost
    opened="$(now_ms)"
    sleep_until $((opened + BACKUP_AFTER_SECS * 1000))

    log "backing up at sale +${BACKUP_AFTER_SECS}s"
    backup_started="$(now_ms)"
    BACKUP_DIR="$OUT/backups" RUST_LOG=warn target/release/batch backup >"$OUT/manifest.json" 2>"$OUT/backup.log" ||
        { cat "$OUT/backup.log" >&2; die "the backup failed"; }
    backup_done="$(now_ms)"
    figure 'backup: %s s in all (three dumps, each restored into a scratch database and counted)' "$(secs $((backup_done - backup_started)))"
    python3 - "$OUT/manifest.json" <<'EOF' | while IFS= read -r line; do figure '%s' "$line"; done
import json, sys
m = json.load(open(sys.argv[1]))
for d in m["databases"]:
    print(f"  {d['service']:<12} {d['bytes'] / 1e6:6.1f} MB  dump {d['seconds']:5.2f} s  "
          f"verify {d['verification']['seconds']:5.2f} s  {d['verification']['rows']:>9,} rows")
EOF

    sleep_until $((backup_done + LOSS_AFTER_SECS * 1000))
    lost="$(now_ms)"
    lose_platform
    log "the platform is lost at sale +$(secs $((lost - opened)))s"
    deploy/local/stack.sh down >/dev/null 2>&1 || true
    local live
    live="$(state "")"
    figure 'at the loss, the live databases: %s' "$live"

    log "restoring into *$LIVE$SUFFIX"
    local restore_started restore_done
    restore_started="$(now_ms)"
    target/release/batch restore "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backup"])' "$OUT/manifest.json" | sed "s|^|$OUT/backups/|")" \
        --suffix "$SUFFIX" >"$OUT/restore.jsonl" 2>"$OUT/restore.log" ||
        { cat "$OUT/restore.log" >&2; die "the restore failed"; }
    restore_done="$(now_ms)"
    figure 'restore: %s s for the three databases (pg_restore, counts checked, ids moved ahead)' "$(secs $((restore_done - restore_started)))"
    figure 'payments whose confirmation the restore reopened: %s' \
        "$(python3 -c 'import json,sys; print(sum(json.loads(l).get("payments_reopened") or 0 for l in open(sys.argv[1])))' "$OUT/restore.jsonl")"
    local restored
    restored="$(state "$SUFFIX")"
    figure 'restored, before anything ran: %s' "$restored"
    figure 'recovery point: the backup began %s s before the loss; payments lost %s, confirmed seats lost %s' \
        "$(secs $((lost - backup_started)))" \
        "$(($(q "ticketing_payment$LIVE" "SELECT count(*) FROM payments") - $(q "ticketing_payment$LIVE$SUFFIX" "SELECT count(*) FROM payments")))" \
        "$(($(q "ticketing_concert$LIVE" "SELECT count(*) FROM seats WHERE status = 'SOLD'") - $(q "ticketing_concert$LIVE$SUFFIX" "SELECT count(*) FROM seats WHERE status = 'SOLD'")))"

    log "starting a fresh stack on the restored databases"
    local started ready settled
    started="$(now_ms)"
    USERS_DATABASE_URL="$PG/ticketing_users$LIVE$SUFFIX" \
        CONCERT_DATABASE_URL="$PG/ticketing_concert$LIVE$SUFFIX" \
        PAYMENT_DATABASE_URL="$PG/ticketing_payment$LIVE$SUFFIX" \
        REDIS_KEY_PREFIX="restored$LIVE:" KAFKA_TOPIC_PREFIX="restored$LIVE." KAFKA_TOPIC_PARTITIONS=1 \
        STACK_SKIP_BUILD=1 deploy/local/stack.sh up >"$OUT/stack.log" 2>&1 ||
        { tail -30 "$OUT/stack.log" >&2; die "the restored stack did not start"; }
    ready="$(now_ms)"
    figure 'restored stack ready: %s s after starting it' "$(secs $((ready - started)))"

    local deadline=$(($(now_ms) + SETTLE_TIMEOUT_SECS * 1000))
    until [[ "$(q "ticketing_payment$LIVE$SUFFIX" "SELECT count(*) FROM payments WHERE status = 'COMPLETED' AND confirmed_at IS NULL")" == 0 ]] &&
        watchdog_clean; do
        (($(now_ms) < deadline)) || die "payments still unsettled after ${SETTLE_TIMEOUT_SECS}s: $(state "$SUFFIX")"
        sleep 1
    done
    settled="$(now_ms)"
    figure 'every payment settled and the watchdog clean: %s s after the stack was ready' "$(secs $((settled - ready)))"
    figure 'recovery time (restore + start + settle): %s s' "$(secs $((settled - restore_started)))"
    figure 'after reconciliation: %s' "$(state "$SUFFIX")"

    local ok=0
    audit || ok=1
    printf '%s\n' "${summary[@]}" >"$OUT/summary.txt"
    log "summary in $OUT/summary.txt"
    if ((KEEP)); then
        log "DRILL_KEEP=1: the stack runs on the *$LIVE$SUFFIX databases; stop it with deploy/local/stack.sh down"
    fi
    return "$ok"
}

main "$@"
