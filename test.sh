#!/usr/bin/env bash
# The test command: builds the components, then runs every test of the workspace against the
# PostgreSQL and RabbitMQ on localhost (started, or installed from Debian, when absent), with
# Prometheus, Chromium, decK and docker-compose from Debian and the Python test tools
# (schemathesis, the OpenAPI validator, hadolint) in target/tools/venv, each installed when
# absent; then `host check` on every manifest, a service made by scripts/new-service.sh built
# and served, and the benchmarks' smoke mode.
#
# The offline suites — the deployment files (deploy/tests), the AWS deployment program (infra/,
# against Pulumi's mocks; skipped, saying so, without Node.js or the npm registry) and the
# scripts (scripts/tests) — run beside the Rust build, which leaves the processor idle while it
# waits on a link or its longest crate; their output is printed once they end.
#
# With CI=true (as .ci/run sets it) the code's form is checked too: `cargo fmt --check`, no line
# over 100 columns (scripts/check-width.sh), and clippy with every warning an error, rustc's
# included (`missing_docs` on the host). Clippy lints the workspace's own crates (the host,
# contracts, the components) as their compiler in the builds the tests need anyway (clippy-driver
# as RUSTC_WORKSPACE_WRAPPER, the way `cargo clippy` itself runs it), so it costs its lint passes,
# not a second build of every dependency.
#
#   ./test.sh              everything
#   ./test.sh <filter>     only the Rust tests whose names match (cargo test's arguments)
#   CI=true ./test.sh      everything, and the form checks
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure.sh

ensure_wasm_target
ensure_rust_tools

# The form, in CI: formatting and width first (they take a second), clippy in every build.
if [ "${CI:-}" = true ] && [ $# -eq 0 ]; then
  cargo fmt --all --check
  scripts/check-width.sh
  export RUSTC_WORKSPACE_WRAPPER
  RUSTC_WORKSPACE_WRAPPER=$(command -v clippy-driver)
  export CLIPPY_ARGS=-Dwarnings
fi
ensure_postgres
ensure_rabbitmq
# The tests make their vhost and broker users with RabbitMQ's management API.
ensure_rabbitmq_management
ensure_prometheus
ensure_chromium
ensure_deploy_tools
ensure_python_tools

offline_log=$(mktemp)
offline_pid=
trap 'rm -f "$offline_log"; [ -z "$offline_pid" ] || kill "$offline_pid" 2>/dev/null || true' EXIT

offline_suites() {
  set -e
  # Dockerfile, compose.yaml, kong/kong.yml and what derives from deploy/manifests: linted,
  # parsed, validated and cross-checked, offline (no Docker engine or Kong needed).
  target/tools/venv/bin/python -m unittest discover -s deploy/tests
  # dev.sh and scripts/ensure.sh, against stand-ins for what they would change on the machine.
  target/tools/venv/bin/python -m unittest discover -s scripts/tests
  # The Pulumi program of the AWS deployment: type-checked, then run against mocks (no AWS).
  local infra_status=0
  ensure_infra_deps || infra_status=$?
  case $infra_status in
    0) npm test --prefix infra ;;
    1) ;;
    *) return "$infra_status" ;;
  esac
}

if [ $# -eq 0 ]; then
  offline_suites >"$offline_log" 2>&1 &
  offline_pid=$!
fi

# Orders built with its `marked` feature, which the hot-swap tests swap in and out: first, so
# that the plain build after it leaves orders.wasm as it ships. One target folder for both,
# so the dependencies are built once.
build_components -p orders --features marked
cp target/wasm32-wasip2/component/orders.wasm target/wasm32-wasip2/component/orders-marked.wasm
# Test components: misbehave panics, loops and runs hostile SQL on request; bare serves no HTTP.
# The template service is built to show it still builds and serves as docs/adding-a-service.md says.
build_components -p orders -p invoices -p misbehave -p bare -p template

# Default members: the host and contracts (components build only for wasm32-wasip2).
cargo test --no-run "$@"

if [ -n "$offline_pid" ]; then
  offline_status=0
  wait "$offline_pid" || offline_status=$?
  offline_pid=
  cat "$offline_log"
  if [ "$offline_status" -ne 0 ]; then
    say "the offline suites failed (status $offline_status): see above"
    exit "$offline_status"
  fi
fi

cargo test "$@"

if [ $# -eq 0 ]; then
  # Every manifest as CI would check it: the development one, and each container's with the
  # image's paths pointed at this checkout (relative paths are the manifest folder's).
  target/debug/host check --config host.toml
  for name in $(platform_services); do
    prefix=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
    env "HOST_COMPONENTS__${prefix}__WASM=$PWD/target/wasm32-wasip2/component/${name//-/_}.wasm" \
      "HOST_COMPONENTS__${prefix}__MIGRATIONS=$PWD/components/$name/migrations" \
      target/debug/host check --config "deploy/manifests/$name.toml"
  done
  # A service made by the generator builds, passes `host check` and serves.
  scripts/tests/test_new_service.sh
  # The benchmarks' smoke mode, on the development host just built.
  bench/smoke.sh
fi
