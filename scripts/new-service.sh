#!/usr/bin/env bash
# Adds a service to the platform:
#
#   scripts/new-service.sh <name> [--route /path] [--publishes topic]... [--subscribes topic]...
#
# 1. checks the name (lower-case letters, digits, '-'; not a service yet, not a reserved word) and
#    the route (default /<name>; not /health..., not equal to or nested with another's);
# 2. copies components/template to components/<name>, renamed (crate, SERVICE, titles);
# 3. adds it to `members` in the root Cargo.toml;
# 4. writes its container manifest deploy/manifests/<name>.toml (the list of services), with no
#    messaging unless topics are given;
# 5. appends its [[components]] entry to host.toml (native mode);
# 6. runs `scripts/services.py sync`, which writes it into compose.yaml, kong/kong.yml, Prometheus's
#    targets, init.sql and RabbitMQ's definitions;
# then prints what to do next. It refuses a name whose components/<name> exists, and undoes what
# it wrote when a step fails. Runs on bash 3.2 (macOS) with Python 3.11 or later.
set -euo pipefail

say() { printf '%s\n' "$*" >&2; }
fail() { say "error: $*"; exit 1; }

usage() {
  cat <<'USAGE'
usage: scripts/new-service.sh <name> [--route /path] [--publishes topic]... [--subscribes topic]...

  <name>        lower-case letters, digits and '-', starting with a letter (e.g. shipping)
  --route       the path it is served at, through Kong and the host (default /<name>)
  --publishes   a topic it may publish (e.g. shipping.dispatched); repeat for more
  --subscribes  a topic delivered to its message handler (one another service publishes)
USAGE
}

# A topic as given, when it is one: dot-separated words of letters, digits, '-' and '_'.
topic() {
  case $1 in
    '' | .* | *. | *..* | *[!A-Za-z0-9._-]*)
      say "error: topic '$1': dot-separated words of letters, digits, '-' and '_' (e.g. shipping.dispatched)"
      exit 1 ;;
  esac
  printf '%s' "$1"
}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

name=
route=
publishes=
subscribes=
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --route) [ $# -ge 2 ] || fail "--route needs a path"; route=$2; shift 2 ;;
    --route=*) route=${1#--route=}; shift ;;
    --publishes)
      [ $# -ge 2 ] || fail "--publishes needs a topic"
      publishes="$publishes $(topic "$2")"
      shift 2 ;;
    --publishes=*) publishes="$publishes $(topic "${1#--publishes=}")"; shift ;;
    --subscribes)
      [ $# -ge 2 ] || fail "--subscribes needs a topic"
      subscribes="$subscribes $(topic "$2")"
      shift 2 ;;
    --subscribes=*) subscribes="$subscribes $(topic "${1#--subscribes=}")"; shift ;;
    -*) usage >&2; fail "unknown option $1" ;;
    *) [ -z "$name" ] || { usage >&2; fail "one name only"; }; name=$1; shift ;;
  esac
done
[ -n "$name" ] || { usage >&2; exit 2; }
route=${route:-/$name}

python3 -c 'import sys, tomllib' 2>/dev/null || fail "python3 3.11 or later is needed (tomllib)"
for needed in components/template Cargo.toml host.toml scripts/services.py deploy/manifests; do
  [ -e "$needed" ] || fail "$needed is missing: run this in the platform's repository"
done
python3 scripts/services.py check-new "$name" "$route" || exit 1

# The subscribed topics' publishers, as a TOML inline table's insides; refuses a topic published
# already (a topic has one publisher) and a subscription no service publishes. (A function, not
# a here-document inside $(...), which bash 3.2 misreads.)
publishers_of() { # name, published topics, subscribed topics
  python3 - "$@" <<'PY'
import sys, tomllib
from pathlib import Path

name, publishes, subscribes = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
published = {}
for path in sorted(Path("deploy/manifests").glob("*.toml")):
    for component in tomllib.loads(path.read_text()).get("components") or []:
        for topic in component.get("publishes") or []:
            published[topic] = component["name"]
for topic in publishes:
    if topic in published:
        sys.exit(f"error: {topic} is published by {published[topic]} already; a topic has one publisher")
for topic in subscribes:
    if topic not in published and topic not in publishes:
        sys.exit(f"error: no service publishes {topic}; subscribe to a topic another service publishes")
print(", ".join(f'"{topic}" = "{published.get(topic, name)}"' for topic in subscribes))
PY
}
publishers=$(publishers_of "$name" "$publishes" "$subscribes") || exit 1

crate=$(printf '%s' "$name" | tr - _)
title=$(python3 -c 'import sys; print(sys.argv[1].replace("-", " ").capitalize())' "$name")
prefix=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
toml_list() { # topics separated by spaces -> ["a", "b"]
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1].split()))' "$1"
}

# What a failed run leaves: nothing. Cargo.toml and host.toml are put back, the new files removed,
# and the derived files written again from the list as it was.
backup=$(mktemp -d "${TMPDIR:-/tmp}/new-service.XXXXXX")
cp Cargo.toml host.toml "$backup/"
finished=0
undo() {
  if [ "$finished" = 0 ]; then
    say "undoing: removing components/$name and deploy/manifests/$name.toml, restoring Cargo.toml" \
      "and host.toml"
    rm -rf "components/$name" "deploy/manifests/$name.toml"
    cp "$backup/Cargo.toml" "$backup/host.toml" .
    python3 scripts/services.py sync >/dev/null || say "error: scripts/services.py sync failed; run it again"
  fi
  rm -rf "$backup"
}
trap undo EXIT

say "components/$name: the template's crate, renamed"
cp -R components/template "components/$name"
python3 - "$name" "$title" <<'PY'
import re, sys
from pathlib import Path

name, title = sys.argv[1:]
crate = Path("components", name)
cargo = crate / "Cargo.toml"
text = cargo.read_text()
text = re.sub(r'(?m)^name = "template"$', f'name = "{name}"', text)
description = f"The {name} service: notes in its own database, documented, with health."
text = re.sub(r'(?m)^description = ".*"$', f'description = "{description}"', text)
cargo.write_text(text)
lib = crate / "src" / "lib.rs"
text = lib.read_text()
# The opening paragraph says what the template is for; this crate is a service.
text = re.sub(r"\A(//![^\n]*\n)+?//!\n", (
    f"//! The {name} service, made from `components/template` by scripts/new-service.sh: notes in\n"
    "//! its own database. Replace `notes` with your own resource (docs/adding-a-service.md).\n//!\n"), text, count=1)
text = text.replace("Notes: a service's starting point.", f"Notes, in the {name} service.")
text = re.sub(r'const SERVICE: &str = "template";', f'const SERVICE: &str = "{name}";', text)
text = text.replace('title = "Template"', f'title = "{title}"')
lib.write_text(text)
for migration in (crate / "migrations").glob("*.sql"):
    text = migration.read_text().replace("The template's one table.", f"The one table of {name}.")
    migration.write_text(text)
left = [f"{path}: {line.strip()}" for path in sorted(crate.rglob("*")) if path.is_file()
        for line in path.read_text(errors="replace").splitlines()
        if re.search(r"\"template\"|\bTemplate\b|\btemplate's\b", line)]
if left:
    sys.exit("error: the template still names itself in:\n  " + "\n  ".join(left))
PY

say "Cargo.toml: components/$name in the workspace's members"
python3 - "$name" <<'PY'
import re, sys, tomllib
from pathlib import Path

member = f"components/{sys.argv[1]}"
path = Path("Cargo.toml")
text = path.read_text()
found = re.search(r"(?ms)^members\s*=\s*\[(.*?)\]", text)
if not found:
    sys.exit("error: Cargo.toml has no `members = [...]`")
inside = found.group(1).rstrip()
separator = "," if inside.rstrip().endswith(('"', "'")) else ""
line_break = "\n    " if "\n" in inside else " "
text = text[:found.start(1)] + inside + separator + line_break + f'"{member}"' + \
    ("," if "\n" in inside else "") + ("\n" if "\n" in inside else "") + text[found.end(1):]
if member not in tomllib.loads(text)["workspace"]["members"]:
    sys.exit("error: could not add the member to Cargo.toml")
path.write_text(text)
PY

say "deploy/manifests/$name.toml: its container's manifest"
{
  cat <<TOML
# The container manifest of the service \`$name\` (compose's service of that name; HOST_CONFIG
# names it), made by scripts/new-service.sh: the manifests of this folder are the list of
# services. One host runs one component; the image holds the paths below. Secrets come from the
# environment: HOST_ADMIN_TOKEN, and, with the passwords,
#   ${prefix}_DATABASE_URL and ${prefix}_AMQP_URL.
# Any setting here can be overridden so, as HOST_<SECTION>__<KEY> (HOST_HTTP__LISTEN, ...).

# Behind Kong, which strips \`$route\` and says so in X-Forwarded-Prefix: the component's links
# and OpenAPI \`servers\` then carry the path the client used.
[http]
listen = "0.0.0.0:8000"
trust_forwarded_prefix = true

# Reachable from Prometheus on the compose network, so HOST_ADMIN_TOKEN is required. A .wasm
# written into /app/components (compose mounts the build folder there) is swapped in.
[admin]
listen = "0.0.0.0:9000"
watch = true

# The broker, as the user \`$name\` (compose's RabbitMQ makes it from
# deploy/rabbitmq/definitions.json); the host logs in only for a component that publishes or
# subscribes.
[messaging]
url = "amqp://$name@rabbitmq:5672/%2f"
exchange = "platform.events"
TOML
  [ -z "$publishers" ] || printf 'publishers = { %s }\n' "$publishers"
  cat <<TOML

[[components]]
name = "$name"
wasm = "/app/components/$crate.wasm"
route = "$route"
database_url = "postgres://$crate@postgres:5432/$crate"
migrations = "/app/migrations/$name"
TOML
  [ -z "${publishes// /}" ] || printf 'publishes = %s\n' "$(toml_list "$publishes")"
  [ -z "${subscribes// /}" ] || printf 'subscriptions = %s\n' "$(toml_list "$subscribes")"
} >"deploy/manifests/$name.toml"

say "host.toml: its entry for native mode"
{
  cat <<TOML

[[components]]
name = "$name"
wasm = "target/wasm32-wasip2/component/$crate.wasm"
route = "$route"
database_url = "postgres://$crate@localhost:5432/$crate"
TOML
  if [ -n "${publishes// /}${subscribes// /}" ]; then
    printf 'amqp_url = "amqp://%s:%s-dev@localhost:5672/%%2f"\n' "$name" "$name"
  fi
  printf 'migrations = "components/%s/migrations"\n' "$name"
  [ -z "${publishes// /}" ] || printf 'publishes = %s\n' "$(toml_list "$publishes")"
  [ -z "${subscribes// /}" ] || printf 'subscriptions = %s\n' "$(toml_list "$subscribes")"
} >>host.toml
python3 -c 'import sys, tomllib; tomllib.load(open("host.toml", "rb"))' || fail "host.toml no longer parses"

say "scripts/services.py sync: the files derived from the list"
python3 scripts/services.py sync >&2
python3 scripts/services.py sync --check
finished=1

cat <<NEXT

Added the service $name, served at $route. Written:
  - components/$name/: its crate, from components/template (notes in its own database)
  - deploy/manifests/$name.toml: its container's manifest, in the list of services
  - Cargo.toml and host.toml: a workspace member, and its entry for native mode
  - by scripts/services.py sync: its host in compose.yaml, its route in kong/kong.yml, a scrape
    target in observability/prometheus/prometheus.yml, its role and database in
    deploy/postgres/init.sql, its broker user in deploy/rabbitmq/definitions.json

Next:
  1. Build it:  cargo build --profile component --target wasm32-wasip2 -p $name
  2. Run it:    ./dev.sh, then open http://localhost:8000$route/docs
     (compose creates a new database only on a new volume: see docs/adding-a-service.md)
  3. Make it yours: replace \`notes\` in components/$name/src/lib.rs and in its migration
     (components/$name/migrations), then run ./test.sh.
NEXT
if [ -n "${subscribes// /}" ]; then
  echo "  It subscribes: export a message handler with service_guest::export! (see components/orders)."
fi
