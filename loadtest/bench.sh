#!/usr/bin/env bash
# The daemon benchmarks of BENCHMARKS.md, in one script: each step spawns the whole stack
# (Azure mock, memento mcp-server, memento serve) on free loopback ports with a temporary
# data dir, and writes its report into loadtest/out/bench-<name>/.
#
# Usage: bash loadtest/bench.sh [step ...]
#   steps: max (max turns/s, 0 ms mock, closed loop; the 64-user run gives the daemon's CPU
#   per turn), capacity (highest Poisson rate within a 2 ms p99 overhead, 1,000 users),
#   overhead (1,000 users, Poisson 300 turns/s), users10k (10,000 users, 200 ms mock),
#   idle (RSS per idle actor), soak (10 minutes), tracing (200 turns/s for a minute without
#   and with OTLP export to a local Jaeger, twice each; needs Go or JAEGER_BIN, see
#   deploy/jaeger-local.sh)
#   default: all of them but tracing, in that order (about 25 minutes).
# Needs a release build (the script builds it) and `ulimit -n` of at least 25,000 for the
# 10,000-user step (it raises the soft limit itself when the hard limit allows).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
LT="$TARGET_DIR/release/memento-loadtest"
OUT=loadtest/out
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(max capacity overhead users10k idle soak)

for step in "${steps[@]}"; do
  echo "== $step ($(date -u +%FT%TZ))"
  case "$step" in
    max)
      for users in 16 64 256; do
        "$LT" run --quiet --users "$users" --duration 30s --out "$OUT/bench-max-$users"
      done
      ;;
    capacity)
      # Poisson open loop over 1,000 users, 10 s per step, from 100 turns/s up by 1.25x.
      "$LT" capacity --quiet --users 1000 --p99-overhead-ms 2 --start-rate 100 --factor 1.25 \
        --out "$OUT/bench-capacity"
      ;;
    overhead)
      # 1,000 users, Poisson arrivals at 300 turns/s in all (open loop, seed 1), against a
      # 0 ms mock: below saturation, so the overhead is the daemon's work.
      "$LT" run --quiet --users 1000 --rate 300 --duration 60s --out "$OUT/bench-overhead"
      ;;
    users10k)
      "$LT" run --quiet --users 10000 --duration 60s --mock-latency-ms 200 \
        --scenario loadtest/scenarios/think1s.toml --out "$OUT/bench-users10k"
      ;;
    idle)
      "$LT" idle-actors --users 10000 --warmup 1000 --after-release --out "$OUT/bench-idle"
      ;;
    soak)
      "$LT" run --quiet --users 200 --rate 200 --duration 10m --out "$OUT/bench-soak"
      ;;
    tracing)
      # A Jaeger of its own on ports off the defaults, fed by both services in the traced runs.
      export JAEGER_OTLP_GRPC_PORT=24317 JAEGER_OTLP_HTTP_PORT=24318 JAEGER_QUERY_HTTP_PORT=26686 \
        JAEGER_QUERY_GRPC_PORT=26685 JAEGER_HEALTH_PORT=23133
      mkdir -p "$OUT"
      bash deploy/jaeger-local.sh --build-only >/dev/null
      bash deploy/jaeger-local.sh >"$OUT/bench-jaeger.log" 2>&1 &
      jaeger_pid=$!
      trap 'kill "$jaeger_pid" 2>/dev/null || true' EXIT
      until curl -fsS "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" >/dev/null 2>&1; do
        kill -0 "$jaeger_pid" || { cat "$OUT/bench-jaeger.log" >&2; exit 1; }
        sleep 0.2
      done
      for round in 1 2; do
        "$LT" run --quiet --users 200 --rate 200 --duration 60s --out "$OUT/bench-tracing-off-$round"
        "$LT" run --quiet --users 200 --rate 200 --duration 60s \
          --otlp-endpoint "http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT" --out "$OUT/bench-tracing-on-$round"
      done
      curl -fsS "http://127.0.0.1:$JAEGER_QUERY_HTTP_PORT/api/services"
      echo
      kill "$jaeger_pid"
      trap - EXIT
      ;;
    *)
      echo "unknown step $step (max, capacity, overhead, users10k, idle, soak, tracing)" >&2
      exit 64
      ;;
  esac
done
