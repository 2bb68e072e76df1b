-- One hold as concert-api makes it, for pgbench (run by bench/pgbench-hold.sh): the call of
-- `claim_free_seats` (the buyer's lock and the one-statement claim of a free seat, in its own
-- transaction) that `BoxOffice::hold_seats` (concert-api/src/domain/box_office.rs) makes when
-- every seat is free.
--
-- KEEP IN STEP with concert-api/src/store/holds.rs (`claim_free`): the same SELECT, its
-- parameters replaced:
--   $1 schedule       :schedule              $4 stale_before  now() - 30 s (RESERVATION_GRACE_SECS)
--   $2 seat numbers   ARRAY[:seat::int]      $5 buyer         :buyer
--   $3 held_until     now() + 300 s (RESERVATION_HOLD_SECS)   $6 concert   :concert
--
-- Every transaction claims a seat no other one claims: client c takes the seats of its own
-- `:blocks` schedules of 1,000 seats (`:first_schedule` + c × `:blocks` onwards), one after
-- the other (`:seq`, a per-client counter from -D seq=0), and a new buyer (no two transactions
-- wait on one buyer's lock; the limit count finds nothing, as for a first hold).
\set seq :seq + 1
\set schedule :first_schedule + :client_id * :blocks + (:seq - 1) / 1000
\set seat (:seq - 1) % 1000 + 1
\set buyer :buyer_base + :client_id * 10000000 + :seq
SELECT free, dead, owned, max_tickets, unavailable, id, amount, created_at
FROM claim_free_seats(:schedule::bigint, ARRAY[:seat::int], now() + interval '300 seconds',
                      now() - interval '30 seconds', :buyer::bigint, :concert::bigint);
