#!/usr/bin/env bash
# What the benchmarks share: making sure what they need is here, a manifest of their own
# (ports 18000 and 19000, databases bench_orders and bench_invoices, the RabbitMQ vhost
# platform-bench), and starting and measuring a release host. Sourced by the bench scripts, after scripts/ensure.sh.

BENCH_HTTP=127.0.0.1:18000

# Installs wrk, makes sure PostgreSQL and RabbitMQ run, builds the components and, unless
# HOST_BIN names one, the release host; writes the manifest to $BENCH_WORK/host.toml.
bench_setup() {
  ensure_wasm_target
  ensure_postgres
  ensure_rabbitmq
  ensure_rabbitmq_management
  command -v wrk >/dev/null || apt_install wrk
  ensure_service_databases bench_orders bench_invoices
  ensure_broker_users platform-bench orders invoices
  build_components -p orders -p invoices
  if [ -z "${HOST_BIN:-}" ]; then
    cargo build --release -p host
    HOST_BIN=target/release/host
  fi
  BENCH_WORK=$(mktemp -d)
  trap 'bench_stop_host; rm -rf "$BENCH_WORK"' EXIT
  sed -e "s|listen = \"127.0.0.1:8000\"|listen = \"$BENCH_HTTP\"|" \
      -e 's|listen = "127.0.0.1:9000"|listen = "127.0.0.1:19000"|' -e 's|^watch = true|watch = false|' \
      -e 's|postgres://orders@localhost:5432/orders|postgres://bench_orders@localhost:5432/bench_orders|' \
      -e 's|postgres://invoices@localhost:5432/invoices|postgres://bench_invoices@localhost:5432/bench_invoices|' \
      -e 's|@localhost:5672/%2f|@localhost:5672/platform-bench|' \
      -e "s|wasm = \"target|wasm = \"$PWD/target|" -e "s|migrations = \"components|migrations = \"$PWD/components|" \
      host.toml >"$BENCH_WORK/host.toml"
}

# Starts the host with the compile cache in $1 (default: one in $BENCH_WORK) and waits until it
# is ready; sets HOST_PID, and READY_MS to the milliseconds from launch to ready. (Not to be run
# in a subshell, which would keep HOST_PID to itself.)
bench_start_host() {
  local cache=${1:-$BENCH_WORK/cache} started ready
  if curl -fsS -o /dev/null "http://$BENCH_HTTP/health" 2>/dev/null; then
    echo "something already answers on $BENCH_HTTP (a host left from an earlier run?); stop it first" >&2
    return 1
  fi
  started=$(date +%s%N)
  HOST_CACHE_DIR=$cache RUST_LOG=warn "$HOST_BIN" --config "$BENCH_WORK/host.toml" >>"$BENCH_WORK/host.log" 2>&1 &
  HOST_PID=$!
  until curl -fsS -o /dev/null "http://$BENCH_HTTP/health" 2>/dev/null; do
    kill -0 "$HOST_PID" 2>/dev/null || { tail -n 20 "$BENCH_WORK/host.log" >&2; return 1; }
    sleep 0.005
  done
  ready=$(date +%s%N)
  READY_MS=$(((ready - started) / 1000000))
}

# Writes $BENCH_WORK/post.lua: wrk posts one order per request.
bench_post_script() {
  cat >"$BENCH_WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"customerId":"0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f","amount":100}'
LUA
}

bench_stop_host() {
  if [ -n "${HOST_PID:-}" ] && kill -0 "$HOST_PID" 2>/dev/null; then
    kill -TERM "$HOST_PID"
    wait "$HOST_PID" || true
  fi
  HOST_PID=
}

# CPU time the host has used, in microseconds (user + system).
bench_cpu_us() {
  local ticks
  ticks=$(awk '{ print $14 + $15 }' "/proc/$HOST_PID/stat")
  echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# CPU time PostgreSQL has used, in microseconds: its processes' (user + system), and that of
# those that ended (the postmaster's reaped children: backends of closed connections).
bench_pg_cpu_us() {
  local postmaster ticks
  postmaster=$(pgrep -o -x postgres)
  ticks=$({ cat "/proc/$postmaster/stat"; for pid in $(pgrep -P "$postmaster"); do cat "/proc/$pid/stat" 2>/dev/null; done; } |
    awk -v pm="$postmaster" '{ t += $14 + $15; if ($1 == pm) t += $16 + $17 } END { printf "%d", t }')
  echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# CPU time RabbitMQ has used, in microseconds: every process of its user (the Erlang VM and
# its helpers).
bench_rabbitmq_cpu_us() {
  local ticks
  ticks=$(for pid in $(pgrep -u rabbitmq); do cat "/proc/$pid/stat" 2>/dev/null; done |
    awk '{ t += $14 + $15 + $16 + $17 } END { printf "%d", t }')
  echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# Runs `wrk -t1 --latency` with the given arguments, measuring the host's CPU meanwhile; sets
# WRK_RPS, WRK_P50, WRK_P99, WRK_ERRORS (answers not 2xx/3xx), WRK_CPU_US (host CPU µs per
# request) and WRK_SWITCHES (the host's context switches per request, its threads' voluntary and
# not; threads that ended meanwhile are not counted).
bench_wrk() {
  local cpu_before cpu_after switches_before switches_after out requests
  cpu_before=$(bench_cpu_us)
  switches_before=$(bench_context_switches)
  out=$(wrk -t1 --latency "$@")
  cpu_after=$(bench_cpu_us)
  switches_after=$(bench_context_switches)
  WRK_RPS=$(awk '/^Requests\/sec/ { printf "%d", $2 }' <<<"$out")
  WRK_P50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  WRK_P99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  WRK_ERRORS=$(awk '/Non-2xx or 3xx/ { print $NF }' <<<"$out")
  WRK_ERRORS=${WRK_ERRORS:-0}
  WRK_CPU_US=$(((cpu_after - cpu_before) / (requests > 0 ? requests : 1)))
  WRK_SWITCHES=$(awk -v n="$((switches_after - switches_before))" -v r="$requests" \
    'BEGIN { printf "%.1f", (r > 0 ? n / r : 0) }')
}

# Context switches of every thread of the host so far, voluntary and not.
bench_context_switches() {
  cat /proc/"$HOST_PID"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { printf "%d", n }'
}

# Resident memory of the host, in KiB.
bench_rss_kb() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$HOST_PID/status"
}

# Empties the services' tables, so each run starts from the same state.
bench_reset_data() {
  psql_admin bench_orders -qc "TRUNCATE orders, platform_outbox, platform_inbox" 2>/dev/null || true
  psql_admin bench_invoices -qc "TRUNCATE invoices, platform_outbox, platform_inbox" 2>/dev/null || true
}

# Waits (at most two minutes) until the work that earlier requests set off is done: every order
# invoiced and no event left in either outbox, so it does not count against the next case.
bench_settle() {
  local i pending
  for ((i = 0; i < 1200; i++)); do
    pending=$(psql_admin bench_orders -tAc "SELECT (SELECT count(*) FROM orders WHERE status <> 'invoiced')
        + (SELECT count(*) FROM platform_outbox WHERE sent_at IS NULL)")
    pending=$((pending + $(psql_admin bench_invoices -tAc "SELECT count(*) FROM platform_outbox WHERE sent_at IS NULL")))
    [ "$pending" -eq 0 ] && return 0
    sleep 0.1
  done
  say "warning: $pending orders or events still in flight after two minutes"
}
