"""Platform checks of one rendered overlay, called by validate.py:

  - custom resources against the openAPIV3Schema of their real CRDs (check.sh fetches the pinned
    releases), strictly: an object schema that lists its properties gets additionalProperties
    false unless the CRD preserves unknown fields, so a misspelled field fails;
  - each Deployment's rendered environment through `<service> check-config` (or a stand-in with
    the same interface): config errors and env names no service reads fail;
  - probes, memory floors, topic replication, egress, the connection budget, autoscalers, PDBs,
    zone spread, scrape objects, Kafka users' ACLs against the code, gateway idle timeouts, and
    placeholders (errors with --strict, warnings otherwise);
  - the CloudNativePG Cluster where the overlay carries it: the Poolers' Cluster, its certificate
    and CA, continuous backup (WAL archiver, ObjectStore with a retention policy and compressed
    WAL, a ScheduledBackup), egress to object storage, its max_connections for the budget.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

# Peak RSS measured (MiB): users-api in a 500-concurrent log-in storm (hashing bounded at 4);
# the others the largest peak of docs/BENCHMARKS.md's scenarios. Requests must cover the peak,
# limits at least twice it (the floor), so a pod is neither overcommitted nor OOM-killed at peak.
PEAK_RSS_MIB = {"users-api": 112, "concert-api": 46.4, "payment-api": 23.9, "batch": 12.7}
MEMORY_FLOOR_MIB = {k: 2 * v for k, v in PEAK_RSS_MIB.items()}
PROBE_PATHS = {"/health/live", "/health/ready"}
# The web app's Deployment and Service (base/web.yaml): nginx serving static files. It needs no
# egress at all (not even DNS) and has no /metrics, so the rules below for the services'
# egress and scraping do not apply to it; it gets none of either instead.
WEB = "web"
# Seconds between SIGKILL's deadline and the drain's end that a pod keeps: the producer flush
# and background tasks after the HTTP drain, and the kubelet's own latency.
GRACE_MARGIN_SECS = 5
SERVICE_KEEPALIVE_SECS = 75
SERVICE_DATABASES = {
    "users-api": ["ticketing_users"],
    "concert-api": ["ticketing_concert"],
    "payment-api": ["ticketing_payment"],
    "batch": ["ticketing_users", "ticketing_concert", "ticketing_payment"],
}
PLACEHOLDER = re.compile(r"example\.(com|org|net|invalid)\b|\.invalid\b|change-?me|replace-?me|\bTODO\b", re.I)
# Which CRD file (under --crd-dir) holds each custom resource kind.
CRD_FILES = {
    ("gateway.networking.k8s.io", "Gateway"): "gateway-api/gateway.networking.k8s.io_gateways.yaml",
    ("gateway.networking.k8s.io", "HTTPRoute"): "gateway-api/gateway.networking.k8s.io_httproutes.yaml",
    ("gateway.envoyproxy.io", "ClientTrafficPolicy"): "envoy-gateway/gateway.envoyproxy.io_clienttrafficpolicies.yaml",
    ("gateway.envoyproxy.io", "BackendTrafficPolicy"): "envoy-gateway/gateway.envoyproxy.io_backendtrafficpolicies.yaml",
    ("postgresql.cnpg.io", "Pooler"): "cloudnative-pg/postgresql.cnpg.io_poolers.yaml",
    ("postgresql.cnpg.io", "Cluster"): "cloudnative-pg/postgresql.cnpg.io_clusters.yaml",
    ("postgresql.cnpg.io", "ScheduledBackup"): "cloudnative-pg/postgresql.cnpg.io_scheduledbackups.yaml",
    ("barmancloud.cnpg.io", "ObjectStore"): "plugin-barman-cloud/barmancloud.cnpg.io_objectstores.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
    ("keda.sh", "ScaledObject"): "keda/keda.sh_scaledobjects.yaml",
}
# Strimzi publishes its CRDs in no package registry this machine reaches (its Maven artifact
# io.strimzi:api carries the Java model, not the YAML): its resources get validate.py's
# structural check of the exact kafka.strimzi.io/v1 fields instead (STRUCTURAL_ONLY).
STRUCTURAL_ONLY = {("kafka.strimzi.io", "KafkaTopic"), ("kafka.strimzi.io", "KafkaUser")}
# The CloudNativePG plugin that archives the WAL and takes the base backups (barmancloud.cnpg.io
# ObjectStore); the instances' labels, which the network policies and the PodMonitor select.
BACKUP_PLUGIN = "barman-cloud.cloudnative-pg.io"
RESERVED_ANNOTATION = "ticketing/postgres-reserved-connections"


def instance_labels(cluster: str) -> dict[str, str]:
    return {"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}


# CloudNativePG's webhook refuses any other PgBouncer parameter (read from the fetched module's
# internal/webhook/v1/pooler_webhook.go when present).
PGBOUNCER_ALLOWED_FILE = "cloudnative-pg/pooler_webhook.go"


def mib(q: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        return -1
    n = float(m.group(1))
    unit = m.group(2) or ""
    return n * {"": 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 2**20, "k": 1000 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}[unit]


def seconds(d: str) -> float | None:
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:h|ms|m|s))+)", str(d))
    if not m:
        return None
    total = 0.0
    for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", d):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u]
    return total


# ----------------------------------------------------------------------------------------------
# CRD schemas
# ----------------------------------------------------------------------------------------------
def strictify(schema: dict) -> dict:
    """Kubernetes prunes unknown fields of a structural schema; for an offline check they should
    fail instead. Every object schema with `properties` and no say about other keys gets
    additionalProperties: false. Vendor keys (x-kubernetes-*) are dropped (jsonschema ignores
    them; int-or-string is widened so the `type` check accepts both)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("x-kubernetes-int-or-string"):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for k in list(node):
                if k.startswith("x-kubernetes-"):
                    node.pop(k)
                    continue
                walk(node[k])
        elif isinstance(node, list):
            for x in node:
                walk(x)

    walk(s)
    return s


class CrdSchemas:
    def __init__(self, crd_dir: Path | None):
        self.dir = crd_dir
        self.cache: dict[tuple[str, str, str], dict | None] = {}

    def schema(self, group: str, version: str, kind: str) -> tuple[dict | None, str]:
        key = (group, version, kind)
        rel = CRD_FILES.get((group, kind))
        if self.dir is None or rel is None:
            return None, f"no CRD file known for {group}/{kind}"
        path = self.dir / rel
        if not path.is_file():
            return None, f"CRD file {path} missing (check.sh fetches it)"
        if key not in self.cache:
            found = None
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                if doc["spec"]["group"] != group or doc["spec"]["names"]["kind"] != kind:
                    continue
                for v in doc["spec"]["versions"]:
                    if v["name"] == version:
                        found = {"served": v.get("served", True), "schema": strictify(v["schema"]["openAPIV3Schema"])}
            self.cache[key] = found
        found = self.cache[key]
        if found is None:
            return None, f"the CRD in {rel} has no version {version} of {kind}"
        if not found["served"]:
            return None, f"{group}/{version} {kind} is not served by the pinned CRD"
        return found["schema"], ""


def validate_custom_resource(obj: dict, schemas: CrdSchemas, rep) -> bool:
    import jsonschema

    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    schema, why = schemas.schema(group, version, obj["kind"])
    what = f"{obj['kind']}/{obj['metadata']['name']}"
    if schema is None:
        rep.error(what, f"cannot validate {api} {obj['kind']}: {why}")
        return False
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    sub = {k: v for k, v in schema.items()}
    sub["properties"] = {k: v for k, v in (schema.get("properties") or {}).items() if k not in ("apiVersion", "kind", "metadata")}
    sub["required"] = [k for k in schema.get("required") or [] if k not in ("apiVersion", "kind", "metadata")]
    ok = True
    for err in sorted(jsonschema.Draft7Validator(sub).iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        rep.error(what, f"{api} CRD schema: {path}: {err.message[:300]}")
        ok = False
    return ok


def pgbouncer_allowed(crd_dir: Path | None) -> set[str] | None:
    if crd_dir is None:
        return None
    f = crd_dir / PGBOUNCER_ALLOWED_FILE
    if not f.is_file():
        return None
    block = re.search(r"AllowedPgbouncerGenericConfigurationParameters = stringset.From\(\[\]string\{(.*?)\}\)", f.read_text(), re.S)
    return set(re.findall(r'"([a-z_]+)"', block.group(1))) if block else None


# ----------------------------------------------------------------------------------------------
# check-config
# ----------------------------------------------------------------------------------------------
def placeholder_secret(key: str, overlay: str) -> str:
    """A value of the right shape for a Secret-sourced variable (the real one is never here)."""
    if key.endswith("_DATABASE_URL"):
        db = {"USERS": "ticketing_users", "CONCERT": "ticketing_concert", "PAYMENT": "ticketing_payment"}.get(key.split("_")[0], "db")
        return f"postgres://svc:placeholder@postgres:5432/{db}?sslmode=verify-full&sslrootcert=/etc/postgres-ca/ca.crt"
    if key == "REDIS_URL":
        return "rediss://ticketing:placeholder@redis:6379"
    if key == "INTERNAL_API_TOKEN":
        return "placeholder-internal-token-0123456789abcdef0123456789abcdef"
    return "placeholder-secret-0123456789abcdef"


def rendered_env(container: dict, configmaps: dict, secrets: dict, overlay: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for ef in container.get("envFrom") or []:
        if "configMapRef" in ef:
            env.update({k: str(v) for k, v in ((configmaps.get(ef["configMapRef"]["name"]) or {}).get("data") or {}).items()})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            src = e.get("valueFrom") or {}
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                sec = secrets.get(ref["name"])
                if sec is not None and ref["key"] in (sec.get("stringData") or {}):
                    env[e["name"]] = str(sec["stringData"][ref["key"]])
                elif sec is not None and ref["key"] in (sec.get("data") or {}):
                    env[e["name"]] = base64.b64decode(sec["data"][ref["key"]]).decode()
                else:
                    env[e["name"]] = placeholder_secret(e["name"], overlay)
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                env[e["name"]] = str(((configmaps.get(ref["name"]) or {}).get("data") or {}).get(ref["key"], ""))
    return env


def mount_files(pod_spec: dict, container: dict, root: Path) -> list[str]:
    """The files the container's Secret and ConfigMap volumes would hold, as placeholder files
    under `root` (same paths below it); returns the mount paths. A setting that names a file is
    then pointed below `root`, so check-config finds it exactly when the pod would."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts = []
    for m in container.get("volumeMounts") or []:
        v = volumes.get(m["name"]) or {}
        src = v.get("secret") or v.get("configMap")
        if src is None:
            continue
        base = root / m["mountPath"].lstrip("/")
        base.mkdir(parents=True, exist_ok=True)
        for item in src.get("items") or [{"path": "ca.crt"}]:
            (base / item["path"]).write_text("-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n")
        mounts.append(m["mountPath"].rstrip("/") + "/")
    return mounts


def run_check_config(bin_dir: Path, binary: str, env: dict[str, str]) -> tuple[dict | None, str]:
    exe = bin_dir / binary
    if not os.access(exe, os.X_OK):
        return None, f"{exe} is not an executable"
    try:
        p = subprocess.run([str(exe), "check-config"], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{exe} check-config: {e}"
    try:
        out = json.loads(p.stdout)
    except json.JSONDecodeError:
        return None, f"{exe} check-config exited {p.returncode} without the JSON report: {(p.stderr or p.stdout).strip()[:200]}"
    if p.returncode not in (0, 2) or (p.returncode == 0) != bool(out.get("ok")):
        return None, f"{exe} check-config: exit {p.returncode} does not match ok={out.get('ok')}"
    return out, ""


def check_configs(objs, configmaps, secrets, args, rep, services: dict) -> None:
    if args.check_config_dir is None:
        rep.notes.append("check-config: not run (no --check-config-dir)")
        return
    read_by_any: set[str] = set()
    ran = 0
    for o in objs:
        if o["kind"] != "Deployment":
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            binary = (c.get("command") or [None])[0]
            if binary not in services:
                continue
            env = rendered_env(c, configmaps, secrets, args.overlay)
            with tempfile.TemporaryDirectory() as root:
                for mount in mount_files(o["spec"]["template"]["spec"], c, Path(root)):
                    env = {k: v.replace(mount, root + mount) for k, v in env.items()}
                out, why = run_check_config(args.check_config_dir, binary, env)
            what = f"Deployment/{o['metadata']['name']}"
            if out is None:
                rep.error(what, f"check-config could not run: {why}")
                continue
            ran += 1
            for e in out.get("errors") or []:
                rep.error(what, f"check-config: {e.get('var')}={e.get('value')!r}: {e.get('reason')}")
            read_by_any |= set(out.get("settings") or [])
            # A Deployment's own env entries must be settings of its own service.
            for n in sorted({e["name"] for e in c.get("env") or []} - set(out.get("settings") or [])):
                rep.error(what, f"env {n} is read by no service here: {binary} check-config lists no such setting (misspelled?)")
    if not ran:
        return
    for name, cm in configmaps.items():
        if name.startswith("ticketing-config"):
            for n in sorted(set(cm.get("data") or {}) - read_by_any):
                rep.error(f"ConfigMap/{name}", f"{n} is read by no service (misspelled? check-config lists no such setting)")
    rep.notes.append(f"check-config: {ran} Deployments' environments accepted by {args.check_config_dir}")


# ----------------------------------------------------------------------------------------------
# the rest
# ----------------------------------------------------------------------------------------------
def labels_match(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label map."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def kafka_acls_from_code(repo: Path) -> dict[str, tuple[set[str], set[str], str | None, set[str], set[str]]]:
    """Per service: (topics read, topics written, consumer group, topics described, groups
    described) as the code uses them. Describe is what batch's consumer_groups job needs to
    read the groups' committed offsets and the topics' offsets."""
    events = (repo / "common/src/events.rs").read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', events))
    consumes = {
        name: {consts[n] for n in re.findall(r"[A-Z_]+", body) if n in consts}
        for name, body in re.findall(r"pub const (\w+_CONSUMES): &\[&str\] = &\[([^\]]*)\];", events)
    }
    groups = dict(re.findall(r'\("([a-z-]+)",\s*([A-Z_]+_CONSUMES)\)', events))
    all_topics = re.search(r"pub const ALL_TOPICS: \[&str; \d+\] = \[([^\]]*)\];", events)
    every_topic = {consts[n] for n in re.findall(r"[A-Z_]+", all_topics.group(1)) if n in consts} if all_topics else set()
    out = {}
    for svc in ("users-api", "concert-api", "payment-api", "batch"):
        src = repo / svc / "src"
        read: set[str] = set()
        startup = (src / "startup.rs").read_text()
        for block in re.findall(r"spawn_consumer\((.*?)\);", startup, re.S):
            lst = re.search(r"&\[([A-Z_,\s]+)\]", block)
            if lst:
                read |= {consts[n] for n in re.findall(r"[A-Z_]+", lst.group(1)) if n in consts}
            for name in re.findall(r"\b([A-Z_]+_CONSUMES)\b", block):
                read |= consumes.get(name, set())
        written: set[str] = set()
        ev = src / "events.rs"
        if ev.is_file():
            text = ev.read_text()
            for n in (re.findall(r"topic:\s*([A-Z_]+)\b", text)
                      + re.findall(r"enqueue\(\s*\w+,\s*([A-Z_]+)\b", text)
                      + re.findall(r"Outgoing::new\(\s*([A-Z_]+)\b", text)):
                if n in consts:
                    written.add(consts[n])
        written |= {t + ".dlq" for t in read}
        described_topics: set[str] = set()
        described_groups: set[str] = set()
        if any("CONSUMER_GROUPS" in f.read_text() for f in src.glob("*.rs")):
            described_groups = set(groups)
            described_topics = {t for name in groups.values() for t in consumes.get(name, set())}
            described_topics |= {t + ".dlq" for t in every_topic}
        out[svc] = (read, written, svc if read else None, described_topics, described_groups)
    return out


def check_postgres_clusters(by_kind: dict[str, list[dict]], rep) -> None:
    """The CloudNativePG Cluster(s) the overlay carries: the Poolers' Cluster is rendered and its
    certificate names them; the platform's pods trust its CA; continuous backup (a WAL archiver
    writing to a rendered ObjectStore with a retention policy and compressed WAL, a
    ScheduledBackup for base backups); HTTPS to object storage if a policy restricts its
    instances' egress."""
    clusters = {c["metadata"]["name"]: c for c in by_kind.get("Cluster", [])}
    stores = {o["metadata"]["name"]: o for o in by_kind.get("ObjectStore", [])}
    schedules = by_kind.get("ScheduledBackup", [])
    policies = by_kind.get("NetworkPolicy", [])

    pooled: set[str] = set()
    for p in by_kind.get("Pooler", []):
        name, cluster = p["metadata"]["name"], p["spec"]["cluster"]["name"]
        if not rep.check(
            cluster in clusters,
            f"Pooler/{name}",
            f"its Cluster {cluster} is not rendered: the overlay carries the CloudNativePG Cluster, with its backups",
        ):
            continue
        pooled.add(cluster)
        sans = ((clusters[cluster]["spec"].get("certificates") or {}).get("serverAltDNSNames")) or []
        rep.check(
            name in sans,
            f"Cluster/{cluster}",
            f"certificates.serverAltDNSNames does not list the pooler Service {name}: the poolers present the Cluster's certificate, so sslmode=verify-full through {name} fails",
        )

    for name, c in sorted(clusters.items()):
        what = f"Cluster/{name}"
        spec = c["spec"]
        archivers = [pl for pl in spec.get("plugins") or [] if pl.get("isWALArchiver") and pl.get("enabled", True)]
        if not archivers:
            rep.error(what, f"no WAL archiver: spec.plugins needs {BACKUP_PLUGIN} with isWALArchiver: true (without the WAL archive there is no point-in-time recovery)")
        else:
            plugin = archivers[0]
            rep.check(plugin.get("name") == BACKUP_PLUGIN, what, f"the WAL archiver is {plugin.get('name')!r}, not {BACKUP_PLUGIN}")
            store = (plugin.get("parameters") or {}).get("barmanObjectName")
            if rep.check(
                store in stores,
                what,
                f"its WAL archiver writes to ObjectStore {store!r}, which is not rendered (no ObjectStore, no WAL archive)",
            ):
                ospec = stores[store]["spec"]
                rep.check(
                    bool(ospec.get("retentionPolicy")),
                    f"ObjectStore/{store}",
                    "no retentionPolicy: base backups and WAL would pile up in the bucket forever",
                )
                rep.check(
                    bool(((ospec.get("configuration") or {}).get("wal") or {}).get("compression")),
                    f"ObjectStore/{store}",
                    "the WAL is archived uncompressed: set configuration.wal.compression",
                )
        takers = [
            sb
            for sb in schedules
            if sb["spec"]["cluster"]["name"] == name
            and not sb["spec"].get("suspend")
            and sb["spec"].get("method") == "plugin"
            and (sb["spec"].get("pluginConfiguration") or {}).get("name") == BACKUP_PLUGIN
        ]
        rep.check(
            bool(takers),
            what,
            f"no ScheduledBackup takes its base backups (cluster {name}, method plugin, {BACKUP_PLUGIN}, not suspended): the WAL archive alone restores nothing",
        )
        # The instances' egress is open unless a policy selects them; if one does, the backups
        # need HTTPS to the object store.
        labels = instance_labels(name)
        egress = [p for p in policies if "Egress" in (p["spec"].get("policyTypes") or []) and labels_match(p["spec"].get("podSelector") or {}, labels)]
        if egress:
            rep.check(
                any(
                    not r.get("ports") or any(x.get("port") == 443 for x in r.get("ports") or [])
                    for p in egress
                    for r in p["spec"].get("egress") or []
                ),
                what,
                f"NetworkPolicies {sorted(p['metadata']['name'] for p in egress)} restrict its instances' egress with no HTTPS (443): WAL archiving and base backups cannot reach object storage",
            )

    # The Secrets the database's objects read, for the summary: the operator provides them.
    for kind, objs in (("Cluster", clusters.values()), ("ObjectStore", stores.values())):
        for o in objs:
            spec = o["spec"]
            refs = {((spec.get("bootstrap") or {}).get("initdb") or {}).get("secret", {}).get("name")}
            refs |= {(r.get("passwordSecret") or {}).get("name") for r in (spec.get("managed") or {}).get("roles") or []}
            for cred in ("s3Credentials", "azureCredentials", "googleCredentials"):
                refs |= {v.get("name") for v in ((spec.get("configuration") or {}).get(cred) or {}).values() if isinstance(v, dict)}
            for n in sorted(r for r in refs if r):
                rep.notes.append(f"Secret/{n} (of {kind}/{o['metadata']['name']}) is referenced, not rendered: the operator provides it")

    # The platform's pods verify the server (sslmode=verify-full) with the CA of the Cluster the
    # poolers front: CloudNativePG's Secret <cluster>-ca.
    if pooled:
        cas = {f"{c}-ca" for c in pooled}
        for o in by_kind.get("Deployment", []) + by_kind.get("Job", []):
            pod = o["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes") or []}
            for c in pod["containers"]:
                for m in c.get("volumeMounts") or []:
                    if m["mountPath"].rstrip("/") != "/etc/postgres-ca":
                        continue
                    secret = ((volumes.get(m["name"]) or {}).get("secret") or {}).get("secretName")
                    rep.check(
                        secret in cas,
                        f"{o['kind']}/{o['metadata']['name']}",
                        f"mounts Secret {secret!r} at /etc/postgres-ca, not the CA of the poolers' Cluster ({', '.join(sorted(cas))})",
                    )


def check_platform(objs: list[dict], args, rep, services: dict) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)

    def named(kind):
        return {o["metadata"]["name"]: o for o in by_kind.get(kind, [])}

    deployments, configmaps, secrets = named("Deployment"), named("ConfigMap"), named("Secret")
    prod_like = args.overlay == "prod" or args.strict
    config = next((cm.get("data") or {} for n, cm in configmaps.items() if n.startswith("ticketing-config")), {})
    drain = int(config.get("SHUTDOWN_TIMEOUT_SECS", "10"))

    # --- pods: probes, memory, grace, spread ---------------------------------------------
    workloads = list(deployments.values()) + by_kind.get("Job", [])
    for o in workloads:
        what = f"{o['kind']}/{o['metadata']['name']}"
        pod = o["spec"]["template"]
        spec = pod["spec"]
        for c in spec["containers"]:
            binary = (c.get("command") or [None])[0]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if p is None:
                    continue
                path = (p.get("httpGet") or {}).get("path")
                rep.check(path in PROBE_PATHS, what, f"{probe} GETs {path!r}, which is not one of {sorted(PROBE_PATHS)} (the pod would never become ready or be restarted forever)")
            if binary in PEAK_RSS_MIB and o["kind"] == "Deployment":
                res = c.get("resources") or {}
                lim = mib((res.get("limits") or {}).get("memory", "0"))
                req = mib((res.get("requests") or {}).get("memory", "0"))
                rep.check(lim >= MEMORY_FLOOR_MIB[binary], what, f"memory limit {lim:.0f}Mi is below the floor {MEMORY_FLOOR_MIB[binary]:.0f}Mi (2 x the measured peak RSS {PEAK_RSS_MIB[binary]} MiB)")
                rep.check(req >= PEAK_RSS_MIB[binary], what, f"memory request {req:.0f}Mi is below the measured peak RSS {PEAK_RSS_MIB[binary]} MiB")
        if o["kind"] == "Deployment":
            pre = (spec["containers"][0].get("lifecycle") or {}).get("preStop") or {}
            pause = 0
            if "exec" in pre:
                cmd = pre["exec"].get("command") or []
                pause = int(cmd[1]) if len(cmd) == 2 and cmd[1].isdigit() else 0
            elif "sleep" in pre:
                pause = int(pre["sleep"]["seconds"])
            env_drain = drain
            for e in spec["containers"][0].get("env") or []:
                if e["name"] == "SHUTDOWN_TIMEOUT_SECS" and "value" in e and str(e["value"]).isdigit():
                    env_drain = int(e["value"])
            grace = spec.get("terminationGracePeriodSeconds", 30)
            rep.check(
                grace >= pause + env_drain + GRACE_MARGIN_SECS,
                what,
                f"terminationGracePeriodSeconds {grace} < preStop {pause} s + SHUTDOWN_TIMEOUT_SECS {env_drain} s + margin {GRACE_MARGIN_SECS} s",
            )
            labels = pod["metadata"].get("labels") or {}
            tscs = spec.get("topologySpreadConstraints") or []
            rep.check(any(t["topologyKey"] == "topology.kubernetes.io/zone" for t in tscs), what, "no zone topologySpreadConstraint")
            for t in tscs:
                rep.check(labels_match(t.get("labelSelector") or {}, labels), what, f"topologySpreadConstraint on {t['topologyKey']}: its labelSelector does not match the pods' labels, so it spreads nothing")

    # --- PDB for every Deployment ------------------------------------------------------
    pdbs = by_kind.get("PodDisruptionBudget", [])
    for d in deployments.values():
        tl = d["spec"]["template"]["metadata"].get("labels") or {}
        rep.check(sum(labels_match(p["spec"]["selector"], tl) for p in pdbs) == 1, f"Deployment/{d['metadata']['name']}", "expected exactly one PodDisruptionBudget selecting its pods")

    # --- autoscalers ---------------------------------------------------------------------
    max_replicas: dict[str, int] = {}
    for so in by_kind.get("ScaledObject", []):
        what = f"ScaledObject/{so['metadata']['name']}"
        s = so["spec"]
        target = s["scaleTargetRef"]["name"]
        rep.check(target in deployments, what, f"scales {target}, which is not a rendered Deployment")
        mn, mx = s.get("minReplicaCount", 0), s.get("maxReplicaCount", 100)
        rep.check(1 <= mn <= mx, what, f"minReplicaCount {mn} must be 1..maxReplicaCount {mx}")
        max_replicas[target] = mx
        types = [t["type"] for t in s.get("triggers") or []]
        rep.check("cron" in types, what, "no cron trigger: nothing pre-scales before an on-sale")
        rep.check(any(t not in ("cpu", "memory", "cron") for t in types), what, f"triggers {types}: needs a load signal other than CPU/memory (request rate, latency)")
        for t in s.get("triggers") or []:
            if t["type"] == "cron":
                want = int(t["metadata"].get("desiredReplicas", "0"))
                rep.check(mn <= want <= mx, what, f"cron desiredReplicas {want} outside {mn}..{mx}")
            if t["type"] == "prometheus":
                q = t["metadata"].get("query", "")
                ns = next((x["metadata"]["name"] for x in by_kind.get("Namespace", [])), None)
                rep.check(f'namespace="{ns}"' in q, what, f"prometheus query does not select namespace {ns}: {q}")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        target = h["spec"]["scaleTargetRef"]["name"]
        rep.check(target not in max_replicas, f"HorizontalPodAutoscaler/{h['metadata']['name']}", f"{target} is also scaled by a ScaledObject (two autoscalers fight)")
        max_replicas[target] = h["spec"]["maxReplicas"]
    for name, d in deployments.items():
        if name not in max_replicas:
            max_replicas[name] = d["spec"].get("replicas", 1)

    # --- Kafka topics ---------------------------------------------------------------------
    for t in by_kind.get("KafkaTopic", []):
        what = f"KafkaTopic/{t['metadata']['name']}"
        rep.check(t["apiVersion"] == "kafka.strimzi.io/v1", what, f"{t['apiVersion']} is gone in Strimzi 1.0: use kafka.strimzi.io/v1")
        replicas = t["spec"].get("replicas", 1)
        mir = int((t["spec"].get("config") or {}).get("min.insync.replicas", 1))
        rep.check(mir <= replicas, what, f"min.insync.replicas {mir} > replicas {replicas}: every write would fail")
        if prod_like:
            rep.check(replicas >= 3, what, f"replicas {replicas}: production topics need >= 3")
            rep.check(mir <= replicas - 1, what, f"min.insync.replicas {mir} must be <= replicas - 1 ({replicas - 1}) so one broker can be down")
            rep.check(mir >= 2, what, f"min.insync.replicas {mir}: production writes must be acknowledged by >= 2")

    # --- Kafka users ----------------------------------------------------------------------
    users = by_kind.get("KafkaUser", [])
    if users or prod_like:
        code = kafka_acls_from_code(args.repo)
        for svc, (read, written, group, described_topics, described_groups) in code.items():
            mine = [u for u in users if (u["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == svc]
            if not rep.check(len(mine) == 1, "KafkaUsers", f"expected one KafkaUser for {svc}, found {len(mine)}"):
                continue
            u = mine[0]
            what = f"KafkaUser/{u['metadata']['name']}"
            rep.check((u["spec"].get("authentication") or {}).get("type") == "scram-sha-512", what, "authentication must be scram-sha-512")
            got_read, got_write, got_groups = set(), set(), set()
            got_described_topics, got_described_groups = set(), set()
            for acl in (u["spec"].get("authorization") or {}).get("acls") or []:
                r, ops = acl["resource"], set(acl.get("operations") or [])
                rep.check(acl.get("type", "allow") == "allow" and r.get("patternType", "literal") == "literal", what, f"ACL {r} must be a literal allow")
                rep.check(not ops & {"All", "Alter", "AlterConfigs", "Delete", "Create", "ClusterAction"}, what, f"ACL {r} grants {sorted(ops)}: more than read/write")
                if r["type"] == "topic":
                    if "Read" in ops:
                        got_read.add(r["name"])
                    if "Write" in ops:
                        got_write.add(r["name"])
                    if ops == {"Describe"}:
                        got_described_topics.add(r["name"])
                elif r["type"] == "group":
                    if ops == {"Describe"}:
                        got_described_groups.add(r["name"])
                    else:
                        got_groups.add(r["name"])
                else:
                    rep.error(what, f"ACL on {r['type']} is not needed")
            rep.check(got_described_topics == described_topics, what, f"describes topics {sorted(got_described_topics)}, the code reads the offsets of {sorted(described_topics)}")
            rep.check(got_described_groups == described_groups, what, f"describes groups {sorted(got_described_groups)}, the code reads the commits of {sorted(described_groups)}")
            rep.check(got_read == read, what, f"reads {sorted(got_read)}, the code consumes {sorted(read)}")
            rep.check(got_write == written, what, f"writes {sorted(got_write)}, the code produces {sorted(written)}")
            rep.check(got_groups == ({group} if group else set()), what, f"groups {sorted(got_groups)}, the code's group is {group}")
            d = deployments.get(svc)
            if d is not None:
                env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0].get("env") or []}
                rep.check((env.get("KAFKA_SASL_USERNAME") or {}).get("value") == u["metadata"]["name"], f"Deployment/{svc}", f"KAFKA_SASL_USERNAME must be its KafkaUser {u['metadata']['name']}")
                ref = ((env.get("KAFKA_SASL_PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
                rep.check(ref.get("name") == u["metadata"]["name"] and ref.get("key") == "password", f"Deployment/{svc}", "KAFKA_SASL_PASSWORD must come from its KafkaUser's Secret (key password)")
    # Secrets stay in Secrets; CA files are mounted where the settings point.
    rep.check("INTERNAL_API_TOKEN" not in config, "ConfigMap", "INTERNAL_API_TOKEN is a secret: take it from a Secret, not the ConfigMap")
    for o in workloads:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == WEB:
            continue  # no environment, no Secret, no connection (validate.py checks it takes none)
        c = o["spec"]["template"]["spec"]["containers"][0]
        what = f"{o['kind']}/{o['metadata']['name']}"
        env = {e["name"]: e for e in c.get("env") or []}
        mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts") or []]
        for name in ("INTERNAL_API_TOKEN", "KAFKA_SASL_PASSWORD", "REDIS_URL") if prod_like else ("INTERNAL_API_TOKEN", "KAFKA_SASL_PASSWORD"):
            if name in env or (name == "REDIS_URL" and o["kind"] == "Deployment"):
                rep.check("secretKeyRef" in ((env.get(name) or {}).get("valueFrom") or {}), what, f"{name} must come from a Secret")
        for var in ("KAFKA_SSL_CA_LOCATION", "REDIS_CA_CERT"):
            ca = config.get(var)
            if ca and o["kind"] == "Deployment":
                rep.check(any(ca.startswith(m) for m in mounts), what, f"{var} {ca} is not under any of its volumeMounts")
        if prod_like and any(n.endswith("_DATABASE_URL") for n in env):
            rep.check("/etc/postgres-ca/" in mounts, what, "the database URLs verify the server (sslmode=verify-full, sslrootcert=/etc/postgres-ca/ca.crt): mount the Cluster's CA at /etc/postgres-ca")
    if prod_like:
        rep.check(config.get("KAFKA_SECURITY_PROTOCOL") == "sasl_ssl", "ConfigMap", "production Kafka must be KAFKA_SECURITY_PROTOCOL=sasl_ssl")
        rep.check(config.get("KAFKA_CREATE_TOPICS") == "false", "ConfigMap", "KAFKA_CREATE_TOPICS must be false where KafkaTopics own the topics")
        rep.check("REDIS_URL" not in config, "ConfigMap", "production REDIS_URL (ACL user and password) belongs in a Secret, not the ConfigMap")

    # --- network policies -------------------------------------------------------------------
    policies = by_kind.get("NetworkPolicy", [])
    for p in policies:
        what = f"NetworkPolicy/{p['metadata']['name']}"
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in p["spec"].get(direction) or []:
                for peer in rule.get(key) or []:
                    cidr = (peer.get("ipBlock") or {}).get("cidr")
                    rep.check(cidr not in ("0.0.0.0/0", "::/0"), what, f"{direction} peer ipBlock {cidr} opens it to every address")
                if direction == "egress" and not rule.get(key):
                    rep.error(what, "an egress rule without `to` allows every destination")
    for d in list(deployments.values()) + by_kind.get("Job", []):
        tl = d["spec"]["template"]["metadata"].get("labels") or {}
        what = f"{d['kind']}/{d['metadata']['name']}"
        sel = [p for p in policies if labels_match(p["spec"].get("podSelector") or {}, tl)]
        egress_pols = [p for p in sel if "Egress" in (p["spec"].get("policyTypes") or [])]
        rep.check(any(not p["spec"].get("egress") for p in egress_pols), what, "no default-deny egress policy selects its pods")
        if d["kind"] == "Deployment" and d["metadata"]["name"] == WEB:
            rep.check(
                not any(p["spec"].get("egress") for p in egress_pols),
                what,
                f"the web app reaches nothing, yet {[p['metadata']['name'] for p in egress_pols if p['spec'].get('egress')]} allow it egress",
            )
            continue
        rep.check(
            any(any(x.get("port") == 53 for r in p["spec"].get("egress") or [] for x in r.get("ports") or []) for p in egress_pols),
            what,
            "no egress to DNS (53)",
        )
        rep.check(
            any(any(x.get("port") in (5432,) for r in p["spec"].get("egress") or [] for x in r.get("ports") or []) for p in egress_pols),
            what,
            "no egress to PostgreSQL (5432)",
        )

    # --- the PostgreSQL Cluster and its backups ------------------------------------------
    check_postgres_clusters(by_kind, rep)

    # --- scrape objects -----------------------------------------------------------------------
    monitors = by_kind.get("ServiceMonitor", [])
    for s in by_kind.get("Service", []):
        ports = {p.get("name") for p in s["spec"]["ports"]}
        covered = any(
            labels_match(m["spec"].get("selector") or {}, s["metadata"].get("labels") or {})
            and any(e.get("port") in ports and e.get("path", "/metrics") == "/metrics" for e in m["spec"].get("endpoints") or [])
            for m in monitors
        )
        if s["metadata"]["name"] == WEB:
            rep.check(not covered, f"Service/{s['metadata']['name']}", "a ServiceMonitor scrapes the web app's /metrics, which is a 404 there")
            continue
        rep.check(covered, f"Service/{s['metadata']['name']}", "no ServiceMonitor scrapes its /metrics")

    # --- gateway timeouts ----------------------------------------------------------------------
    btps = by_kind.get("BackendTrafficPolicy", [])
    if btps:
        gw_level = [b for b in btps if any(r.get("kind") == "Gateway" for r in b["spec"].get("targetRefs") or [])]
        idle = [seconds(((b["spec"].get("timeout") or {}).get("http") or {}).get("connectionIdleTimeout", "")) for b in gw_level]
        rep.check(
            bool(idle) and all(i is not None and i < SERVICE_KEEPALIVE_SECS for i in idle),
            "BackendTrafficPolicies",
            f"the Gateway's upstream connectionIdleTimeout must be below the services' keep-alive ({SERVICE_KEEPALIVE_SECS} s), found {idle}",
        )
        for b in btps:
            if b not in gw_level:
                rep.check(b["spec"].get("mergeType") == "StrategicMerge", f"BackendTrafficPolicy/{b['metadata']['name']}", "a route policy without mergeType replaces the Gateway's timeouts")

    # --- connection budget ------------------------------------------------------------------
    pool_default = int(config.get("DATABASE_POOL_SIZE", "16"))

    def pool_of(d: dict) -> int:
        for e in d["spec"]["template"]["spec"]["containers"][0].get("env") or []:
            if e["name"] == "DATABASE_POOL_SIZE" and "value" in e:
                return int(e["value"])
        return pool_default

    clients: dict[str, list[tuple[str, int, int]]] = {}
    for name, d in deployments.items():
        binary = (d["spec"]["template"]["spec"]["containers"][0].get("command") or [None])[0]
        for db in SERVICE_DATABASES.get(binary, []):
            clients.setdefault(db, []).append((name, max_replicas.get(name, 1), pool_of(d)))
    ns = (by_kind.get("Namespace") or [{}])[0]
    ann = (ns.get("metadata") or {}).get("annotations") or {}
    poolers = by_kind.get("Pooler", [])
    # max_connections: the rendered Cluster's own setting where the overlay carries the Cluster
    # (the one the poolers name), else the Namespace's annotations (an operator-provided
    # database, e.g. dev's).
    clusters = named("Cluster")
    pooled = [p["spec"]["cluster"]["name"] for p in poolers if p["spec"]["cluster"]["name"] in clusters]
    cluster = clusters.get(pooled[0]) if pooled else (next(iter(clusters.values())) if len(clusters) == 1 else None)
    if cluster is not None:
        what = f"Cluster/{cluster['metadata']['name']}"
        params = ((cluster["spec"].get("postgresql") or {}).get("parameters")) or {}
        try:
            max_conn = int(params["max_connections"])
            reserved = int((cluster["metadata"].get("annotations") or {}).get(RESERVED_ANNOTATION, "0"))
            floor = int(params.get("superuser_reserved_connections", "3")) + int(params.get("reserved_connections", "0"))
        except (KeyError, ValueError):
            rep.error(what, f"postgresql.parameters.max_connections (CloudNativePG's default is 100) or annotation {RESERVED_ANNOTATION} is missing or not a number: the connection budget needs them")
            return
        rep.check(
            reserved >= floor,
            what,
            f"annotation {RESERVED_ANNOTATION} {reserved} is below superuser_reserved_connections + reserved_connections ({floor})",
        )
        if "ticketing/postgres-max-connections" in ann:
            rep.check(
                ann["ticketing/postgres-max-connections"] == str(max_conn),
                "Namespace",
                f"annotation ticketing/postgres-max-connections {ann['ticketing/postgres-max-connections']} disagrees with {what}'s max_connections {max_conn}: keep it on the Cluster only",
            )
        source = f" ({what})"
    else:
        try:
            max_conn = int(ann["ticketing/postgres-max-connections"])
            reserved = int(ann.get(RESERVED_ANNOTATION, "0"))
        except (KeyError, ValueError):
            rep.error("Namespace", "annotation ticketing/postgres-max-connections (the database's max_connections) is missing or not a number")
            return
        source = " (Namespace annotations)"
    allowed_params = pgbouncer_allowed(args.crd_dir)
    lines = []
    if poolers:
        server_total = 0
        for db in sorted(clients):
            mine = [p for p in poolers if (p["metadata"].get("annotations") or {}).get("ticketing/database") == db]
            if not rep.check(len(mine) == 1, "Poolers", f"expected one Pooler for database {db} (annotation ticketing/database), found {len(mine)}"):
                continue
            p = mine[0]
            what = f"Pooler/{p['metadata']['name']}"
            pg = p["spec"].get("pgbouncer") or {}
            params = pg.get("parameters") or {}
            rep.check(pg.get("poolMode") == "transaction", what, "poolMode must be transaction")
            if allowed_params is not None:
                for k in sorted(set(params) - allowed_params):
                    rep.error(what, f"PgBouncer parameter {k} is refused by CloudNativePG's webhook")
            try:
                mcc = int(params["max_client_conn"])
                dps = int(params["default_pool_size"])
                rps = int(params.get("reserve_pool_size", "0"))
                mdb = int(params.get("max_db_connections", "0")) or dps + rps
                mps = int(params.get("max_prepared_statements", "0"))
            except (KeyError, ValueError) as e:
                rep.error(what, f"pgbouncer.parameters needs max_client_conn and default_pool_size as numbers ({e})")
                continue
            rep.check(mps > 0, what, "max_prepared_statements must be set: sqlx prepares every statement (PgBouncer >= 1.21 in transaction mode)")
            per_instance = min(dps + rps, mdb)
            inst = p["spec"].get("instances", 1)
            server_total += inst * per_instance
            demand = sum(r * s for _, r, s in clients[db])
            terms = " + ".join(f"{n} {r} x {s}" for n, r, s in clients[db])
            lines.append(
                f"{db}: clients {terms} = {demand} <= max_client_conn {mcc} (each of {p['metadata']['name']}'s {inst} "
                f"instances: all may land on one); servers {inst} x min(default_pool_size {dps} + reserve_pool_size {rps}, "
                f"max_db_connections {mdb}) = {inst * per_instance}"
            )
            rep.check(
                demand <= mcc,
                what,
                f"connection budget: {terms} = {demand} client connections > max_client_conn {mcc}",
            )
        rep.check(
            server_total <= max_conn - reserved,
            "Poolers",
            f"connection budget: the poolers open {server_total} server connections > max_connections {max_conn} - reserved {reserved}",
        )
        lines.append(f"PostgreSQL: poolers' server connections {server_total} <= max_connections {max_conn} - reserved {reserved} = {max_conn - reserved}{source}")
    else:
        total = 0
        for db in sorted(clients):
            demand = sum(r * s for _, r, s in clients[db])
            total += demand
            lines.append(f"{db}: " + " + ".join(f"{n} {r} x {s}" for n, r, s in clients[db]) + f" = {demand}")
        rep.check(
            total <= max_conn - reserved,
            "Namespace",
            f"connection budget: the pods open {total} connections (no pooler) > max_connections {max_conn} - reserved {reserved}",
        )
        lines.append(f"PostgreSQL (direct, no pooler): {total} <= max_connections {max_conn} - reserved {reserved} = {max_conn - reserved}{source}")
    rep.budget = lines

    # --- placeholders ---------------------------------------------------------------------------
    found = set()

    def scan(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                scan(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                scan(v, f"{path}[{i}]")
        elif isinstance(node, str) and PLACEHOLDER.search(node) and "#" not in path:
            found.add((path, node))

    for o in objs:
        scan({k: v for k, v in o.items() if k != "metadata"} | {"metadata": {"name": o["metadata"]["name"]}}, f"{o['kind']}/{o['metadata']['name']}")
    for path, value in sorted(found):
        msg = f"placeholder value {value!r} at {path}: replace it before deploying"
        if args.strict:
            rep.error("placeholder", msg)
        else:
            rep.warnings.append(msg)
