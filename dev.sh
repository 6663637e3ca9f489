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

# What a component is built from, one path a line: its src/ and Cargo.toml, and those of the
# crates under components/ it uses by path (service-guest). wit/ and contracts/ go with every one.
component_sources() { # name
  local crate
  for crate in "$1" $(sed -n -E 's|^[^#]*path *= *"\.\./([A-Za-z0-9_-]+)".*|\1|p' "components/$1/Cargo.toml" 2>/dev/null); do
    echo "components/$crate/src"
    echo "components/$crate/Cargo.toml"
  done
}

# Whether a file under the paths was written after the stamp file and not after the until file.
# The upper bound makes each write count in one look only, and keeps a file dated in the future
# from being rebuilt every second. Editors' hidden, swap and backup files are left out; a file
# deleted alone is not seen (its folder's time is not read).
changed_between() { # stamp, until, paths...
  local stamp=$1 until=$2
  shift 2
  [ -n "$(find "$@" -type f -newer "$stamp" ! -newer "$until" ! -name '.*' ! -name '*~' ! -name '*.swp' 2>/dev/null)" ]
}

# The services with a source written between the two stamps, one a line.
changed_components() { # stamp, until
  local stamp=$1 until=$2 name path paths
  if changed_between "$stamp" "$until" wit contracts; then
    printf '%s\n' "${COMPONENTS[@]}"
    return 0
  fi
  for name in "${COMPONENTS[@]}"; do
    paths=()
    while IFS= read -r path; do paths+=("$path"); done < <(component_sources "$name")
    if changed_between "$stamp" "$until" "${paths[@]}"; then echo "$name"; fi
  done
}

# Builds one component and says so in one line; on failure, prints the compiler's output first.
# cargo leaves the .wasm as it was when a build fails, so the running version keeps serving.
rebuild_component() { # name
  local name=$1 log=$STATE/build.log started=$SECONDS status=0 color=never
  [ -t 2 ] && color=always
  build_components -p "$name" --color "$color" >"$log" 2>&1 || status=$?
  [ "$STOPPING" = 0 ] || return 0
  if [ "$status" = 0 ]; then
    say "rebuild $name: ok in $((SECONDS - started)) s (the host swaps it in)"
  else
    cat "$log" >&2
    say "rebuild $name: failed in $((SECONDS - started)) s (the errors are above; the running version keeps serving)"
  fi
}

# Until the host stops or Ctrl-C: once a second, the services whose sources changed since the
# last look are rebuilt, one after another. Every step tolerates being cut by Ctrl-C (set -e
# would otherwise leave on a killed sleep), so that the host is then stopped and waited for.
watch_components() { # host pid
  local pid=$1 stamp=$STATE/watch.stamp next=$STATE/watch.next changed name
  [ -f "$stamp" ] || touch "$stamp"
  say "watching ${COMPONENTS[*]}: components/<name>/src and Cargo.toml, wit/, contracts/"
  while [ "$STOPPING" = 0 ] && kill -0 "$pid" 2>/dev/null; do
    sleep 1 || true
    # What was written up to now; a file written while the builds run is seen next time.
    touch "$next" || true
    changed=$(changed_components "$stamp" "$next") || true
    mv -f "$next" "$stamp" || true
    for name in $changed; do
      [ "$STOPPING" = 0 ] || break
      rebuild_component "$name" || true
    done
  done
}

# One line of ./dev.sh doctor: the status (ok, missing, problem), what was checked, and, when it
# is not ok, the command that fixes it. A required check that is not ok makes doctor fail.
DOCTOR_FAILED=0
report() { # required|optional, status, what, [fix]
  [ "$2" = ok ] || [ "$1" = optional ] || DOCTOR_FAILED=1
  if [ -n "${4:-}" ] && [ "$2" != ok ]; then
    printf '%-8s %s; fix: %s\n' "$2" "$3" "$4"
  else
    printf '%-8s %s\n' "$2" "$3"
  fi
}

# Whether a version (1.95.0, v20.1.0, 0-nightly) is at least a minimum, compared part by part.
version_at_least() { # version, minimum
  awk -v have="${1#v}" -v want="$2" 'BEGIN {
    split(have, h, "."); n = split(want, w, ".")
    for (i = 1; i <= n; i++) { if (h[i] + 0 > w[i] + 0) exit 0; if (h[i] + 0 < w[i] + 0) exit 1 }
    exit 0
  }'
}

# The command that installs packages here: Debian's or Homebrew's names.
install_fix() { # debian packages, homebrew formulae
  case "$PLATFORM" in
    debian) echo "${SUDO}apt-get install -y $1" ;;
    macos) echo "brew install $2" ;;
    *) echo "install $1 with this system's package manager" ;;
  esac
}

# The command that runs functions of scripts/ensure.sh, which install and start what is missing.
ensure_fix() { # function names
  local calls=". scripts/ensure.sh" name
  for name in "$@"; do calls="$calls && $name"; done
  printf "cd %q && bash -c '%s'" "$(pwd)" "$calls"
}

doctor_rust() {
  local rust_version cargo_version installer="curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
  rust_version=$(sed -n -E 's/^rust-version = "([0-9.]+)".*/\1/p' Cargo.toml | head -n 1)
  if command -v rustup >/dev/null; then
    report required ok "$(rustup --version 2>/dev/null | head -n 1)"
  else
    report required missing "rustup (Rust's installer; the wasm32-wasip2 target comes from it)" "$installer"
  fi
  if ! command -v cargo >/dev/null; then
    command -v rustup >/dev/null && installer="rustup default stable"
    report required missing "cargo (Rust $rust_version or newer)" "$installer"
  else
    cargo_version=$(cargo --version 2>/dev/null | awk '{ print $2 }')
    if version_at_least "$cargo_version" "$rust_version"; then
      report required ok "cargo $cargo_version (the workspace needs $rust_version or newer)"
    else
      report required problem "cargo $cargo_version is older than the workspace's Rust $rust_version" "rustup update stable"
    fi
  fi
  if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -x wasm32-wasip2 >/dev/null; then
    report required ok "the wasm32-wasip2 target"
  else
    report required missing "the wasm32-wasip2 target (components build for it)" "rustup target add wasm32-wasip2"
  fi
  if command -v cc >/dev/null; then
    report required ok "a C toolchain (cc; some crates build C code)"
  elif [ "$PLATFORM" = macos ]; then
    report required missing "a C toolchain (cc; some crates build C code)" "xcode-select --install"
  else
    report required missing "a C toolchain (cc; some crates build C code)" "$(install_fix build-essential gcc)"
  fi
  if command -v curl >/dev/null; then
    report required ok "curl"
  else
    report required missing "curl (dev.sh waits for the host and makes broker users with it)" "$(install_fix curl curl)"
  fi
}

doctor_postgres() {
  local start login output
  case "$PLATFORM" in
    debian)
      start=$(ensure_fix ensure_postgres)
      login=$start
      ;;
    macos)
      start="brew install postgresql@17 && brew services start postgresql@17"
      login="createuser -h 127.0.0.1 -s postgres"
      ;;
    *)
      start="install PostgreSQL and start it on port 5432"
      login="make the 127.0.0.1/32 host lines of pg_hba.conf use trust, and reload PostgreSQL"
      ;;
  esac
  if port_open 5432; then
    report required ok "PostgreSQL answers on localhost:5432"
  else
    report required missing "PostgreSQL on localhost:5432" "$start"
  fi
  if ! command -v psql >/dev/null; then
    report required missing "psql (PostgreSQL's client; dev.sh makes the services' databases with it)" \
      "$(install_fix postgresql-client 'libpq && brew link --force libpq')"
  elif port_open 5432; then
    if output=$(PGPASSWORD='' PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
      psql -h 127.0.0.1 -U postgres -w -d postgres -tAc 'SELECT 1' 2>&1); then
      report required ok "login as postgres over TCP from 127.0.0.1 without a password"
    else
      output=$(printf '%s' "$output" | head -n 1)
      case "$output" in
        *'role "postgres" does not exist'*) login="createuser -h 127.0.0.1 -s postgres" ;;
      esac
      report required problem "login as postgres over TCP from 127.0.0.1 without a password: $output" "$login"
    fi
  fi
}

doctor_rabbitmq() {
  local start management output code admin="${SUDO}rabbitmqctl"
  case "$PLATFORM" in
    debian)
      start=$(ensure_fix ensure_rabbitmq ensure_rabbitmq_management)
      management="${SUDO}rabbitmq-plugins enable rabbitmq_management"
      ;;
    macos)
      start="brew install rabbitmq && brew services start rabbitmq"
      management="rabbitmq-plugins enable rabbitmq_management"
      admin=rabbitmqctl
      ;;
    *)
      start="install RabbitMQ and start it on port 5672"
      management="rabbitmq-plugins enable rabbitmq_management"
      ;;
  esac
  if port_open 5672; then
    report required ok "RabbitMQ answers on localhost:5672"
  else
    report required missing "RabbitMQ on localhost:5672" "$start"
    management=$start
  fi
  if ! port_open 15672; then
    report required missing "RabbitMQ's management API on localhost:15672" "$management"
  elif command -v curl >/dev/null; then
    output=$(curl -sS -m 5 -u guest:guest -w '\n%{http_code}' http://127.0.0.1:15672/api/whoami 2>&1) || true
    code=$(printf '%s\n' "$output" | tail -n 1)
    if [ "$code" = 200 ] && printf '%s\n' "$output" | grep administrator >/dev/null; then
      report required ok "RabbitMQ's management API on localhost:15672, guest/guest an administrator"
    elif [ "$code" = 200 ]; then
      report required problem "RabbitMQ's guest is not an administrator (dev.sh makes users as guest)" \
        "$admin set_user_tags guest administrator"
    else
      report required problem "RabbitMQ's management API refuses guest/guest (HTTP $code)" \
        "$admin add_user guest guest || $admin change_password guest guest; $admin set_user_tags guest administrator; $admin set_permissions -p / guest '.*' '.*' '.*'"
    fi
  fi
}

doctor_ports() {
  local port what pid fix
  for port in "$PORT" "$ADMIN_PORT"; do
    if [ "$port" = "$PORT" ]; then
      what="the host's HTTP port" fix="HOST_LISTEN=127.0.0.1:8080 ./dev.sh --native"
    else
      what="the host's admin port" fix="HOST_ADMIN_LISTEN=127.0.0.1:9100 ./dev.sh --native"
    fi
    if ! port_open "$port"; then
      report required ok "port $port ($what) is free"
    elif pid=$(running_pid); then
      report required ok "port $port ($what) is held by the dev host (pid $pid), which ./dev.sh replaces"
    else
      report required problem "port $port ($what) is taken by another program" \
        "stop the program that lsof -nP -iTCP:$port -sTCP:LISTEN names, or run $fix"
    fi
  done
}

doctor_optional() {
  local node_version without_docker="optional: without it ./dev.sh runs in native mode"
  local without_node="optional: without it ./test.sh skips the infrastructure tests"
  # Debian 12 packages Node.js 18; NodeSource has 20.
  local node_fix
  node_fix=$(install_fix nodejs node)
  [ "$PLATFORM" != debian ] ||
    node_fix="curl -fsSL https://deb.nodesource.com/setup_20.x | ${SUDO}bash - && ${SUDO}apt-get install -y nodejs"
  if ! command -v docker >/dev/null; then
    if [ "$PLATFORM" = macos ]; then
      report optional missing "Docker ($without_docker)" "brew install --cask docker"
    else
      report optional missing "Docker ($without_docker)" "curl -fsSL https://get.docker.com | ${SUDO}sh"
    fi
  else
    if with_timeout 10 docker info >/dev/null 2>&1; then
      report optional ok "a Docker engine answers"
    elif [ "$PLATFORM" = macos ]; then
      report optional problem "the Docker engine does not answer ($without_docker)" "open -a Docker"
    else
      report optional problem "the Docker engine does not answer ($without_docker)" "${SUDO}systemctl start docker"
    fi
    if with_timeout 10 docker compose version >/dev/null 2>&1; then
      report optional ok "Docker's compose plugin"
    else
      report optional missing "Docker's compose plugin ($without_docker)" \
        "$(install_fix docker-compose-plugin docker-compose)"
    fi
  fi
  if ! command -v node >/dev/null; then
    report optional missing "Node.js 20 or newer ($without_node)" "$node_fix"
  else
    node_version=$(node --version 2>/dev/null || true)
    if version_at_least "$node_version" 20; then
      report optional ok "Node.js $node_version"
    else
      report optional problem "Node.js $node_version is older than 20 ($without_node)" "$node_fix"
    fi
  fi
  if command -v npm >/dev/null; then
    report optional ok "npm"
  else
    report optional missing "npm ($without_node)" "$node_fix"
  fi
}

doctor_system() {
  local python=python3
  # ./test.sh makes its virtual environment with Debian's python3.
  [ "$PLATFORM" != debian ] || python=/usr/bin/python3
  if ! command -v "$python" >/dev/null; then
    report required missing "python3 (the tests' tools run in a virtual environment)" \
      "$(install_fix 'python3 python3-venv' python)"
  elif "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    report required ok "$python with venv ($("$python" --version 2>&1))"
  else
    report required missing "$python's venv module (the tests' tools run in a virtual environment)" \
      "$(install_fix python3-venv python)"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    report required ok "running as root (to install packages and start PostgreSQL and RabbitMQ)"
  elif command -v sudo >/dev/null; then
    report required ok "sudo (to install packages and start PostgreSQL and RabbitMQ)"
  elif [ "$PLATFORM" = debian ]; then
    report required missing "root or sudo (to install packages and start PostgreSQL and RabbitMQ)" \
      "su -c 'apt-get install -y sudo && adduser $(id -un) sudo'"
  else
    report required missing "root or sudo (to install packages and start PostgreSQL and RabbitMQ)" \
      "run ./dev.sh as root"
  fi
}

# Checks what ./dev.sh and ./test.sh need, and installs nothing. Exit status 1 when something
# required is missing or wrong; Docker and Node.js are optional.
doctor() {
  PLATFORM=other
  if [ "$(uname -s)" = Darwin ]; then
    PLATFORM=macos
  elif command -v apt-get >/dev/null; then
    PLATFORM=debian
  fi
  SUDO="sudo "
  [ "$(id -u)" -ne 0 ] || SUDO=
  echo "What ./dev.sh and ./test.sh need on this machine (nothing is installed):"
  doctor_rust
  doctor_postgres
  doctor_rabbitmq
  doctor_ports
  doctor_optional
  doctor_system
  if [ "$DOCTOR_FAILED" = 0 ]; then
    echo "Everything required is here."
    return 0
  fi
  echo "Something required is missing: run the fixes above, then ./dev.sh doctor again."
  return 1
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
