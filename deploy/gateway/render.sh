#!/usr/bin/env bash
# Renders the gateway's nginx.conf into STATE_DIR (argument 1) from the environment:
#   GATEWAY_LISTEN (127.0.0.1:8080), USERS_API_ADDR (127.0.0.1:8081),
#   CONCERT_API_ADDR (127.0.0.1:8082), PAYMENT_API_ADDR (127.0.0.1:8083),
#   GATEWAY_AUTH_RATE (10r/s), GATEWAY_AUTH_BURST (20),
#   GATEWAY_QUEUE_RATE (20r/s), GATEWAY_QUEUE_BURST (40), GATEWAY_ACCESS_LOG (off),
#   GATEWAY_BENCH_ROUTE (0; 1 adds GET /bench/live → users-api /health/live, the load
#   test's baseline: never set it outside a benchmark).
# Prints the path of the rendered file.
set -euo pipefail
state="${1:?usage: render.sh STATE_DIR}"
mkdir -p "$state/tmp"
conf="$state/nginx.conf"
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
    "$(dirname "${BASH_SOURCE[0]}")/nginx.conf.template" > "$conf"
echo "$conf"
