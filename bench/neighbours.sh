#!/usr/bin/env bash
# A neighbour's latency beside a hostile component. The release host runs Orders, Invoices and
# the `misbehave` test component; `wrk` reads one order at 8 connections, alone, and then beside
# 80 hostile calls made at once (16 each of recursion to a stack overflow, 40 MB results, 30 s
# of pg_sleep, allocation until the memory limit, and a loop calling the host), in interleaved
# rounds. Prints Orders' p50 and p99 each way, their medians, the p99 ratio, and the host's
# resident memory before the rounds and after them.
#
#   bench/neighbours.sh [rounds] [seconds per case]   (defaults 3 and 5; HOST_BIN picks the host)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh
source bench/lib.sh

ROUNDS=${1:-3}
SECONDS_PER_CASE=${2:-5}
HOSTILE=("recurse" "huge-sql?rows=40" "slow-sql?seconds=30" "alloc" "busy-host")

bench_setup
build_components -p misbehave
ensure_service_databases bench_misbehave
cat >>"$BENCH_WORK/host.toml" <<TOML

[[components]]
name = "misbehave"
wasm = "$PWD/target/wasm32-wasip2/component/misbehave.wasm"
route = "/misbehave"
database_url = "postgres://bench_misbehave@localhost:5432/bench_misbehave"
TOML
bench_reset_data
bench_start_host
base="http://$BENCH_HTTP"
order_id=$(curl -fsS -X POST "$base/orders/orders" -H 'content-type: application/json' \
  -d '{"customerId":"0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f","amount":1}' | sed -E 's/.*"id":"([^"]+)".*/\1/')
url="$base/orders/orders/$order_id"
bench_settle

# Milliseconds from wrk's latency figure (it prints µs, ms or s).
ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/) n *= 1000; printf "%.2f", n }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rss_start=$(bench_rss_kb)
alone_p99=() beside_p99=() alone_p50=() beside_p50=()
echo "| round | alone p50 ms | alone p99 ms | beside p50 ms | beside p99 ms | hostile answers |"
echo "| --- | --- | --- | --- | --- | --- |"
for ((round = 1; round <= ROUNDS; round++)); do
  bench_wrk -c8 -d"${SECONDS_PER_CASE}s" "$url"
  alone_p50+=("$(ms "$WRK_P50")") alone_p99+=("$(ms "$WRK_P99")")
  answers=$(mktemp) callers=()
  for path in "${HOSTILE[@]}"; do
    for ((i = 0; i < 16; i++)); do
      curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 "$base/misbehave/$path" >>"$answers" &
      callers+=($!)
    done
  done
  bench_wrk -c8 -d"${SECONDS_PER_CASE}s" "$url"
  beside_p50+=("$(ms "$WRK_P50")") beside_p99+=("$(ms "$WRK_P99")")
  # Only the hostile calls: the host is a background job too.
  wait "${callers[@]}"
  printf '| %s | %s | %s | %s | %s | %s |\n' "$round" "${alone_p50[-1]}" "${alone_p99[-1]}" "${beside_p50[-1]}" \
    "${beside_p99[-1]}" "$(sort "$answers" | uniq -c | awk '{ printf "%s×%s ", $1, $2 }')"
  rm -f "$answers"
done
sleep 5
rss_end=$(bench_rss_kb)
a=$(printf '%s\n' "${alone_p99[@]}" | median) b=$(printf '%s\n' "${beside_p99[@]}" | median)
echo
echo "| figure (medians of $ROUNDS rounds) | value |"
echo "| --- | --- |"
echo "| Orders p50 alone / beside, ms | $(printf '%s\n' "${alone_p50[@]}" | median) / $(printf '%s\n' "${beside_p50[@]}" | median) |"
echo "| Orders p99 alone / beside, ms | $a / $b |"
echo "| p99 beside ÷ alone | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }') |"
echo "| host resident memory before the rounds / 5 s after the last, MiB | $((rss_start / 1024)) / $((rss_end / 1024)) |"
