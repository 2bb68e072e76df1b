-- One hold as concert-api makes it, for pgbench (run by bench/pgbench-hold.sh): the buyer's
-- lock, the one-statement claim of a free seat, the commit — the transaction of
-- `BoxOffice::hold_seats` (concert-api/src/domain/box_office.rs) when every seat is free.
--
-- KEEP IN STEP with concert-api/src/store/holds.rs: the SELECT is `lock_buyer`'s statement (the
-- buyer's lock, and generic plans for the rest of the transaction) and the WITH statement is
-- `claim_free`'s (with its `OWNED` part), copied as they are, their parameters replaced:
--   $1 schedule       :schedule              $5 seats asked   1
--   $2 seat numbers   ARRAY[:seat::int]      $6 buyer         :buyer
--   $3 held_until     now() + 300 s (RESERVATION_HOLD_SECS)   $7 concert   :concert
--   $4 stale_before   now() - 30 s (RESERVATION_GRACE_SECS)
--
-- Every transaction claims a seat no other one claims: client c takes the seats of its own
-- `:blocks` schedules of 1,000 seats (`:first_schedule` + c × `:blocks` onwards), one after
-- the other (`:seq`, a per-client counter from -D seq=0), and a new buyer (no two transactions
-- wait on one buyer's lock; the limit count finds nothing, as for a first hold).
\set seq :seq + 1
\set schedule :first_schedule + :client_id * :blocks + (:seq - 1) / 1000
\set seat (:seq - 1) % 1000 + 1
\set buyer :buyer_base + :client_id * 10000000 + :seq
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('buyer:' || :buyer::bigint::text || ':' || :concert::bigint::text, 0)),
       set_config('plan_cache_mode', 'force_generic_plan', true);
WITH target AS (
    SELECT id, seat_no, price, status, held_until FROM seats
    WHERE schedule_id = :schedule::bigint AND seat_no = ANY(ARRAY[:seat::int]) ORDER BY seat_no FOR UPDATE),
 verdict AS (
    SELECT count(*) FILTER (WHERE status = 'AVAILABLE') AS free,
           count(*) FILTER (WHERE status = 'HELD' AND held_until < now() - interval '30 seconds') AS dead,
           array_agg(seat_no ORDER BY seat_no) FILTER (
               WHERE NOT (status = 'AVAILABLE' OR (status = 'HELD' AND held_until < now() - interval '30 seconds'))) AS unavailable,
           sum(price) AS amount
    FROM target),
 mine AS (
    SELECT ((SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM reservations
      WHERE user_id = :buyer::bigint AND concert_id + 0 = :concert::bigint AND status IN ('HELD', 'CONFIRMED')
        AND NOT (status = 'HELD' AND held_until < now() - interval '30 seconds'))
    + (SELECT coalesce(sum(cardinality(seat_nos)), 0) FROM archive.reservations
      WHERE user_id = :buyer::bigint AND concert_id = :concert::bigint AND status = 'CONFIRMED'))::bigint AS owned),
 lim AS (SELECT max_tickets_per_user::bigint AS max_tickets FROM concerts WHERE id = :concert::bigint),
 rid AS (
    SELECT nextval('reservations_id_seq') AS id, v.amount
    FROM verdict v, mine, lim WHERE v.free = 1 AND mine.owned + 1 <= lim.max_tickets),
 claimed AS (
    UPDATE seats se SET status = 'HELD', reservation_id = rid.id, held_until = now() + interval '300 seconds'
    FROM target t, rid WHERE se.id = t.id RETURNING se.id),
 res AS (
    INSERT INTO reservations (id, user_id, schedule_id, concert_id, seat_nos, amount, status, held_until)
    SELECT rid.id, :buyer::bigint, :schedule::bigint, :concert::bigint, ARRAY[:seat::int], rid.amount, 'HELD', now() + interval '300 seconds' FROM rid
    RETURNING id, amount, created_at),
 rs AS (
    INSERT INTO reservation_seats (reservation_id, seat_id) SELECT rid.id, c.id FROM rid, claimed c)
 SELECT v.free, v.dead, mine.owned, lim.max_tickets, v.unavailable, res.id, res.amount, res.created_at
 FROM verdict v CROSS JOIN mine CROSS JOIN lim LEFT JOIN res ON true;
COMMIT;
