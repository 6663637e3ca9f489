#!/usr/bin/env bash
# The test command: builds the components, then runs every test of the workspace against the
# PostgreSQL and RabbitMQ on localhost (started, or installed from Debian, when absent) and
# Prometheus (installed from Debian when absent), then the benchmarks' smoke mode.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure.sh

ensure_wasm_target
ensure_postgres
ensure_rabbitmq
ensure_prometheus
# Test components: misbehave panics, loops and runs hostile SQL on request; bare serves no HTTP.
build_components -p orders -p invoices -p misbehave -p bare
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
