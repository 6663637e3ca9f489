#!/usr/bin/env bash
# The benchmarks' smoke mode, part of the test command: every benchmark for about a second a
# case, against the development host the tests built (target/debug/host unless HOST_BIN names
# another), checking that each printed its figures and that every order posted ended invoiced.
# The figures of a debug host on a busy machine mean nothing; that they come out at all is the
# point.
set -euo pipefail
cd "$(dirname "$0")/.."
export HOST_BIN=${HOST_BIN:-target/debug/host}
[ -x "$HOST_BIN" ] || { echo "bench/smoke.sh: no host binary at $HOST_BIN; build it first (cargo build -p host)" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bench/http.sh 1 | tee "$out/http.md"
bench/flow.sh 1 | tee "$out/flow.md"
bench/otel.sh 1 1 | tee "$out/otel.md"
bench/start-to-ready.sh 1 | tee "$out/start.md"

# A figure is the cell after the row's name; fails unless it is a positive number.
figure() { # file, row name pattern, [column]
  awk -F' *\\| *' -v name="$2" -v col="${3:-3}" 'index($0, name) { print $col; exit }' "$1"
}
positive() { # what, value
  [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v v="$2" 'BEGIN { exit !(v > 0) }' ||
    { echo "bench smoke: $1 is \"$2\", not a positive figure" >&2; exit 1; }
}
positive "POST /orders requests/s" "$(figure "$out/http.md" "| POST /orders | 16" 4)"
positive "host-answered requests/s" "$(figure "$out/http.md" "| host answers 404" 4)"
positive "pgbench of POST's unit of work" "$(figure "$out/http.md" "pgbench of POST")"
positive "fully invoiced orders/s" "$(figure "$out/flow.md" "fully invoiced orders/s (first")"
positive "order → invoice p50" "$(figure "$out/flow.md" "order → invoice" | cut -d' ' -f1)"
positive "pgbench ceiling" "$(figure "$out/flow.md" "pgbench of the three" | cut -d' ' -f1)"
for collector in "none (no exporter)" "answers at once" "accepts, never answers" "unreachable"; do
  positive "POST /orders requests/s, collector $collector" "$(figure "$out/otel.md" "| $collector |" 4)"
done
positive "start to ready, cold" "$(figure "$out/start.md" "cold compile cache")"
left=$(figure "$out/flow.md" "burst at" | awk -F' / ' '{ print $2 }')
[ "$left" = 0 ] || { echo "bench smoke: $left orders of the burst were never invoiced" >&2; exit 1; }
echo "bench smoke: every benchmark ran and printed its figures"
