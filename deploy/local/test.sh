#!/usr/bin/env bash
# The one command that runs every check and test of the platform (README: "Run all tests").
#
#   1. make sure PostgreSQL, Redis, Apache Kafka and nginx are installed and running
#   2. the gateway's nginx config passes nginx -t; every Kubernetes overlay renders and
#      validates offline (deploy/k8s/check.sh); cargo fmt --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. the whole test suite (cargo-nextest if installed, else cargo test)
#
# Tests create their own databases, Redis key prefixes and topic prefixes, so they run in
# parallel against the shared local services. Tests that pause or kill a broker share a
# Kafka node of their own (127.0.0.1:19092, .stack/test-kafka), started on first use and
# removed here before and after the run. Extra arguments go to the test runner.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[test] %s\n' "$*"; }

log "infrastructure"
deploy/local/ensure-infra.sh

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export TEST_DATABASE_ADMIN_URL="${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

log "gateway config: nginx -t"
gateway_state="$(mktemp -d)"
nginx -t -q -c "$(deploy/gateway/render.sh "$gateway_state")" -p "$gateway_state"
rm -rf "$gateway_state"

log "Kubernetes manifests: render every overlay, validate offline"
deploy/k8s/check.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The private test broker: a fresh one per run, gone when the run ends (even on failure).
remove_test_broker() {
    deploy/local/kafka-node.sh stop .stack/test-kafka --kill >/dev/null 2>&1 || true
    rm -rf .stack/test-kafka
}
remove_test_broker
trap remove_test_broker EXIT

log "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
