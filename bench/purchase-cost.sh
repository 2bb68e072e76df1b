#!/usr/bin/env bash
# What one purchase costs the platform, measured around one flash sale: the CPU of every
# process of the local stack, PostgreSQL transactions per database, Redis commands and Kafka
# messages, each divided by the seats bought.
#
#   bench/purchase-cost.sh
#   FLASH_SALE_ARGS="--users 10000 --schedules 100" bench/purchase-cost.sh   # (default 4000 / 40)
#   STACK_REPLICAS=2 STACK_BIN_DIR=<dir> bench/purchase-cost.sh                # another build, 2 replicas
#
# It restarts the local stack with the benchmark's settings (bench/lib.sh, as bench/run.sh
# does; STACK_BIN_DIR runs another build's services and its loadtest, STACK_REPLICAS=2 two
# instances of each service), runs a warm-up sale that is not measured (bench_warm_up in
# bench/lib.sh: BENCH_WARMUP_ARGS, default FLASH_SALE_ARGS; BENCH_WARMUP=0 skips it), waits for
# earlier runs' holds to end, watches it idle for IDLE_SECONDS (10), then runs
# `loadtest run flash-sale $FLASH_SALE_ARGS` through the gateway. bench/purchase_cost.py takes a
# snapshot of every counter before the run, when the load tool says the sale opens and that it
# is over, and SETTLE_SECONDS (11) after it exits (PostgreSQL's statistics reach
# pg_stat_database up to 10 s late), and prints two windows, each divided by the purchases
# (seats bought: fans who saw CONFIRMED, from the sale's JSON report):
#
#   sale       from "the sale opens" to "the sale is over": holds, payments, settlement
#   whole run  also the setup (sign-ups, log-ins, wallets funded) and the audit
#
# and the idle stack's rate per second (what would have run anyway). The figures:
#   - CPU seconds (utime + stime from /proc/<pid>/stat) of each instance in .stack/pids/*.pid,
#     the gateway's nginx (master and workers), the Kafka broker, Redis (INFO cpu) and
#     PostgreSQL: each connection's backend charged to the process it serves (its client port
#     in pg_stat_activity, matched with `ss -tnp`), the background processes, and what the
#     postmaster reaped from backends that exited in the window (cutime + cstime, any database)
#   - PostgreSQL transactions (xact_commit + xact_rollback in pg_stat_database) of
#     ticketing_users, ticketing_concert and ticketing_payment
#   - Redis commands (INFO commandstats, the snapshots' own INFO calls taken out)
#   - Kafka messages: the growth of the end offsets of the platform's topics and their .dlq
#     twins (read with the broker's ListOffsets request; Kafka's own tools are not installed)
# The load tool's own CPU and queries are shown apart and are not the platform's. The
# PostgreSQL cluster, Redis and the broker may be shared with other work on this machine (tests,
# other benchmarks): the report warns when other databases, topics or clients were busy.
#
# Files in .bench/purchase-cost-<time>/: cost.json (the same figures), sale.json and sale.txt
# (loadtest's report), loadtest.log, snapshots.json (the raw counters:
# `bench/purchase_cost.py report <dir>` prints the table again), stack.log. The stack is
# stopped at the end (KEEP_STACK=1 leaves it running). Exit status: loadtest's (non-zero when
# the sale's audit failed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
log() { printf '[purchase-cost] %s\n' "$*"; }
die() { printf '[purchase-cost] ERROR: %s\n' "$*" >&2; exit 1; }

read -r -a sale_args <<<"${FLASH_SALE_ARGS:---users 4000 --schedules 40}"
export FLASH_SALE_ARGS="${sale_args[*]}"
bin_dir="${STACK_BIN_DIR:-target/release}"
loadtest="${LOADTEST:-$bin_dir/loadtest}"
# Another build's binaries are run as they are (stack.sh builds only this checkout).
[[ -n ${STACK_BIN_DIR:-} ]] && export STACK_SKIP_BUILD=1
for bin in "$loadtest" "$bin_dir"/{users-api,concert-api,payment-api,batch}; do
    [[ -x $bin || ${STACK_SKIP_BUILD:-0} != 1 ]] || die "$bin is missing"
done
command -v ss >/dev/null 2>&1 || log "ss is missing: PostgreSQL connections are not charged to their clients"

out=".bench/purchase-cost-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
if [[ ${KEEP_STACK:-0} != 1 ]]; then
    trap 'deploy/local/stack.sh down >/dev/null 2>&1 || true' EXIT
fi

log "restarting the stack with the benchmark settings (${STACK_REPLICAS:-1} instance(s) of each service, binaries in $bin_dir)"
bench_restart_stack >"$out/stack.log" 2>&1 || { cat "$out/stack.log" >&2; die "the stack did not start"; }
bench_warm_up "$loadtest" "$out/warm-up.log" || die "the warm-up sale failed"
bench_wait_for_earlier_holds
log "$(grep -c 'is ready' "$out/stack.log") instances ready; flash sale: ${sale_args[*]}"

status=0
python3 bench/purchase_cost.py run "$out" "$loadtest" "${sale_args[@]}" || status=$?
log "figures in $out/cost.json (loadtest's report: $out/sale.txt)"
exit "$status"
