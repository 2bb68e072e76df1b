#!/usr/bin/env bash
# How long the outbox relay's statement takes to drain a backlog, in PostgreSQL alone: the
# backlog an outbox gathers while the broker is away, or while a restarted stack sends the
# expiry events of the hours it was down.
#
#   bench/outbox-drain.sh                 # 1,000,000 published rows, a backlog of 23,000
#   ROWS=200000 BACKLOG=5000 bench/outbox-drain.sh
#
# It makes a throwaway database (bench_outbox_drain) on the platform's PostgreSQL
# (127.0.0.1:5432, user postgres) with the outbox of common/src/migration.rs, fills it with
# ROWS published rows and has autovacuum's view of it (ANALYZE) while nothing is pending, as a
# running outbox nearly always is; then marks the last BACKLOG rows pending and has the
# relay's batch statement (256 rows a batch, generic plans, as the services run it) take and
# mark them until none is left, once with each statement:
#   before  the statement up to 90f3ec1 (changed in a15fdaa): a batch row's earlier rows of
#           the same key were looked for among all pending rows, for every row of the batch;
#   now     common/src/outbox.rs (`publish_batch`): only the rows another relay holds below
#           the batch's last id are read, once.
# It prints the time of each and drops the database.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROWS="${ROWS:-1000000}" BACKLOG="${BACKLOG:-23000}" DB=bench_outbox_drain
psql_() { psql -X -q -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1 "$@"; }
trap 'psql_ -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT

psql_ -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" \
    -c "CREATE DATABASE $DB"
psql_ -d "$DB" <<SQL
CREATE TABLE outbox (
    id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE, topic text NOT NULL,
    key text NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz, traceparent text);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
-- Each event's key is its reservation, as with reservation.expired.
INSERT INTO outbox (event_id, topic, key, payload, published_at)
    SELECT gen_random_uuid(), 'reservation.expired', g::text, '{"reservation_id": 1}', now()
    FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE outbox;
SQL

readonly BEFORE="WITH batch AS (SELECT id, key FROM outbox WHERE published_at IS NULL
      ORDER BY id LIMIT 256 FOR UPDATE SKIP LOCKED)
    SELECT b.id FROM batch b WHERE NOT EXISTS (SELECT 1 FROM outbox p WHERE p.key = b.key
      AND p.published_at IS NULL AND p.id < b.id AND p.id NOT IN (SELECT id FROM batch))"
readonly NOW="WITH batch AS (SELECT id, key FROM outbox WHERE published_at IS NULL
      ORDER BY id LIMIT 256 FOR UPDATE SKIP LOCKED),
    others AS MATERIALIZED (SELECT p.id, p.key FROM outbox p WHERE p.published_at IS NULL
      AND p.id < (SELECT max(id) FROM batch) AND p.id NOT IN (SELECT id FROM batch))
    SELECT b.id FROM batch b WHERE NOT EXISTS (SELECT 1 FROM others o WHERE o.key = b.key
      AND o.id < b.id)"

for variant in before now; do
    if [[ "$variant" == now ]]; then statement="$NOW"; else statement="$BEFORE"; fi
    psql_ -d "$DB" -c "UPDATE outbox SET published_at = NULL WHERE id > $ROWS - $BACKLOG"
    started="$(date +%s%N)"
    # The broker's part is left out, and the batches run in one transaction (a DO block).
    result="$(psql_ -d "$DB" -tA 2>&1 <<SQL
SET plan_cache_mode = force_generic_plan;
DO \$\$
DECLARE n int; total int := 0; batches int := 0;
BEGIN
  LOOP
    WITH taken AS ($statement)
    UPDATE outbox SET published_at = now() FROM taken WHERE outbox.id = taken.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    EXIT WHEN n = 0;
    total := total + n;
    batches := batches + 1;
  END LOOP;
  RAISE NOTICE '% rows in % batches', total, batches;
END \$\$;
SQL
    )"
    ms=$(( ($(date +%s%N) - started) / 1000000 ))
    printf '[outbox-drain] %-6s %s: %d ms\n' "$variant" "${result##*NOTICE:  }" "$ms"
done
