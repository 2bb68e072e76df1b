#!/usr/bin/env bash
# Regenerates docs/BENCHMARKS.md. Restarts the local stack (deploy/local/stack.sh) with the
# benchmark's settings, runs every loadtest scenario through the gateway on :8080, saves each
# report as JSON under .bench/<time>/ and renders them into docs/BENCHMARKS.md.
#
#   bench/run.sh                     # every scenario
#   SCENARIOS="queue-join baseline" bench/run.sh
#
# The stack's settings (the gateway's per-address limits raised, the baseline's bare route,
# admission sized to the machine) are in bench/lib.sh, shared with bench/crash-drill.sh and
# recorded in every report. The flash sale gets a freshly started stack so that its memory
# figures are its own. Exit status: non-zero when any scenario's invariant audit failed or a
# scenario could not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
log() { printf '[bench] %s\n' "$*"; }

full=1
[[ -n ${SCENARIOS:-} ]] && full=0
SCENARIOS="${SCENARIOS:-baseline queue-join queue-poll seat-map hold-distinct hold-contended charge pay flash-sale}"

log "building"
cargo build --release --locked --bins --quiet
out=".bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
log "restarting the stack with the benchmark settings"
# The endpoint scenarios measure one endpoint of a service, with many requests per session
# (hold-distinct: request i is a new hold by user i % U; hold-contended: each client holds in a
# closed loop): the per-session hold limit (2r/s, burst 10) would measure the gateway's
# refusals instead, so it is raised for them. The flash sale's fresh stack below has the
# production limit: each fan is its own session and waits out a 429 for its Retry-After.
GATEWAY_HOLD_RATE="${BENCH_HOLD_RATE:-100000r/s}" GATEWAY_HOLD_BURST="${BENCH_HOLD_BURST:-100000}" \
    STACK_SKIP_BUILD=1 bench_restart_stack

status=0 reports=()
for scenario in $SCENARIOS; do
    if [[ $scenario == flash-sale ]]; then
        log "fresh stack for the flash sale"
        STACK_SKIP_BUILD=1 bench_restart_stack
    fi
    log "scenario $scenario"
    if target/release/loadtest run "$scenario" --json "$out/$scenario.json"; then
        :
    else
        status=1
    fi
    [[ -s $out/$scenario.json ]] && reports+=("$out/$scenario.json")
done

if ((full)); then
    target/release/loadtest markdown "${reports[@]}" > docs/BENCHMARKS.md
    log "docs/BENCHMARKS.md rendered from $out"
else
    log "reports in $out (docs/BENCHMARKS.md is rendered only by a run of every scenario)"
fi
exit "$status"
