#!/usr/bin/env bash
# Regenerates docs/BENCHMARKS.md. Restarts the local stack (deploy/local/stack.sh) with the
# benchmark's settings, runs every loadtest scenario through the gateway on :8080, saves each
# report as JSON under .bench/<time>/ and renders them into docs/BENCHMARKS.md.
#
#   bench/run.sh                     # every scenario
#   SCENARIOS="queue-join baseline" bench/run.sh
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
# the CPU per purchase into the sale's report as figures.cpu_ms_per_purchase. Its files
# (cost.json, sale.json, sale.txt, loadtest.log, snapshots.json) are in .bench/<time>/flash-sale/;
# the report with the CPU is .bench/<time>/flash-sale.json.
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
        bench_wait_for_earlier_holds
        log "scenario flash-sale, through bench/purchase_cost.py (CPU per purchase)"
        sale="$out/flash-sale"
        python3 bench/purchase_cost.py run "$sale" target/release/loadtest || status=1
        [[ -s $sale/sale.txt ]] && cat "$sale/sale.txt"
        if [[ -s $sale/sale.json ]] && ! python3 bench/purchase_cost.py merge "$sale" "$out/flash-sale.json"; then
            log "no CPU per purchase: the report goes in without it"
            cp "$sale/sale.json" "$out/flash-sale.json"
            status=1
        fi
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
