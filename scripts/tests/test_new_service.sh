#!/usr/bin/env bash
# End to end: a service made by scripts/new-service.sh builds, passes `host check`, and serves
# its notes from a database of its own.
#
#   scripts/tests/test_new_service.sh
#
# 1. copies this repository (its files as they are on disk, without what git ignores) to a
#    temporary folder, and runs `scripts/new-service.sh shipping` there;
# 2. builds the new component with this checkout's target folder (its dependencies are built
#    already);
# 3. `host check`s the generated container manifest, pointed at the built .wasm and migrations;
# 4. makes a role and database of a name of its own (e2e_shipping_<pid>) on localhost's
#    PostgreSQL, as dev.sh does for a service;
# 5. serves the generated manifest with this checkout's target/debug/host, its listeners on free
#    loopback ports, its database the one just made: GET /shipping/health answers 200, a note
#    POSTed to /shipping/notes is read back from its Location;
# then stops the host, drops the database and role and removes the folder, also when a step
# fails. Prints each step and its duration; exits non-zero on the first failure.
#
# Needs: PostgreSQL on localhost:5432 trusting `postgres` over TCP (./test.sh's ensure_postgres),
# the wasm32-wasip2 target, curl, python3, and target/debug/host with its `check` subcommand
# (built when missing; HOST_BIN names another host binary).
set -euo pipefail

main=$(cd "$(dirname "$0")/../.." && pwd)
host=${HOST_BIN:-$main/target/debug/host}
# shellcheck source=scripts/ensure.sh
source "$main/scripts/ensure.sh"

name=shipping
route=/$name
database=e2e_${name}_$$
work=$(mktemp -d "${TMPDIR:-/tmp}/test-new-service.XXXXXX")
copy=$work/repo
host_pid=
# The new service's URL on the host this test starts.
base=
made_database=0
current_step=
timings=

now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

# Runs one step, saying what it is and how long it took.
step() { # title, command...
  local title=$1 start elapsed
  shift
  current_step=$title
  say "==> $title"
  start=$(now_ms)
  "$@"
  elapsed=$(($(now_ms) - start))
  timings="$timings$(printf '  %6d.%03d s  %s' $((elapsed / 1000)) $((elapsed % 1000)) "$title")
"
  say "    done in $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000))) s"
}

cleanup() {
  local status=$?
  set +e
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill -TERM "$host_pid"
    for _ in $(seq 1 100); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$host_pid" 2>/dev/null
    wait "$host_pid" 2>/dev/null
  fi
  if [ "$made_database" = 1 ]; then
    psql_admin postgres -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null
    psql_admin postgres -qc "DROP ROLE IF EXISTS $database" >/dev/null
  fi
  # The build left its output in this checkout's target folder; it is no service of this one.
  if [ ! -d "$main/components/$name" ]; then
    rm -f "$main/target/wasm32-wasip2/component/$name.wasm" "$main/target/wasm32-wasip2/component/$name.d"
  fi
  if [ "$status" -ne 0 ]; then
    say "FAILED: $current_step"
    [ -f "$work/host.log" ] && { say "--- the host's log (last 40 lines):"; tail -n 40 "$work/host.log" >&2; }
  fi
  rm -rf "$work"
  if [ -n "$timings" ]; then
    say ""
    say "steps:"
    printf '%s' "$timings" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

copy_repository() {
  mkdir -p "$copy"
  (
    cd "$main"
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' file; do [ -f "$file" ] && printf '%s\0' "$file"; done |
      tar --null -T - -cf -
  ) | tar -xf - -C "$copy"
}

generate() {
  (cd "$copy" && bash scripts/new-service.sh "$name" >"$work/new-service.out")
  grep -q "cargo build --profile component --target wasm32-wasip2 -p $name" "$work/new-service.out"
}

build_component() {
  (cd "$copy" && CARGO_TARGET_DIR=$main/target cargo build --profile component \
    --target wasm32-wasip2 -p "$name")
  cp "$main/target/wasm32-wasip2/component/$name.wasm" "$work/$name.wasm"
}

build_host_when_missing() {
  if [ -x "$host" ]; then
    say "    using $host"
    return 0
  fi
  (cd "$main" && cargo build -p host)
}

# The generated container manifest, pointed at what this machine has: the built .wasm, the
# migrations of the copy, a compile cache that goes with the folder.
prefix=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
component_env=(
  "HOST_COMPONENTS__${prefix}__WASM=$work/$name.wasm"
  "HOST_COMPONENTS__${prefix}__MIGRATIONS=$copy/components/$name/migrations"
  "HOST_CACHE__DIR=$work/cache"
)

check_manifest() {
  if ! "$host" help check >/dev/null 2>&1; then
    say "error: $host has no \`check\` subcommand: rebuild it (cargo build -p host)"
    return 1
  fi
  env "${component_env[@]}" "$host" --config "$copy/deploy/manifests/$name.toml" check
}

make_database() {
  if ! port_open 5432; then
    say "error: no PostgreSQL on localhost:5432 (./test.sh starts one: ensure_postgres in scripts/ensure.sh)"
    return 1
  fi
  made_database=1
  ensure_service_databases "$database"
}

serve() {
  local port admin
  port=$(free_port)
  admin=$(free_port)
  base=http://127.0.0.1:$port$route
  env "${component_env[@]}" \
    "HOST_HTTP__LISTEN=127.0.0.1:$port" "HOST_ADMIN__LISTEN=127.0.0.1:$admin" \
    "${prefix}_DATABASE_URL=postgres://$database@localhost:5432/$database" \
    "$host" --config "$copy/deploy/manifests/$name.toml" serve >"$work/host.log" 2>&1 &
  host_pid=$!
  local i
  for ((i = 0; i < 240; i++)); do
    if ! kill -0 "$host_pid" 2>/dev/null; then
      say "error: the host stopped"
      return 1
    fi
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ]; then
      say "    GET $route/health: 200"
      return 0
    fi
    sleep 0.25
  done
  say "error: GET $base/health did not answer 200 within 60 s"
  return 1
}

notes_round_trip() {
  local text status location
  text="shipped at $(date -u +%Y-%m-%dT%H:%M:%SZ) by test_new_service.sh"
  status=$(curl -sS -o "$work/created.json" -D "$work/created.headers" -w '%{http_code}' \
    -H 'content-type: application/json' -d "{\"text\":\"$text\"}" "$base/notes")
  [ "$status" = 201 ] || { say "error: POST $route/notes answered $status: $(cat "$work/created.json")"; return 1; }
  location=$(tr -d '\r' <"$work/created.headers" | sed -n 's/^[Ll]ocation: //p')
  say "    POST $route/notes: 201, Location: $location"
  case $location in
    "$route"/notes/*) ;;
    *) say "error: the Location is not under $route/notes/"; return 1 ;;
  esac
  status=$(curl -sS -o "$work/read.json" -w '%{http_code}' "${base%"$route"}$location")
  [ "$status" = 200 ] || { say "error: GET $location answered $status"; return 1; }
  python3 - "$work/created.json" "$work/read.json" "$text" <<'PY'
import json, sys

created, read = (json.load(open(path)) for path in sys.argv[1:3])
assert read == created, f"read back {read}, created {created}"
assert read["text"] == sys.argv[3], read
PY
  say "    GET $location: 200, the same note"
  status=$(curl -s -o "$work/openapi.json" -w '%{http_code}' "$base/openapi.json")
  [ "$status" = 200 ] || { say "error: GET $route/openapi.json answered $status"; return 1; }
  python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["info"]["title"] == "Shipping"' "$work/openapi.json"
  say "    GET $route/openapi.json: 200, titled Shipping"
}

stop_host() {
  kill -TERM "$host_pid"
  local i
  for ((i = 0; i < 120; i++)); do
    kill -0 "$host_pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$host_pid" 2>/dev/null; then
    say "error: the host did not stop within 30 s of SIGTERM"
    return 1
  fi
  wait "$host_pid" || { say "error: the host exited with $? after SIGTERM"; return 1; }
  host_pid=
}

drop_database() {
  psql_admin postgres -qc "DROP DATABASE $database WITH (FORCE)"
  psql_admin postgres -qc "DROP ROLE $database"
  made_database=0
}

step "copy the repository to $copy" copy_repository
step "scripts/new-service.sh $name" generate
step "cargo build -p $name (wasm32-wasip2, component profile)" build_component
step "the host binary" build_host_when_missing
step "host check --config deploy/manifests/$name.toml" check_manifest
step "database and role $database on localhost" make_database
step "host serve: $route/health answers" serve
step "POST a note, GET it back" notes_round_trip
step "stop the host" stop_host
step "drop database and role $database" drop_database
say ""
say "ok: a service made by scripts/new-service.sh builds, passes host check and serves"
