#!/usr/bin/env bash
# Host binaries side by side: `http.sh` and `flow.sh` for each, interleaved round by round
# (A, B, C, A, B, C, ...) so all see the same machine; every table is printed under a heading
# and kept in $BENCH_OUT (default bench/out) for RESULTS.md.
#
#   ROUNDS=2 SECONDS_PER_CASE=10 bench/compare.sh BINARY_A BINARY_B [BINARY_C ...]
#
# A binary may be a script that runs an earlier host (`exec`, so its process is the host's),
# rewriting the manifest it is given (`--config FILE`) into what that host reads.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/compare.sh BINARY_A BINARY_B [BINARY ...]" >&2; exit 2; }
rounds=${ROUNDS:-2} seconds=${SECONDS_PER_CASE:-10}
out=${BENCH_OUT:-bench/out}
mkdir -p "$out"
for ((round = 1; round <= rounds; round++)); do
  for bin in "$@"; do
    label=$(basename "$bin")
    for bench in http flow; do
      echo "## round $round, $label ($bin): $bench"
      HOST_BIN=$bin "bench/$bench.sh" "$seconds" | tee "$out/$label-$round-$bench.md"
      echo
    done
  done
done

# One table of every figure, a column per binary and round.
columns=()
for ((round = 1; round <= rounds; round++)); do
  for bin in "$@"; do columns+=("$(basename "$bin")-$round"); done
done
echo "## all rounds"
awk -v columns="${columns[*]}" -v dir="$out" '
  BEGIN {
    n = split(columns, column, " ")
    printf "| figure |"; for (i = 1; i <= n; i++) printf " %s |", column[i]; printf "\n| --- |"
    for (i = 1; i <= n; i++) printf " --- |"; printf "\n"
    for (i = 1; i <= n; i++) {
      file = dir "/" column[i] "-http.md"
      while ((getline line < file) > 0) {
        f = split(line, cell, / *\| */)
        if (f == 9 && cell[4] ~ /^[0-9]+$/) {
          add(cell[2] " c" cell[3] ": requests/s", i, cell[4]); add(cell[2] " c" cell[3] ": p99", i, cell[6])
          add(cell[2] " c" cell[3] ": host CPU µs/request", i, cell[7])
        } else if (f == 4 && cell[2] != "figure" && cell[2] !~ /^-+$/) add(cell[2], i, cell[3])
      }
      close(file)
      file = dir "/" column[i] "-flow.md"
      while ((getline line < file) > 0) {
        f = split(line, cell, / *\| */)
        if (f == 4 && cell[2] != "figure" && cell[2] !~ /^-+$/) add(cell[2], i, cell[3])
      }
      close(file)
    }
    for (k = 1; k <= keys; k++) {
      printf "| %s |", key[k]; for (i = 1; i <= n; i++) printf " %s |", value[key[k], i]; printf "\n"
    }
  }
  function add(name, i, v) { if (!(name in seen)) { seen[name] = 1; key[++keys] = name }; value[name, i] = v }
'
