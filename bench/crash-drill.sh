#!/usr/bin/env bash
# A crash drill: a flash sale while the services are killed, one at a time.
#
#   bench/crash-drill.sh
#   DRILL_USERS=600 DRILL_SCHEDULES=6 bench/crash-drill.sh     # a smaller sale
#   DRILL_PROMETHEUS=1 DRILL_VICTIMS=concert-api DRILL_DOWN_SECS=330 bench/crash-drill.sh
#                      # the alert drill: concert-api away for 5.5 minutes under the local
#                      # Prometheus, whose alerts are recorded as they fire and resolve
#   DRILL_USERS=2000 DRILL_SCHEDULES=20 DRILL_PROMETHEUS=1 DRILL_VICTIMS=users-api \
#       DRILL_FIRST_KILL_SECS=8 DRILL_DOWN_SECS=480 bench/crash-drill.sh
#                      # users-api's consumer group with no member for 8 minutes
#
# DRILL_VICTIMS (default "concert-api payment-api batch users-api") are killed in that order,
# the first DRILL_FIRST_KILL_SECS (default 5) after the sale opens and the others
# DRILL_KILL_EVERY_SECS (default 5) apart: the default sale and its audit end some 20 s after
# the opening, and at 10 s apart batch and users-api were often never killed. Each is
# restarted DRILL_DOWN_SECS (default 3) after its kill. With DRILL_PROMETHEUS=1 the
# stack runs deploy/local/prometheus.sh, and the alerts' transitions (pending, firing,
# resolved), from the sale's opening until none is pending or firing after the sale (at most
# DRILL_ALERTS_SETTLE_SECS, default 600, later), go to alerts.log.
#
# It restarts the local stack with the benchmark's settings (bench/lib.sh, as bench/run.sh
# does: the gateway's per-address limits raised, its per-session limits as in production,
# which the fans wait out on 429 for the Retry-After), starts `loadtest run flash-sale
# --users 6000 --schedules 60` (3,000 seats) in the background and, from about 5 s into the
# sale, SIGKILLs concert-api, payment-api, batch and users-api one at a time about 5 s apart;
# `deploy/local/stack.sh up` restarts each 3 s after its kill (it starts only what is down).
# Each fault window, from the kill until the service's /health/ready answers 200 again, goes
# to the fault log loadtest reads at its end: the 502s of a dead service are then reported
# apart, and the audit's "no 5xx" counts only the others.
# The audit also waits for stragglers up to PAYMENT_SETTLE_DIRECT_AFTER_SECS (+10 s), so a
# payment stranded by a crash is judged only after the platform's backstop had its chance.
#
# Files in .bench/drill-<time>/: report.txt and report.json (loadtest's report), loadtest.log
# (its progress), faults.log (the windows), restarts.log (stack.sh's output). The stack is left
# running (stop it with deploy/local/stack.sh down).
#
# Exit status: loadtest's (1 when an invariant of the audit failed), or 1 when a killed service
# did not come back.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

readonly USERS="${DRILL_USERS:-6000}" SCHEDULES="${DRILL_SCHEDULES:-60}"
read -r -a VICTIMS <<<"${DRILL_VICTIMS:-concert-api payment-api batch users-api}"
readonly VICTIMS
readonly FIRST_KILL_SECS="${DRILL_FIRST_KILL_SECS:-5}" KILL_EVERY_SECS="${DRILL_KILL_EVERY_SECS:-5}" RESTART_AFTER_SECS="${DRILL_DOWN_SECS:-3}"
# A service not ready this long after its kill is not coming back by itself.
readonly READY_TIMEOUT_SECS=$((RESTART_AFTER_SECS + 120))
readonly PROMETHEUS="${DRILL_PROMETHEUS:-0}" ALERTS_SETTLE_SECS="${DRILL_ALERTS_SETTLE_SECS:-600}"
# deploy/local/stack.sh's fixed ports and pid files.
declare -rA PORTS=([users-api]=8081 [concert-api]=8082 [payment-api]=8083 [batch]=8084)
readonly PID_DIR="${STACK_DIR:-.stack}/pids"

OUT=".bench/drill-$(date -u +%Y%m%dT%H%M%SZ)"
readonly OUT FAULT_LOG="$OUT/faults.log"

log() { printf '[drill] %s\n' "$*"; }
die() { printf '[drill] ERROR: %s\n' "$*" >&2; exit 1; }

# The windows so far: labels, starts and ends (Unix ms; "-" while open), as loadtest reads them.
labels=() starts=() ends=()
# One line per kill for the final summary; the sale's opening (Unix ms) the kills are timed from.
summary=() sale_opened=0


# service_pid SVC: the pid stack.sh recorded for SVC, if that process runs SVC's binary (never a
# pid reused by something else).
service_pid() {
    local pid exe
    pid="$(tr -dc '0-9' <"$PID_DIR/$1.pid" 2>/dev/null)" || return 1
    [[ -n $pid ]] || return 1
    alive "$pid" || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
    [[ ${exe% (deleted)} == "$PWD/target/release/$1" ]] && echo "$pid"
}

ready() {
    [[ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:${PORTS[$1]}/health/ready" 2>/dev/null)" == 200 ]]
}

loadtest_running() { kill -0 "$loadtest_pid" 2>/dev/null; }


# kill_and_restore SVC: SIGKILLs SVC, restarts it with stack.sh up RESTART_AFTER_SECS later and
# waits until it is ready, keeping the fault log current. Appends a line to the summary; fails
# when SVC did not come back within READY_TIMEOUT_SECS.
kill_and_restore() {
    local svc=$1 pid killed_at up_pid up_status=0 i
    pid="$(service_pid "$svc")" || die "$svc is not running from $PID_DIR/$svc.pid before its kill"
    killed_at="$(now_ms)"
    kill -KILL "$pid"
    i=${#labels[@]}
    # shellcheck disable=SC2034 # starts and ends are read through write_fault_log's namerefs
    labels[i]="$svc killed (SIGKILL)" starts[i]=$killed_at ends[i]=-
    write_fault_log "$FAULT_LOG" labels starts ends
    # Wait until it is really gone, or a stale listener could look ready.
    while alive "$pid"; do sleep 0.05; done
    log "killed $svc (pid $pid) at sale +$(secs $((killed_at - sale_opened)))s"

    sleep "$RESTART_AFTER_SECS"
    # stack.sh's output is long and the drill's is a summary: it goes to restarts.log.
    printf '\n=== %s: stack.sh up after killing %s ===\n' "$(date -Is)" "$svc" >>"$OUT/restarts.log"
    STACK_SKIP_BUILD=1 deploy/local/stack.sh up >>"$OUT/restarts.log" 2>&1 &
    up_pid=$!

    local deadline=$((killed_at + READY_TIMEOUT_SECS * 1000)) back_at=""
    while (($(now_ms) < deadline)); do
        if ready "$svc"; then
            back_at="$(now_ms)"
            # Closed at once: the load test may end and read the log any moment now.
            # shellcheck disable=SC2034 # read through write_fault_log's namerefs
            ends[i]=$back_at
            write_fault_log "$FAULT_LOG" labels starts ends
            break
        fi
        sleep 0.1
    done
    # The next kill waits for this restart to finish: one fault at a time, and two stack.sh
    # runs must not race over the same pid files.
    wait "$up_pid" || up_status=$?
    if [[ -z $back_at ]]; then
        summary+=("$(printf '%-12s killed at sale +%5ss   NOT ready within %ss (stack.sh up exited %s; see %s)' \
            "$svc" "$(secs $((killed_at - sale_opened)))" "$READY_TIMEOUT_SECS" "$up_status" "$OUT/restarts.log")")
        return 1
    fi
    log "$svc ready again $(secs $((back_at - killed_at)))s after its kill"
    summary+=("$(printf '%-12s killed at sale +%5ss   ready again after %5ss (restarted %ss after the kill; stack.sh up exited %s)' \
        "$svc" "$(secs $((killed_at - sale_opened)))" "$(secs $((back_at - killed_at)))" "$RESTART_AFTER_SECS" "$up_status")")
}

# record_alerts: every 5 s, the local Prometheus's alerts; each change (an alert becoming
# pending, firing, or gone: resolved) goes to $OUT/alerts.log with the time since the opening.
# Runs until killed.
record_alerts() {
    local now previous="" current line
    while true; do
        current="$(deploy/local/prometheus.sh alerts 2>/dev/null | sort || true)"
        now="$(secs $(($(now_ms) - sale_opened)))"
        while IFS= read -r line; do
            [[ -n $line ]] && printf 'sale +%7ss  %s\n' "$now" "$line"
        done < <(comm -13 <(printf '%s\n' "$previous") <(printf '%s\n' "$current"))
        while IFS= read -r line; do
            # Gone, and not merely gone from pending to firing (that line is printed above).
            [[ -n $line ]] || continue
            grep -qF -- "${line#* }" <<<"$current" && continue
            printf 'sale +%7ss  resolved %s\n' "$now" "${line#* }"
        done < <(comm -23 <(printf '%s\n' "$previous") <(printf '%s\n' "$current"))
        previous="$current"
        sleep 5
    done >>"$OUT/alerts.log"
}

# A drill cut short (an error, ^C) stops its own load tool rather than leave it running.
loadtest_pid="" recorder_pid=""
stop_loadtest() {
    if [[ -n $loadtest_pid ]] && loadtest_running; then
        log "stopping loadtest (pid $loadtest_pid)"
        kill -TERM "$loadtest_pid" 2>/dev/null || true
    fi
    if [[ -n $recorder_pid ]]; then kill "$recorder_pid" 2>/dev/null || true; fi
}
trap stop_loadtest EXIT

# After the sale: waits until no alert is pending or firing (at most ALERTS_SETTLE_SECS), then
# stops the recorder.
settle_alerts() {
    local deadline=$(($(now_ms) + ALERTS_SETTLE_SECS * 1000))
    log "waiting for every alert to resolve (at most ${ALERTS_SETTLE_SECS}s)"
    while (($(now_ms) < deadline)) && [[ -n "$(deploy/local/prometheus.sh alerts 2>/dev/null)" ]]; do
        sleep 5
    done
    sleep 6 # one more round of the recorder
    kill "$recorder_pid" 2>/dev/null || true
    recorder_pid=""
}

main() {
    command -v curl >/dev/null || die "curl is required"
    mkdir -p "$OUT"
    log "building"
    cargo build --release --locked --bins --quiet
    log "restarting the stack with the benchmark settings"
    if ((PROMETHEUS)); then export STACK_PROMETHEUS=1; fi
    STACK_SKIP_BUILD=1 bench_restart_stack
    write_fault_log "$FAULT_LOG" labels starts ends

    log "flash sale: $USERS fans, $SCHEDULES schedules × 50 seats; output in $OUT"
    target/release/loadtest run flash-sale --users "$USERS" --schedules "$SCHEDULES" \
        --fault-log "$FAULT_LOG" --json "$OUT/report.json" \
        >"$OUT/report.txt" 2>"$OUT/loadtest.log" &
    loadtest_pid=$!

    # Setup (accounts, money) is not the sale: the faults are timed from the sale's opening.
    until grep -q 'the sale opens' "$OUT/loadtest.log" 2>/dev/null; do
        loadtest_running || { cat "$OUT/loadtest.log" >&2; die "loadtest ended before the sale opened"; }
        sleep 0.2
    done
    sale_opened="$(now_ms)"
    log "the sale is open"
    if ((PROMETHEUS)); then
        : >"$OUT/alerts.log"
        record_alerts &
        recorder_pid=$!
    fi

    local n=0 svc failed=0
    for svc in "${VICTIMS[@]}"; do
        sleep_until $((sale_opened + (FIRST_KILL_SECS + n * KILL_EVERY_SECS) * 1000))
        n=$((n + 1))
        if ! loadtest_running; then
            summary+=("$(printf '%-12s not killed: the load test had ended' "$svc")")
            continue
        fi
        if ! kill_and_restore "$svc"; then
            failed=1
            break
        fi
    done

    log "waiting for loadtest (its audit waits for stragglers of settlement)"
    local status=0
    wait "$loadtest_pid" || status=$?
    loadtest_pid=""
    if ((PROMETHEUS)); then settle_alerts; fi

    echo
    echo "== crash drill: faults (fault log $FAULT_LOG)"
    printf '   %s\n' "${summary[@]}"
    echo
    if ((PROMETHEUS)); then
        echo "== alerts as the local Prometheus saw them ($OUT/alerts.log)"
        if [[ -s $OUT/alerts.log ]]; then sed 's/^/   /' "$OUT/alerts.log"; else echo "   none"; fi
        echo
    fi
    echo "== loadtest report ($OUT/report.txt, JSON in $OUT/report.json)"
    cat "$OUT/report.txt"
    if ((status > 1)); then
        echo
        echo "== loadtest could not finish ($OUT/loadtest.log):"
        tail -n 20 "$OUT/loadtest.log"
    fi
    echo
    if ((status == 0 && failed == 0)); then
        log "PASSED: every invariant held through the kills"
    else
        log "FAILED: loadtest exited $status$( ((failed)) && echo '; a service did not come back')"
    fi
    if ((failed && status == 0)); then status=1; fi
    return "$status"
}

main "$@"
