#!/usr/bin/env bash
# Regenerates docs/BENCHMARKS.md. Restarts the local stack (deploy/local/stack.sh) with the
# benchmark's settings, runs every loadtest scenario through the gateway on :8080, saves each
# report as JSON under .bench/<time>/ and renders them into docs/BENCHMARKS.md.
#
#   bench/run.sh                     # every scenario
#   SCENARIOS="queue-join baseline" bench/run.sh
#
# The gateway's per-address rate limits would turn a one-address load generator away, so the
# benchmark raises them (GATEWAY_*_RATE below, recorded in every report); it also adds the
# baseline's bare route (GATEWAY_BENCH_ROUTE=1). The flash sale gets a freshly started stack so
# that its memory figures are its own. Exit status: non-zero when any scenario's invariant
# audit failed or a scenario could not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[bench] %s\n' "$*"; }

export GATEWAY_AUTH_RATE="${GATEWAY_AUTH_RATE:-100000r/s}" GATEWAY_AUTH_BURST="${GATEWAY_AUTH_BURST:-100000}"
export GATEWAY_QUEUE_RATE="${GATEWAY_QUEUE_RATE:-100000r/s}" GATEWAY_QUEUE_BURST="${GATEWAY_QUEUE_BURST:-100000}"
export GATEWAY_BENCH_ROUTE=1
export QUEUE_MAX_ACTIVE="${QUEUE_MAX_ACTIVE:-300}" QUEUE_ADMIT_PER_TICK="${QUEUE_ADMIT_PER_TICK:-100}"
export QUEUE_ADMIT_INTERVAL_MS="${QUEUE_ADMIT_INTERVAL_MS:-250}"
export RUST_LOG="${RUST_LOG:-warn}" STACK_DEMO=0
full=1
[[ -n ${SCENARIOS:-} ]] && full=0
SCENARIOS="${SCENARIOS:-baseline queue-join queue-poll seat-map hold-distinct hold-contended charge pay flash-sale}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

restart() {
    deploy/local/stack.sh down >/dev/null
    deploy/local/stack.sh up | grep -E '^\[stack\] (gateway ready|.* is ready)' || true
}

log "building"
cargo build --release --locked --bins --quiet
out=".bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
log "restarting the stack with the benchmark settings"
STACK_SKIP_BUILD=1 restart

status=0 reports=()
for scenario in $SCENARIOS; do
    if [[ $scenario == flash-sale ]]; then
        log "fresh stack for the flash sale"
        STACK_SKIP_BUILD=1 restart
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
