#!/usr/bin/env python3
"""Offline checks of one rendered overlay (`kubectl kustomize deploy/k8s/overlays/NAME`).

Run by check.sh inside its virtualenv (needs kubernetes-validate and PyYAML):

  1. every built-in object against the Kubernetes JSON schemas bundled with
     kubernetes-validate, strictly (unknown fields are errors), for each requested version;
  2. the custom resources against their CRDs' schemas (platform_checks.py; the pinned CRDs
     check.sh fetches), strictly; Strimzi's (KafkaTopic, KafkaUser: no CRD in a registry) and
     Gateway/HTTPRoute also by a structural check of the fields used here;
  3. the wiring between objects and the repository: references resolve, selectors select,
     the HTTPRoutes route exactly what deploy/gateway/nginx.conf.template routes (its proxied
     locations to the APIs, a regex location as a RegularExpression, what it sends to a stream
     listener to the Service port targeting `stream`; `/` to the web app, whose server,
     deploy/docker/web-nginx.conf, answers what the template answers outside the API routes),
     every port a route sends to open to the gateway, the
     KafkaTopics are exactly common/src/events.rs ALL_TOPICS plus their `.dlq` twins, the pods
     meet the restricted security profile and the shutdown timing adds up;
  4. with --openapi FILE (the merged document `apidoc` prints): the documented paths are
     exactly the public routes of the nginx template and of the HTTPRoutes;
  5. platform_checks.py: check-config on each Deployment's environment, probes, memory, topic
     replication, Kafka users' ACLs, egress, scrape objects, autoscalers, PDBs, zone spread,
     gateway timeouts, the connection budget (printed) and placeholders (--strict: errors).

Prints one line per problem and a summary; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import platform_checks  # noqa: E402  (next to this file)
from platform_checks import WEB, labels_match  # noqa: E402

SERVICES = {  # binary -> (port variable, port, own database variables)
    "users-api": ("USERS_API_PORT", 8081, ["USERS_DATABASE_URL"]),
    "concert-api": ("CONCERT_API_PORT", 8082, ["CONCERT_DATABASE_URL"]),
    "payment-api": ("PAYMENT_API_PORT", 8083, ["PAYMENT_DATABASE_URL"]),
    "batch": (
        "BATCH_PORT",
        8084,
        ["USERS_DATABASE_URL", "CONCERT_DATABASE_URL", "PAYMENT_DATABASE_URL"],
    ),
}
APIS = ["users-api", "concert-api", "payment-api"]
# A service's second listener for the waiting room's status streams only (binary -> (port
# variable, port)): its container port is named `stream`, and the route of the status stream
# (nginx: the upstream users_stream) goes to a Service port targeting it.
STREAM_PORTS = {"users-api": ("USERS_API_STREAM_PORT", 8085)}
STREAM_PORT_NAME = "stream"
# The web app: nginx (the image's, deploy/docker/web-nginx.conf) serving web/dist; the HTTPRoute
# `web` sends it `/` (every path no API route matches).
WEB_PORT, WEB_PROBES_PORT = 8080, 8090
WEB_CONF = "deploy/docker/web-nginx.conf"
WEB_ARGS = ["-e", "stderr", "-c", "/etc/ticketing-web/nginx.conf", "-g", "daemon off;"]
COMMANDS = {"serve", "migrate", "create-admin"}
# Custom resources: not in the Kubernetes schemas; validated against their CRDs' schemas
# (platform_checks, the pinned releases check.sh fetches), the three below also structurally.
CUSTOM_GROUPS = {
    "gateway.networking.k8s.io",
    "gateway.envoyproxy.io",
    "kafka.strimzi.io",
    "postgresql.cnpg.io",
    "barmancloud.cnpg.io",
    "monitoring.coreos.com",
    "keda.sh",
}
STRUCTURAL = {
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
}


def is_custom(obj: dict) -> bool:
    return str(obj.get("apiVersion", "")).rpartition("/")[0] in CUSTOM_GROUPS
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "GatewayClass"}
NEVER_ROUTED = ("/internal", "/health", "/metrics", "/openapi.json")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GW_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")


class Report:
    def __init__(self, overlay: str) -> None:
        self.overlay = overlay
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.budget: list[str] = []

    def error(self, what: str, msg: str) -> None:
        self.errors.append(f"{what}: {msg}")

    def check(self, ok: bool, what: str, msg: str) -> bool:
        if not ok:
            self.error(what, msg)
        return ok


def ident(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"


def schema_validate(objs: list[dict], versions: list[str], rep: Report) -> int:
    validated = 0
    for obj in objs:
        if is_custom(obj):
            continue
        ok = True
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(root)"
                rep.error(ident(obj), f"Kubernetes {version} schema: {path}: {e.message}")
                ok = False
            except kv.SchemaNotFoundError as e:
                rep.error(ident(obj), f"no schema and no structural check: {e.message}")
                ok = False
            except kv.VersionNotSupportedError:
                rep.error("kubernetes-validate", f"does not support Kubernetes {version}")
                return validated
        validated += ok
    return validated


# --------------------------------------------------------------------------------------------
# 2. custom resources: structural checks of what this repository uses
# --------------------------------------------------------------------------------------------
def only_keys(rep: Report, what: str, d: dict, allowed: set[str]) -> None:
    extra = set(d) - allowed
    rep.check(not extra, what, f"unknown field(s) {sorted(extra)}")


def check_gateway(gw: dict, rep: Report) -> None:
    what = ident(gw)
    spec = gw.get("spec") or {}
    only_keys(rep, what, spec, {"gatewayClassName", "listeners", "addresses", "infrastructure"})
    cls = spec.get("gatewayClassName")
    rep.check(
        isinstance(cls, str) and bool(DNS_SUBDOMAIN.match(cls)),
        what,
        f"spec.gatewayClassName {cls!r} is not a valid name",
    )
    listeners = spec.get("listeners") or []
    rep.check(1 <= len(listeners) <= 64, what, "spec.listeners needs 1..64 entries")
    names = [listener.get("name") for listener in listeners]
    rep.check(len(names) == len(set(names)), what, "listener names are not unique")
    for listener in listeners:
        lw = f"{what} listener {listener.get('name')}"
        only_keys(rep, lw, listener, {"name", "hostname", "port", "protocol", "tls", "allowedRoutes"})
        rep.check(bool(DNS_LABEL.match(str(listener.get("name", "")))), lw, "name is not a DNS label")
        rep.check(
            listener.get("protocol") in {"HTTP", "HTTPS", "TLS", "TCP", "UDP"},
            lw,
            f"protocol {listener.get('protocol')!r}",
        )
        port = listener.get("port")
        rep.check(isinstance(port, int) and 1 <= port <= 65535, lw, f"port {port!r}")
        if listener.get("protocol") == "HTTPS":
            tls = listener.get("tls") or {}
            rep.check(
                tls.get("mode", "Terminate") == "Terminate" and bool(tls.get("certificateRefs")),
                lw,
                "HTTPS needs tls.mode Terminate and certificateRefs",
            )


def check_httproute(route: dict, rep: Report) -> None:
    what = ident(route)
    spec = route.get("spec") or {}
    only_keys(rep, what, spec, {"parentRefs", "hostnames", "rules"})
    rep.check(bool(spec.get("parentRefs")), what, "no parentRefs")
    for ref in spec.get("parentRefs") or []:
        only_keys(rep, what, ref, {"group", "kind", "namespace", "name", "sectionName", "port"})
    rules = spec.get("rules") or []
    rep.check(1 <= len(rules) <= 16, what, "spec.rules needs 1..16 entries")
    for i, rule in enumerate(rules):
        rw = f"{what} rule {i}"
        only_keys(rep, rw, rule, {"name", "matches", "filters", "backendRefs", "timeouts"})
        rep.check(len(rule.get("matches") or []) <= 64, rw, "more than 64 matches")
        for m in rule.get("matches") or []:
            only_keys(rep, rw, m, {"path", "headers", "queryParams", "method"})
            path = m.get("path") or {}
            only_keys(rep, rw, path, {"type", "value"})
            rep.check(
                path.get("type") in {"Exact", "PathPrefix", "RegularExpression"},
                rw,
                f"path type {path.get('type')!r}",
            )
            # A regex may be anchored (^/...$); Exact and PathPrefix are absolute paths (the CRD's rule).
            value = str(path.get("value", ""))
            anchored = path.get("type") == "RegularExpression" and value.startswith("^/")
            rep.check(value.startswith("/") or anchored, rw, "path must start with / (a RegularExpression: / or ^/)")
        for f in rule.get("filters") or []:
            rep.check(
                f.get("type")
                in {
                    "RequestHeaderModifier",
                    "ResponseHeaderModifier",
                    "RequestMirror",
                    "RequestRedirect",
                    "URLRewrite",
                    "ExtensionRef",
                },
                rw,
                f"filter type {f.get('type')!r}",
            )
        timeouts = rule.get("timeouts") or {}
        only_keys(rep, rw, timeouts, {"request", "backendRequest"})
        for k, v in timeouts.items():
            rep.check(bool(GW_DURATION.match(str(v))), rw, f"timeouts.{k} {v!r} is not a Gateway API duration")
        for b in rule.get("backendRefs") or []:
            only_keys(rep, rw, b, {"group", "kind", "name", "namespace", "port", "weight", "filters"})
            rep.check(isinstance(b.get("port"), int), rw, f"backendRef {b.get('name')} needs a port")


def check_kafkatopic(topic: dict, rep: Report) -> None:
    what = ident(topic)
    meta = topic.get("metadata") or {}
    rep.check(bool(DNS_LABEL.match(meta.get("name", ""))), what, "metadata.name is not a DNS label")
    rep.check(
        bool((meta.get("labels") or {}).get("strimzi.io/cluster")),
        what,
        "label strimzi.io/cluster (the Kafka cluster) is missing",
    )
    spec = topic.get("spec") or {}
    only_keys(rep, what, spec, {"topicName", "partitions", "replicas", "config"})
    rep.check(topic.get("apiVersion") == "kafka.strimzi.io/v1", what, f"{topic.get('apiVersion')} is gone in Strimzi 1.0: use kafka.strimzi.io/v1")
    rep.check(
        bool(re.match(r"^[a-zA-Z0-9._-]{1,249}$", str(spec.get("topicName", "")))),
        what,
        f"spec.topicName {spec.get('topicName')!r} is not a Kafka topic name",
    )
    for k in ("partitions", "replicas"):
        v = spec.get(k)
        rep.check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, what, f"spec.{k} {v!r}")
    for k, v in (spec.get("config") or {}).items():
        rep.check(isinstance(v, (str, int, float, bool)), what, f"config {k} must be a scalar")


def check_kafkauser(user: dict, rep: Report) -> None:
    """kafka.strimzi.io/v1 KafkaUser: the fields of Strimzi's v1 CRD that matter here, exactly."""
    what = ident(user)
    rep.check(user.get("apiVersion") == "kafka.strimzi.io/v1", what, f"{user.get('apiVersion')}: use kafka.strimzi.io/v1")
    meta = user.get("metadata") or {}
    rep.check(bool(DNS_SUBDOMAIN.match(meta.get("name", ""))), what, "metadata.name is not a DNS subdomain")
    rep.check(bool((meta.get("labels") or {}).get("strimzi.io/cluster")), what, "label strimzi.io/cluster is missing")
    spec = user.get("spec") or {}
    only_keys(rep, what, spec, {"authentication", "authorization", "quotas", "template"})
    auth = spec.get("authentication") or {}
    only_keys(rep, what, auth, {"type", "password", "validityDays", "renewalDays"})
    rep.check(auth.get("type") in {"tls", "tls-external", "scram-sha-512"}, what, f"authentication.type {auth.get('type')!r}")
    authz = spec.get("authorization") or {}
    only_keys(rep, what, authz, {"type", "acls"})
    rep.check(authz.get("type") == "simple" and isinstance(authz.get("acls"), list), what, "authorization needs type simple and acls")
    for acl in authz.get("acls") or []:
        only_keys(rep, what, acl, {"type", "resource", "host", "operations"})
        rep.check(acl.get("type", "allow") in {"allow", "deny"}, what, f"acl type {acl.get('type')!r}")
        res = acl.get("resource") or {}
        only_keys(rep, what, res, {"type", "name", "patternType"})
        rep.check(res.get("type") in {"topic", "group", "cluster", "transactionalId"}, what, f"acl resource.type {res.get('type')!r}")
        rep.check(res.get("patternType", "literal") in {"literal", "prefix"}, what, f"acl resource.patternType {res.get('patternType')!r}")
        ops = acl.get("operations")
        rep.check(
            isinstance(ops, list) and bool(ops) and set(ops) <= {"Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"},
            what,
            f"acl operations {ops!r}",
        )


# --------------------------------------------------------------------------------------------
# 3. wiring
# --------------------------------------------------------------------------------------------
def nginx_routes(template: Path) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """The nginx gateway's routing as Gateway API matches: {(type, path, service)}, a regex
    location as ("RegularExpression", regex, service); and those of them proxied to a service's
    stream listener (an upstream named `<service>_stream`, servers @<SERVICE>_STREAM@), which
    must go to a Service port targeting the container port `stream`."""
    text = template.read_text()
    upstream_service = {
        name: re.sub(r"_STREAM$", "", placeholder).lower() + "-api"
        for name, placeholder in re.findall(r"upstream\s+(\w+)\s*\{\s*server\s+@(\w+)@", text)
    }
    exact: dict[str, str] = {}
    prefix: dict[str, str] = {}
    regexes: list[tuple[str, str]] = []
    streams: set[tuple[str, str, str]] = set()
    for chunk in re.split(r"\blocation\s+", text)[1:]:
        m = re.match(r"(=|\^~|~)?\s*(\S+)\s*\{", chunk)
        body = chunk.split("location", 1)[0]
        proxied = re.search(r"proxy_pass\s+http://(\w+)\s*;", body)
        if not m or not proxied:
            continue  # `location /`, the named error locations: nothing routed
        modifier, path, service = m.group(1), m.group(2), upstream_service[proxied.group(1)]
        stream = proxied.group(1).endswith("_stream")
        if modifier == "=":
            exact[path] = service
            if stream:
                streams.add(("Exact", path, service))
        elif modifier in ("^~", None):  # a plain prefix: still a prefix (a regex may win)
            prefix[path.rstrip("/")] = service
            if stream:
                streams.add(("PathPrefix", path.rstrip("/"), service))
        elif modifier == "~":
            regexes.append((path, service))
            if stream:
                streams.add(("RegularExpression", path, service))
    expected = {("RegularExpression", regex, service) for regex, service in regexes}
    for path, service in prefix.items():
        expected.add(("PathPrefix", path, service))
    for path, service in exact.items():
        if prefix.get(path) == service:
            continue  # `= P` + `^~ P/` is PathPrefix P
        expected.add(("Exact", path, service))
    return expected, streams


def path_covered(kind: str, value: str, path: str) -> bool:
    if kind == "Exact":
        return path == value
    if kind == "RegularExpression":
        return re.search(value, path) is not None
    value = value.rstrip("/")
    return path == value or path.startswith(value + "/")


def nginx_locations(template: Path | str) -> list[tuple[str, str, bool]]:
    """Every location of the template (a file, or its text) in order: (modifier, path,
    proxied?); modifier is one of "=", "^~", "~" or "" (a plain prefix: `location /`). Named
    locations are left out."""
    text = template if isinstance(template, str) else template.read_text()
    found = []
    for chunk in re.split(r"\blocation\s+", text)[1:]:
        m = re.match(r"(=|\^~|~)?\s*(\S+)\s*\{", chunk)
        if not m or m.group(2).startswith("@"):
            continue
        body = chunk.split("location", 1)[0]
        found.append((m.group(1) or "", m.group(2), re.search(r"proxy_pass\s+http://\w+", body) is not None))
    return found


def nginx_match(locations: list[tuple[str, str, bool]], uri: str) -> tuple[str, str, bool] | None:
    """The location nginx picks for `uri`: an exact match; else the longest prefix, unless it
    is a plain prefix and a regex (first in order) matches."""
    for loc in locations:
        if loc[0] == "=" and loc[1] == uri:
            return loc
    prefixes = [loc for loc in locations if loc[0] in ("^~", "") and uri.startswith(loc[1])]
    longest = max(prefixes, key=lambda loc: len(loc[1]), default=None)
    if longest is not None and longest[0] == "^~":
        return longest
    for loc in locations:
        if loc[0] == "~" and re.search(loc[1], uri):
            return loc
    return longest


def nginx_answers_404(conf: Path, uri: str) -> bool:
    """Whether the location nginx picks for `uri` in the first server of `conf` (the public
    one: web-nginx.conf's second serves the probes) is a bare `return 404;`."""
    servers = re.split(r"\n\s*server\s*\{", conf.read_text())
    text = servers[1] if len(servers) > 1 else servers[0]
    bodies: dict[tuple[str, str], str] = {}
    for chunk in re.split(r"\blocation\s+", text)[1:]:
        m = re.match(r"(=|\^~|~)?\s*(\S+)\s*\{([^}]*)\}", chunk)
        if m and not m.group(2).startswith("@"):
            bodies[(m.group(1) or "", m.group(2))] = m.group(3)
    loc = nginx_match(nginx_locations(text), uri)
    return loc is not None and re.fullmatch(r"\s*return 404;\s*", bodies.get(loc[:2], "")) is not None


def nginx_map_value(conf: Path, variable: str, key: str) -> str | None:
    """The value of `key` in the `map ... $variable { }` block of `conf`."""
    block = re.search(r"map\s+\S+\s+\$" + re.escape(variable) + r"\s*\{(.*?)\n\s*\}", conf.read_text(), re.S)
    if block is None:
        return None
    for line in block.group(1).splitlines():
        m = re.match(r'\s*("[^"]*"|\S+)\s+"([^"]*)";', line)
        if m and m.group(1).strip('"') == key:
            return m.group(2)
    return None


def check_web(web_conf: Path, template: Path, rep: Report) -> None:
    """The web app's server answers what the local gateway answers outside its API routes: the
    app's CSP and Cache-Control, and a 404 (problem+json, its error_page) for every other /api/**
    path and for the services' own routes."""
    what = WEB_CONF
    for conf in (web_conf, template):
        text = conf.read_text()
        not_found = re.search(r"location @not_found \{([^}]*)\}", text)
        rep.check(
            "error_page 404 = @not_found;" in text
            and not_found is not None
            and "default_type application/problem+json;" in not_found.group(1)
            and '"code":"NOT_FOUND"' in not_found.group(1),
            conf.name,
            "a 404 must be answered by @not_found, a NOT_FOUND problem+json",
        )
    for uri in ("/api", "/api/nope", "/api/users/me/x") + tuple(p + s for p in NEVER_ROUTED for s in ("", "/x")):
        rep.check(nginx_answers_404(web_conf, uri), what, f"{uri} must be a 404 here, as on the nginx gateway")
        rep.check(nginx_answers_404(template, uri), "deploy/gateway/nginx.conf.template", f"{uri} must be a 404")
    for variable, key in (
        ("gateway_csp", "~^(200|304)\\|/(?!api/)"),
        ("gateway_cache_control", "~^(200|304)\\|/(?!api/)"),
        ("gateway_cache_control", "~^(200|304)\\|/assets/"),
    ):
        mine, theirs = nginx_map_value(web_conf, variable, key), nginx_map_value(template, variable, key)
        rep.check(
            mine is not None and mine == theirs,
            what,
            f"${variable} for {key} is {mine!r}; the nginx gateway's is {theirs!r}",
        )


def check_openapi(doc_path: Path, template: Path, routed: set[tuple[str, str, str]], rep: Report) -> None:
    """The merged OpenAPI document (apidoc) against the routes the gateway exposes: every
    documented path is proxied by the nginx template and by an HTTPRoute, and every proxied
    nginx location and every HTTPRoute match serves at least one documented path (no
    undocumented public route). Neither nginx nor the HTTPRoutes route by method, so every
    documented method of a routed path reaches its service (which answers any other method
    with 405 + Allow); methods are checked to be known ones."""
    import json

    what = f"OpenAPI {doc_path.name}"
    doc = json.loads(doc_path.read_text())
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    operations: dict[str, list[str]] = {}
    for path, item in (doc.get("paths") or {}).items():
        ops = sorted(k.upper() for k in item if k in methods)
        unknown = sorted(k for k in item if k not in methods | {"parameters", "summary", "description", "servers"})
        rep.check(not unknown, what, f"{path}: unknown method(s) {unknown}")
        rep.check(bool(ops), what, f"{path} documents no operation")
        operations[path] = ops
    rep.check(bool(operations), what, "documents no path (a placeholder document?)")
    # A concrete request path per documented path: every {param} as "1" (ids and tokens alike).
    samples = {path: re.sub(r"\{[^}/]+\}", "1", path) for path in operations}
    locations = nginx_locations(template)
    served: set[tuple[str, str, bool]] = set()
    for path, ops in sorted(operations.items()):
        rep.check(path.startswith("/api/"), what, f"{path} is not a public path (/api/**)")
        loc = nginx_match(locations, samples[path])
        if rep.check(
            loc is not None and loc[2],
            what,
            f"{' '.join(ops)} {path} is documented but the nginx gateway does not route it "
            f"(it falls to `location {' '.join(x for x in (loc or ('', '(none)'))[:2] if x)}`)",
        ):
            served.add(loc)
        rep.check(
            any(path_covered(t, v, samples[path]) for t, v, _ in routed),
            what,
            f"{' '.join(ops)} {path} is documented but no HTTPRoute routes it",
        )
    for loc in locations:
        if loc[2] and loc not in served:
            rep.error(
                "deploy/gateway/nginx.conf.template",
                f"`location {loc[0]} {loc[1]}` routes no documented path: an undocumented public route "
                "(document it in its service's OpenAPI, or remove it)",
            )
    for t, v, svc in sorted(routed):
        rep.check(
            any(path_covered(t, v, sample) for sample in samples.values()),
            "HTTPRoutes",
            f"{t} {v} ({svc}) routes no documented path: an undocumented public route",
        )


def check_wiring(objs: list[dict], args: argparse.Namespace, rep: Report) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)

    def named(kind: str) -> dict[str, dict]:
        return {o["metadata"]["name"]: o for o in by_kind.get(kind, [])}

    # Unique names, one namespace for everything.
    dupes = [k for k, n in Counter((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs).items() if n > 1]
    rep.check(not dupes, "render", f"duplicate objects {dupes}")
    namespaces = list(named("Namespace"))
    if rep.check(len(namespaces) == 1, "render", f"expected one Namespace, found {namespaces}"):
        ns = namespaces[0]
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                rep.check(o["metadata"].get("namespace") == ns, ident(o), f"not in namespace {ns}")

    configmaps, secrets, sas = named("ConfigMap"), named("Secret"), named("ServiceAccount")
    deployments, services, jobs = named("Deployment"), named("Service"), named("Job")
    # Secrets an operator writes for a rendered resource: the KafkaUsers' (Strimzi User Operator).
    external = set(args.external_secret or []) | {u["metadata"]["name"] for u in by_kind.get("KafkaUser", [])}
    used_external: set[str] = set()

    config: dict[str, str] = {}
    for cm in configmaps.values():
        if cm["metadata"]["name"].startswith("ticketing-config"):
            config = cm.get("data") or {}
    rep.check(bool(config), "render", "ConfigMap ticketing-config-* is missing")
    drain = int(config.get("SHUTDOWN_TIMEOUT_SECS", "10"))
    rep.check(config.get("HTTP_HOST") == "0.0.0.0", "ConfigMap", "HTTP_HOST must be 0.0.0.0 in containers")

    def secret_key_ok(name: str, key: str | None, what: str) -> None:
        if name in secrets:
            if key is not None:
                data = {**(secrets[name].get("data") or {}), **(secrets[name].get("stringData") or {})}
                rep.check(key in data, what, f"Secret {name} has no key {key}")
        elif name in external:
            used_external.add(name)
        else:
            rep.error(what, f"Secret {name} is neither rendered nor declared operator-provided")

    def check_web_container(c: dict, cw: str) -> None:
        """nginx with the image's web configuration: no settings, no Secret (it needs neither),
        the app on http, the probes on a port of their own (on http /health/** is a 404)."""
        rep.check(c.get("args") == WEB_ARGS, cw, f"args must be {WEB_ARGS}")
        rep.check(not c.get("env") and not c.get("envFrom"), cw, "the web server takes no environment (no settings, no Secret)")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        rep.check(ports == {"http": WEB_PORT, "probes": WEB_PROBES_PORT}, cw, f"containerPorts must be http {WEB_PORT} and probes {WEB_PROBES_PORT}")
        for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            rep.check((get.get("path"), get.get("port")) == (path, "probes"), cw, f"{probe} must GET {path} on port probes")

    def check_pod(owner: dict, pod: dict, deployment: bool) -> None:
        what = ident(owner)
        spec = pod["spec"]
        rep.check(spec.get("enableServiceLinks") is False, what, "enableServiceLinks must be false (service env vars collide with *_PORT settings)")
        rep.check(spec.get("automountServiceAccountToken") is False, what, "automountServiceAccountToken must be false")
        sa = spec.get("serviceAccountName")
        rep.check(sa in sas, what, f"ServiceAccount {sa!r} is not rendered")
        psc = spec.get("securityContext") or {}
        rep.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001, what, "pod must run as non-root user 10001")
        rep.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", what, "seccompProfile must be RuntimeDefault")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            cw = f"{what} container {c['name']}"
            csc = c.get("securityContext") or {}
            rep.check(csc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
            rep.check(csc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
            rep.check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), cw, "must drop ALL capabilities")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    rep.check(r in (res.get(kind) or {}), cw, f"resources.{kind}.{r} missing")
            image = c.get("image", "")
            tagged = "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"))
            rep.check(tagged, cw, f"image {image!r} must be pinned by tag (not latest) or digest")
            binary = (c.get("command") or [None])[0]
            if binary == "nginx" and owner["kind"] == "Deployment" and owner["metadata"]["name"] == WEB:
                check_web_container(c, cw)
                continue
            if not rep.check(binary in SERVICES, cw, f"command {c.get('command')} is not one of {sorted(SERVICES)}"):
                continue
            rep.check((c.get("args") or [None])[0] in COMMANDS, cw, f"args {c.get('args')} must start with one of {sorted(COMMANDS)}")
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef:
                    rep.check(ef["configMapRef"]["name"] in configmaps, cw, f"ConfigMap {ef['configMapRef']['name']} is not rendered")
                if "secretRef" in ef:
                    secret_key_ok(ef["secretRef"]["name"], None, cw)
            env = {e["name"]: e for e in c.get("env") or []}
            for e in env.values():
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret_key_ok(ref["name"], ref["key"], cw)
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    rep.check(ref["name"] in configmaps, cw, f"ConfigMap {ref['name']} is not rendered")
            port_var, port, dbs = SERVICES[binary]
            for db in dbs:
                rep.check(
                    "secretKeyRef" in ((env.get(db) or {}).get("valueFrom") or {}),
                    cw,
                    f"{db} must come from a Secret",
                )
            for other in {"USERS_DATABASE_URL", "CONCERT_DATABASE_URL", "PAYMENT_DATABASE_URL"} - set(dbs):
                rep.check(other not in env, cw, f"gets {other}, which only its owner (and batch) needs")
            if deployment:
                rep.check(env.get(port_var, {}).get("value") == str(port), cw, f"{port_var} must be {port}")
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
                rep.check(ports.get("http") == port, cw, f"containerPort http must be {port}")
                if binary in STREAM_PORTS:
                    stream_var, stream_port = STREAM_PORTS[binary]
                    rep.check(env.get(stream_var, {}).get("value") == str(stream_port), cw, f"{stream_var} must be {stream_port}")
                    rep.check(
                        ports.get(STREAM_PORT_NAME) == stream_port,
                        cw,
                        f"containerPort {STREAM_PORT_NAME} must be {stream_port} ({stream_var})",
                    )
                else:
                    rep.check(STREAM_PORT_NAME not in ports, cw, f"{binary} has no stream listener: no containerPort {STREAM_PORT_NAME}")
                for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
                    got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                    rep.check(got == path, cw, f"{probe} must GET {path}, not {got}")
                pre = ((c.get("lifecycle") or {}).get("preStop") or {})
                pause = 0
                if "exec" in pre:
                    cmd = pre["exec"].get("command") or []
                    if rep.check(len(cmd) == 2 and cmd[0] == "sleep", cw, f"preStop exec {cmd} is not `sleep N`"):
                        pause = int(cmd[1])
                elif "sleep" in pre:
                    pause = int(pre["sleep"]["seconds"])
                grace = spec.get("terminationGracePeriodSeconds", 30)
                rep.check(
                    grace > pause + drain,
                    what,
                    f"terminationGracePeriodSeconds {grace} must exceed preStop {pause} s + SHUTDOWN_TIMEOUT_SECS {drain} s",
                )
                if binary in APIS:
                    rep.check(pause > 0, cw, "an API needs a preStop pause so endpoints de-register before the drain")

    for d in deployments.values():
        check_pod(d, d["spec"]["template"], deployment=True)
    for j in jobs.values():
        check_pod(j, j["spec"]["template"], deployment=False)

    # Every API: Deployment (replicas owned by an HPA), Service, HPA, PDB, migration Job.
    hpas, pdbs = named("HorizontalPodAutoscaler"), named("PodDisruptionBudget")
    for api in APIS:
        d = deployments.get(api)
        if not rep.check(d is not None, "render", f"Deployment {api} is missing"):
            continue
        rep.check("replicas" not in d["spec"], ident(d), "has spec.replicas but its autoscaler owns the count")
        hpa = [h for h in hpas.values() if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": api}]
        scaled = [s for s in by_kind.get("ScaledObject", []) if s["spec"]["scaleTargetRef"].get("name") == api]
        if rep.check(len(hpa) + len(scaled) == 1, "render", f"expected one autoscaler (HPA or KEDA ScaledObject) for {api}") and hpa:
            h = hpa[0]["spec"]
            rep.check(1 <= h.get("minReplicas", 1) <= h["maxReplicas"], ident(hpa[0]), "minReplicas must be 1..maxReplicas")
        tmpl_labels = d["spec"]["template"]["metadata"]["labels"]
        rep.check(
            sum(labels_match(p["spec"]["selector"], tmpl_labels) for p in pdbs.values()) == 1,
            "render",
            f"expected one PodDisruptionBudget selecting {api}",
        )
        migrations = [j for j in jobs.values() if (j["spec"]["template"]["spec"]["containers"][0].get("command") or [None])[0] == api and j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
        rep.check(len(migrations) == 1, "render", f"expected one `{api} migrate` Job")
    batch = deployments.get("batch")
    if rep.check(batch is not None, "render", "Deployment batch is missing"):
        rep.check(batch["spec"].get("replicas") == 2, ident(batch), "batch runs 2 replicas (leader + standby)")
        rep.check(
            not any(h["spec"]["scaleTargetRef"]["name"] == "batch" for h in hpas.values())
            and not any(s["spec"]["scaleTargetRef"].get("name") == "batch" for s in by_kind.get("ScaledObject", [])),
            ident(batch),
            "batch must not be autoscaled (one leader does the work)",
        )

    # Services select Deployment pods (never migration Job pods) and name a real port.
    for s in services.values():
        sel = s["spec"].get("selector") or {}
        targets = [d for d in deployments.values() if labels_match({"matchLabels": sel}, d["spec"]["template"]["metadata"]["labels"])]
        rep.check(len(targets) == 1, ident(s), f"selector {sel} selects {len(targets)} Deployments")
        rep.check(
            not any(labels_match({"matchLabels": sel}, j["spec"]["template"]["metadata"]["labels"]) for j in jobs.values()),
            ident(s),
            "selector also selects migration Job pods",
        )
        for t in targets:
            names = {p.get("name") for c in t["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
            for p in s["spec"]["ports"]:
                rep.check(p.get("targetPort") in names, ident(s), f"targetPort {p.get('targetPort')} is not a container port of {ident(t)}")
    for p in pdbs.values():
        rep.check(
            any(labels_match(p["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in deployments.values()),
            ident(p),
            "selects no Deployment's pods",
        )

    # concert-api as the others call it.
    m = re.match(r"^http://([a-z0-9-]+):(\d+)$", config.get("CONCERT_API_URL", ""))
    if rep.check(m is not None, "ConfigMap", f"CONCERT_API_URL {config.get('CONCERT_API_URL')!r}"):
        svc = services.get(m.group(1))
        rep.check(
            svc is not None and int(m.group(2)) in [p["port"] for p in svc["spec"]["ports"]],
            "ConfigMap",
            f"CONCERT_API_URL {config['CONCERT_API_URL']} is not a rendered Service port",
        )

    # Kafka topics: exactly ALL_TOPICS and their .dlq twins, partitions as the services create them.
    events = (args.repo / "common/src/events.rs").read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', events))
    all_block = re.search(r"ALL_TOPICS:[^=]*=\s*\[(.*?)\];", events, re.S)
    if rep.check(all_block is not None, "common/src/events.rs", "ALL_TOPICS not found"):
        names = [consts[n] for n in re.findall(r"\b([A-Z_]+)\b", all_block.group(1))]
        wanted = set(names) | {n + ".dlq" for n in names}
        topics = by_kind.get("KafkaTopic", [])
        got = {t["spec"].get("topicName") for t in topics}
        rep.check(got == wanted, "KafkaTopics", f"missing {sorted(wanted - got)}, unexpected {sorted(got - wanted)}")
        partitions = config.get("KAFKA_TOPIC_PARTITIONS", "3")
        for t in topics:
            rep.check(str(t["spec"].get("partitions")) == partitions, ident(t), f"partitions must equal KAFKA_TOPIC_PARTITIONS ({partitions})")

    # Gateway API: references resolve, routing equals the nginx gateway's.
    gateways = named("Gateway")
    routed: set[tuple[str, str, str]] = set()
    web_routed: set[tuple[str, str, str]] = set()
    # (type, path, service) -> the targetPorts of the Service ports it is sent to.
    route_targets: dict[tuple[str, str, str], set] = {}
    # (Service, port) of every backendRef, for the network policies below.
    backend_ports: set[tuple[str, int]] = set()
    for r in by_kind.get("HTTPRoute", []):
        what = ident(r)
        for ref in r["spec"].get("parentRefs") or []:
            gw = gateways.get(ref["name"])
            if rep.check(gw is not None, what, f"parentRef Gateway {ref['name']} is not rendered") and "sectionName" in ref:
                rep.check(
                    ref["sectionName"] in [x["name"] for x in gw["spec"]["listeners"]],
                    what,
                    f"parentRef sectionName {ref['sectionName']} is not a listener of {ident(gw)}",
                )
        for rule in r["spec"].get("rules") or []:
            backends = rule.get("backendRefs") or []
            for b in backends:
                svc = services.get(b["name"])
                rep.check(
                    svc is not None and b.get("port") in [p["port"] for p in svc["spec"]["ports"]],
                    what,
                    f"backendRef {b['name']}:{b.get('port')} is not a rendered Service port",
                )
                backend_ports.add((b["name"], b.get("port")))
            for match in rule.get("matches") or []:
                path = match.get("path") or {}
                for b in backends:
                    key = (path.get("type"), path.get("value"), b["name"])
                    (web_routed if b["name"] == WEB else routed).add(key)
                    svc = services.get(b["name"])
                    route_targets.setdefault(key, set()).update(
                        p.get("targetPort") for p in (svc or {}).get("spec", {}).get("ports", []) if p["port"] == b.get("port")
                    )
    # The web app: exactly PathPrefix / (what nginx serves from `location /`, static files), and
    # its server answers like the template outside the API routes.
    rep.check(
        web_routed == {("PathPrefix", "/", WEB)},
        "HTTPRoutes",
        f"the web app must be routed exactly as PathPrefix / to Service {WEB}, found {sorted(web_routed)}",
    )
    check_web(args.repo / WEB_CONF, args.repo / "deploy/gateway/nginx.conf.template", rep)
    expected, streams = nginx_routes(args.repo / "deploy/gateway/nginx.conf.template")
    rep.check(
        routed == expected,
        "HTTPRoutes",
        f"differ from deploy/gateway/nginx.conf.template: missing {sorted(expected - routed)}, extra {sorted(routed - expected)}",
    )
    # nginx's regex location is a RegularExpression match; Envoy Gateway ranks it above every
    # PathPrefix (Exact > RegularExpression > PathPrefix), as nginx's regex beats its plain prefix.
    # What nginx sends to a stream listener goes to the Service port targeting `stream`, and
    # nothing else does (the stream listener answers every other path with a 404).
    for key, targets in sorted(route_targets.items(), key=str):
        if key in streams:
            rep.check(
                targets == {STREAM_PORT_NAME},
                "HTTPRoutes",
                f"{key[0]} {key[1]} ({key[2]}) goes to targetPort(s) {sorted(map(str, targets))}: nginx sends it to the "
                f"service's stream listener, so it must go to the Service port targeting `{STREAM_PORT_NAME}`",
            )
        else:
            rep.check(
                STREAM_PORT_NAME not in targets,
                "HTTPRoutes",
                f"{key[0]} {key[1]} ({key[2]}) goes to the stream listener, which serves only the status stream",
            )
    for t, v, s in routed:
        for hidden in NEVER_ROUTED:
            rep.check(
                not (path_covered(t, v, hidden) or (t == "PathPrefix" and path_covered("PathPrefix", hidden, v))),
                "HTTPRoutes",
                f"{t} {v} ({s}) would expose {hidden}",
            )

    if args.openapi is not None:
        check_openapi(args.openapi, args.repo / "deploy/gateway/nginx.conf.template", routed, rep)

    # Network policies: ingress denied by default; the APIs reachable from the gateway;
    # concert-api from the services that call it.
    policies = named("NetworkPolicy")
    rep.check(
        any(p["spec"].get("podSelector") == {} and p["spec"].get("policyTypes") == ["Ingress"] and not p["spec"].get("ingress") for p in policies.values()),
        "NetworkPolicies",
        "no default-deny ingress policy",
    )

    def allowed(target: dict, port: int, source_labels: dict | None) -> bool:
        tl = target["spec"]["template"]["metadata"]["labels"]
        for p in policies.values():
            if not labels_match(p["spec"].get("podSelector") or {}, tl):
                continue
            for rule in p["spec"].get("ingress") or []:
                ports = [x.get("port") for x in rule.get("ports") or []]
                if ports and port not in ports:
                    continue
                peers = rule.get("from") or []
                if not peers:
                    return True
                for peer in peers:
                    if source_labels is None and "namespaceSelector" in peer and "podSelector" not in peer:
                        return True  # another namespace (the gateway's, or the scraper's)
                    if source_labels is not None and "podSelector" in peer and "namespaceSelector" not in peer:
                        if labels_match(peer["podSelector"], source_labels):
                            return True
        return False

    for api in APIS:
        if api in deployments:
            rep.check(allowed(deployments[api], SERVICES[api][1], None), ident(deployments[api]), "no policy lets the gateway in")
    # Every port an HTTPRoute sends to (the stream listener's too) lets the gateway in.
    for name, port in sorted(backend_ports, key=str):
        svc = services.get(name)
        sp = next((p for p in (svc or {}).get("spec", {}).get("ports", []) if p["port"] == port), None)
        if sp is None:
            continue  # reported above
        for d in deployments.values():
            if not labels_match({"matchLabels": svc["spec"].get("selector") or {}}, d["spec"]["template"]["metadata"]["labels"]):
                continue
            target = sp.get("targetPort", port)
            numbers = [
                cp["containerPort"]
                for c in d["spec"]["template"]["spec"]["containers"]
                for cp in c.get("ports") or []
                if cp.get("name") == target or cp["containerPort"] == target
            ]
            for number in numbers:
                rep.check(
                    allowed(d, number, None),
                    ident(d),
                    f"no policy lets the gateway reach port {number} (HTTPRoute backend {name}:{port})",
                )
    if rep.check(WEB in deployments, "render", f"Deployment {WEB} (the web app) is missing"):
        rep.check(allowed(deployments[WEB], WEB_PORT, None), ident(deployments[WEB]), "no policy lets the gateway in")
    if "concert-api" in deployments:
        for caller in ("users-api", "payment-api", "batch"):
            if caller in deployments:
                rep.check(
                    allowed(deployments["concert-api"], 8082, deployments[caller]["spec"]["template"]["metadata"]["labels"]),
                    "NetworkPolicies",
                    f"{caller} cannot reach concert-api:8082",
                )

    # Operator-provided objects, for the summary.
    for name in sorted(used_external):
        rep.notes.append(f"Secret/{name} is referenced, not rendered: the operator provides it")
    for gw in gateways.values():
        for listener in gw["spec"].get("listeners") or []:
            for ref in (listener.get("tls") or {}).get("certificateRefs") or []:
                if ref.get("name") not in secrets:
                    rep.notes.append(f"Secret/{ref.get('name')} (TLS of {ident(gw)}) is referenced, not rendered: the operator provides it")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rendered", type=Path, help="output of kubectl kustomize")
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--repo", type=Path, required=True, help="repository root")
    ap.add_argument("--kube-version", action="append", required=True, help="Kubernetes version(s) to validate against")
    ap.add_argument("--external-secret", action="append", help="a Secret the operator provides")
    ap.add_argument("--crd-dir", type=Path, help="the fetched CRDs (check.sh); custom resources are validated against them")
    ap.add_argument("--check-config-dir", type=Path, help="directory with the service binaries (or stand-ins) that answer `check-config`")
    ap.add_argument("--strict", action="store_true", help="placeholder values are errors, not warnings")
    ap.add_argument(
        "--openapi",
        type=Path,
        help="the gateway's merged OpenAPI document (`cargo run -q -p apidoc`): its paths must be "
        "exactly what the nginx template and the HTTPRoutes route",
    )
    args = ap.parse_args()

    objs = [o for o in yaml.safe_load_all(args.rendered.read_text()) if o]
    rep = Report(args.overlay)
    for o in objs:
        if not isinstance(o, dict) or not o.get("kind") or not (o.get("metadata") or {}).get("name"):
            print(f"ERROR overlay {args.overlay}: an object without kind or metadata.name", file=sys.stderr)
            return 1
    validated = schema_validate(objs, args.kube_version, rep)
    crd_kinds: Counter[str] = Counter()
    crd_valid = 0
    schemas = platform_checks.CrdSchemas(args.crd_dir)
    for o in objs:
        if is_custom(o):
            crd_kinds[o["kind"]] += 1
            before = len(rep.errors)
            if (o["apiVersion"].rpartition("/")[0], o["kind"]) in platform_checks.STRUCTURAL_ONLY:
                {"KafkaTopic": check_kafkatopic, "KafkaUser": check_kafkauser}[o["kind"]](o, rep)
                crd_valid += len(rep.errors) == before
                continue
            crd_valid += platform_checks.validate_custom_resource(o, schemas, rep)
            if (o.get("apiVersion"), o.get("kind")) in STRUCTURAL:
                {"Gateway": check_gateway, "HTTPRoute": check_httproute}[o["kind"]](o, rep)
    check_wiring(objs, args, rep)
    platform_checks.check_platform(objs, args, rep, SERVICES)
    configmaps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    platform_checks.check_configs(objs, configmaps, secrets, args, rep, SERVICES)

    for e in rep.errors:
        print(f"ERROR overlay {args.overlay}: {e}", file=sys.stderr, flush=True)
    crds = sum(crd_kinds.values())
    builtin = len(objs) - crds
    verdict = "wiring checked: OK" if not rep.errors else f"FAILED: {len(rep.errors)} problem(s) above"
    print(
        f"overlay {args.overlay}: {len(objs)} objects, {validated} of {builtin} built-in objects "
        f"valid against the Kubernetes {' and '.join(args.kube_version)} schemas (strict), "
        f"{crd_valid} of {crds} custom resources valid against their CRDs' schemas (strict) "
        f"({', '.join(f'{k} {n}' for k, n in sorted(crd_kinds.items()))}), "
        f"{verdict}",
        flush=True,
    )
    for line in rep.budget:
        print(f"  connection budget: {line}")
    for w in rep.warnings:
        print(f"  WARNING: {w}")
    for n in rep.notes:
        print(f"  note: {n}")
    return 1 if rep.errors or validated + crd_valid != len(objs) else 0


if __name__ == "__main__":
    sys.exit(main())
