#!/usr/bin/env bash
# Renders the gateway's nginx.conf into STATE_DIR (argument 1) from the environment:
#   GATEWAY_LISTEN (127.0.0.1:8080), USERS_API_ADDR (127.0.0.1:8081),
#   CONCERT_API_ADDR (127.0.0.1:8082), PAYMENT_API_ADDR (127.0.0.1:8083),
#   GATEWAY_AUTH_RATE (10r/s), GATEWAY_AUTH_BURST (20),
#   GATEWAY_QUEUE_RATE (20r/s), GATEWAY_QUEUE_BURST (40), GATEWAY_ACCESS_LOG (off),
#   GATEWAY_BENCH_ROUTE (0; 1 adds GET /bench/live → users-api /health/live, the load
#   test's baseline: never set it outside a benchmark).
# The API reference, served by nginx as static files from STATE_DIR/www:
#   GATEWAY_OPENAPI      the merged OpenAPI document (`target/release/apidoc > FILE`), copied
#                        to www/openapi.json → GET /api/openapi.json
#   GATEWAY_DOCS_ASSETS  swagger-ui-dist's files (default deploy/gateway/docs/node_modules/
#                        swagger-ui-dist, after `npm ci --ignore-scripts` there), copied with
#                        docs/index.html and docs/init.js to www/docs → GET /api/docs
#   When either is missing, a placeholder stands in (a document with no paths, a page saying
#   how to install the assets): the config is the same, so `nginx -t` checks it either way.
# Prints the path of the rendered file.
set -euo pipefail
state="${1:?usage: render.sh STATE_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$state/tmp"
conf="$state/nginx.conf"

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
# nginx's workers (nobody, when the master runs as root) read these files: STATE_DIR may be
# a private mktemp -d directory.
chmod a+x "$state"
chmod -R a+rX "$www"
bench_route=""
if [[ ${GATEWAY_BENCH_ROUTE:-0} == 1 ]]; then
    bench_route="location = /bench/live { proxy_pass http://users/health/live; }"
fi
sed -e "s|@STATE@|$state|g" \
    -e "s|@LISTEN@|${GATEWAY_LISTEN:-127.0.0.1:8080}|g" \
    -e "s|@USERS@|${USERS_API_ADDR:-127.0.0.1:8081}|g" \
    -e "s|@CONCERT@|${CONCERT_API_ADDR:-127.0.0.1:8082}|g" \
    -e "s|@PAYMENT@|${PAYMENT_API_ADDR:-127.0.0.1:8083}|g" \
    -e "s|@AUTH_RATE@|${GATEWAY_AUTH_RATE:-10r/s}|g" \
    -e "s|@AUTH_BURST@|${GATEWAY_AUTH_BURST:-20}|g" \
    -e "s|@QUEUE_RATE@|${GATEWAY_QUEUE_RATE:-20r/s}|g" \
    -e "s|@QUEUE_BURST@|${GATEWAY_QUEUE_BURST:-40}|g" \
    -e "s|@ACCESS_LOG@|${GATEWAY_ACCESS_LOG:-off}|g" \
    -e "s|@BENCH_ROUTE@|$bench_route|g" \
    "$here/nginx.conf.template" > "$conf"
echo "$conf"
