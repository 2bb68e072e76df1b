# shellcheck shell=bash
# Sourced by bench/run.sh, bench/purchase-cost.sh, bench/crash-drill.sh and bench/chaos.sh (from
# the repository root): the settings the benchmarks run the stack with, how they (re)start it,
# and the drills' helpers.
#
# The gateway's per-address rate limits would turn a one-address load generator away, so the
# benchmarks raise them (recorded in every report); GATEWAY_BENCH_ROUTE=1 adds the baseline's
# bare route. Admission keeps the services' defaults. Each setting may be overridden from the
# caller's environment.

export GATEWAY_AUTH_RATE="${GATEWAY_AUTH_RATE:-100000r/s}" GATEWAY_AUTH_BURST="${GATEWAY_AUTH_BURST:-100000}"
export GATEWAY_QUEUE_RATE="${GATEWAY_QUEUE_RATE:-100000r/s}" GATEWAY_QUEUE_BURST="${GATEWAY_QUEUE_BURST:-100000}"
# Requests in flight per address (256 in production): the load tool is one address with up to
# --concurrency requests in flight (1,000 in a flash sale, on top of the stack's own callers),
# so the cap is raised past anything it opens. The per-session limits (holds, event streams)
# stay as in production here: every fan is its own session (bench/run.sh raises the hold limit
# for its endpoint scenarios only).
export GATEWAY_CONN_PER_ADDR="${GATEWAY_CONN_PER_ADDR:-65535}"
export GATEWAY_BENCH_ROUTE=1
# Admission runs with the services' defaults: the pace sizes it from the checkout's pressure
# (QUEUE_PACE=auto); a caller may still pass QUEUE_MAX_ACTIVE and the others to compare.
export RUST_LOG="${RUST_LOG:-warn}" STACK_DEMO=0
# batch takes no backups during a benchmark (deploy/local/stack.sh turns them on): a pg_dump
# in the middle of a sale would be measured as the sale.
export BACKUP_DIR="${BACKUP_DIR-}"
# A flash sale holds 1,000 connections open, and the load tool runs in this shell.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Stops whatever the stack runs and starts it afresh with the settings above (set
# STACK_SKIP_BUILD=1 once the release binaries are built). On failure prints stack.sh's output
# and returns non-zero: a benchmark against a half-started stack measures nothing.
bench_restart_stack() {
    local out
    deploy/local/stack.sh down >/dev/null
    if ! out="$(deploy/local/stack.sh up 2>&1)"; then
        printf '%s\n' "$out" >&2
        return 1
    fi
    grep -E '^\[stack\] (gateway ready|.* is ready)' <<<"$out" || true
}

# Waits (up to BENCH_HOLDS_WAIT seconds, 420) until no seat of the local PostgreSQL is HELD: the
# holds an earlier benchmark left (hold-distinct leaves thousands, for the 5 minutes a hold
# lasts) end in batch's expiry sweep, and a sale measured meanwhile is charged that sweep
# (seen: PostgreSQL for batch 1.03 ms a purchase instead of 0.2). Run it with the stack up.
bench_wait_for_earlier_holds() {
    local waited=0 limit="${BENCH_HOLDS_WAIT:-420}" held
    while :; do
        held="$(psql -X -qtA -h 127.0.0.1 -U postgres -d ticketing_concert \
            -c "SELECT count(*) FROM seats WHERE status = 'HELD'" 2>/dev/null)" || return 0
        ((held == 0)) && return 0
        if ((waited >= limit)); then
            printf '[bench] WARNING: %s seats still HELD after %s s: their expiry will be measured with the sale\n' "$held" "$waited" >&2
            return 0
        fi
        ((waited % 30 == 0)) && printf '[bench] waiting for %s seats held by an earlier run to expire (%s s so far)\n' "$held" "$waited" >&2
        sleep 5
        waited=$((waited + 5))
    done
}

# Runs a flash sale that is not measured (`loadtest run flash-sale $BENCH_WARMUP_ARGS`, by
# default the measured sale's FLASH_SALE_ARGS) on the stack just started, its output in LOG, so
# that the measured sale meets a platform that has been running. On a broker started minutes
# before, the first sales pay for its JIT compiler (perf, the first sale after the broker
# started: 6.5 % of the machine's samples in its C2 compiler threads; the broker took 1.20 and
# 1.04 ms a purchase in the first two sales, 0.38–0.60 in the sales after); PostgreSQL's caches
# and the services' pools warm up too. BENCH_WARMUP=0 skips it. Returns the load tool's status:
# a warm-up whose audit fails is a failure like any other.
#   bench_warm_up LOADTEST LOG
bench_warm_up() {
    local loadtest=$1 log=$2 args=()
    [[ ${BENCH_WARMUP:-1} == 0 ]] && return 0
    read -r -a args <<<"${BENCH_WARMUP_ARGS:-${FLASH_SALE_ARGS:-}}"
    printf '[bench] warm-up: a flash sale that is not measured (%s), output in %s\n' \
        "${args[*]:-its defaults}" "$log" >&2
    if ! "$loadtest" run flash-sale "${args[@]}" >"$log" 2>&1; then
        printf '[bench] ERROR: the warm-up sale failed; see %s\n' "$log" >&2
        return 1
    fi
}

# --- for the drills (bench/crash-drill.sh, bench/chaos.sh) ----------------------------------

now_ms() { date +%s%3N; }
# secs MS: milliseconds as seconds with one decimal, for people.
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
    [[ -r /proc/$1/stat ]] || return 1
    [[ "$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# sleep_until MS: sleeps until that Unix time; returns at once if it has passed.
sleep_until() {
    local left=$(($1 - $(now_ms)))
    ((left > 0)) && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
    return 0
}

# write_fault_log FILE LABELS STARTS ENDS: the windows (the names of three arrays: labels,
# starts and ends in Unix ms, "-" while open) as loadtest reads them, rewritten whole through
# a temporary file so that loadtest never reads half a line.
write_fault_log() {
    local -n _labels=$2 _starts=$3 _ends=$4
    local i
    {
        echo "# start_unix_ms end_unix_ms label (written by ${0##*/})"
        for i in "${!_labels[@]}"; do
            echo "${_starts[i]} ${_ends[i]} ${_labels[i]}"
        done
    } >"$1.tmp"
    mv "$1.tmp" "$1"
}
