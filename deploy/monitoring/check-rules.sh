#!/usr/bin/env bash
# Offline check of the alert rules and dashboards shipped with the Kubernetes manifests:
#
#   deploy/monitoring/check-rules.sh
#   deploy/monitoring/check-rules.sh --rules-to FILE   only write the alerts as a plain
#                                                       Prometheus rule file (the local stack's
#                                                       Prometheus loads it: deploy/local/prometheus.sh)
#
#   1. the PrometheusRule deploy/k8s/base/alerts.yaml: its `spec` is written out as a plain
#      Prometheus rule file (alerts.rules.yaml in a temporary directory) and `promtool check
#      rules` parses every expression and template; every alert has a `severity` of page or
#      ticket, a summary, a description and a `runbook` naming a section of docs/OPERATIONS.md;
#   2. the unit tests deploy/monitoring/tests/*.yaml: each is copied next to that file (their
#      `rule_files` name it: `alerts.rules.yaml`) and run with `promtool test rules`; every
#      alert must have a case where it fires, with its exact labels and annotations, and a case
#      where it stays silent;
#   3. the dashboards deploy/k8s/base/dashboards/*.json: valid JSON with a uid, the `datasource`
#      variable, built-in panel types only (timeseries, stat, table), no links out, and every
#      query non-empty; the queries (Grafana's $__rate_interval & co. replaced by a duration)
#      go into a throwaway file of recording rules that `promtool check rules` parses;
#   4. every metric name in an alert or a dashboard query is documented in the metric tables
#      of docs/OPERATIONS.md (a histogram's _bucket, _sum and _count by its own name).
#
# Prints one summary line; exits non-zero on any failure. Nothing is written to the repository.
# Installs what it needs on first use:
#   - promtool: Debian's `prometheus` package (apt-get, with sudo when not root; the daemon
#     it would start is stopped and disabled: deploy/local/prometheus.sh uses its binary)
#   - PyYAML, when python3 has none: pinned below, in a cached virtualenv
#     (TICKETING_MONITORING_VENV, default ${XDG_CACHE_HOME:-~/.cache}/ticketing/monitoring-venv)
set -euo pipefail

readonly SCRIPT_NAME="check-rules"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

readonly ALERTS="$REPO_ROOT/deploy/k8s/base/alerts.yaml"
readonly DASHBOARDS="$REPO_ROOT/deploy/k8s/base/dashboards"
readonly TESTS="$SCRIPT_DIR/tests"
readonly OPERATIONS="$REPO_ROOT/docs/OPERATIONS.md"
# The file name the unit tests' `rule_files` use: the extracted rules are written under it.
readonly RULES_FILE=alerts.rules.yaml
readonly PYYAML_VERSION=6.0.2
VENV="${TICKETING_MONITORING_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ticketing/monitoring-venv}"
readonly VENV

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*"; }
err() { printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { err "$*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools.
# ---------------------------------------------------------------------------------------------
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return
    command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get: install Prometheus's promtool by hand"
    local sudo=()
    if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "promtool not found; not root and sudo is missing: apt-get install -y prometheus"
        sudo=(sudo -n)
    fi
    log "promtool is not installed; installing Debian's prometheus package"
    log "apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    log "apt-get install -y --no-install-recommends prometheus"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends prometheus </dev/null
    command -v promtool >/dev/null 2>&1 || die "the prometheus package installed no promtool"
    # We want its binaries, not its daemon: on a machine with systemd the package starts one on
    # :9090, where the local stack's Prometheus (deploy/local/prometheus.sh) listens.
    if command -v systemctl >/dev/null 2>&1; then
        "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

PYTHON=""
ensure_python() {
    command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install -y python3)"
    if python3 -c 'import yaml' >/dev/null 2>&1; then
        PYTHON=python3
        return
    fi
    if ! "$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1; then
        if [[ ! -x $VENV/bin/python ]]; then
            log "creating virtualenv $VENV (python3 has no PyYAML)"
            mkdir -p "$(dirname "$VENV")"
            python3 -m venv "$VENV" \
                || die "python3 -m venv failed (on Debian: apt-get install -y python3-venv, or python3-yaml)"
        fi
        log "installing PyYAML==$PYYAML_VERSION into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "PyYAML==$PYYAML_VERSION" </dev/null
        "$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1 || die "PyYAML did not install into $VENV"
    fi
    PYTHON="$VENV/bin/python"
}

# ---------------------------------------------------------------------------------------------
# prepare WORK: writes WORK/alerts.rules.yaml, WORK/dashboards.rules.yaml and WORK/counts, and
# checks what promtool does not: the PrometheusRule's shape, the alerts' labels, annotations and
# runbook sections, the tests' coverage, the dashboards, the metric names. Problems go to stderr,
# one a line; exits 1 if there was any.
# ---------------------------------------------------------------------------------------------
prepare() {
    "$PYTHON" - "$1" "$ALERTS" "$DASHBOARDS" "$TESTS" "$OPERATIONS" "$RULES_FILE" <<'EOF'
import json
import re
import sys
from pathlib import Path

import yaml

work, alerts_path, dash_dir, tests_dir, ops_path, rules_name = map(Path, sys.argv[1:7])
problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def rel(p):
    return str(p).replace(str(alerts_path.parents[3]) + "/", "")


# --- docs/OPERATIONS.md: documented metrics (first cell of a table row, in backticks) and
# section anchors (GitHub's: lower case, punctuation dropped, spaces to hyphens).
ops = ops_path.read_text() if ops_path.is_file() else ""
if not ops:
    problem(rel(ops_path), "missing or empty")
documented = set(re.findall(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|", ops, re.M))
anchors = set()
for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", ops, re.M):
    anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.lower())))

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}


def metric_names(expr):
    """The metric names a PromQL expression selects (label matchers, ranges, grouping
    clauses, strings, function and aggregation names and keywords taken out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word = m.group(0)
        if word.lower() in KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def check_metrics(where, expr):
    for name in sorted(metric_names(expr)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in documented and base not in documented:
            problem(where, f"metric {name} is not documented in docs/OPERATIONS.md")


# --- 1. the PrometheusRule -> a Prometheus rule file.
alerts = {}
groups = 0
try:
    docs = [d for d in yaml.safe_load_all(alerts_path.read_text()) if d]
except (OSError, yaml.YAMLError) as e:
    docs = []
    problem(rel(alerts_path), f"cannot read: {e}")
if docs:
    if len(docs) != 1:
        problem(rel(alerts_path), f"expected one object, found {len(docs)}")
    rule = docs[0]
    meta = rule.get("metadata") or {}
    if (rule.get("apiVersion"), rule.get("kind"), meta.get("name")) != ("monitoring.coreos.com/v1", "PrometheusRule", "ticketing"):
        problem(rel(alerts_path), "must be the monitoring.coreos.com/v1 PrometheusRule `ticketing`")
    if (meta.get("labels") or {}).get("app.kubernetes.io/component") != "monitoring":
        problem(rel(alerts_path), "label app.kubernetes.io/component: monitoring is missing")
    spec = rule.get("spec") or {}
    (work / rules_name).write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    for g in spec.get("groups") or []:
        groups += 1
        for r in g.get("rules") or []:
            name = r.get("alert")
            if not name:
                problem(rel(alerts_path), f"group {g.get('name')}: a rule without `alert` (recording rules belong elsewhere)")
                continue
            where = f"{rel(alerts_path)}: alert {name}"
            alerts.setdefault(name, 0)
            alerts[name] += 1
            if not re.fullmatch(r"(?:[A-Z][a-z0-9]*)+", name):
                problem(where, "name is not CamelCase")
            severity = (r.get("labels") or {}).get("severity")
            if severity not in ("page", "ticket"):
                problem(where, f"label severity is {severity!r}, not page or ticket")
            ann = r.get("annotations") or {}
            for key in ("summary", "description", "runbook"):
                if not str(ann.get(key) or "").strip():
                    problem(where, f"annotation {key} is missing")
            m = re.fullmatch(r"docs/OPERATIONS\.md#([\w-]+)", str(ann.get("runbook") or ""))
            if not m or m.group(1) not in anchors:
                problem(where, f"runbook {ann.get('runbook')!r} names no section of docs/OPERATIONS.md")
            check_metrics(where, str(r.get("expr") or ""))
if not alerts:
    problem(rel(alerts_path), "no alerts")

# --- 2. the unit tests: every alert fires somewhere (labels and annotations given) and stays
# silent somewhere; no case names an alert that does not exist.
fires, silent, cases, test_files = set(), set(), 0, 0
for f in sorted(tests_dir.glob("*.yaml")):
    test_files += 1
    where = rel(f)
    try:
        t = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        problem(where, f"not YAML: {e}")
        continue
    if t.get("rule_files") != [rules_name.name]:
        problem(where, f"rule_files must be [{rules_name.name}] (the file this script writes next to a copy of the test)")
    for group in t.get("tests") or []:
        for case in group.get("alert_rule_test") or []:
            cases += 1
            name = case.get("alertname")
            if name not in alerts:
                problem(where, f"a case at {case.get('eval_time')} tests {name!r}, which is no alert of {rel(alerts_path)}")
                continue
            expected = case.get("exp_alerts") or []
            if not expected:
                silent.add(name)
            for a in expected:
                if not a.get("exp_labels") or not a.get("exp_annotations"):
                    problem(where, f"{name} at {case.get('eval_time')}: give exp_labels and exp_annotations")
                else:
                    fires.add(name)
if not test_files:
    problem(rel(tests_dir), "no *.yaml test files")
for name in sorted(alerts):
    if name not in fires:
        problem(rel(tests_dir), f"no case where {name} fires")
    if name not in silent:
        problem(rel(tests_dir), f"no case where {name} stays silent")

# --- 3. the dashboards.
GRAFANA_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
PANEL_TYPES = {"timeseries", "stat", "table"}
records, queries, dashboards = [], 0, 0
for f in sorted(dash_dir.glob("*.json")):
    dashboards += 1
    where = rel(f)
    try:
        d = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problem(where, f"not JSON: {e}")
        continue
    uid = d.get("uid")
    if not uid or not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", str(uid)):
        problem(where, f"uid {uid!r} is missing or not a Grafana uid")
    if not d.get("title"):
        problem(where, "no title")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        problem(where, f"schemaVersion {d.get('schemaVersion')!r}: expected 36 or newer")
    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list") or []}
    ds = variables.get("datasource") or {}
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem(where, "templating needs the variable `datasource` (type datasource, query prometheus)")
    if d.get("links"):
        problem(where, "dashboard links: none wanted")
    if re.search(r"https?://", f.read_text()):
        problem(where, "contains a URL: no links out")
    seen_ids = set()
    for p in d.get("panels") or []:
        pw = f"{where}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("type") not in PANEL_TYPES:
            problem(pw, f"type {p.get('type')!r} is not one of {sorted(PANEL_TYPES)}")
        if p.get("id") in seen_ids or not isinstance(p.get("id"), int):
            problem(pw, "id missing or not unique")
        seen_ids.add(p.get("id"))
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            problem(pw, "datasource must be the ${datasource} variable")
        if p.get("links"):
            problem(pw, "panel links: none wanted")
        targets = p.get("targets") or []
        if not targets:
            problem(pw, "no query")
        for t in targets:
            expr = str(t.get("expr") or "").strip()
            tw = f"{pw} query {t.get('refId')}"
            if not expr:
                problem(tw, "empty expr")
                continue
            if (t.get("datasource") or {}).get("uid", "${datasource}") != "${datasource}":
                problem(tw, "datasource must be the ${datasource} variable")
            queries += 1
            check_metrics(tw, expr)
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace("${" + var + "}", value).replace("$" + var, value)
            record = re.sub(r"[^a-zA-Z0-9_:]", "_", f"dashboard:{uid}:panel_{p.get('id')}_{t.get('refId')}")
            records.append({"record": record, "expr": expr})
(work / "dashboards.rules.yaml").write_text(
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": records}]}, sort_keys=False)
)
if not dashboards:
    problem(rel(dash_dir), "no *.json dashboards")

(work / "counts").write_text(
    f"{sum(alerts.values())} {groups} {cases} {test_files} {dashboards} {queries} {len(documented)}\n"
)
for p in problems:
    print(f"[check-rules] ERROR: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
}

# ---------------------------------------------------------------------------------------------
main() {
    local rules_to=""
    if (($# == 2)) && [[ $1 == --rules-to ]]; then
        rules_to="$2"
    elif (($# != 0)); then
        die "usage: deploy/monitoring/check-rules.sh [--rules-to FILE]"
    fi
    ensure_promtool
    ensure_python

    local work failed=()
    work="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: the path is fixed
    trap "rm -rf '$work'" EXIT
    if [[ -n $rules_to ]]; then
        prepare "$work" >/dev/null || die "the rules, tests, dashboards or docs have problems: run deploy/monitoring/check-rules.sh"
        cp "$work/$RULES_FILE" "$rules_to"
        return
    fi

    prepare "$work" || failed+=("rules, tests, dashboards or docs (errors above)")
    [[ -f $work/counts ]] || die "could not prepare the checks (errors above)"
    local alerts groups cases test_files dashboards queries metrics
    read -r alerts groups cases test_files dashboards queries metrics <"$work/counts"

    if ! promtool check rules "$work/$RULES_FILE" >"$work/check.out" 2>&1; then
        sed 's/^/    /' "$work/check.out" >&2
        failed+=("promtool check rules on the alerts")
    fi
    if ! promtool check rules "$work/dashboards.rules.yaml" >"$work/dash.out" 2>&1; then
        sed 's/^/    /' "$work/dash.out" >&2
        failed+=("promtool check rules on the dashboards' queries")
    fi
    local test
    for test in "$TESTS"/*.yaml; do
        [[ -f $test ]] || continue
        cp "$test" "$work/"
        if ! promtool test rules "$work/$(basename "$test")" >"$work/test.out" 2>&1; then
            sed 's/^/    /' "$work/test.out" >&2
            failed+=("promtool test rules ${test#"$REPO_ROOT"/}")
        fi
    done

    if ((${#failed[@]})); then
        local joined
        joined="$(printf '%s; ' "${failed[@]}")"
        die "FAILED: ${joined%; }"
    fi
    log "OK: $alerts alerts in $groups groups pass promtool check rules; $cases unit-test cases in $test_files file(s) pass promtool test rules, every alert both firing and silent; $dashboards dashboards, $queries queries parsed by promtool; every metric used is one of the $metrics documented in docs/OPERATIONS.md"
}

main "$@"
