#!/usr/bin/env bash
# What tracing costs. The same load scenarios against three configurations, interleaved over
# ROUNDS rounds, each run on fresh databases and an empty Redis:
#
#   base  the release build of BASE_REF (default: the commit before traces were added)
#   off   this checkout's release build, OTEL_EXPORTER_OTLP_ENDPOINT unset
#   on    this checkout, exporting every span to bench/otlp-sink.py (a stand-in collector
#         on this machine that reads and drops what it is sent)
#   1pct  the same, keeping 1 % of the traces (OTEL_TRACES_SAMPLER=parentbased_traceidratio,
#         OTEL_TRACES_SAMPLER_ARG=0.01), as a busy deployment would
#
#   bench/trace-cost.sh
#   SCENARIOS="baseline pay" ROUNDS=3 BASE_REF=<commit> bench/trace-cost.sh
#   FLASH_SALE_ARGS="--users 10000 --schedules 100" bench/trace-cost.sh   # (default 4000 / 40)
#
# Prints, per scenario, each configuration's median over the rounds of the main endpoint's
# req/s and p99 (the flash sale: also payment → CONFIRMED p99), and off/base and on/base as
# ratios measured in this one session. CONFIGS picks some of them (default: all four). Reports go to .bench/trace-cost-<time>/. The base
# build lives in .bench/trace-base-src (a git worktree) with its own target directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
log() { printf '[trace-cost] %s\n' "$*"; }

BASE_REF="${BASE_REF:-b9b948915e869cf1d3c1d37d90125b6d74f16ab6}"
SCENARIOS="${SCENARIOS:-baseline hold-distinct pay flash-sale}"
ROUNDS="${ROUNDS:-3}"
CONFIGS="${CONFIGS:-base off on 1pct}"
SINK_PORT="${SINK_PORT:-4318}"
# A flash sale smaller than bench/run.sh's (4,000 fans for 2,000 seats), so a round stays short.
read -r -a FLASH_SALE_ARGS <<<"${FLASH_SALE_ARGS:---users 4000 --schedules 40}"
base_src=.bench/trace-base-src base_target="$PWD/.bench/trace-base-target"
out=".bench/trace-cost-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

log "building this checkout and $BASE_REF (release)"
cargo build --release --locked --bins --quiet
if [[ ! -d $base_src ]]; then
    git worktree add --detach "$base_src" "$BASE_REF" >/dev/null
fi
git -C "$base_src" checkout --quiet --detach "$BASE_REF"
(cd "$base_src" && CARGO_TARGET_DIR="$base_target" cargo build --release --locked --bins --quiet)

# The endpoint scenarios measure one endpoint with many requests per session (as bench/run.sh).
export GATEWAY_HOLD_RATE="${BENCH_HOLD_RATE:-100000r/s}" GATEWAY_HOLD_BURST="${BENCH_HOLD_BURST:-100000}"
export STACK_SKIP_BUILD=1

sink_pid=
stop_sink() {
    if [[ -n $sink_pid ]]; then
        kill "$sink_pid" 2>/dev/null || true
        wait "$sink_pid" 2>/dev/null || true
        sink_pid=
    fi
}
trap 'stop_sink; deploy/local/stack.sh down >/dev/null 2>&1 || true' EXIT

# fresh_state: the stack down, its databases dropped (ensure-infra creates them again) and
# Redis emptied, so every run starts from the same nothing.
fresh_state() {
    deploy/local/stack.sh down >/dev/null
    local db
    for db in ticketing_users ticketing_concert ticketing_payment; do
        psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    done
    redis-cli -h 127.0.0.1 -p 6379 FLUSHALL >/dev/null
}

# run CONFIG ROUND: one configuration's run of every scenario.
run() {
    local config=$1 round=$2 scenario
    fresh_state
    case $config in
    base) export STACK_BIN_DIR="$base_target/release" ;;
    *) unset STACK_BIN_DIR ;;
    esac
    unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG
    if [[ $config == on || $config == 1pct ]]; then
        bench/otlp-sink.py "$SINK_PORT" "$out/$config-$round.sink.json" &
        sink_pid=$!
        export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT"
    fi
    if [[ $config == 1pct ]]; then
        export OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01
    fi
    log "round $round: $config"
    deploy/local/stack.sh up >"$out/$config-$round.stack.log" 2>&1 ||
        { tail -20 "$out/$config-$round.stack.log" >&2; return 1; }
    local args
    for scenario in $SCENARIOS; do
        args=()
        [[ $scenario == flash-sale ]] && args=("${FLASH_SALE_ARGS[@]}")
        target/release/loadtest run "$scenario" "${args[@]}" --json "$out/$config-$round-$scenario.json" \
            >"$out/$config-$round-$scenario.log" 2>&1 ||
            log "  $scenario: the run or its audit failed (see $out/$config-$round-$scenario.log)"
    done
    deploy/local/stack.sh down >/dev/null
    stop_sink
}

for ((round = 1; round <= ROUNDS; round++)); do
    for config in $CONFIGS; do
        run "$config" "$round"
    done
done

python3 - "$out" "$SCENARIOS" "$ROUNDS" "$CONFIGS" <<'EOF'
import json, statistics, sys
from pathlib import Path

out, scenarios, rounds = Path(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3])
configs = sys.argv[4].split()

def figures(config, scenario):
    rows = []
    for r in range(1, rounds + 1):
        f = out / f"{config}-{r}-{scenario}.json"
        if not f.is_file():
            continue
        rep = json.loads(f.read_text())
        main = max(rep["endpoints"], key=lambda e: e["requests"])
        confirm = next((l["p99_ms"] for l in rep.get("latencies", []) if "database clock" in l["name"]), None)
        rows.append((main["name"], main["per_second"], main["p99_ms"], confirm))
    return rows

med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"| scenario | main endpoint | config | req/s | p99 ms | payment → CONFIRMED p99 ms | req/s vs base | p99 vs base |")
print("|---|---|---|---|---|---|---|---|")
for s in scenarios:
    base = figures("base", s)
    b_rps, b_p99 = med([r[1] for r in base]), med([r[2] for r in base])
    for c in configs:
        rows = figures(c, s)
        if not rows:
            continue
        rps, p99 = med([r[1] for r in rows]), med([r[2] for r in rows])
        confirms = [r[3] for r in rows if r[3] is not None]
        confirm = f"{med(confirms):.0f}" if confirms else ""
        print(f"| {s} | {rows[0][0]} | {c} | {rps:.0f} | {p99:.1f} | {confirm} | {rps / b_rps:.2f} | {p99 / b_p99:.2f} |")
for c in configs:
    sinks = [json.loads(p.read_text()) for p in sorted(out.glob(f"{c}-*.sink.json"))]
    if sinks:
        print(f"\n{c}: exported to the sink {sum(s['requests'] for s in sinks) / len(sinks):.0f} "
              f"requests, {sum(s['bytes'] for s in sinks) / len(sinks) / 1e6:.1f} MB per run "
              f"({len(sinks)} runs)")
EOF
log "reports in $out"
