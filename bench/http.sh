#!/usr/bin/env bash
# HTTP throughput, latency and host CPU per request of the release host, with the ceiling of
# the same SQL run by pgbench, all in one run:
#
# - a request the host answers itself (404: no component runs), and one the Orders component
#   answers without SQL (its own 404): the difference in host CPU per request is the cost of
#   one component instance;
# - POST /orders/orders and GET /orders/orders/{id} at two concurrencies;
# - pgbench of POST's unit of work (insert the order, insert its event into the outbox) at the
#   lower concurrency: the database's ceiling for POST;
# - the host's resident memory idle and after the load, and the binary's size.
#
#   bench/http.sh [seconds per case]   (default 10; HOST_BIN=path picks the host binary)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh
source bench/lib.sh

SECONDS_PER_CASE=${1:-10}
LOW=16
HIGH=64
bench_setup
bench_reset_data
bench_start_host
idle_rss=$(bench_rss_kb)
base="http://$BENCH_HTTP"

bench_post_script
order_id=$(curl -fsS -X POST "$base/orders/orders" -H 'content-type: application/json' \
  -d '{"customerId":"0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f","amount":1}' | sed -E 's/.*"id":"([^"]+)".*/\1/')

# Runs wrk for one case and prints a table row: requests/s, p50 and p99 latency, host CPU per
# request, and how many answers were not 2xx/3xx/404 as expected.
run_case() { # name, concurrency, url, [lua script]
  local name=$1 connections=$2 url=$3 script=${4:-}
  bench_settle
  bench_wrk -c"$connections" -d"${SECONDS_PER_CASE}s" ${script:+-s "$script"} "$url"
  CASE_CPU_US=$WRK_CPU_US
  CASE_RPS=$WRK_RPS
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$connections" "$WRK_RPS" "$WRK_P50" "$WRK_P99" "$CASE_CPU_US" "$WRK_ERRORS"
}

printf '| case | connections | requests/s | p50 | p99 | host CPU µs/request | non-2xx/3xx |\n'
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
run_case "host answers 404 (no component)" "$LOW" "$base/nowhere"
host_cpu=$CASE_CPU_US
run_case "Orders answers 404 (instance, no SQL)" "$LOW" "$base/orders/nowhere"
component_cpu=$CASE_CPU_US
run_case "POST /orders" "$LOW" "$base/orders/orders" "$BENCH_WORK/post.lua"
post_rps=$CASE_RPS
post_switches=$WRK_SWITCHES
run_case "POST /orders" "$HIGH" "$base/orders/orders" "$BENCH_WORK/post.lua"
run_case "GET /orders/{id}" "$LOW" "$base/orders/orders/$order_id"
run_case "GET /orders/{id}" "$HIGH" "$base/orders/orders/$order_id"
loaded_rss=$(bench_rss_kb)
bench_stop_host

# (No `urn:…` data schema: pgbench would read its colons as variables.)
cat >"$BENCH_WORK/create.sql" <<'SQL'
BEGIN ISOLATION LEVEL READ COMMITTED;
INSERT INTO orders (id, customer_id, amount, idempotency_key) VALUES (gen_random_uuid(), gen_random_uuid(), 100, NULL)
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, customer_id, amount, status, created_at, invoice_id;
INSERT INTO platform_outbox (id, topic, source, content_type, data_schema, data)
  VALUES (gen_random_uuid()::text, 'orders.created', 'orders', 'application/json', NULL, '\x7b7d');
COMMIT;
SQL
pg_tps=$(pgbench -h localhost -U bench_orders -n -M prepared -c "$LOW" -j 1 -T "$SECONDS_PER_CASE" -f "$BENCH_WORK/create.sql" bench_orders 2>/dev/null |
  awk '/^tps/ { printf "%d", $3 }')
bench_reset_data

echo
printf '| figure | value |\n| --- | --- |\n'
printf '| pgbench of POST'"'"'s unit of work, %s clients (transactions/s) | %s |\n' "$LOW" "$pg_tps"
awk -v a="$post_rps" -v b="$pg_tps" 'BEGIN { printf "| POST /orders c16 / pgbench ceiling | %.2f |\n", (b > 0 ? a / b : 0) }'
printf '| instance cost: host CPU of a component call minus a host-answered request | %s µs |\n' "$((component_cpu - host_cpu))"
printf '| host context switches per POST /orders, c%s | %s |\n' "$LOW" "$post_switches"
printf '| resident memory idle / after the load | %s / %s MiB |\n' "$((idle_rss / 1024))" "$((loaded_rss / 1024))"
# HOST_BIN may be a script that runs an earlier host (see compare.sh): then there is no size.
if strip -o "$BENCH_WORK/host.stripped" "$HOST_BIN" 2>/dev/null; then
  printf '| host binary / stripped | %s / %s MB |\n' "$(($(stat -c %s "$HOST_BIN") / 1000000))" "$(($(stat -c %s "$BENCH_WORK/host.stripped") / 1000000))"
fi
