#!/usr/bin/env bash
# The chaos rehearsal: a flash sale per fault, the fault injected mid-sale, the audit after it,
# and docs/RELIABILITY.md rendered from the reports (`loadtest reliability`).
#
#   bench/chaos.sh                          # the whole matrix; rewrites docs/RELIABILITY.md
#   bench/chaos.sh kafka-pause redis-cut    # some faults; the matrix only in .bench/chaos-*/
#   CHAOS_USERS=1000 CHAOS_SCHEDULES=10 bench/chaos.sh     # smaller sales
#
# The stack runs as in production would: two replicas of every API behind the gateway and two
# batch processes, a leader and a hot standby (STACK_REPLICAS=2, deploy/local/README.md), with
# the benchmark's settings (bench/lib.sh). The services reach PostgreSQL and Redis through
# `loadtest proxy` (a TCP proxy that can cut or slow a dependency); the load tool's own setup
# and audit reach them directly. Admission is paced (below) so that a sale lasts about a minute. Every fault is one row of the matrix: a fresh flash sale of
# CHAOS_USERS fans for CHAOS_SCHEDULES × 50 seats, the fault injected CHAOS_FAULT_AT_SECS
# after the opening, its window (from the injection until the cause is removed and the hurt
# part is ready again) written to the fault log the load tool reads at its end. The load
# tool's audit then says whether any seat sold twice, money was made or lost, a payment stayed
# unsettled past PAYMENT_SETTLE_DIRECT_AFTER_SECS, or a 5xx came outside the fault's window.
#
# Files in .bench/chaos-<time>/<n>-<fault>/: report.txt, report.json, loadtest.log,
# faults.log, fault.json (what was injected), runner.log (restarts). The stack is left running
# (deploy/local/stack.sh down; the proxies stop with this script).
#
# Exit status: 0 when every row passed its audit and every hurt part came back.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# An on-sale paced by its waiting room, as a real one is: about 20 fans admitted a second
# (5 every 250 ms, at most 100 at once), so the sale lasts about a minute and every fault, the
# longest 30 s, starts and ends while fans are buying, with time after it to see recovery.
export QUEUE_MAX_ACTIVE="${QUEUE_MAX_ACTIVE:-100}" QUEUE_ADMIT_PER_TICK="${QUEUE_ADMIT_PER_TICK:-5}"
# shellcheck source=bench/lib.sh
source bench/lib.sh

readonly USERS="${CHAOS_USERS:-2000}" SCHEDULES="${CHAOS_SCHEDULES:-20}"
readonly FAULT_AT_SECS="${CHAOS_FAULT_AT_SECS:-10}"
# A part not back this long after its fault is not coming back by itself.
readonly READY_TIMEOUT_SECS=120
# Fixed ports: the services (deploy/local/stack.sh), the proxies in front of the data stores.
declare -rA PORTS=([users-api]=8081 [concert-api]=8082 [payment-api]=8083 [batch]=8084
    [users-api-2]=8091 [concert-api-2]=8092 [payment-api-2]=8093 [batch-2]=8094)
readonly PG_PROXY=15432 PG_CONTROL=15433 REDIS_PROXY=16379 REDIS_CONTROL=16380
readonly PID_DIR="${STACK_DIR:-.stack}/pids" KAFKA_DIR="${STACK_DIR:-.stack}/kafka"

# The matrix, in order: NAME|what is injected|what it taught us (the lesson goes into
# docs/RELIABILITY.md as written here).
readonly FAULTS=(
    "kill-concert-api|SIGKILL of concert-api (one of two replicas), restarted 3 s later|The gateway sends the next request to the other replica and no fan sees an error. Confirmations are another matter: the dead replica's share of the payment events waits until the consumer group evicts it (the broker's session timeout, about 10 s), so the slowest confirmation takes about that long."
    "kill-payment-api|SIGKILL of payment-api (one of two replicas), restarted 3 s later|The payments in flight at the kill are answered 502 by the gateway, which never resends a POST that reached a service; the fans send them again with their idempotency keys and each is charged once. The outbox rows the dead replica wrote are published by the other replica's relay."
    "kill-users-api|SIGKILL of users-api (one of two replicas), restarted 3 s later|Sessions and the line live in Redis, not in the process: the other replica serves the same fans, and the killed replica's event streams reconnect or fall back to polling."
    "kill-batch-leader|SIGKILL of the batch leader; the standby holds the lease within BATCH_LEASE_MS|Admission pauses for at most one lease period; the standby takes the lease and the line moves on. Expiry and reconciliation are idempotent, so the standby repeats nothing harmful."
    "stop-concert-api|SIGSTOP of concert-api (one of two replicas) for 20 s, then SIGCONT|A frozen process is worse than a dead one: it still accepts connections, so the requests that reached it hang until the gateway's 15 s proxy_read_timeout (a hold answered 504, a payment 503 when payment-api's 2 s call to concert-api ran out) and a few fans wait 15 s for a confirmation. Reads are retried on the other replica. A shorter read timeout for holds, or the replica taken out on its first timeout, would cut the wait."
    "stop-batch-leader|SIGSTOP of the batch leader for 20 s, then SIGCONT|The lease expires while the leader is frozen and the standby takes over; the old leader, woken, sees the lease is no longer its own before it runs a job, so two leaders never admit at once."
    "kafka-restart-term|Kafka broker stopped with SIGTERM (clean shutdown) and started again|Payments are taken while the broker is away (the outbox keeps the events); confirmations wait and arrive after it is back. No request fails."
    "kafka-restart-kill|Kafka broker SIGKILLed and started again (log recovery on start)|As with a clean stop, plus the broker's log recovery: the idempotent producer and the inbox make a redelivered event harmless."
    "kafka-pause|Kafka broker frozen with SIGSTOP for 30 s, then SIGCONT|A hung broker looks like a slow one: producers time out and retry from the outbox, consumers lose their sessions and rejoin; confirmations are late, never lost. A run of this matrix once saw every consumer of every service stop for good after the freeze, waiting (we read in librdkafka's group log on a later run) for offset commits sent into the frozen broker: a rebalance ends only when they are answered, and an unanswered request waited 60 s. Consumers now keep one commit in flight, give up on a request after 10 s, and replace a member whose group stays unsettled for six session timeouts while the broker answers."
    "postgres-restart|PostgreSQL restarted (pg_ctlcluster restart -m fast) mid-sale|Every pooled connection dies at once. The first run of this matrix found the requests in flight answered 500, a lost database reported as our own bug; a database out of reach is now a 503 DEPENDENCY_UNAVAILABLE with Retry-After (common::db::is_unavailable), the fans retry, the pools reconnect, and a transaction either committed before the restart or never happened."
    "redis-cut|Redis unreachable for 5 s (the proxy resets every connection and refuses new ones)|Sessions, the line and the hold counters are unavailable: requests answer 503, never 500, and the services reconnect by themselves when Redis is back."
    "redis-restart-empty|Redis shut down without saving and started empty: every session, queue pass and counter is gone|Money and seats live in PostgreSQL and stay exact, and the rooms' organiser settings come back from PostgreSQL. Every fan is told 401 and logs in again, joins the line again and buys the rest: the cost is a log-in storm, answered mostly 503 LOGIN_BUSY with Retry-After by the four password-hashing slots, so the crowd takes tens of seconds to be back in line. Sessions are what to protect (Redis persistence or a replica)."
    "slow-postgres|50 ms added to every PostgreSQL round trip for 20 s|A 50 ms slower database costs far more than 50 ms a request: a hold or a payment makes several round trips, so they take 1–3 s, and payments whose call to concert-api outlasts payment-api's 2 s timeout are answered 503 and paid again by the fans. Nothing is lost; fewer round trips per hold and one deadline shared along the call would be the cure."
    "kill-payment-and-kafka|payment-api (one replica) and the Kafka broker SIGKILLed together, both restarted|Two faults at once add up but do not compound: payments go to the other replica, their events wait in the outbox for the broker."
    "postgres-and-batch-leader|PostgreSQL restarted and the batch leader SIGKILLed together|The standby takes the lease while the database is coming back; its first jobs fail and are retried on the next tick."
)

log() { printf '[chaos] %s\n' "$*"; }
die() { printf '[chaos] ERROR: %s\n' "$*" >&2; exit 1; }

# --- the fault log of the current row --------------------------------------------------------

labels=() starts=() ends=() window=0

# open_window LABEL: a window from now, open; its index in `window`.
open_window() {
    window=${#labels[@]}
    labels[window]=$1 starts[window]="$(now_ms)" ends[window]=-
    write_fault_log "$FAULT_LOG" labels starts ends
}

close_window() {
    ends[$1]="$(now_ms)"
    write_fault_log "$FAULT_LOG" labels starts ends
}

# --- the parts and their health --------------------------------------------------------------

# instance_pid INSTANCE: the pid stack.sh recorded for it, if that process runs its binary.
instance_pid() {
    local pid exe bin=${1%-2}
    [[ -r $PID_DIR/$1.pid ]] || return 1
    pid="$(tr -dc '0-9' <"$PID_DIR/$1.pid")" || return 1
    [[ -n $pid ]] && alive "$pid" || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
    [[ ${exe% (deleted)} == "$PWD/target/release/$bin" ]] && echo "$pid"
}

ready() {
    [[ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:${PORTS[$1]}/health/ready" 2>/dev/null)" == 200 ]]
}

# wait_for WHAT CMD...: until CMD succeeds (every 100 ms), at most READY_TIMEOUT_SECS.
wait_for() {
    local what=$1 deadline=$(($(now_ms) + READY_TIMEOUT_SECS * 1000))
    shift
    until "$@"; do
        (($(now_ms) < deadline)) || { log "NOT BACK: $what within ${READY_TIMEOUT_SECS}s"; failed=1; return 1; }
        sleep 0.1
    done
}

# The batch instance holding the lease (its /metrics says batch_leader 1); asked a few times,
# as a loaded machine may answer slowly or a handover may be under way.
batch_leader() {
    local b try
    for try in 1 2 3 4 5; do
        for b in batch batch-2; do
            if curl -s -m 5 "http://127.0.0.1:${PORTS[$b]}/metrics" 2>/dev/null | grep -qE '^batch_leader(\{[^}]*\})? 1$'; then
                echo "$b"
                return 0
            fi
        done
        sleep "0.$try"
    done
    return 1
}

kafka_pid() { deploy/local/kafka-node.sh pid "$KAFKA_DIR" 2>/dev/null; }
kafka_up() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9092' 2>/dev/null; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { [[ "$(redis-cli -p 6379 ping 2>/dev/null)" == PONG ]]; }
pg_version() { pg_lsclusters -h | awk '$2 == "main" {print $1; exit}'; }

# The stack as this runner runs it: two replicas, the data stores behind the proxies.
stack_up() {
    STACK_REPLICAS=2 STACK_SKIP_BUILD=1 \
        REDIS_URL="redis://127.0.0.1:$REDIS_PROXY" \
        USERS_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PROXY/ticketing_users" \
        CONCERT_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PROXY/ticketing_concert" \
        PAYMENT_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PROXY/ticketing_payment" \
        deploy/local/stack.sh up >>"$RUNNER_LOG" 2>&1
}

all_ready() {
    local i
    for i in "${!PORTS[@]}"; do ready "$i" || return 1; done
}

# proxy CONTROL_PORT COMMAND: one command to a proxy; its answer.
proxy() {
    local answer
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    echo "$2" >&3
    read -r answer <&3
    exec 3>&-
    [[ $answer == ok* ]] || die "proxy :$1 refused '$2': $answer"
}

proxy_pids=()
start_proxies() {
    target/release/loadtest proxy --listen "127.0.0.1:$PG_PROXY" --upstream 127.0.0.1:5432 \
        --control "127.0.0.1:$PG_CONTROL" 2>>"$OUT/proxies.log" &
    proxy_pids+=($!)
    target/release/loadtest proxy --listen "127.0.0.1:$REDIS_PROXY" --upstream 127.0.0.1:6379 \
        --control "127.0.0.1:$REDIS_CONTROL" 2>>"$OUT/proxies.log" &
    proxy_pids+=($!)
    local port
    for port in "$PG_CONTROL" "$REDIS_CONTROL"; do
        wait_for "proxy control :$port" timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
    done
}

# Before each row: every part up and healthy, the proxies forwarding without delay.
heal_everything() {
    local pid i
    pid="$(kafka_pid)" && kill -CONT "$pid" 2>/dev/null
    for i in "${!PORTS[@]}"; do
        pid="$(instance_pid "$i")" && kill -CONT "$pid" 2>/dev/null
    done
    proxy "$PG_CONTROL" heal && proxy "$PG_CONTROL" "delay 0"
    proxy "$REDIS_CONTROL" heal && proxy "$REDIS_CONTROL" "delay 0"
    stack_up || die "the stack does not come up (see $RUNNER_LOG)"
    wait_for "every instance ready" all_ready
    wait_for "a batch leader" batch_leader >/dev/null
}

# --- the faults ------------------------------------------------------------------------------

# kill_instance INSTANCE: SIGKILL, restart 3 s later, window until ready again.
kill_instance() {
    local inst=$1 pid w
    pid="$(instance_pid "$inst")" || die "$inst is not running before its kill"
    open_window "$inst killed (SIGKILL)"
    w=$window
    kill -KILL "$pid"
    while alive "$pid"; do sleep 0.05; done
    sleep 3
    bring_back "$inst"
    close_window "$w"
}

# bring_back INSTANCE: stack.sh up (in the background) until INSTANCE answers ready; an up that
# ended without bringing it back (a data store still recovering from another fault) is run
# again. Returns once it is ready, or marks the row failed after READY_TIMEOUT_SECS.
bring_back() {
    local up deadline=$(($(now_ms) + READY_TIMEOUT_SECS * 1000))
    stack_up &
    up=$!
    until ready "$1"; do
        if ! kill -0 "$up" 2>/dev/null; then
            wait "$up" || true
            stack_up &
            up=$!
        fi
        if (($(now_ms) > deadline)); then
            log "NOT BACK: $1 within ${READY_TIMEOUT_SECS}s"
            failed=1
            break
        fi
        sleep 0.1
    done
    wait "$up" || true
}

# freeze_instance INSTANCE: SIGSTOP for 20 s, SIGCONT, window until ready again.
freeze_instance() {
    local inst=$1 pid w
    pid="$(instance_pid "$inst")" || die "$inst is not running before it is frozen"
    open_window "$inst frozen (SIGSTOP 20 s)"
    w=$window
    kill -STOP "$pid"
    sleep 20
    kill -CONT "$pid"
    wait_for "$inst ready" ready "$inst"
    close_window "$w"
}

# restart_kafka SIGNAL: stop the broker with it, start it again, window until it listens.
restart_kafka() {
    local pid w
    pid="$(kafka_pid)" || die "Kafka is not running"
    open_window "Kafka broker stopped ($1) and restarted"
    w=$window
    kill "-$1" "$pid"
    while alive "$pid" || kafka_up; do sleep 0.05; done
    deploy/local/ensure-infra.sh >>"$RUNNER_LOG" 2>&1
    wait_for "Kafka" kafka_up
    close_window "$w"
}

restart_postgres() {
    local w
    open_window "PostgreSQL restarted"
    w=$window
    pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main restart -m fast >>"$RUNNER_LOG" 2>&1
    wait_for "PostgreSQL" pg_up
    close_window "$w"
}

fault_kill-concert-api() { kill_instance concert-api; }
fault_kill-payment-api() { kill_instance payment-api; }
fault_kill-users-api() { kill_instance users-api; }
fault_kill-batch-leader() {
    local leader
    leader="$(batch_leader)" || die "no batch instance says it leads"
    kill_instance "$leader"
}
fault_stop-concert-api() { freeze_instance concert-api; }
fault_stop-batch-leader() {
    local leader
    leader="$(batch_leader)" || die "no batch instance says it leads"
    freeze_instance "$leader"
}
fault_kafka-restart-term() { restart_kafka TERM; }
fault_kafka-restart-kill() { restart_kafka KILL; }
fault_kafka-pause() {
    local pid w
    pid="$(kafka_pid)" || die "Kafka is not running"
    open_window "Kafka broker frozen (SIGSTOP 30 s)"
    w=$window
    kill -STOP "$pid"
    sleep 30
    kill -CONT "$pid"
    close_window "$w"
}
fault_postgres-restart() { restart_postgres; }
fault_redis-cut() {
    local w
    open_window "Redis unreachable (proxy cut 5 s)"
    w=$window
    proxy "$REDIS_CONTROL" cut
    sleep 5
    proxy "$REDIS_CONTROL" heal
    close_window "$w"
}
fault_redis-restart-empty() {
    local w
    open_window "Redis shut down (nosave) and started empty"
    w=$window
    redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
    while redis_up; do sleep 0.05; done
    deploy/local/ensure-infra.sh >>"$RUNNER_LOG" 2>&1
    wait_for "Redis" redis_up
    close_window "$w"
}
fault_slow-postgres() {
    local w
    open_window "PostgreSQL 50 ms slower (proxy delay, 20 s)"
    w=$window
    proxy "$PG_CONTROL" "delay 50"
    sleep 20
    proxy "$PG_CONTROL" "delay 0"
    close_window "$w"
}
fault_kill-payment-and-kafka() {
    local payment kafka
    payment="$(instance_pid payment-api-2)" || die "payment-api-2 is not running"
    kafka="$(kafka_pid)" || die "Kafka is not running"
    open_window "payment-api-2 and the Kafka broker SIGKILLed together"
    kill -KILL "$payment" "$kafka"
    while alive "$payment" || alive "$kafka" || kafka_up; do sleep 0.05; done
    sleep 3
    bring_back payment-api-2 # stack.sh up starts the broker too (ensure-infra.sh)
    wait_for "Kafka" kafka_up
    close_window "$window"
}
fault_postgres-and-batch-leader() {
    local leader pid
    leader="$(batch_leader)" || die "no batch leader"
    pid="$(instance_pid "$leader")" || die "$leader is not running"
    open_window "PostgreSQL restarted and the batch leader ($leader) SIGKILLed together"
    kill -KILL "$pid"
    pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main restart -m fast >>"$RUNNER_LOG" 2>&1
    wait_for "PostgreSQL" pg_up
    bring_back "$leader"
    close_window "$window"
}

# --- one row ---------------------------------------------------------------------------------

# run_fault N NAME DESCRIPTION LESSON
run_fault() {
    local n=$1 name=$2 dir loadtest_pid status=0 opened
    dir="$OUT/$(printf '%02d' "$n")-$name"
    mkdir -p "$dir"
    FAULT_LOG="$dir/faults.log" RUNNER_LOG="$dir/runner.log"
    # shellcheck disable=SC2034 # ends is read through write_fault_log's namerefs
    labels=() starts=() ends=() failed=0
    write_fault_log "$FAULT_LOG" labels starts ends
    log "[$n] $name: healing everything, then a sale of $USERS fans for $((SCHEDULES * 50)) seats"
    heal_everything
    target/release/loadtest run flash-sale --users "$USERS" --schedules "$SCHEDULES" \
        --fault-log "$FAULT_LOG" --json "$dir/report.json" \
        >"$dir/report.txt" 2>"$dir/loadtest.log" &
    loadtest_pid=$!
    until grep -q 'the sale opens' "$dir/loadtest.log" 2>/dev/null; do
        kill -0 "$loadtest_pid" 2>/dev/null || { tail "$dir/loadtest.log" >&2; die "loadtest ended before the sale opened"; }
        sleep 0.2
    done
    opened="$(now_ms)"
    sleep_until $((opened + FAULT_AT_SECS * 1000))
    log "[$n] $name: injecting at sale +$(secs $(($(now_ms) - opened)))s"
    "fault_$name"
    wait "$loadtest_pid" || status=$?
    jq -n --arg name "$name" --arg injected "$3" --arg lesson "$4" \
        --argjson at "$((starts[0] - opened))" --argjson back "$((failed == 0))" \
        --argjson exit "$status" --arg users "$USERS" --arg seats "$((SCHEDULES * 50))" \
        '{name: $name, injected: $injected, lesson: $lesson, injected_at_ms: $at,
          came_back: ($back == 1), loadtest_exit: $exit,
          sale: "\($users) fans, \($seats) seats"}' >"$dir/fault.json"
    if ((status == 0 && failed == 0)); then
        log "[$n] $name: PASSED ($(grep -m1 'recovered after' "$dir/report.txt" | sed 's/^ *//'))"
    else
        log "[$n] $name: FAILED (loadtest exited $status; a part did not come back: $failed); see $dir"
        overall=1
    fi
    reports+=("$dir")
}

stop_all() {
    local pid
    for pid in "${proxy_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    jobs -p | xargs -r kill 2>/dev/null || true
}
trap stop_all EXIT

main() {
    local wanted=("$@") entry name i=0 overall=0 reports=()
    command -v curl >/dev/null || die "curl is required"
    OUT=".bench/chaos-$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$OUT"
    RUNNER_LOG="$OUT/runner.log"
    log "building"
    cargo build --release --locked --bins --quiet
    log "starting the proxies and a fresh stack: two replicas of everything"
    start_proxies
    deploy/local/stack.sh down >>"$RUNNER_LOG" 2>&1 || true
    for entry in "${FAULTS[@]}"; do
        IFS='|' read -r name injected lesson <<<"$entry"
        if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $name "* ]]; then
            continue
        fi
        i=$((i + 1))
        run_fault "$i" "$name" "$injected" "$lesson"
    done
    ((i > 0)) || die "no such fault: ${wanted[*]} (see FAULTS in $0)"
    target/release/loadtest reliability "${reports[@]}" >"$OUT/RELIABILITY.md"
    if ((${#wanted[@]} == 0)); then
        cp "$OUT/RELIABILITY.md" docs/RELIABILITY.md
        log "docs/RELIABILITY.md rendered from $OUT"
    else
        log "the matrix of these faults: $OUT/RELIABILITY.md (docs/ is rendered by a run of every fault)"
    fi
    if ((overall)); then log "FAILED: see the rows above"; else log "PASSED: every fault"; fi
    return "$overall"
}

main "$@"
