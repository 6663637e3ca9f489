#!/usr/bin/env bash
# Functions that make sure what the project needs is on this machine, installing or starting it
# when it is not: the wasm32-wasip2 target, PostgreSQL and RabbitMQ on localhost, Prometheus's tools,
# the deployment checkers (decK, docker-compose), the Python test tools and the npm packages of
# the AWS deployment program (infra/).
# Sourced by ./dev.sh and ./test.sh; Debian packages are installed with apt-get (as root).

say() { printf '%s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  say "installing $* from Debian"
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # port, what, seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  say "error: $2 did not come up on port $1 within $3 s"
  return 1
}

# rustfmt and clippy, which CI's form checks run (rustup's default profile has them; a minimal
# one does not).
ensure_rust_tools() {
  local component
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      say "adding the $component Rust component"
      rustup component add "$component"
    fi
  done
}

ensure_wasm_target() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "adding the wasm32-wasip2 Rust target"
    rustup target add wasm32-wasip2
  fi
}

# PostgreSQL on localhost:5432, installed from Debian and started when absent. Local development
# and the tests log in as `postgres` over TCP without a password, so whenever a Debian cluster is
# here (running or not, whoever started it) its `host all all` lines for 127.0.0.1/32 and ::1/128
# are made to trust; a running server is reloaded when that changed the file, and nothing is
# said or done when it did not. A PostgreSQL on 5432 that is not a Debian cluster (a container,
# Homebrew) is taken as it is. PG_HBA_CONF names another pg_hba.conf, at <dir>/<version>/main/
# like Debian's (the tests point it at a file of their own).
ensure_postgres() {
  if ! port_open 5432 && ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql
  fi
  local hba version hba_status=0
  hba=$(postgres_hba_file)
  if [ -z "$hba" ]; then
    port_open 5432 && return 0
    say "error: PostgreSQL does not answer on port 5432 and there is no cluster in /etc/postgresql"
    return 1
  fi
  version=$(basename "$(dirname "$(dirname "$hba")")")
  pg_hba_trust_local "$hba" || hba_status=$?
  if [ "$hba_status" -gt 1 ]; then
    say "error: could not read or write $hba"
    return 1
  fi
  if [ "$hba_status" -eq 0 ] && port_open 5432; then
    say "reloading PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  port_open 5432 && return 0
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for_port 5432 PostgreSQL 30
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  wait_for_port 5672 RabbitMQ 90
}

# promtool and prometheus, with which the tests check the dashboard's queries and the alert
# rules against a real host. Installing the package starts no server here (the tests run their own).
ensure_prometheus() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return 0
  apt_install --no-install-recommends prometheus
}

# The management UI and API on :15672: for looking at queues and dead letters, and for making
# the components' broker users.
ensure_rabbitmq_management() {
  if ! port_open 15672; then
    say "enabling RabbitMQ's management plugin"
    as_root rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null 2>&1 ||
      { say "error: could not enable RabbitMQ's management plugin"; return 1; }
    wait_for_port 15672 "RabbitMQ's management API" 60
  fi
}

# On a vhost (the first argument, URL-encoded: %2F for the default one, which is made if
# missing), for each name after it, a RabbitMQ user of that name (password <name>-dev, a local
# default like the databases') that may declare, write and read only its own queues and publish
# to the exchange platform.events: the host requires each component to log in as a user named
# after it. Made with the management API as guest (ensure_rabbitmq_management first).
ensure_broker_users() {
  local vhost=$1 name api=http://localhost:15672/api
  shift
  curl -fsS -u guest:guest -X PUT "$api/vhosts/$vhost" >/dev/null
  curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
    -d '{"configure":".*","write":".*","read":".*"}' "$api/permissions/$vhost/guest" >/dev/null
  for name in "$@"; do
    curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
      -d "{\"password\":\"$name-dev\",\"tags\":\"\"}" "$api/users/$name" >/dev/null
    curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
      -d "{\"configure\":\"^platform\\\\.events(\\\\.$name\\\\..*)?\$\",\"write\":\"^(platform\\\\.events|platform\\\\.events\\\\.$name\\\\..*|amq\\\\.default)\$\",\"read\":\"^(platform\\\\.events|platform\\\\.events\\\\.$name\\\\..*)\$\"}" \
      "$api/permissions/$vhost/$name" >/dev/null
  done
}

# For each name, a login role of that name (no superuser, no password: local connections are
# trusted) that owns a database of that name and everything in it. A component connects as it,
# so its SQL reaches its own database and nothing else. A database made by an earlier version
# of this script, owned by postgres, is handed over with its tables.
ensure_service_databases() {
  local name
  for name in "$@"; do
    if ! [[ $name =~ ^[a-z][a-z0-9_]*$ ]]; then
      say "error: '$name' is not a plain lower-case name for a role and database"
      return 1
    fi
    psql_admin postgres -qc "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$name') THEN
          CREATE ROLE $name LOGIN;
        END IF;
      END \$\$"
    # Whatever it was before: a component's role holds no privilege beyond its own database.
    psql_admin postgres -qc "ALTER ROLE $name NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    if ! psql_admin postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
      say "creating database $name, owned by role $name"
      psql_admin postgres -qc "CREATE DATABASE $name OWNER $name"
    fi
    psql_admin postgres -qc "ALTER DATABASE $name OWNER TO $name"
    # Only its owner connects: the other service's role cannot reach it at all.
    psql_admin postgres -qc "REVOKE ALL ON DATABASE $name FROM PUBLIC"
    # Limits on the server's side: temp_file_limit a component cannot lift; the timeouts are a
    # backstop behind the host's own, per transaction.
    psql_admin postgres -qc "ALTER ROLE $name SET temp_file_limit = '1GB'"
    psql_admin postgres -qc "ALTER ROLE $name SET statement_timeout = '30s'"
    psql_admin postgres -qc "ALTER ROLE $name SET idle_in_transaction_session_timeout = '30s'"
    psql_admin "$name" -qc "DO \$\$ DECLARE t record; BEGIN
        FOR t IN SELECT schemaname, tablename FROM pg_tables
                 WHERE schemaname = 'public' AND tableowner <> '$name' LOOP
          EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', t.schemaname, t.tablename, '$name');
        END LOOP;
      END \$\$"
  done
}

psql_admin() { # database, psql arguments...
  local database=$1
  shift
  psql -h localhost -U postgres -v ON_ERROR_STOP=1 "$@" "$database"
}

build_components() {
  cargo build --profile component --target wasm32-wasip2 "$@"
}

# decK (Kong's declarative-configuration tool) and docker-compose, from Debian, with which
# deploy/tests checks kong/kong.yml and compose.yaml offline: neither needs a Kong or a Docker
# engine for that.
ensure_deploy_tools() {
  local missing=()
  command -v deck >/dev/null || missing+=(deck)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  [ ${#missing[@]} -eq 0 ] || apt_install --no-install-recommends "${missing[@]}"
}

# The Python tools of the offline tests (PyYAML, dockerfile-parse, hadolint, the OpenAPI
# validators), pinned in scripts/requirements-test.txt, in a virtual environment of Debian's
# python3 at target/tools/venv. Made again only when the requirements file changes; run them as
# target/tools/venv/bin/python (or .../bin/hadolint, .../bin/schemathesis).
ensure_python_tools() {
  local root venv requirements stamp digest
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  venv=$root/target/tools/venv
  requirements=$root/scripts/requirements-test.txt
  stamp=$venv/requirements.sha256
  digest=$(sha256sum "$requirements" | cut -d ' ' -f 1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then
    return 0
  fi
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || apt_install --no-install-recommends python3-venv
  say "installing the Python test tools (scripts/requirements-test.txt) into target/tools/venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$digest" >"$stamp"
}

# Debian's Chromium, with which the docs-page test renders Swagger UI headless.
ensure_chromium() {
  command -v chromium >/dev/null || apt_install --no-install-recommends chromium
}

# The npm packages of the AWS deployment program (infra/, pinned in infra/package-lock.json), in
# infra/node_modules; installed again only when the lock file changes. Returns 1, having said
# why, when Node.js is missing or the npm registry cannot be reached: the caller then skips the
# infrastructure tests. Returns 2 when the install itself fails.
ensure_infra_deps() {
  local infra stamp digest
  infra=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/infra
  stamp=$infra/node_modules/.package-lock.sha256
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    say "Node.js and npm are not installed: skipping the infrastructure tests (infra/)"
    return 1
  fi
  digest=$(sha256sum "$infra/package-lock.json" | cut -d ' ' -f 1)
  if [ -d "$infra/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; then
    return 0
  fi
  if ! timeout 30 npm ping >/dev/null 2>&1; then
    say "the npm registry cannot be reached: skipping the infrastructure tests (infra/)"
    return 1
  fi
  say "installing the infrastructure program's npm packages (infra/package-lock.json)"
  if ! (cd "$infra" && npm ci --no-audit --no-fund --loglevel=error); then
    say "error: npm ci failed in infra/"
    return 2
  fi
  echo "$digest" >"$stamp"
}

# The pg_hba.conf of the newest Debian PostgreSQL cluster (PG_HBA_CONF when set), or nothing.
postgres_hba_file() {
  if [ -n "${PG_HBA_CONF:-}" ]; then
    echo "$PG_HBA_CONF"
    return 0
  fi
  { ls -d /etc/postgresql/*/main/pg_hba.conf 2>/dev/null || true; } | sort -V | tail -n 1
}

# Makes the `host all all` lines of a pg_hba.conf for 127.0.0.1/32 and ::1/128 use trust (their
# method and its options replaced), and adds one for 127.0.0.1/32 when it has none. Returns 0
# when it changed the file, 1 when it was already so (and left it alone), 2 when it could not
# read or write it. Callers test its status, which turns `set -e` off in here: every step checks.
pg_hba_trust_local() { # pg_hba.conf
  local hba=$1 current wanted
  local line='^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)'
  if [ -r "$hba" ]; then
    current=$(cat "$hba") || return 2
  else
    current=$(as_root cat "$hba") || return 2
  fi
  wanted=$(printf '%s\n' "$current" | sed -E "\#${line}trust([[:space:]]|\$)#!s#${line}.*#\1trust#") ||
    return 2
  if ! printf '%s\n' "$wanted" | grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]'; then
    wanted="$wanted
host    all             all             127.0.0.1/32            trust"
  fi
  [ "$wanted" != "$current" ] || return 1
  say "trusting logins as any role over TCP from 127.0.0.1 and ::1 in $hba"
  printf '%s\n' "$wanted" | as_root tee "$hba" >/dev/null || return 2
}

# The platform's services, one name a line, sorted: the stems of deploy/manifests/<name>.toml,
# one container manifest per service, each named after its component.
platform_services() {
  local root manifest
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  for manifest in "$root"/deploy/manifests/*.toml; do
    [ -f "$manifest" ] || continue
    manifest=${manifest##*/}
    echo "${manifest%.toml}"
  done | LC_ALL=C sort
}

# Runs a command with a time limit in seconds where timeout (GNU coreutils; gtimeout from
# Homebrew's coreutils) is installed, and without one where it is not (stock macOS).
with_timeout() { # seconds, command...
  local seconds=$1
  shift
  if command -v timeout >/dev/null; then
    timeout "$seconds" "$@"
  elif command -v gtimeout >/dev/null; then
    gtimeout "$seconds" "$@"
  else
    "$@"
  fi
}
