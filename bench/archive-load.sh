#!/usr/bin/env bash
# Years of past shows, and what archival makes of them: hot tables back at the size of the
# upcoming shows, every fan's history still whole, and a flash sale as fast as on an empty
# platform.
#
#   bench/archive-load.sh                                   # 480,000 past dates
#   ARCHIVE_LOAD_SCHEDULES=20000 ARCHIVE_LOAD_SALE="--users 2000 --schedules 20" bench/archive-load.sh
#
# On three fresh databases (`ticketing_<db>_arch<time>`, the stack started on them with the
# benchmark's settings, bench/lib.sh, and a Redis key prefix and Kafka topics of its own,
# the topics left in the broker afterwards):
#
# 1. sale A: `loadtest run flash-sale $ARCHIVE_LOAD_SALE` (default --users 10000
#    --schedules 100) on the empty platform: the baseline.
# 2. The load, straight in SQL: ARCHIVE_LOAD_SCHEDULES past dates (default 480,000, ten years
#    of about 130 shows a day) of 100 concerts each, started 31 days to 10 years ago, each of
#    ARCHIVE_LOAD_SEATS seats (10) all sold in reservations of two seats, each paid: a
#    COMPLETED payment, a CHARGE and a PAYMENT ledger row (each buyer's balance unchanged).
#    One reservation in a thousand is the probe's, a real account signed up through the
#    gateway whose history is read over HTTP; the others belong to 200,000 buyers that exist
#    only in the concert and payment databases.
# 3. sale B: the same sale with the past shows hot, once autovacuum is done with the load.
# 4. `batch archive`: the backlog worked off (its passes in archive.jsonl, its log in
#    archive.log), then the tables vacuumed. The ledger's rows land in the DEFAULT partition
#    (their months had none) and the first pass gives each month its partition, then closes
#    the months over (their totals kept for the invariant watchdog).
# 5. sale C: the same sale with the past shows archived, once autovacuum is done.
#
# Each sale is run ARCHIVE_LOAD_ROUNDS times (default 1; A1, A2, ...): one sale's time varies
# by a fifth from run to run on this machine.
#
# Figures (summary.txt in .bench/archive-load-<time>/, and on stdout): rows and size of the
# hot and archive tables after the load and after archival, the archival's time and rate, the
# probe's history (reservations and payments over HTTP, before and after: the same bodies),
# and each sale's sell-out time, purchases per second, worst endpoint p99 and payment →
# CONFIRMED p99. The stack is stopped and the databases dropped at the end
# (ARCHIVE_LOAD_KEEP=1 keeps both).
#
# Exit status: 0 when every sale's audit passed, the history is unchanged, nothing due is
# left hot and the closed months' totals equal their rows; 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

readonly SCHEDULES="${ARCHIVE_LOAD_SCHEDULES:-480000}" SEATS="${ARCHIVE_LOAD_SEATS:-10}"
read -r -a SALE <<<"${ARCHIVE_LOAD_SALE:---users 10000 --schedules 100}"
readonly SALE KEEP="${ARCHIVE_LOAD_KEEP:-0}" ROUNDS="${ARCHIVE_LOAD_ROUNDS:-1}"
readonly PG="postgres://postgres@127.0.0.1:5432" GATEWAY="http://127.0.0.1:8080"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
SUFFIX="_arch$(date -u +%H%M%S)"
readonly STAMP SUFFIX OUT=".bench/archive-load-$STAMP"
readonly USERS_DB="ticketing_users$SUFFIX" CONCERT_DB="ticketing_concert$SUFFIX" PAYMENT_DB="ticketing_payment$SUFFIX"
readonly PROBE="archive_probe" PROBE_PASSWORD="archive-probe-password"

log() { printf '[archive-load] %s\n' "$*"; }
die() { printf '[archive-load] ERROR: %s\n' "$*" >&2; exit 1; }
summary=()
# figure FORMAT ARGS...: one line of the summary, printed now.
# shellcheck disable=SC2059 # the format is the caller's
figure() { summary+=("$(printf "$@")"); log "${summary[-1]}"; }
# q DB SQL: one value (or rows, `|`-separated) from a database of the local server.
q() { psql -X -q -tA -v ON_ERROR_STOP=1 "$PG/$1" -c "$2"; }

cleanup() {
    ((KEEP)) && return 0
    deploy/local/stack.sh down >/dev/null 2>&1 || true
    local db
    for db in "$USERS_DB" "$CONCERT_DB" "$PAYMENT_DB"; do
        q postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

# settle: a CHECKPOINT, then until no autovacuum works on the three databases (at most
# 10 minutes): the bulk load and the archival leave millions of new and dead rows that
# autovacuum and the checkpointer work through, and a sale run meanwhile would measure them.
# An operator runs a backlog in a quiet hour, before the next on-sale, for the same reason.
settle() {
    local started waited workers
    started="$(now_ms)"
    q postgres "CHECKPOINT" >/dev/null
    while :; do
        workers="$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'
            AND datname IN ('$USERS_DB', '$CONCERT_DB', '$PAYMENT_DB')")"
        waited=$(($(now_ms) - started))
        ((workers == 0 || waited > 600000)) && break
        sleep 2
    done
    figure 'settled before the sale in %s s (autovacuum workers left: %s)' "$(secs "$waited")" "$workers"
}

# sale NAME: ROUNDS flash sales through the gateway (NAME1, NAME2, ...); each one's figures on
# a line of the summary, its audit's verdict with them.
sale() {
    local round name rc
    for ((round = 1; round <= ROUNDS; round++)); do
        name="$1$round"
        log "sale $name: loadtest run flash-sale ${SALE[*]}"
        rc=0
        target/release/loadtest run flash-sale "${SALE[@]}" --json "$OUT/sale-$name.json" \
            >"$OUT/sale-$name.txt" 2>"$OUT/sale-$name.log" || rc=$?
        if [[ ! -s "$OUT/sale-$name.json" ]]; then
            tail -20 "$OUT/sale-$name.txt" >&2
            figure 'sale %s: no report (loadtest exit %s)' "$name" "$rc"
            return 1
        fi
        figure 'sale %s: %s%s' "$name" "$(python3 - "$OUT/sale-$name.json" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1]))["figures"]
print(f"sold out in {f['sell_out_seconds']:.1f} s, {f['purchases_per_second']:.0f} purchases/s, "
      f"worst p99 {f['worst_endpoint_p99_ms']:.0f} ms ({f['worst_endpoint']}), "
      f"payment → CONFIRMED p99 {f['payment_to_confirmed_p99_ms']:.0f} ms")
EOF
)" "$( ((rc == 0)) || echo ", audit FAILED (sale-$name.txt)")"
        ((rc == 0)) || return 1
    done
}

# tables WHEN: rows and size of the hot and archive tables.
tables() {
    figure '%s, concert: %s' "$1" "$(q "$CONCERT_DB" "SELECT string_agg(format('%s %s rows %s', t, n, pg_size_pretty(b)), ', ' ORDER BY t) FROM (
        SELECT 'seats' t, (SELECT count(*) FROM seats) n, pg_total_relation_size('seats') b UNION ALL
        SELECT 'reservations', (SELECT count(*) FROM reservations), pg_total_relation_size('reservations') UNION ALL
        SELECT 'reservation_seats', (SELECT count(*) FROM reservation_seats), pg_total_relation_size('reservation_seats') UNION ALL
        SELECT 'archive.seats', (SELECT count(*) FROM archive.seats), pg_total_relation_size('archive.seats') UNION ALL
        SELECT 'archive.reservations', (SELECT count(*) FROM archive.reservations), pg_total_relation_size('archive.reservations')) x")"
    figure '%s, payment: %s' "$1" "$(q "$PAYMENT_DB" "SELECT string_agg(format('%s %s rows %s', t, n, pg_size_pretty(b)), ', ' ORDER BY t) FROM (
        SELECT 'payments' t, (SELECT count(*) FROM payments) n, pg_total_relation_size('payments') b UNION ALL
        SELECT 'archive.payments', (SELECT count(*) FROM archive.payments), pg_total_relation_size('archive.payments') UNION ALL
        SELECT 'ledger', (SELECT count(*) FROM ledger), (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'ledger'::regclass)) x")"
}

# history FILE: the probe's reservations and payments as the API answers them.
history() {
    local token
    token="$(curl -sf -X POST "$GATEWAY/api/sessions" -H 'content-type: application/json' \
        -d "{\"username\":\"$PROBE\",\"password\":\"$PROBE_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    {
        curl -sf "$GATEWAY/api/reservations" -H "authorization: Bearer $token"
        echo
        curl -sf "$GATEWAY/api/payments" -H "authorization: Bearer $token"
        echo
    } >"$1"
}

# load: the past dates, their seats, reservations, payments and ledger rows.
load() {
    local probe r0 p0 concerts=$(((SCHEDULES + 99) / 100))
    probe="$(curl -sf -X POST "$GATEWAY/api/users" -H 'content-type: application/json' \
        -d "{\"username\":\"$PROBE\",\"password\":\"$PROBE_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
    # Explicit ids past each sequence: the reservation names its payment before it exists.
    r0="$(q "$CONCERT_DB" "SELECT greatest(last_value, (SELECT coalesce(max(id), 0) FROM reservations)) FROM reservations_id_seq")"
    p0="$(q "$PAYMENT_DB" "SELECT greatest(last_value, (SELECT coalesce(max(id), 0) FROM payments)) FROM payments_id_seq")"
    psql -X -q -v ON_ERROR_STOP=1 "$PG/$CONCERT_DB" >/dev/null <<SQL
BEGIN;
CREATE TEMP TABLE loaded_concerts AS
WITH c AS (INSERT INTO concerts (title, performer)
           SELECT 'Past tour ' || g, 'Archive load' FROM generate_series(1, $concerts) g RETURNING id)
SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM c;
CREATE TEMP TABLE loaded_schedules AS
WITH s AS (
    INSERT INTO schedules (concert_id, starts_at, booking_opens_at, seat_count, price)
    SELECT c.id, x.starts_at, x.starts_at - interval '30 days', $SEATS, 10000
    FROM (SELECT g, date_trunc('minute', now()) - interval '31 days'
                 - ((g::bigint * 9973) % (3650 * 1440)) * interval '1 minute' AS starts_at
          FROM generate_series(1, $SCHEDULES) g) x
    JOIN loaded_concerts c ON c.n = (x.g - 1) % $concerts
    RETURNING id, concert_id, booking_opens_at)
SELECT * FROM s;
INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until,
                          payment_id, created_at, updated_at)
SELECT $r0 + rn,
       CASE WHEN rn % 1000 = 0 THEN $probe ELSE 100000000 + rn % 200000 END,
       id, concert_id, ARRAY[2 * k - 1, 2 * k], 20000, 'CONFIRMED', booking_opens_at + interval '5 minutes',
       $p0 + rn, booking_opens_at + interval '1 minute', booking_opens_at + interval '2 minutes'
FROM (SELECT s.*, k, row_number() OVER (ORDER BY s.id, k) AS rn
      FROM loaded_schedules s CROSS JOIN generate_series(1, $SEATS / 2) k) x;
SELECT setval('reservations_id_seq', (SELECT max(id) FROM reservations));
INSERT INTO seats (schedule_id, seat_no, price, status, reservation_id)
SELECT r.schedule_id, n, 10000, 'SOLD', r.id FROM reservations r, unnest(r.seat_nos) n WHERE r.id > $r0;
INSERT INTO reservation_seats (reservation_id, seat_id, active)
SELECT reservation_id, id, true FROM seats WHERE reservation_id > $r0;
COMMIT;
ANALYZE;
SQL
    psql -X -q -v ON_ERROR_STOP=1 "$PG/$PAYMENT_DB" -c "CREATE UNLOGGED TABLE archive_load (reservation_id bigint, payment_id bigint, user_id bigint, amount bigint, created_at timestamptz)"
    psql -X -q -v ON_ERROR_STOP=1 "$PG/$CONCERT_DB" \
        -c "COPY (SELECT id, payment_id, user_id, amount, created_at FROM reservations WHERE id > $r0) TO STDOUT" |
        psql -X -q -v ON_ERROR_STOP=1 "$PG/$PAYMENT_DB" -c "COPY archive_load FROM STDIN"
    psql -X -q -v ON_ERROR_STOP=1 "$PG/$PAYMENT_DB" >/dev/null <<SQL
BEGIN;
INSERT INTO payments (id, user_id, reservation_id, amount, status, created_at, confirmed_at)
SELECT payment_id, user_id, reservation_id, amount, 'COMPLETED', created_at, created_at + interval '1 second'
FROM archive_load;
SELECT setval('payments_id_seq', (SELECT max(id) FROM payments));
-- Ten years the ledger always held: no month of it is closed yet. The stack's upkeep may have
-- closed months before this one (empty then); they reopen, and the first upkeep after the
-- load (batch archive's) closes every past month with its rows. Nothing is refused before
-- -infinity, so the DEFAULT partition's trigger is skipped for the load's speed.
DO \$\$ DECLARE p regclass; BEGIN
    FOR p IN SELECT tgrelid::regclass FROM pg_trigger WHERE tgname = 'ledger_month_closed' LOOP
        EXECUTE format('DROP TRIGGER ledger_month_closed ON %s', p);
    END LOOP;
END \$\$;
UPDATE ledger_closed SET before = '-infinity', charged = 0, paid = 0, refunded = 0;
TRUNCATE ledger_closed_wallets;
SET LOCAL session_replication_role = replica;
-- Each buyer charges what they pay, a minute before: their balance is unchanged.
INSERT INTO ledger (user_id, kind, amount, balance_after, ref, created_at)
SELECT user_id, 'CHARGE', amount, amount, 'archive-load:' || reservation_id, created_at - interval '1 minute'
FROM archive_load
UNION ALL
SELECT user_id, 'PAYMENT', amount, 0, 'payment:' || payment_id, created_at FROM archive_load;
INSERT INTO wallets (user_id, balance) SELECT DISTINCT user_id, 0 FROM archive_load ON CONFLICT DO NOTHING;
DROP TABLE archive_load;
COMMIT;
ANALYZE;
SQL
}

main() {
    mkdir -p "$OUT"
    # The fresh databases are made before the stack starts: PostgreSQL, Redis and Kafka first
    # (installed and started on a fresh machine).
    deploy/local/ensure-infra.sh >>"$OUT/infra.log" 2>&1 || die "deploy/local/ensure-infra.sh failed: $OUT/infra.log"
    log "building"
    cargo build --release --locked --bins --quiet
    local db
    for db in "$USERS_DB" "$CONCERT_DB" "$PAYMENT_DB"; do
        q postgres "CREATE DATABASE $db" >/dev/null
    done
    export USERS_DATABASE_URL="$PG/$USERS_DB" CONCERT_DATABASE_URL="$PG/$CONCERT_DB" PAYMENT_DATABASE_URL="$PG/$PAYMENT_DB"
    # A Redis prefix and topics of its own: fresh databases hand out ids the stack's own
    # already used, and their seat counts in Redis must not meet another stack's.
    export REDIS_KEY_PREFIX="archive-load$SUFFIX:" KAFKA_TOPIC_PREFIX="archive-load$SUFFIX."
    log "starting the stack with the benchmark settings on fresh databases (*$SUFFIX)"
    STACK_SKIP_BUILD=1 bench_restart_stack >/dev/null
    INTERNAL_API_TOKEN="$(<"${STACK_DIR:-.stack}/internal-token")"
    export INTERNAL_API_TOKEN
    local failed=0

    sale A || failed=1

    local started finished
    log "loading $SCHEDULES past dates of $SEATS seats"
    started="$(now_ms)"
    load
    finished="$(now_ms)"
    figure 'load: %s past dates in %s s' "$SCHEDULES" "$(secs $((finished - started)))"
    tables "loaded"
    history "$OUT/history-before.json"
    figure 'the probe'"'"'s history before archival: %s' "$(python3 - "$OUT/history-before.json" <<'EOF'
import json, sys
r, p = (json.loads(l) for l in open(sys.argv[1]))
print(f"{len(r['items'])} reservations, {len(p['items'])} payments")
EOF
)"

    settle
    sale B || failed=1

    log "archiving the backlog (batch archive)"
    started="$(now_ms)"
    target/release/batch archive >"$OUT/archive.jsonl" 2>"$OUT/archive.log" ||
        { tail -5 "$OUT/archive.log" >&2; failed=1; }
    finished="$(now_ms)"
    figure 'archival: %s' "$(python3 - "$OUT/archive.jsonl" $((finished - started)) <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
last, ms = lines[-1], int(sys.argv[2])
dates = last["archived_so_far"]
vacuum = f", of which VACUUM (ANALYZE) {last['vacuum_seconds']:.1f} s" if "vacuumed" in last else ""
closed = sum(l.get("ledger_rows_closed") or 0 for l in lines)
print(f"{dates} dates in {ms / 1000:.1f} s ({dates * 1000 / max(1, ms):.0f} dates/s){vacuum}; "
      f"ledger rows closed: {closed}")
EOF
)"
    tables "archived"
    local left
    left="$(q "$CONCERT_DB" "SELECT count(*) FROM schedules WHERE archived_at IS NULL AND starts_at < now() - interval '31 days'")"
    figure 'dates due and still hot: %s' "$left"
    ((left == 0)) || failed=1
    figure 'ledger rows in the DEFAULT partition: %s; monthly partitions: %s' \
        "$(q "$PAYMENT_DB" "SELECT count(*) FROM ledger_default")" \
        "$(q "$PAYMENT_DB" "SELECT count(*) FROM pg_inherits WHERE inhparent = 'ledger'::regclass") (DEFAULT included)"
    # The past months closed (by batch archive's upkeep or the leader's job, whichever held
    # the upkeep's lock), and their totals equal to their rows.
    local waited=0
    until [[ "$(q "$PAYMENT_DB" "SELECT before > '-infinity' FROM ledger_closed")" == t ]] || ((waited >= 180)); do
        sleep 5
        waited=$((waited + 5))
    done
    local closed
    closed="$(q "$PAYMENT_DB" "SELECT c.before::date || '; closed partitions: ' ||
        (SELECT count(*) FROM pg_trigger WHERE tgname = 'ledger_month_closed') || '; totals equal to their rows: ' ||
        ((c.charged, c.paid, c.refunded) = (SELECT coalesce(sum(amount) FILTER (WHERE kind = 'CHARGE'), 0),
                                             coalesce(sum(amount) FILTER (WHERE kind = 'PAYMENT'), 0),
                                             coalesce(sum(amount) FILTER (WHERE kind = 'REFUND'), 0)
                                      FROM ledger WHERE created_at < c.before))::text
        FROM ledger_closed c")"
    figure 'ledger closed before: %s' "$closed"
    [[ $closed == *"totals equal to their rows: true" ]] || failed=1
    history "$OUT/history-after.json"
    if cmp -s "$OUT/history-before.json" "$OUT/history-after.json"; then
        figure 'the probe'"'"'s history after archival: the same bodies, byte for byte'
    else
        figure 'the probe'"'"'s history after archival: DIFFERENT (history-before.json, history-after.json)'
        failed=1
    fi

    settle
    sale C || failed=1
    printf '%s\n' "${summary[@]}" >"$OUT/summary.txt"
    log "summary in $OUT/summary.txt"
    return "$failed"
}

main "$@"
