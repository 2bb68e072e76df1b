#!/usr/bin/env bash
# What organisers watching a sale cost the database: POLLS requests for one concert's sale view
# (GET /api/admin/concerts/{id}/sale, through the gateway, as the admin), AT_ONCE in flight at a
# time, like that many open consoles; prints the CPU concert-api's PostgreSQL backends used for
# them (from /proc), in all and per poll, and how many times concert-api read the figures
# (sale_view_figures_reads_total).
#
#   bench/sale-view.sh                               # the concert with the most reservations
#   CONCERT=95 POLLS=300 AT_ONCE=10 bench/sale-view.sh
#   STACK_BIN_DIR=/path/to/other/build bench/sale-view.sh   # another build's binaries
#
# Restarts the local stack (deploy/local/stack.sh) and stops it at the end. The figures read
# after a sale are cheaper than during one: the sale's new rows cost a visit to the heap each
# until a vacuum marks their pages all-visible. Run it alternated with the build it is
# compared against; the machine's drift is larger than one run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
log() { printf '[sale-view] %s\n' "$*" >&2; }
die() { printf '[sale-view] ERROR: %s\n' "$*" >&2; exit 1; }

polls="${POLLS:-300}" at_once="${AT_ONCE:-10}"
[[ $polls =~ ^[1-9][0-9]*$ && $at_once =~ ^[1-9][0-9]*$ ]] || die "POLLS and AT_ONCE are positive integers"
[[ -n ${STACK_BIN_DIR:-} ]] && export STACK_SKIP_BUILD=1
psql_concert() { psql -X -qtA -h 127.0.0.1 -U postgres -d ticketing_concert -c "$1"; }
concert="${CONCERT:-$(psql_concert "SELECT concert_id FROM reservations GROUP BY 1 ORDER BY count(*) DESC, 1 DESC LIMIT 1")}"
[[ $concert =~ ^[0-9]+$ ]] || die "no concert with reservations: run a flash sale first (bench/purchase-cost.sh), or set CONCERT"
log "concert $concert: $(psql_concert "SELECT count(*) FROM reservations WHERE concert_id = $concert") reservations"

trap 'deploy/local/stack.sh down >/dev/null 2>&1 || true' EXIT
bench_restart_stack >/dev/null || die "the stack did not start"
base=http://127.0.0.1:8080
token="$(curl -fsS -X POST "$base/api/sessions" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"${STACK_ADMIN_PASSWORD:-admin-pass-local}\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')" || die "the admin could not log in"
poll() {
    seq "$1" | xargs -P "$2" -I{} curl -s -o /dev/null -w '%{http_code}\n' \
        -H "authorization: Bearer $token" "$base/api/admin/concerts/$concert/sale"
}
# Past the start-up passes (the inventory's full resync, batch's first jobs), with the pool's
# connections open.
sleep 5
poll 20 4 >/dev/null

# concert-api's PostgreSQL backends: those whose client port is one of its connections.
api="$(cat .stack/pids/concert-api.pid)"
ports="$(ss -tnp | awk -v p="pid=$api," '$0 ~ p && $5 ~ /:5432$/ { n = split($4, a, ":"); print a[n] }' | paste -sd, -)"
[[ -n $ports ]] || die "concert-api has no PostgreSQL connection"
backends="$(psql -X -qtA -h 127.0.0.1 -U postgres -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE client_port IN ($ports)")"
ticks() {
    local t=0 p
    for p in $backends; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo "$t"
}
reads() { curl -fsS "http://127.0.0.1:8082/metrics" | awk '$1 ~ /^sale_view_figures_reads_total([{]|$)/ { print $2 }'; }

reads_before="$(reads)"
before="$(ticks)" started="$(date +%s.%N)"
answers="$(poll "$polls" "$at_once" | sort | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? " " : ""), $2, $1 }')"
after="$(ticks)" ended="$(date +%s.%N)"
reads_after="$(reads)"
python3 - "$polls" "$at_once" "$started" "$ended" "$before" "$after" "$(getconf CLK_TCK)" \
    "${reads_before:-}" "${reads_after:-}" "$answers" "$(wc -w <<<"$backends")" <<'EOF'
import sys
polls, at_once, t0, t1, a, b, hz = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
r0, r1, answers, backends = sys.argv[8], sys.argv[9], sys.argv[10], sys.argv[11]
ms = (b - a) * 1000 / hz
reads = f"{float(r1) - float(r0):.0f}" if r0 and r1 else "not exported by this build"
print(f"[sale-view] {polls} polls, {at_once} at a time, in {t1 - t0:.1f} s (answers {answers}); "
      f"concert-api's {backends} PostgreSQL backends used {ms:.0f} ms of CPU, {ms / polls:.2f} ms a poll; "
      f"figures read: {reads}")
EOF
