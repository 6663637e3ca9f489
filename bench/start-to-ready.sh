#!/usr/bin/env bash
# Start to ready, with a cold and a warm compile cache: how long from launching the host until
# GET /health answers 200, with both components compiled by Cranelift (cold: an empty cache
# folder) and loaded from the compile cache (warm: the folder the cold run filled). Several
# rounds, cold and warm interleaved, so both see the same machine; prints the medians and the
# ratio.
#
#   bench/start-to-ready.sh [rounds]      (default 5; HOST_BIN=path picks the host binary)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh
source bench/lib.sh

ROUNDS=${1:-5}
bench_setup

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cold=() warm=()
for ((round = 1; round <= ROUNDS; round++)); do
  rm -rf "$BENCH_WORK/cache"
  bench_start_host "$BENCH_WORK/cache"
  cold+=("$READY_MS")
  bench_stop_host
  bench_start_host "$BENCH_WORK/cache"
  warm+=("$READY_MS")
  bench_stop_host
done
cold_median=$(printf '%s\n' "${cold[@]}" | median)
warm_median=$(printf '%s\n' "${warm[@]}" | median)
printf '| start to ready (%s rounds) | median ms | all runs (ms) |\n| --- | --- | --- |\n' "$ROUNDS"
printf '| cold compile cache | %s | %s |\n' "$cold_median" "${cold[*]}"
printf '| warm compile cache | %s | %s |\n' "$warm_median" "${warm[*]}"
awk -v c="$cold_median" -v w="$warm_median" 'BEGIN { printf "warm / cold: %.2f\n", w / c }'
