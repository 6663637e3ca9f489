#!/usr/bin/env bash
# Runs the whole system locally on http://localhost:8000.
#
#   ./dev.sh            run it (native mode: no Docker engine is needed)
#   ./dev.sh --native   run it natively even where a Docker engine answers
#   ./dev.sh down       stop a ./dev.sh started elsewhere (another terminal, the background)
#
# Native mode builds the components and the host, makes sure PostgreSQL and RabbitMQ are up
# (starting or installing them), creates each service's database and its own role (no
# superuser: the host refuses one), and runs the host in the foreground until
# Ctrl-C. A host left running by an earlier ./dev.sh is stopped first, so two never fight for
# the port.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure.sh

STATE=.dev
PIDFILE=$STATE/host.pid
LISTEN=${HOST_LISTEN:-127.0.0.1:8000}
PORT=${LISTEN##*:}
COMPONENTS=(orders invoices)
DATABASES=(orders invoices)

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null && grep -q "host" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  else
    rm -f "$PIDFILE"
    return 1
  fi
}

stop_host() {
  local pid i
  pid=$(running_pid) || { say "no dev host is running"; return 0; }
  say "stopping the dev host (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "it did not stop within 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

print_urls() {
  local base="http://localhost:$PORT"
  cat <<URLS

  The system is up. Ctrl-C stops it.

  Orders API        $base/orders/orders
  Invoices API      $base/invoices/invoices?orderId=<id>
  Host readiness    $base/health
  Admin API         http://localhost:9000/components  (also /readyz, /livez; see the README)
  Metrics           http://localhost:9000/metrics  (Prometheus; dashboard in observability/)
  Orders health     $base/orders/health
  Invoices health   $base/invoices/health
  RabbitMQ          http://localhost:15672  (guest / guest)

  Try:  curl -i -X POST $base/orders/orders -H 'content-type: application/json' \\
          -d '{"customerId":"0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f","amount":100}'

  Hot swap: rebuild a component in another terminal, and the running host swaps it in:
        cargo build --profile component --target wasm32-wasip2 -p orders
  (or: curl -X POST http://localhost:9000/components/orders/reload)

  Traces: run with OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 set and a collector (Jaeger
  takes OTLP on 4318) gets one trace per order, from the request to the invoice and back.

URLS
}

run_native() {
  ensure_wasm_target
  ensure_postgres
  ensure_rabbitmq
  ensure_rabbitmq_management
  ensure_service_databases "${DATABASES[@]}"
  local args=()
  for component in "${COMPONENTS[@]}"; do args+=(-p "$component"); done
  build_components "${args[@]}"
  cargo build -p host

  if running_pid >/dev/null; then
    say "a dev host from an earlier run is still up; replacing it"
    stop_host
  fi
  if port_open "$PORT"; then
    say "error: port $PORT is taken by another program; stop it or set HOST_LISTEN=127.0.0.1:<port>"
    exit 1
  fi

  mkdir -p "$STATE"
  HOST_LISTEN=$LISTEN ./target/debug/host --config host.toml &
  local pid=$!
  echo "$pid" >"$PIDFILE"
  trap 'kill -TERM $pid 2>/dev/null || true' INT TERM

  local i
  for ((i = 0; i < 240; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      print_urls
      break
    fi
    sleep 0.25
  done
  local status=0
  wait "$pid" || status=$?
  # A signal interrupts the first wait; wait again for the host to finish its requests.
  if kill -0 "$pid" 2>/dev/null; then wait "$pid" || status=$?; fi
  rm -f "$PIDFILE"
  exit "$status"
}

docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

case "${1:-}" in
  down) stop_host ;;
  --native) run_native ;;
  "")
    if docker_engine && [ -f compose.yaml ]; then
      exec docker compose up --build
    else
      run_native
    fi
    ;;
  *)
    say "usage: ./dev.sh [--native | down]"
    exit 2
    ;;
esac
