#!/usr/bin/env bash
# The test command: builds the components, then runs every test of the workspace against the
# PostgreSQL and RabbitMQ on localhost (started, or installed from Debian, when absent).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure.sh

ensure_wasm_target
ensure_postgres
ensure_rabbitmq
# misbehave is a test component: it panics, loops and runs hostile SQL on request.
build_components -p orders -p invoices -p misbehave
# Default members: the host and contracts (components build only for wasm32-wasip2).
cargo test "$@"
