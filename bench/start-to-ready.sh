#!/usr/bin/env bash
# Start to ready, with a cold and a warm compile cache: how long from launching the host until
# GET /health answers 200, with both components compiled by Cranelift (cold: an empty cache
# folder) and loaded from the compile cache (warm: the folder the cold run filled). Several
# rounds, cold and warm interleaved, so both see the same machine; prints the medians and the
# ratio.
#
#   bench/start-to-ready.sh [rounds]      (default 5; HOST_BIN=path picks the host binary)
#
# Uses the PostgreSQL and RabbitMQ on localhost (started if needed), databases and roles
# bench_orders and bench_invoices, ports 18000 and 19000.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh

ROUNDS=${1:-5}
ensure_wasm_target
ensure_postgres
ensure_rabbitmq
ensure_service_databases bench_orders bench_invoices
build_components -p orders -p invoices
if [ -z "${HOST_BIN:-}" ]; then
  cargo build --release -p host
  HOST_BIN=target/release/host
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e 's|listen = "127.0.0.1:8000"|listen = "127.0.0.1:18000"|' \
    -e 's|listen = "127.0.0.1:9000"|listen = "127.0.0.1:19000"|' -e 's|^watch = true|watch = false|' \
    -e 's|postgres://orders@localhost:5432/orders|postgres://bench_orders@localhost:5432/bench_orders|' \
    -e 's|postgres://invoices@localhost:5432/invoices|postgres://bench_invoices@localhost:5432/bench_invoices|' \
    -e 's|exchange = "platform.events"|exchange = "bench.events"|' \
    -e "s|wasm = \"target|wasm = \"$PWD/target|" -e "s|migrations = \"components|migrations = \"$PWD/components|" \
    host.toml >"$work/host.toml"

# Milliseconds from launch until /health answers 200, with the cache in $1.
start_to_ready() {
  local started ready pid
  started=$(date +%s%N)
  HOST_CACHE_DIR=$1 RUST_LOG=warn "$HOST_BIN" --config "$work/host.toml" >"$work/host.log" 2>&1 &
  pid=$!
  until curl -fsS -o /dev/null http://127.0.0.1:18000/health 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/host.log" >&2; return 1; }
    sleep 0.005
  done
  ready=$(date +%s%N)
  kill -TERM "$pid"
  wait "$pid" || true
  echo $(((ready - started) / 1000000))
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cold=() warm=()
for ((round = 1; round <= ROUNDS; round++)); do
  rm -rf "$work/cache"
  cold+=("$(start_to_ready "$work/cache")")
  warm+=("$(start_to_ready "$work/cache")")
done
cold_median=$(printf '%s\n' "${cold[@]}" | median)
warm_median=$(printf '%s\n' "${warm[@]}" | median)
printf '| start to ready (%s rounds) | median ms | all runs (ms) |\n| --- | --- | --- |\n' "$ROUNDS"
printf '| cold compile cache | %s | %s |\n' "$cold_median" "${cold[*]}"
printf '| warm compile cache | %s | %s |\n' "$warm_median" "${warm[*]}"
awk -v c="$cold_median" -v w="$warm_median" 'BEGIN { printf "warm / cold: %.2f\n", w / c }'
