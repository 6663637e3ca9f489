# ./dev.sh doctor: what native mode and the tests need, one line each with the command that
# fixes it; installs nothing. Sourced by dev.sh, whose globals (PORT, ADMIN_PORT) it reads.
# shellcheck shell=bash

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
  # shellcheck disable=SC2153 # PORT is dev.sh's
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
