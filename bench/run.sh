#!/usr/bin/env bash
# Regenerates docs/BENCHMARKS.md. Restarts the local stack (deploy/local/stack.sh) with the
# benchmark's settings, runs every loadtest scenario through the gateway on :8080, saves each
# report as JSON under .bench/<time>/ and renders them into docs/BENCHMARKS.md.
#
#   bench/run.sh                     # every scenario
#   SCENARIOS="queue-join baseline" bench/run.sh
#   FLASH_SALE_RUNS=1 bench/run.sh   # one measured flash sale instead of three
#
# The stack's settings (the gateway's per-address limits raised, the baseline's bare route,
# admission with the services' own defaults) are in bench/lib.sh, shared with bench/crash-drill.sh and
# recorded in every report.
#
# Right after hold-distinct, bench/pgbench-hold.sh runs the hold's own SQL through pgbench
# against the same stack's PostgreSQL (a throwaway concert, removed afterwards): the ceiling
# the holds are read against (pgbench-hold.json).
#
# The flash sale runs first, on a freshly started stack of its own (its memory figures are its
# own, and no other scenario's holds expire during it), after a warm-up sale that is not
# measured (bench_warm_up in bench/lib.sh), through bench/purchase_cost.py (`run`,
# as bench/purchase-cost.sh does): it reads the CPU time
# of every process of the stack when the sale opens and when it is over, then (`merge`) writes
# the CPU per purchase into the sale's report as figures.cpu_ms_per_purchase. It runs
# FLASH_SALE_RUNS sales (3) one after another on that stack, each with its files (cost.json,
# sale.json, sale.txt, loadtest.log, snapshots.json, and report.json: the report with the CPU)
# in .bench/<time>/flash-sale/sale-<n>/; `purchase_cost.py pick` writes the one with the median
# sell-out time as .bench/<time>/flash-sale.json, every sale's headline figures in its
# figures.sales.
#
# Exit status: non-zero when any scenario's invariant audit failed or a scenario could not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
log() { printf '[bench] %s\n' "$*"; }

full=1
[[ -n ${SCENARIOS:-} ]] && full=0
# The flash sale runs first, on a stack of its own: after the endpoint scenarios, thousands of
# their holds would expire during it and their sweep would be charged to the sale.
SCENARIOS="${SCENARIOS:-flash-sale baseline queue-join queue-poll seat-map hold-distinct hold-contended charge pay}"
# Sales measured, one after another on the flash sale's stack: one varies from the next by more
# than most changes we measure, so BENCHMARKS.md shows the one with the median sell-out and
# every sale's figures beside it.
sale_runs="${FLASH_SALE_RUNS:-3}"
[[ $sale_runs =~ ^[1-9][0-9]*$ ]] || { log "FLASH_SALE_RUNS must be a whole number >= 1"; exit 2; }

log "building"
cargo build --release --locked --bins --quiet
out=".bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
# The endpoint scenarios measure one endpoint of a service, with many requests per session
# (hold-distinct: request i is a new hold by user i % U; hold-contended: each client holds in a
# closed loop): the per-session hold limit (2r/s, burst 10) would measure the gateway's
# refusals instead, so it is raised for them, on a stack started for them once. The flash
# sale's own fresh stack has the production limit: each fan is its own session and waits out
# a 429 for its Retry-After.
endpoints_stack=0
endpoints_stack() {
    ((endpoints_stack)) && return 0
    log "restarting the stack with the benchmark settings"
    GATEWAY_HOLD_RATE="${BENCH_HOLD_RATE:-100000r/s}" GATEWAY_HOLD_BURST="${BENCH_HOLD_BURST:-100000}" \
        STACK_SKIP_BUILD=1 bench_restart_stack
    endpoints_stack=1
}

status=0
for scenario in $SCENARIOS; do
    if [[ $scenario == flash-sale ]]; then
        log "fresh stack for the flash sale"
        STACK_SKIP_BUILD=1 bench_restart_stack
        endpoints_stack=0
        mkdir -p "$out/flash-sale"
        bench_warm_up target/release/loadtest "$out/flash-sale/warm-up.log" || status=1
        sales=()
        for ((n = 1; n <= sale_runs; n++)); do
            bench_wait_for_earlier_holds
            log "scenario flash-sale, sale $n of $sale_runs, through bench/purchase_cost.py (CPU per purchase)"
            sale="$out/flash-sale/sale-$n"
            mkdir -p "$sale"
            python3 bench/purchase_cost.py run "$sale" target/release/loadtest || status=1
            [[ -s $sale/sale.txt ]] && cat "$sale/sale.txt"
            [[ -s $sale/sale.json ]] || continue
            if ! python3 bench/purchase_cost.py merge "$sale" "$sale/report.json"; then
                log "no CPU per purchase: the report goes in without it"
                cp "$sale/sale.json" "$sale/report.json"
                status=1
            fi
            sales+=("$sale/report.json")
        done
        ((${#sales[@]})) && { python3 bench/purchase_cost.py pick "$out/flash-sale.json" "${sales[@]}" || status=1; }
    else
        endpoints_stack
        log "scenario $scenario"
        target/release/loadtest run "$scenario" --json "$out/$scenario.json" || status=1
    fi
    if [[ $scenario == hold-distinct ]]; then
        log "pgbench-hold: the hold's SQL alone, against the same PostgreSQL"
        bench/pgbench-hold.sh "$out/pgbench-hold.json" || status=1
    fi
done

# The reports in the order BENCHMARKS.md shows them, whatever order they ran in.
reports=()
for report in baseline queue-join queue-poll seat-map hold-distinct pgbench-hold hold-contended charge pay flash-sale; do
    if [[ -s $out/$report.json ]]; then
        reports+=("$out/$report.json")
    fi
done

if ((full)); then
    target/release/loadtest markdown "${reports[@]}" > docs/BENCHMARKS.md
    log "docs/BENCHMARKS.md rendered from $out"
else
    log "reports in $out (docs/BENCHMARKS.md is rendered only by a run of every scenario)"
fi
exit "$status"
