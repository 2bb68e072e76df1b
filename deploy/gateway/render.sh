#!/usr/bin/env bash
# Renders the gateway's nginx.conf into STATE_DIR (argument 1) from the environment:
#   GATEWAY_LISTEN (127.0.0.1:8080), USERS_API_ADDR (127.0.0.1:8081),
#   CONCERT_API_ADDR (127.0.0.1:8082), PAYMENT_API_ADDR (127.0.0.1:8083),
#   Each *_API_ADDR is one host:port or a comma-separated list of them (the replicas of that
#   service, e.g. 127.0.0.1:8082,127.0.0.1:8092): one `server ADDR max_fails=1 fail_timeout=2s`
#   line each in its upstream block. Failover (the template's proxy_next_upstream): a request
#   whose connection to a replica fails (refused, reset) or times out goes to the next one, at
#   most 2 tries; a POST/PATCH that was already sent is never resent (nginx's rule without
#   `non_idempotent`). A replica that failed once is skipped for 2 s, then tried again (with
#   a single server nginx ignores max_fails and fail_timeout: it is never skipped).
#   USERS_STREAM_ADDR (unset; one host:port or a comma-separated list, like USERS_API_ADDR):
#   users-api's stream listeners (USERS_API_STREAM_PORT, e.g. 127.0.0.1:8085,127.0.0.1:8095),
#   which serve only the waiting room's status streams. When set, GET
#   /api/queue/tokens/{token}/events goes to them (upstream users_stream: the same server
#   parameters and failover, no idle connection pool: they close each connection after its
#   stream); every other users-api path still goes to USERS_API_ADDR. Unset or empty: the
#   streams go to USERS_API_ADDR's servers with their pool, as every other users-api path.
#   GATEWAY_INTERNAL_LISTEN (unset; a host:port, e.g. 127.0.0.1:8070): adds the internal
#   listener (internal.conf.template, rendered to STATE_DIR/internal.conf and included), the
#   address the services call concert-api at (CONCERT_API_URL) when it runs several replicas:
#   only concert-api's /internal/** and GET /api/concerts/{id} (users-api's "does this concert
#   exist?"), through the same upstream and failover, without the public limits; any other
#   path is a 404. Bind it to loopback (or a private address) only: it is not the public edge.
#   GATEWAY_ACCESS_LOG (off; a file path: the log, in the `redacted` format: no queue tokens),
#   GATEWAY_BENCH_ROUTE (0; 1 adds GET /bench/live → users-api /health/live, the load
#   test's baseline: never set it outside a benchmark).
# Limits (docs/SECURITY.md "Gateway limits"; a limit answers 429 problem+json + Retry-After):
#   GATEWAY_AUTH_RATE (10r/s), GATEWAY_AUTH_BURST (20)    POST /api/users, /api/sessions,
#                                                         per client address (RATE_LIMITED)
#   GATEWAY_QUEUE_RATE (20r/s), GATEWAY_QUEUE_BURST (40)  POST /api/queue/tokens, per address
#   GATEWAY_CONN_PER_ADDR (256)      requests in flight at once per client address
#                                    (RATE_LIMITED); 1..=1000000
#   GATEWAY_SSE_PER_SESSION (3)      open event streams per session token (TOO_MANY_STREAMS);
#                                    1..=1000
#   GATEWAY_HOLD_RATE (2r/s), GATEWAY_HOLD_BURST (10)  POST /api/reservations and
#                                    DELETE /api/reservations/{id} per session token
#                                    (HOLD_RATE_LIMITED)
#   Rates are <N>r/s with N in 1..=1000000; bursts 0..=1000000.
# Slow clients (seconds, 1..=3600): GATEWAY_HEADER_TIMEOUT (10), GATEWAY_BODY_TIMEOUT (10),
#   GATEWAY_SEND_TIMEOUT (10): a client that does not send its request header / body, or
#   does not read its answer, in that time loses the connection (reset);
#   GATEWAY_KEEPALIVE_TIMEOUT (30): an idle client connection is closed after it.
# GATEWAY_HSTS (0; 1 adds Strict-Transport-Security: max-age=31536000; includeSubDomains to
#   every answer: only where TLS terminates in front of this gateway, never on plain HTTP).
# The API reference, served by nginx as static files from STATE_DIR/www:
#   GATEWAY_OPENAPI      the merged OpenAPI document (`target/release/apidoc > FILE`), copied
#                        to www/openapi.json → GET /api/openapi.json
#   GATEWAY_DOCS_ASSETS  swagger-ui-dist's files (default deploy/gateway/docs/node_modules/
#                        swagger-ui-dist, after `npm ci --ignore-scripts` there), copied with
#                        docs/index.html and docs/init.js to www/docs → GET /api/docs
#   When either is missing, a placeholder stands in (a document with no paths, a page saying
#   how to install the assets): the config is the same, so `nginx -t` checks it either way.
# The web app, served by nginx as static files from STATE_DIR/www/app:
#   GATEWAY_WEB          the built app (default web/dist, after `npm ci --ignore-scripts &&
#                        npm run build` in web/), copied whole → GET / (index.html for every
#                        path outside /api/ that is not one of its files), GET /assets/**
#   When it is not built (no index.html), a page saying how to build it stands in.
# A value out of its range stops the rendering with a message naming the variable.
# Prints the path of the rendered file.
set -euo pipefail
state="${1:?usage: render.sh STATE_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$state/tmp"
conf="$state/nginx.conf"

fail() { printf 'render.sh: %s\n' "$*" >&2; exit 1; }
# int NAME DEFAULT MIN MAX: the variable's value (or the default), an integer in MIN..=MAX.
int() {
    local v="${!1:-$2}"
    { [[ $v =~ ^[0-9]{1,9}$ ]] && ((10#$v >= $3 && 10#$v <= $4)); } ||
        fail "$1=$v: must be an integer in $3..=$4"
    echo $((10#$v))
}
# rate NAME DEFAULT: <N>r/s with N in 1..=1000000.
rate() {
    local v="${!1:-$2}"
    { [[ $v =~ ^([0-9]{1,9})r/s$ ]] && ((10#${BASH_REMATCH[1]} >= 1 && 10#${BASH_REMATCH[1]} <= 1000000)); } ||
        fail "$1=$v: must be <N>r/s with N in 1..=1000000"
    echo "$v"
}
auth_rate="$(rate GATEWAY_AUTH_RATE 10r/s)"
auth_burst="$(int GATEWAY_AUTH_BURST 20 0 1000000)"
queue_rate="$(rate GATEWAY_QUEUE_RATE 20r/s)"
queue_burst="$(int GATEWAY_QUEUE_BURST 40 0 1000000)"
hold_rate="$(rate GATEWAY_HOLD_RATE 2r/s)"
hold_burst="$(int GATEWAY_HOLD_BURST 10 0 1000000)"
conn_per_addr="$(int GATEWAY_CONN_PER_ADDR 256 1 65535)" # nginx: a limit_conn number is below 65536
sse_per_session="$(int GATEWAY_SSE_PER_SESSION 3 1 1000)"
header_timeout="$(int GATEWAY_HEADER_TIMEOUT 10 1 3600)"
body_timeout="$(int GATEWAY_BODY_TIMEOUT 10 1 3600)"
send_timeout="$(int GATEWAY_SEND_TIMEOUT 10 1 3600)"
keepalive_timeout="$(int GATEWAY_KEEPALIVE_TIMEOUT 30 1 3600)"
case "${GATEWAY_HSTS:-0}" in
    0) hsts="" ;;
    1) hsts="max-age=31536000; includeSubDomains" ;;
    *) fail "GATEWAY_HSTS=${GATEWAY_HSTS}: must be 0 or 1" ;;
esac
access_log="${GATEWAY_ACCESS_LOG:-off}"
path_re='^[^][:space:];|&@{}"'"'"'\\]+$'
[[ $access_log =~ $path_re ]] || fail "GATEWAY_ACCESS_LOG=$access_log: must be off or a file path without spaces, quotes, brackets or ;|&@{}\\"
[[ $access_log == off ]] || access_log="$access_log redacted"

www="$state/www"
rm -rf "$www"
mkdir -p "$www/docs"
if [[ -n ${GATEWAY_OPENAPI:-} && -s ${GATEWAY_OPENAPI} ]]; then
    cp "$GATEWAY_OPENAPI" "$www/openapi.json"
else
    printf '%s\n' '{"openapi":"3.1.0","info":{"title":"Concert ticket reservation platform (placeholder: the document was not built; see deploy/gateway/render.sh)","version":"0"},"paths":{}}' \
        > "$www/openapi.json"
fi
assets="${GATEWAY_DOCS_ASSETS:-$here/docs/node_modules/swagger-ui-dist}"
if [[ -f $assets/swagger-ui-bundle.js && -f $assets/swagger-ui.css ]]; then
    cp "$assets/swagger-ui-bundle.js" "$assets/swagger-ui.css" "$here/docs/init.js" "$www/docs/"
    if [[ -f $assets/favicon-32x32.png ]]; then
        cp "$assets/favicon-32x32.png" "$www/docs/"
    fi
    cp "$here/docs/index.html" "$www/docs/index.html"
else
    cp "$here/docs/placeholder.html" "$www/docs/index.html"
fi
web="${GATEWAY_WEB:-$here/../../web/dist}"
mkdir -p "$www/app"
if [[ -f $web/index.html ]]; then
    cp -R "$web/." "$www/app/"
else
    cp "$here/web-placeholder.html" "$www/app/index.html"
fi
# nginx's workers (nobody, when the master runs as root) read these files: STATE_DIR may be
# a private mktemp -d directory.
chmod a+x "$state"
chmod -R a+rX "$www"
# servers NAME DEFAULT: the `server` entries of an upstream block from NAME's comma-separated
# host:port list (the template writes `server @X@;`: entries after the first are joined with
# `; server `). A failed replica is skipped for fail_timeout after max_fails failures.
readonly server_params="max_fails=1 fail_timeout=2s"
addr_re='^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$'
servers() {
    local v="${!1:-$2}" addr out="" list=()
    IFS=, read -r -a list <<<"$v"
    ((${#list[@]})) || fail "$1 is empty: must be host:port[,host:port...]"
    for addr in "${list[@]}"; do
        addr="${addr//[[:space:]]/}"
        [[ $addr =~ $addr_re ]] || fail "$1=$v: '$addr' is not host:port (a list is comma-separated)"
        out+="${out:+; server }$addr $server_params"
    done
    echo "$out"
}
users_servers="$(servers USERS_API_ADDR 127.0.0.1:8081)"
# The status streams' upstream: users-api's stream listeners, without the idle pool (the
# template's `@STREAM_POOL@keepalive ...` line is commented out), or the main ports with it.
if [[ -n ${USERS_STREAM_ADDR:-} ]]; then
    users_stream_servers="$(servers USERS_STREAM_ADDR "")"
    stream_pool="# "
else
    users_stream_servers="$users_servers"
    stream_pool=""
fi
concert_servers="$(servers CONCERT_API_ADDR 127.0.0.1:8082)"
payment_servers="$(servers PAYMENT_API_ADDR 127.0.0.1:8083)"
listen="${GATEWAY_LISTEN:-127.0.0.1:8080}"
internal_include="# no internal listener (GATEWAY_INTERNAL_LISTEN is unset)"
rm -f "$state/internal.conf"
if [[ -n ${GATEWAY_INTERNAL_LISTEN:-} ]]; then
    [[ $GATEWAY_INTERNAL_LISTEN =~ $addr_re ]] ||
        fail "GATEWAY_INTERNAL_LISTEN=$GATEWAY_INTERNAL_LISTEN: must be host:port (e.g. 127.0.0.1:8070)"
    [[ $GATEWAY_INTERNAL_LISTEN != "$listen" ]] ||
        fail "GATEWAY_INTERNAL_LISTEN=$GATEWAY_INTERNAL_LISTEN: must differ from GATEWAY_LISTEN"
    sed -e "s|@STATE@|$state|g" \
        -e "s|@INTERNAL_LISTEN@|$GATEWAY_INTERNAL_LISTEN|g" \
        "$here/internal.conf.template" > "$state/internal.conf"
    internal_include="include $state/internal.conf;"
fi
bench_route=""
if [[ ${GATEWAY_BENCH_ROUTE:-0} == 1 ]]; then
    bench_route="location = /bench/live { proxy_pass http://users/health/live; }"
fi
cp "$here/security-headers.conf" "$state/security-headers.conf"
sed -e "s|@STATE@|$state|g" \
    -e "s|@LISTEN@|$listen|g" \
    -e "s|@USERS@|$users_servers|g" \
    -e "s|@USERS_STREAM@|$users_stream_servers|g" \
    -e "s|@STREAM_POOL@|$stream_pool|g" \
    -e "s|@CONCERT@|$concert_servers|g" \
    -e "s|@PAYMENT@|$payment_servers|g" \
    -e "s|@INTERNAL_LISTENER@|$internal_include|g" \
    -e "s|@AUTH_RATE@|$auth_rate|g" \
    -e "s|@AUTH_BURST@|$auth_burst|g" \
    -e "s|@QUEUE_RATE@|$queue_rate|g" \
    -e "s|@QUEUE_BURST@|$queue_burst|g" \
    -e "s|@HOLD_RATE@|$hold_rate|g" \
    -e "s|@HOLD_BURST@|$hold_burst|g" \
    -e "s|@CONN_PER_ADDR@|$conn_per_addr|g" \
    -e "s|@SSE_PER_SESSION@|$sse_per_session|g" \
    -e "s|@HEADER_TIMEOUT@|$header_timeout|g" \
    -e "s|@BODY_TIMEOUT@|$body_timeout|g" \
    -e "s|@SEND_TIMEOUT@|$send_timeout|g" \
    -e "s|@KEEPALIVE_TIMEOUT@|$keepalive_timeout|g" \
    -e "s|@HSTS@|$hsts|g" \
    -e "s|@ACCESS_LOG@|$access_log|g" \
    -e "s|@BENCH_ROUTE@|$bench_route|g" \
    "$here/nginx.conf.template" > "$conf"
echo "$conf"
