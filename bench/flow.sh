#!/usr/bin/env bash
# The whole flow of an order, against its ceiling, in one run:
#
# - burst: `POST /orders` at 64 connections for the given seconds, then until every order is
#   `invoiced` (Orders stores it and publishes `orders.created`, Invoices issues the invoice and
#   publishes `invoices.issued`, Orders marks the order): fully invoiced orders/s from the first
#   POST to the last order invoiced, and the host's CPU per fully invoiced order;
# - order → invoice latency at half the burst's rate: each connection waits between requests
#   so the rate is about half; p50 and p99 of the time from an order's transaction to its
#   invoice's (`orders.created_at` to `invoices.issued_at`, both the server's clock);
# - pgbench of the same SQL, the three units of work of one order each in a transaction of its
#   own, both databases loaded at once (16 clients each): the ceiling, and the burst's ratio to it;
#   then each database's script alone, for PostgreSQL's CPU per order doing only that SQL;
# - CPU per fully invoiced order in the burst: the host's, PostgreSQL's and RabbitMQ's.
#
#   bench/flow.sh [seconds]   (default 10; HOST_BIN=path picks the host binary)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
source scripts/ensure.sh
source bench/lib.sh

SECONDS_PER_CASE=${1:-10}
BURST_CONNECTIONS=64
PACED_CONNECTIONS=8
PG_CLIENTS=16
bench_setup
bench_reset_data
bench_start_host
base="http://$BENCH_HTTP"

cat >"$BENCH_WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"customerId":"0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f","amount":100}'
local pause = tonumber(os.getenv("PAUSE_MS") or "0")
function delay() return pause end
LUA

now_ms() { echo $(($(date +%s%N) / 1000000)); }
invoiced() { psql_admin bench_orders -tAc "SELECT count(*) FROM orders WHERE status = 'invoiced'"; }

# Waits until every order is invoiced (polling every 50 ms, at most two minutes).
wait_all_invoiced() {
  local i
  for ((i = 0; i < 2400; i++)); do
    [ "$(psql_admin bench_orders -tAc "SELECT count(*) FROM orders WHERE status <> 'invoiced'")" -eq 0 ] && return 0
    sleep 0.05
  done
  say "warning: orders still not invoiced after two minutes"
}

# Burst.
cpu_before=$(bench_cpu_us)
pg_before=$(bench_pg_cpu_us)
mq_before=$(bench_rabbitmq_cpu_us)
started=$(now_ms)
burst=$(PAUSE_MS=0 wrk -t1 -c"$BURST_CONNECTIONS" -d"${SECONDS_PER_CASE}s" -s "$BENCH_WORK/post.lua" "$base/orders/orders")
wait_all_invoiced
finished=$(now_ms)
cpu_after=$(bench_cpu_us)
pg_after=$(bench_pg_cpu_us)
mq_after=$(bench_rabbitmq_cpu_us)
bench_settle
orders=$(invoiced)
not_invoiced=$(psql_admin bench_orders -tAc "SELECT count(*) FROM orders WHERE status <> 'invoiced'")
burst_rate=$(awk -v n="$orders" -v ms="$((finished - started))" 'BEGIN { printf "%d", n * 1000 / ms }')
cpu_per_order=$(((cpu_after - cpu_before) / (orders > 0 ? orders : 1)))
pg_per_order=$(((pg_after - pg_before) / (orders > 0 ? orders : 1)))
mq_per_order=$(((mq_after - mq_before) / (orders > 0 ? orders : 1)))
burst_errors=$(awk '/Non-2xx or 3xx/ { print $NF }' <<<"$burst")

# Order → invoice latency at half the burst's rate.
bench_reset_data
target=$((burst_rate / 2 > 0 ? burst_rate / 2 : 1))
# Each connection sends a request, waits for its answer (a few ms), then pauses.
pause=$(awk -v c="$PACED_CONNECTIONS" -v r="$target" 'BEGIN { p = c * 1000 / r - 3; printf "%d", (p > 0 ? p : 0) }')
paced=$(PAUSE_MS=$pause wrk -t1 -c"$PACED_CONNECTIONS" -d"${SECONDS_PER_CASE}s" -s "$BENCH_WORK/post.lua" "$base/orders/orders")
paced_rate=$(awk '/^Requests\/sec/ { printf "%d", $2 }' <<<"$paced")
bench_settle
psql_admin bench_orders -tAF'|' -c "SELECT id, extract(epoch FROM created_at) FROM orders ORDER BY id" | sort >"$BENCH_WORK/orders.txt"
psql_admin bench_invoices -tAF'|' -c "SELECT order_id, extract(epoch FROM issued_at) FROM invoices ORDER BY order_id" | sort >"$BENCH_WORK/invoices.txt"
read -r latency_n p50 p99 < <(join -t'|' "$BENCH_WORK/orders.txt" "$BENCH_WORK/invoices.txt" |
  awk -F'|' '{ printf "%.3f\n", ($3 - $2) * 1000 }' | sort -n |
  awk '{ v[NR] = $1 } END { if (NR == 0) { print 0, 0, 0; exit }
         half = int(NR * 0.5 + 0.5); high = int(NR * 0.99 + 0.5); if (half < 1) half = 1; if (high < 1) high = 1
         print NR, v[half], v[high] }')
bench_stop_host
bench_reset_data

# The ceiling: pgbench of the three units of work, both databases at once. (No `urn:…` data
# schema or other colons in literals: pgbench would read them as variables.)
cat >"$BENCH_WORK/orders.sql" <<'SQL'
BEGIN ISOLATION LEVEL READ COMMITTED;
INSERT INTO orders (id, customer_id, amount, idempotency_key) VALUES (gen_random_uuid(), gen_random_uuid(), 100, NULL)
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, customer_id, amount, status, created_at, invoice_id \gset
INSERT INTO platform_outbox (id, topic, source, content_type, data_schema, data)
  VALUES (gen_random_uuid()::text, 'orders.created', 'orders', 'application/json', NULL, '\x7b7d');
COMMIT;
BEGIN ISOLATION LEVEL READ COMMITTED;
INSERT INTO platform_inbox (source, event_id, topic) VALUES ('invoices', gen_random_uuid()::text, 'invoices.issued') ON CONFLICT DO NOTHING;
UPDATE orders SET status = 'invoiced', invoice_id = gen_random_uuid() WHERE id = :id AND status = 'pending';
COMMIT;
SQL
cat >"$BENCH_WORK/invoices.sql" <<'SQL'
BEGIN ISOLATION LEVEL READ COMMITTED;
INSERT INTO platform_inbox (source, event_id, topic) VALUES ('orders', gen_random_uuid()::text, 'orders.created') ON CONFLICT DO NOTHING;
INSERT INTO invoices (id, order_id, customer_id, amount) VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 100)
  ON CONFLICT (order_id) DO NOTHING RETURNING id, order_id, customer_id, amount, status, issued_at;
INSERT INTO platform_outbox (id, topic, source, content_type, data_schema, data)
  VALUES (gen_random_uuid()::text, 'invoices.issued', 'invoices', 'application/json', NULL, '\x7b7d');
COMMIT;
SQL
pgbench_tps() { # database, script
  pgbench -h localhost -U "$1" -n -M prepared -c "$PG_CLIENTS" -j 1 -T "$SECONDS_PER_CASE" -f "$2" "$1" 2>&1 |
    awk '/^tps/ { printf "%d", $3 }'
}
pgbench_tps bench_orders "$BENCH_WORK/orders.sql" >"$BENCH_WORK/orders.tps" &
pgbench_tps bench_invoices "$BENCH_WORK/invoices.sql" >"$BENCH_WORK/invoices.tps"
wait
orders_tps=$(cat "$BENCH_WORK/orders.tps")
invoices_tps=$(cat "$BENCH_WORK/invoices.tps")
ceiling=$((orders_tps < invoices_tps ? orders_tps : invoices_tps))
bench_reset_data
# PostgreSQL's CPU per order for only that SQL: each database's script alone (an order is one
# run of each), its CPU per transaction, summed.
pgbench_cpu_per_run() { # database, script
  local before after runs
  before=$(bench_pg_cpu_us)
  runs=$(pgbench -h localhost -U "$1" -n -M prepared -c "$PG_CLIENTS" -j 1 -T "$SECONDS_PER_CASE" -f "$2" "$1" 2>&1 |
    awk '/actually processed/ { split($NF, n, "/"); print n[1] }')
  after=$(bench_pg_cpu_us)
  echo $(((after - before) / (${runs:-0} > 0 ? runs : 1)))
}
pgbench_pg_per_order=$(($(pgbench_cpu_per_run bench_orders "$BENCH_WORK/orders.sql") +
  $(pgbench_cpu_per_run bench_invoices "$BENCH_WORK/invoices.sql")))
bench_reset_data

printf '| figure | value |\n| --- | --- |\n'
printf '| burst at %s connections for %s s: orders invoiced / not invoiced / answers not 2xx | %s / %s / %s |\n' \
  "$BURST_CONNECTIONS" "$SECONDS_PER_CASE" "$orders" "$not_invoiced" "${burst_errors:-0}"
printf '| fully invoiced orders/s (first POST to last order invoiced) | %s |\n' "$burst_rate"
printf '| host CPU per fully invoiced order | %s µs |\n' "$cpu_per_order"
printf '| PostgreSQL CPU per fully invoiced order | %s µs |\n' "$pg_per_order"
printf '| RabbitMQ CPU per fully invoiced order | %s µs |\n' "$mq_per_order"
printf '| PostgreSQL CPU per order in pgbench of the same SQL | %s µs |\n' "$pgbench_pg_per_order"
awk -v a="$pg_per_order" -v b="$pgbench_pg_per_order" 'BEGIN { printf "| PostgreSQL CPU per order / in pgbench | %.2f |\n", (b > 0 ? a / b : 0) }'
awk -v a="$cpu_per_order" -v b="$pgbench_pg_per_order" 'BEGIN { printf "| host CPU per order / PostgreSQL CPU per order in pgbench | %.2f |\n", (b > 0 ? a / b : 0) }'
printf '| pgbench of the three units of work, %s clients a database: orders db / invoices db (orders/s) | %s / %s |\n' \
  "$PG_CLIENTS" "$orders_tps" "$invoices_tps"
awk -v a="$burst_rate" -v b="$ceiling" 'BEGIN { printf "| fully invoiced orders/s / pgbench ceiling | %.2f |\n", (b > 0 ? a / b : 0) }'
printf '| paced load at half the burst: requests/s aimed at / reached, over orders | %s / %s / %s |\n' "$target" "$paced_rate" "$latency_n"
printf '| order → invoice at the paced load: p50 / p99 | %s / %s ms |\n' "$p50" "$p99"
