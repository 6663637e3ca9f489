# ./dev.sh --watch: finds which components changed since a stamp and rebuilds them while the
# host runs; the host (admin.watch) swaps each rebuilt .wasm in. Sourced by dev.sh, whose
# globals (STATE, COMPONENTS) it reads.
# shellcheck shell=bash

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
