#!/usr/bin/env python3
"""Stand-in for `<service> check-config` with the same interface, used by check.sh's self-test
(and in place of the real binaries until they have the subcommand): reads the environment,
connects to nothing, prints {"service","ok","errors":[{"var","value","reason"}],"settings":[...]}
and exits 0 if ok, 2 if not. It knows the settings of README.md's table plus the platform
settings (Kafka SASL/TLS, the internal token, topic creation), a few of their ranges and the
Redis rules (REDIS_URL's schemes, a cluster URL without a database, REDIS_CA_CERT only with TLS,
no braces in REDIS_KEY_PREFIX), enough to prove that check.sh fails on a misspelled name and on
an out-of-range value; the real subcommand is the authority."""
import json
import os
import re
import sys

COMMON = {
    "HTTP_HOST": None, "HTTP_WORKERS": (1, 256), "SHUTDOWN_TIMEOUT_SECS": (1, 300), "LOG_FORMAT": None, "RUST_LOG": None, "OTEL_EXPORTER_OTLP_ENDPOINT": None,
    "REDIS_URL": None, "REDIS_KEY_PREFIX": None, "REDIS_CA_CERT": None, "KAFKA_TOPIC_REPLICATION": (1, 5), "KAFKA_TOPIC_MIN_INSYNC": None, "KAFKA_BROKERS": None, "KAFKA_TOPIC_PREFIX": None,
    "KAFKA_TOPIC_PARTITIONS": (1, 1000), "KAFKA_CREATE_TOPICS": None, "KAFKA_SECURITY_PROTOCOL": None,
    "KAFKA_SASL_MECHANISM": None, "KAFKA_SASL_USERNAME": None, "KAFKA_SASL_PASSWORD": None, "KAFKA_SSL_CA_LOCATION": None,
    "CONSUMER_MAX_ATTEMPTS": (1, 100), "CONSUMER_BACKOFF_MS": (1, 60000), "CONSUMER_CONCURRENCY": (1, 256),
    "KAFKA_SESSION_TIMEOUT_MS": (6000, 1800000), "KAFKA_DEBUG": None, "DATABASE_POOL_SIZE": (1, 500), "DATABASE_CONNECT_TIMEOUT_SECS": (1, 120),
    "SESSION_TTL_SECS": (60, 2592000), "INTERNAL_API_TOKEN": None,
    "CONCERT_API_URL": None, "CONCERT_API_TIMEOUT_MS": None, "CONCERT_CACHE_SECS": None,
    "LOGIN_MAX_CONCURRENT_HASHES": (1, 64), "LOGIN_HASH_WAIT_MS": None,
    "QUEUE_MAX_ACTIVE": None, "QUEUE_ADMIT_PER_TICK": None, "QUEUE_ADMIT_INTERVAL_MS": None, "QUEUE_ACTIVE_TTL_SECS": None,
    "QUEUE_PACE": None, "QUEUE_PACE_TARGET_MS": None, "QUEUE_PACE_START": None, "QUEUE_PACE_STEP": None,
    "QUEUE_WAITING_IDLE_TIMEOUT_SECS": None, "QUEUE_SSE_POLL_MS": None, "QUEUE_SSE_KEEPALIVE_SECS": (1, 15),
    "RESERVATION_HOLD_SECS": None, "RESERVATION_GRACE_SECS": None, "RESERVATION_MAX_SEATS": None, "CATALOGUE_CACHE_SECS": None,
    "WALLET_MAX_BALANCE": None, "PAYMENT_CUTOFF_SECS": None, "PAYMENT_RECONCILE_AFTER_SECS": None,
    "PAYMENT_SETTLE_DIRECT_AFTER_SECS": None,
    "BATCH_LEASE_MS": (300, 600000), "BATCH_EXPIRE_INTERVAL_MS": None, "BATCH_RECONCILE_INTERVAL_MS": None, "BATCH_INVARIANTS_INTERVAL_MS": None, "BATCH_SALE_FIGURES_INTERVAL_MS": None, "BATCH_CONSUMER_GROUPS_INTERVAL_MS": None, "BATCH_INVARIANTS_WALLET_SAMPLE": (1, 1000000),
    "BATCH_OUTBOX_HEALTH_INTERVAL_MS": None, "BATCH_CLEANUP_INTERVAL_MS": None,
}
OWN = {
    "users-api": {"USERS_API_PORT": (0, 65535), "USERS_API_STREAM_PORT": (0, 65535), "USERS_DATABASE_URL": None, "ADMIN_PASSWORD": None},
    "concert-api": {"CONCERT_API_PORT": (0, 65535), "CONCERT_DATABASE_URL": None},
    "payment-api": {"PAYMENT_API_PORT": (0, 65535), "PAYMENT_DATABASE_URL": None},
    "batch": {"BATCH_PORT": (0, 65535), "USERS_DATABASE_URL": None, "CONCERT_DATABASE_URL": None, "PAYMENT_DATABASE_URL": None,
              "BACKUP_DIR": None, "BACKUP_KEEP": (1, 1000), "BATCH_BACKUP_INTERVAL_MS": (60000, 604800000),
              "ARCHIVE_AFTER_DAYS": (1, 3650), "BATCH_ARCHIVE_INTERVAL_MS": (10, 86400000)},
}


REDIS_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")


def redacted(url: str) -> str:
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)


def redis_errors() -> list[dict]:
    """REDIS_URL names one server or (`+cluster`) a Redis Cluster's seed nodes, which has no
    /database; REDIS_CA_CERT only with TLS; no hash-tag braces in REDIS_KEY_PREFIX."""
    errors = []
    url = os.environ.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379"
    if not url.startswith(REDIS_SCHEMES):
        errors.append({"var": "REDIS_URL", "value": redacted(url), "reason": "must be a URL starting with " + ", ".join(REDIS_SCHEMES)})
    elif "+cluster://" in url and url.split("://", 1)[1].split("?", 1)[0].partition("/")[2]:
        errors.append({"var": "REDIS_URL", "value": redacted(url), "reason": "a Redis Cluster has database 0 only: no /<database> after its nodes"})
    ca = os.environ.get("REDIS_CA_CERT", "").strip()
    if ca and not url.startswith(("rediss://", "rediss+cluster://")):
        errors.append({"var": "REDIS_CA_CERT", "value": ca, "reason": "only used with a rediss:// or rediss+cluster:// REDIS_URL (TLS)"})
    prefix = os.environ.get("REDIS_KEY_PREFIX", "").strip()
    if "{" in prefix or "}" in prefix:
        errors.append({"var": "REDIS_KEY_PREFIX", "value": prefix, "reason": "must not contain { or }: they would replace the keys' Redis Cluster hash tags"})
    return errors


def main() -> int:
    service = os.path.basename(sys.argv[0])
    if service not in OWN or sys.argv[1:] != ["check-config"]:
        print(f"usage: <service> check-config (service one of {sorted(OWN)})", file=sys.stderr)
        return 64
    settings = {**COMMON, **OWN[service]}
    errors = []
    for var, rng in sorted(settings.items()):
        raw = os.environ.get(var, "").strip()
        if not raw or rng is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            errors.append({"var": var, "value": raw, "reason": "invalid digit found in string"})
            continue
        if not rng[0] <= value <= rng[1]:
            errors.append({"var": var, "value": raw, "reason": f"must be between {rng[0]} and {rng[1]}"})
    errors += redis_errors()
    print(json.dumps({"service": service, "ok": not errors, "errors": errors, "settings": sorted(settings)}))
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
