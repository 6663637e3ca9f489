#!/usr/bin/env bash
# What span export costs a request, and that a collector in trouble costs it nothing more:
# POST /orders/orders at 16 connections against the release host with
#
# - no exporter (no OTEL_* variable set),
# - a collector that answers at once (a small OTLP/HTTP receiver that reads and discards),
# - a collector that accepts connections and never answers,
# - an endpoint nothing listens on,
#
# interleaved round by round, with the spans exported and dropped as the host counted them.
#
#   bench/otel.sh [seconds per case] [rounds]   (defaults 10 and 2; HOST_BIN=path picks the host)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure.sh
source bench/lib.sh

SECONDS_PER_CASE=${1:-10}
ROUNDS=${2:-2}
CONNECTIONS=16
bench_setup
base="http://$BENCH_HTTP"

bench_post_script

# The collectors: one that answers every export 200 at once, one that never answers.
cat >"$BENCH_WORK/collectors.py" <<'PY'
import http.server, socket, sys, threading, time

class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

def silent(port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(128)
    held = []
    while True:
        held.append(server.accept()[0])

answering, quiet = int(sys.argv[1]), int(sys.argv[2])
threading.Thread(target=silent, args=(quiet,), daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", answering), Answer).serve_forever()
PY
python3 "$BENCH_WORK/collectors.py" 14318 14319 &
COLLECTORS=$!
trap 'kill $COLLECTORS 2>/dev/null; bench_stop_host; rm -rf "$BENCH_WORK"' EXIT
wait_for_port 14318 "the answering collector" 10

# The value of one unlabelled counter in the host's metrics.
counter() {
  curl -fsS "http://127.0.0.1:19000/metrics" | awk -v name="$1" '$1 == name { printf "%d", $2 }'
}

run_case() { # name, endpoint ("" for no exporter)
  local name=$1 endpoint=$2
  bench_reset_data
  if [ -n "$endpoint" ]; then
    OTEL_EXPORTER_OTLP_ENDPOINT=$endpoint OTEL_BSP_SCHEDULE_DELAY=1000 bench_start_host
  else
    bench_start_host
  fi
  bench_wrk -c"$CONNECTIONS" -d"${SECONDS_PER_CASE}s" -s "$BENCH_WORK/post.lua" "$base/orders/orders"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$ROUND" "$WRK_RPS" "$WRK_P50" "$WRK_P99" "$WRK_CPU_US" \
    "$(counter otel_spans_exported_total) / $(counter otel_spans_dropped_total)" "$WRK_ERRORS"
  bench_settle
  bench_stop_host
}

printf '| collector | round | requests/s | p50 | p99 | host CPU µs/request | spans exported / dropped | non-2xx |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  run_case "none (no exporter)" ""
  run_case "answers at once" "http://127.0.0.1:14318"
  run_case "accepts, never answers" "http://127.0.0.1:14319"
  run_case "unreachable" "http://127.0.0.1:14320"
done
