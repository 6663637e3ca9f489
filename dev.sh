#!/usr/bin/env bash
# Runs the whole system locally, every API and docs page on http://localhost:8000; checks this
# machine for what that needs. ./dev.sh --help lists the modes and options.
#
# Native mode builds the components and the host, makes sure PostgreSQL and RabbitMQ are up
# (starting or installing them), creates each service's database and its own role (no
# superuser: the host refuses one) and its own broker user, and runs the host in the foreground until
# Ctrl-C. A host left running by an earlier ./dev.sh is stopped first, so two never fight for
# the port. With --watch it also rebuilds a component whose sources change, and the host swaps
# the new .wasm in. Compose mode builds the components here too (when cargo is present): compose
# mounts them into the host containers, so a rebuilt component is swapped in while they run.
# The services are those of deploy/manifests (one <name>.toml each).
#
# Written for bash 3.2 as well (macOS): no associative arrays, mapfile or ${x,,}; an array that
# may be empty is expanded as ${a[@]+"${a[@]}"} (set -u calls "${a[@]}" of an empty one unbound
# there); no GNU timeout needed (with_timeout), no /proc (ps).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/ensure.sh
source scripts/dev-watch.sh
source scripts/dev-doctor.sh

STATE=.dev
PIDFILE=$STATE/host.pid
LISTEN=${HOST_LISTEN:-127.0.0.1:8000}
PORT=${LISTEN##*:}
ADMIN_LISTEN=${HOST_ADMIN_LISTEN:-127.0.0.1:9000}
ADMIN_PORT=${ADMIN_LISTEN##*:}
# The services, by their manifests; each has a component, a database and a broker user of its
# name (plain names: platform_services lists file stems, ensure_service_databases checks them).
SERVICES=$(platform_services)
COMPONENTS=()
for service in $SERVICES; do COMPONENTS+=("$service"); done
DATABASES=(${COMPONENTS[@]+"${COMPONENTS[@]}"})
# The host image compose builds (compose.yaml, service `orders`).
HOST_IMAGE=wasm-platform/host:local
# The host started in native mode, and whether Ctrl-C (or TERM) asked it to stop.
HOST_PID=
STOPPING=0

usage() {
  cat <<USAGE
usage: ./dev.sh [--native] [--watch] [--observability]
       ./dev.sh down | doctor | help

Runs the whole system locally, every API and docs page on http://localhost:$PORT.

Modes:
  (none)            with a Docker engine and its compose plugin: the compose stack (Kong,
                    PostgreSQL, RabbitMQ, Jaeger, one host container per service) in the
                    background; without them: native mode
  --native          native mode even where a Docker engine answers: PostgreSQL and RabbitMQ on
                    this machine (started, or installed from Debian), the services' databases
                    and broker users made, one host in the foreground until Ctrl-C
  down              stops what ./dev.sh started, either way
  doctor            checks what this machine needs, one line each (ok, missing or problem, with
                    the command that fixes it); installs nothing; exit status 1 when something
                    required is missing
  help, -h, --help  this text

Options:
  --watch           native mode, and once it is up, a component is rebuilt when its sources
                    change (components/<name>/src and Cargo.toml, the crates it uses by path,
                    wit/, contracts/), checked every second; the host swaps the new .wasm in,
                    and a failed build leaves the running one serving. The host itself is not
                    rebuilt: stop and start ./dev.sh for that
  --observability   compose mode with Prometheus and Grafana

Environment:
  HOST_LISTEN        the native host's address (127.0.0.1:8000)
  HOST_ADMIN_LISTEN  its admin API's address (127.0.0.1:9000)

Services (deploy/manifests/<name>.toml): ${COMPONENTS[*]+${COMPONENTS[*]}}

Examples:
  ./dev.sh doctor              what this machine lacks, and the commands that add it
  ./dev.sh                     the compose stack, or native mode without Docker
  ./dev.sh --native --watch    native mode, rebuilding the components as they are edited
  ./dev.sh --observability     the compose stack with Grafana on http://localhost:3000
  ./dev.sh down                stop it
USAGE
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o command= 2>/dev/null | grep "target/debug/host" >/dev/null; then
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

print_urls() { # mode: native or compose
  local base="http://localhost:$PORT" mode=$1 gateway=Kong
  if [ "$mode" = native ]; then
    gateway="the host itself: no Kong in native mode"
    printf '\n  The system is up (native mode). Ctrl-C stops it.\n'
  else
    printf '\n  The system is up (compose). ./dev.sh down stops it; docker compose logs -f follows it.\n'
  fi
  cat <<URLS

  Gateway           $base  ($gateway)
  Orders API        $base/orders/orders
  Orders docs       $base/orders/docs  (Swagger UI; document at /orders/openapi.json)
  Invoices API      $base/invoices/invoices?orderId=<id>
  Invoices docs     $base/invoices/docs
  RabbitMQ          http://localhost:15672  (guest / guest)
URLS
  if [ "$mode" = native ]; then
    cat <<URLS
  Host readiness    $base/health
  Admin API         http://localhost:$ADMIN_PORT/components  (also /readyz, /livez; see docs/operations.md)
  Metrics           http://localhost:$ADMIN_PORT/metrics  (Prometheus; dashboard in observability/)

  Need Docker (./dev.sh with a Docker engine): Kong's plugins and Manager UI (:8002) and admin
  API (:8001), Jaeger (:16686), Prometheus (:9090) and Grafana (:3000).
URLS
  else
    cat <<URLS
  Kong Manager      http://localhost:8002  (admin API on :8001)
  Jaeger            http://localhost:16686  (one trace per order, gateway to invoice)
URLS
    if [ "$OBSERVABILITY" = 1 ]; then
      cat <<URLS
  Grafana           http://localhost:3000  (dashboard: Platform)
  Prometheus        http://localhost:9090
URLS
    else
      echo "  Grafana and Prometheus: ./dev.sh --observability"
    fi
  fi
  cat <<URLS

  Try:  curl -i -X POST $base/orders/orders -H 'content-type: application/json' \\
          -d '{"customerId":"0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f","amount":100}'

URLS
  if [ "$WATCH" = 1 ]; then
    printf '  Watching the sources: an edited component is rebuilt and swapped in.\n\n'
  else
    cat <<URLS
  Hot swap: rebuild a component in another terminal (or run ./dev.sh --watch), and the running
  host swaps it in:
        cargo build --profile component --target wasm32-wasip2 -p orders

URLS
  fi
  if [ "$mode" = native ]; then
    cat <<URLS
  Traces: run with OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 set and a collector (Jaeger
  takes OTLP on 4318) gets one trace per order, from the request to the invoice and back.

URLS
  fi
}

build_services() {
  local args component
  args=()
  for component in "${COMPONENTS[@]}"; do args+=(-p "$component"); done
  build_components "${args[@]}"
}

# PostgreSQL and RabbitMQ up (installed when missing), each service's database, role and
# broker user made.
ensure_services() {
  ensure_postgres
  ensure_rabbitmq
  ensure_rabbitmq_management
  ensure_broker_users %2F "${COMPONENTS[@]}"
  ensure_service_databases "${DATABASES[@]}"
}

run_native() {
  ensure_wasm_target
  mkdir -p "$STATE"
  # The services are made ready while the code builds (on a fresh machine, installing them
  # takes a minute or two, mostly waiting on the network): in the background, said at the end,
  # unless installing could ask for a sudo password.
  local services_pid=
  if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    ensure_services >"$STATE/services.log" 2>&1 &
    services_pid=$!
  else
    ensure_services
  fi
  # Stamped before the build, so an edit made while it runs is rebuilt once watching starts.
  [ "$WATCH" = 0 ] || touch "$STATE/watch.stamp"
  build_services
  cargo build -p host
  if [ -n "$services_pid" ]; then
    if ! wait "$services_pid"; then
      cat "$STATE/services.log" >&2
      say "error: PostgreSQL or RabbitMQ could not be made ready (above); ./dev.sh doctor says what is missing"
      exit 1
    fi
    [ -s "$STATE/services.log" ] && cat "$STATE/services.log" >&2
  fi

  if running_pid >/dev/null; then
    say "a dev host from an earlier run is still up; replacing it"
    stop_host
  fi
  if port_open "$PORT"; then
    say "error: port $PORT is taken by another program; stop it or set HOST_LISTEN=127.0.0.1:<port>"
    exit 1
  fi

  HOST_LISTEN=$LISTEN ./target/debug/host --config host.toml &
  HOST_PID=$!
  echo "$HOST_PID" >"$PIDFILE"
  # The host ignores Ctrl-C's SIGINT (started with &, as a script does); it is sent TERM instead,
  # and finishes its requests. Should this script stop another way, the host stops with it.
  trap 'STOPPING=1; kill -TERM "$HOST_PID" 2>/dev/null || true' INT TERM
  trap '[ -z "$HOST_PID" ] || kill -TERM "$HOST_PID" 2>/dev/null || true' EXIT

  local i
  for ((i = 0; i < 240; i++)); do
    if [ "$STOPPING" = 1 ] || ! kill -0 "$HOST_PID" 2>/dev/null; then break; fi
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      print_urls native
      break
    fi
    sleep 0.25 || true
  done
  [ "$WATCH" = 0 ] || watch_components "$HOST_PID"
  local status=0
  wait "$HOST_PID" || status=$?
  # A signal interrupts the first wait; wait again for the host to finish its requests.
  if kill -0 "$HOST_PID" 2>/dev/null; then wait "$HOST_PID" || status=$?; fi
  HOST_PID=
  rm -f "$PIDFILE"
  exit "$status"
}

docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }

compose() { docker compose ${PROFILES[@]+"${PROFILES[@]}"} "$@"; }

run_compose() {
  # The host containers run the .wasm files of this folder (compose mounts it), so that a
  # rebuilt component is swapped in. Without cargo, they are taken out of the image once.
  local built=target/wasm32-wasip2/component component absent=0
  for component in "${COMPONENTS[@]}"; do
    [ -f "$built/$component.wasm" ] || absent=1
  done
  if command -v cargo >/dev/null; then
    ensure_wasm_target
    build_services
  elif [ "$absent" = 1 ]; then
    say "no cargo here: taking the components out of the host image"
    compose build orders
    local container
    container=$(docker create "$HOST_IMAGE")
    mkdir -p "$built"
    docker cp "$container:/app/components/." "$built/"
    docker rm "$container" >/dev/null
  fi
  # The ports the stack publishes must be free, unless it is the stack that holds them.
  if [ -z "$(compose ps --status running --quiet 2>/dev/null)" ]; then
    local ports=("$PORT" 8001 8002 15672 4317 4318 16686 9001 9002) port
    [ "$OBSERVABILITY" = 1 ] && ports+=(9090 3000)
    for port in "${ports[@]}"; do
      if port_open "$port"; then
        say "error: port $port is taken by another program (a native ./dev.sh, or this machine's"
        say "RabbitMQ or Prometheus?); ./dev.sh down stops a native host"
        exit 1
      fi
    done
  fi
  say "building and starting the compose stack (first build: several minutes)"
  if ! with_timeout 1800 docker compose ${PROFILES[@]+"${PROFILES[@]}"} up --detach --build --wait; then
    say "error: the stack did not come up healthy; see docker compose ps and docker compose logs"
    exit 1
  fi
  print_urls compose
}

stop_all() {
  stop_host
  if docker_engine && [ -n "$(docker compose ps --all --quiet 2>/dev/null)" ]; then
    say "stopping the compose stack"
    docker compose --profile observability down
  fi
}

# At most one mode; options go in any order.
set_mode() { # mode, argument
  if [ "$MODE" != auto ] && [ "$MODE" != "$1" ]; then
    say "dev.sh: $2 cannot go with $MODE"
    usage >&2
    exit 2
  fi
  MODE=$1
}

main() {
  OBSERVABILITY=0
  WATCH=0
  MODE=auto
  while [ $# -gt 0 ]; do
    case "$1" in
      help | -h | --help)
        usage
        exit 0
        ;;
      down) set_mode down "$1" ;;
      doctor) set_mode doctor "$1" ;;
      --native) set_mode native "$1" ;;
      --watch) WATCH=1 ;;
      --observability) OBSERVABILITY=1 ;;
      *)
        say "dev.sh: unknown argument '$1'"
        usage >&2
        exit 2
        ;;
    esac
    shift
  done
  if [ "$WATCH" = 1 ]; then
    case "$MODE" in
      auto | native) MODE=native ;;
      *)
        say "dev.sh: --watch goes with native mode, not $MODE"
        usage >&2
        exit 2
        ;;
    esac
  fi
  if [ "$MODE" != down ] && [ "$MODE" != doctor ] && [ -z "$SERVICES" ]; then
    say "error: no services: deploy/manifests holds no <name>.toml"
    exit 1
  fi

  PROFILES=()
  [ "$OBSERVABILITY" = 1 ] && PROFILES=(--profile observability)

  case "$MODE" in
    down) stop_all ;;
    doctor) doctor ;;
    native) run_native ;;
    auto)
      if docker_engine; then
        run_compose
      else
        say "no Docker engine answers: running natively (Kong, Jaeger and Grafana need Docker)"
        run_native
      fi
      ;;
  esac
}

# Sourced (by the tests), it only defines its functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
