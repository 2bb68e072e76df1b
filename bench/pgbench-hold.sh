#!/usr/bin/env bash
# The physical ceiling of a hold: the hold's own SQL (bench/pgbench-hold.sql: concert-api's call
# of claim_free_seats, the buyer's lock and the claim of a free seat in one round trip) run by pgbench straight against
# the platform's PostgreSQL, with no HTTP, Redis or service in front of it. hold-distinct is
# read against it in docs/BENCHMARKS.md.
#
#   bench/pgbench-hold.sh OUT.json                       # 10 s, 64 clients (hold-distinct's)
#   DURATION=3 CLIENTS=4 bench/pgbench-hold.sh OUT.json  # a short look
#
# bench/run.sh runs it right after hold-distinct, against the same running stack's database
# (ticketing_concert on 127.0.0.1:5432, user postgres). It makes a throwaway concert with
# enough AVAILABLE seats (each client its own schedules of 1,000 seats, sized for MAX_TPS
# (10000) transactions a second over the whole run), runs pgbench for DURATION seconds with
# CLIENTS connections (prepared statements, as the services use), each transaction claiming
# a seat no other one claims, checks that every transaction held its seat, then deletes
# everything it made (reservation_seats, seats, reservations, schedules, the concert) — also
# when interrupted.
#
# OUT.json is a report in loadtest's shape (scenario "pgbench-hold", one row "pgbench hold
# (claim_free)": transactions, transactions a second, latency percentiles from pgbench's
# per-transaction log), which `loadtest markdown` renders. Exit status: non-zero when pgbench
# failed, a transaction did not hold its seat, or the cleanup left rows behind.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[pgbench-hold] %s\n' "$*" >&2; }
die() { printf '[pgbench-hold] ERROR: %s\n' "$*" >&2; exit 1; }

# Deletes every row of the throwaway concert (if any), the rows that point at others first;
# sets `left` to the rows still there. Run at the end, and on the way out when cut short.
concert="" left="" removed_concert=""
remove_concert() {
    [[ -n $concert ]] || return 0
    # The seats go with the foreign-key triggers off (their reservation_seats rows are deleted
    # first, in the same transaction): the only index on reservation_seats.seat_id is partial,
    # so each deleted seat's check would scan the whole table — minutes for 128,000 seats.
    q -c "BEGIN; \
        DELETE FROM reservation_seats WHERE reservation_id IN (SELECT id FROM reservations WHERE concert_id = $concert); \
        SET LOCAL session_replication_role = replica; \
        DELETE FROM seats WHERE schedule_id IN (SELECT id FROM schedules WHERE concert_id = $concert); \
        DELETE FROM reservations WHERE concert_id = $concert; \
        DELETE FROM schedules WHERE concert_id = $concert; \
        DELETE FROM concerts WHERE id = $concert; \
        COMMIT;"
    left="$(q -c "SELECT (SELECT count(*) FROM reservations WHERE concert_id = $concert) \
        + (SELECT count(*) FROM schedules WHERE concert_id = $concert) \
        + (SELECT count(*) FROM concerts WHERE id = $concert)")"
    log "removed concert $concert ($left rows left)"
    removed_concert=$concert concert=""
}
out="${1:-}"
[[ -n $out ]] || die "usage: bench/pgbench-hold.sh OUT.json"
DURATION="${DURATION:-10}" CLIENTS="${CLIENTS:-64}" MAX_TPS="${MAX_TPS:-10000}"
for v in DURATION CLIENTS MAX_TPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number (got '${!v}')"
done
PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres PG_DB=ticketing_concert
# The local stack's services talk to PostgreSQL in plain text (a URL without `sslmode` means
# `disable` to them); libpq would negotiate TLS with a server that offers it (Debian's does),
# and encrypting every message would lower the ceiling the holds are read against.
export PGSSLMODE=disable
script=bench/pgbench-hold.sql
seats_per_schedule=1000

# pgbench ships with the PostgreSQL server package (Debian: postgresql-<version>, under
# /usr/lib/postgresql/<version>/bin/), which deploy/local/ensure-infra.sh installs.
pgbench=""
for dir in $(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -rV); do
    if [[ -x /usr/lib/postgresql/$dir/bin/pgbench ]]; then
        pgbench="/usr/lib/postgresql/$dir/bin/pgbench"
        break
    fi
done
[[ -n $pgbench ]] || pgbench="$(command -v pgbench || true)"
[[ -n $pgbench ]] || die "pgbench not found: it comes with the PostgreSQL server package \
(Debian: sudo apt-get install postgresql, as deploy/local/ensure-infra.sh does; it lands in \
/usr/lib/postgresql/<version>/bin/pgbench)"
psql_bin="$(dirname "$pgbench")/psql"
[[ -x $psql_bin ]] || psql_bin=psql
q() { "$psql_bin" -X -q -tA -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" "$@"; }
q -c 'SELECT 1' >/dev/null || die "cannot reach $PG_DB on $PG_HOST:$PG_PORT as $PG_USER (is the stack up?)"

blocks=$(((DURATION * MAX_TPS + CLIENTS * seats_per_schedule - 1) / (CLIENTS * seats_per_schedule)))
schedules=$((CLIENTS * blocks))
threads="$(nproc 2>/dev/null || echo 1)"
((threads > CLIENTS)) && threads=$CLIENTS
tmp="$(mktemp -d)"
trap 'remove_concert || log "could not remove concert $concert: delete it by hand"; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

log "making a throwaway concert: $schedules schedules × $seats_per_schedule seats ($CLIENTS clients × $blocks)"
concert="$(q -c "INSERT INTO concerts (title, performer) VALUES ('pgbench-hold $(date -u +%Y%m%dT%H%M%SZ)', 'bench/pgbench-hold.sh') RETURNING id")"
# The schedules of one statement take consecutive ids unless another session takes one from
# the sequence meanwhile: checked, since the script finds a client's schedules by arithmetic.
read -r first last count < <(q -F ' ' -c "WITH s AS (INSERT INTO schedules (concert_id, starts_at, booking_opens_at, seat_count, price) \
    SELECT $concert, now() + interval '30 days', now() - interval '1 minute', $seats_per_schedule, 1000 \
    FROM generate_series(1, $schedules) RETURNING id) SELECT min(id), max(id), count(*) FROM s")
((last - first + 1 == count && count == schedules)) || die "the schedules' ids are not consecutive ($first..$last for $count): run it again"
q -c "INSERT INTO seats (schedule_id, seat_no, price) SELECT s.id, n, 1000 FROM schedules s, generate_series(1, $seats_per_schedule) n WHERE s.concert_id = $concert"
q -c "ANALYZE seats" >/dev/null

version="$("$pgbench" --version)"
log "$version: $CLIENTS clients, $threads threads, $DURATION s"
started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status=0
"$pgbench" -n -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -M prepared -c "$CLIENTS" -j "$threads" \
    -T "$DURATION" -f "$script" -D seq=0 -D first_schedule="$first" -D blocks="$blocks" \
    -D concert="$concert" -D buyer_base=1000000000000 \
    --log --log-prefix="$tmp/tx" "$PG_DB" >"$tmp/pgbench.out" 2>"$tmp/pgbench.err" || status=$?
cat "$tmp/pgbench.out" >&2
if ((status != 0)); then
    tail -n 20 "$tmp/pgbench.err" >&2
    log "pgbench exited with $status"
fi

read -r held reservations < <(q -F ' ' -c "SELECT (SELECT count(*) FROM seats s JOIN schedules sc ON sc.id = s.schedule_id WHERE sc.concert_id = $concert AND s.status = 'HELD'), (SELECT count(*) FROM reservations WHERE concert_id = $concert AND status = 'HELD')")
remove_concert

export PGB_OUT="$out" PGB_TMP="$tmp" PGB_HELD="$held" PGB_RESERVATIONS="$reservations" \
    PGB_LEFT="$left" PGB_CONCERT="$removed_concert" PGB_STARTED_AT="$started_at" \
    PGB_DURATION="$DURATION" PGB_CLIENTS="$CLIENTS" PGB_THREADS="$threads" PGB_VERSION="$version" \
    PGB_DB="$PG_DB on $PG_HOST:$PG_PORT" PGB_SCRIPT="$script" \
    PGB_SEATS="$schedules schedules × $seats_per_schedule of a throwaway concert, each client its own $blocks"
python3 - <<'PY' || status=1
import glob, json, os, re, sys

env = os.environ
text = open(f"{env['PGB_TMP']}/pgbench.out").read()


def number(pattern, default):
    m = re.search(pattern, text)
    return float(m[1]) if m else default


processed = int(number(r"number of transactions actually processed: (\d+)", 0))
failed = int(number(r"number of failed transactions: (\d+)", 0))
tps = number(r"tps = ([\d.]+) \(without initial connection time\)", 0.0)
# pgbench's per-transaction log: client_id transaction_no time_us script_no epoch epoch_us
# ("failed" in place of the time of a failed one).
lat = []
for path in glob.glob(f"{env['PGB_TMP']}/tx.*"):
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                lat.append(int(fields[2]) / 1000.0)
lat.sort()


def pct(p):
    return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else 0.0


held, reservations = int(env["PGB_HELD"]), int(env["PGB_RESERVATIONS"])
left = int(env["PGB_LEFT"])
# The machine as loadtest names it (loadtest/src/run/settings.rs).
cores = len(os.sched_getaffinity(0))
with open("/proc/cpuinfo") as f:
    model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown CPU")
with open("/proc/meminfo") as f:
    mem = next((int(l.split()[1]) for l in f if l.startswith("MemTotal:")), 0)
name = "pgbench hold (claim_free)"
statuses = {"committed": processed}
if failed:
    statuses["failed"] = failed
detail = (f"{processed} transactions committed, {failed} failed; {held} seats HELD, "
          f"{reservations} reservations")
if held != processed:
    detail += " (did the seats run out? raise MAX_TPS)"
report = dict(
    scenario="pgbench-hold",
    started_at=env["PGB_STARTED_AT"],
    measured_seconds=float(env["PGB_DURATION"]),
    settings={
        "clients": env["PGB_CLIENTS"],
        "duration": f"{env['PGB_DURATION']} s",
        "pgbench": env["PGB_VERSION"],
        "threads": env["PGB_THREADS"],
        "query mode": "prepared (-M prepared), as the services' statements",
        "database": env["PGB_DB"],
        "script": f"{env['PGB_SCRIPT']} (concert-api's claim_free: one call of claim_free_seats)",
        "seats": env["PGB_SEATS"],
        "latency clock": "from the sending (closed loop: each client begins its next transaction "
                         "when the previous one has committed; pgbench's per-transaction log)",
        "machine": f"{cores} cores × {model}, {mem / 1024 / 1024:.0f} GiB",
    },
    endpoints=[dict(name=name, requests=processed, per_second=tps, p50_ms=pct(0.50),
                    p95_ms=pct(0.95), p99_ms=pct(0.99), max_ms=lat[-1] if lat else 0.0,
                    statuses=statuses, codes={})],
    latencies=[],
    memory=[],
    audit=[
        dict(name="every transaction held a new seat",
             ok=processed > 0 and failed == 0 and held == processed == reservations,
             detail=detail),
        dict(name="the throwaway concert is gone", ok=left == 0,
             detail=f"{left} rows of concert {env['PGB_CONCERT']} left after the cleanup"),
    ],
    facts={
        "transactions": str(processed),
        "transactions a second (pgbench, without connection time)": f"{tps:.0f}",
        "latency samples (pgbench --log)": str(len(lat)),
    },
    figures=dict(endpoint=name, requests_per_second=tps, p99_ms=pct(0.99)),
)
with open(env["PGB_OUT"], "w") as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
    f.write("\n")
ok = all(c["ok"] for c in report["audit"])
print(f"[pgbench-hold] {processed} holds, {tps:.0f} tx/s, p50 {pct(0.5):.1f} ms, "
      f"p99 {pct(0.99):.1f} ms; audit {'ok' if ok else 'FAILED'}; report in {env['PGB_OUT']}",
      file=sys.stderr)
sys.exit(0 if ok else 1)
PY
exit "$status"
