#!/usr/bin/env bash
# The one command that runs every check and test of the platform (README: "Run all tests").
#
#   1. make sure PostgreSQL, Redis, Apache Kafka, nginx and Chromium are installed and running
#   2. the gateway's nginx config passes nginx -t; the merged OpenAPI document (apidoc)
#      equals the committed docs/openapi.json; every Kubernetes overlay renders and validates
#      offline and the document's paths are exactly the gateway's public routes
#      (deploy/k8s/check.sh); the alert rules pass promtool's check and unit tests and the
#      dashboards' queries parse (deploy/monitoring/check-rules.sh); shellcheck, hadolint and
#      checkov find nothing unjustified
#      (deploy/lint.sh); the web app (web/): npm ci --ignore-scripts, eslint, tsc against
#      API types generated from docs/openapi.json (a contract change that breaks the app
#      fails here), vite build into web/dist; cargo fmt --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. the whole test suite (cargo-nextest if installed, else cargo test), with schemathesis
#      (PyPI, pinned below, in a cached virtualenv) for the contract test: SCHEMATHESIS; the
#      web app's browser tests (Playwright on Debian's Chromium, web/e2e) run inside it, in
#      e2e/tests/api/browser.rs, against web/dist behind a gateway of their own
#   5. the services' suites and the end-to-end suite again against a local 3-master Redis
#      Cluster (deploy/local/redis-cluster.sh, started here)
#
# Tests create their own databases, Redis key prefixes and topic prefixes, so they run in
# parallel against the shared local services. Tests that pause or kill a broker share a
# Kafka node of their own (127.0.0.1:19092, .stack/test-kafka), started on first use and
# removed here before and after the run. Extra arguments go to the test runner.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[test] %s\n' "$*"; }
die() { printf '[test] ERROR: %s\n' "$*" >&2; exit 1; }

# The contract test's schemathesis (e2e/tests/api/contract.rs), in a virtualenv outside the
# repository (TICKETING_SCHEMATHESIS_VENV), installed once per version.
readonly SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV="${TICKETING_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/schemathesis-venv}"
ensure_schemathesis() {
    local st="$SCHEMATHESIS_VENV/bin/schemathesis"
    if [[ -x $st ]] && "$st" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
        return
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install -y python3)"
    if [[ ! -x $SCHEMATHESIS_VENV/bin/python ]]; then
        log "creating virtualenv $SCHEMATHESIS_VENV"
        mkdir -p "$(dirname "$SCHEMATHESIS_VENV")"
        python3 -m venv "$SCHEMATHESIS_VENV" \
            || die "python3 -m venv failed (on Debian: apt-get install -y python3-venv)"
    fi
    log "installing schemathesis==$SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
    "$SCHEMATHESIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" </dev/null
    "$st" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION" \
        || die "schemathesis $SCHEMATHESIS_VERSION did not install into $SCHEMATHESIS_VENV"
}

log "infrastructure"
deploy/local/ensure-infra.sh --browser

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export TEST_DATABASE_ADMIN_URL="${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

log "gateway config: nginx -t"
gateway_state="$(mktemp -d)"
nginx -t -q -c "$(deploy/gateway/render.sh "$gateway_state")" -p "$gateway_state"
rm -rf "$gateway_state"

log "OpenAPI: the merged document (apidoc) equals docs/openapi.json"
openapi_doc="$(mktemp)"
cargo run -q --locked -p apidoc </dev/null >"$openapi_doc" \
    || die "apidoc failed: the services' OpenAPI documents do not merge"
if ! cmp -s "$openapi_doc" docs/openapi.json; then
    diff -u docs/openapi.json "$openapi_doc" | head -n 60 >&2 || true
    rm -f "$openapi_doc"
    die "docs/openapi.json is stale; regenerate it: cargo run -q -p apidoc > docs/openapi.json"
fi

log "Kubernetes manifests: render every overlay, validate offline; OpenAPI paths = gateway routes"
OPENAPI_DOC="$openapi_doc" deploy/k8s/check.sh
log "alert rules (promtool check and unit tests) and dashboards"
deploy/monitoring/check-rules.sh
rm -f "$openapi_doc"

log "static checks: shellcheck (scripts), hadolint (Dockerfile), checkov (overlays, Dockerfile)"
deploy/lint.sh

# The web app: installed from its lock file without install scripts (so Playwright never
# downloads a browser of its own: the tests drive /usr/bin/chromium), then checked and built.
# `typecheck` regenerates the API types from docs/openapi.json (checked above) first. Vite 8
# needs Node.js 20.19 or newer (package.json "engines"); Debian 12's own nodejs is 18.
log "web app: npm ci --ignore-scripts, lint, typecheck, build (web/dist)"
command -v npm >/dev/null 2>&1 || die "npm is required for the web app (Node.js >= 20.19 with npm)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number);
process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
    || die "the web app needs Node.js >= 20.19; this is $(node --version) (Debian 12's nodejs is 18: use NodeSource's)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error </dev/null)
(cd web && npm run --silent lint </dev/null)
(cd web && npm run --silent typecheck </dev/null)
(cd web && npm run --silent build </dev/null)

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

log "schemathesis $SCHEMATHESIS_VERSION (the contract test)"
ensure_schemathesis

# The gateway's /api/docs page serves swagger-ui-dist from the committed lock file; the
# contract test checks the real page, so its assets are installed (no install scripts).
log "npm ci in deploy/gateway/docs (the /api/docs page's assets)"
command -v npm >/dev/null 2>&1 || die "npm is required for the /api/docs assets (apt-get install -y npm)"
(cd deploy/gateway/docs && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error </dev/null)
export SCHEMATHESIS="$SCHEMATHESIS_VENV/bin/schemathesis"

run_tests() {
    if command -v cargo-nextest >/dev/null 2>&1; then
        cargo nextest run --locked --no-fail-fast "$@"
    else
        cargo test --locked --no-fail-fast "$@"
    fi
}

log "tests"
run_tests --workspace "$@"

# The services' own suites and the end-to-end one again, with REDIS_URL naming a Redis Cluster
# (three local masters, deploy/local/redis-cluster.sh): every script and pipeline must keep
# to one slot. Tests that cut Redis off or count its commands use a private single Redis
# either way.
log "tests against a Redis Cluster: common, users-api, concert-api, payment-api, batch, e2e"
deploy/local/redis-cluster.sh start
REDIS_URL="$(deploy/local/redis-cluster.sh url)" \
    run_tests -p common -p users-api -p concert-api -p payment-api -p batch -p e2e "$@"
