#!/usr/bin/env bash
# A Redis for the tests (and for `memento-loadtest run --daemons N`), started only when needed.
#
# Usage:
#   bash tests/services/redis.sh [start]   prints the URL to use on stdout (one line);
#                                           its messages go to stderr
#   bash tests/services/redis.sh stop      stops the private server this script started
#
#   MEMENTO_TEST_REDIS_URL="$(bash tests/services/redis.sh)"
#
# `start`, in order:
#   1. a Redis already answering PING on localhost:6379 is used as it is (redis://127.0.0.1:6379/0);
#   2. otherwise a private server: redis-server (installed with `apt-get install redis-server`
#      when missing, which needs root) runs on 127.0.0.1 only, on a free port, without
#      persistence, with its files under ${MEMENTO_SERVICES_DIR:-target/services}/redis.
#      A server already started there is reused.
#   With neither possible it exits non-zero and says what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

SERVICE=redis.sh SUBDIR=redis
# shellcheck source=tests/services/lib.sh
source tests/services/lib.sh

# PING over bash's /dev/tcp: needs no redis-cli.
answers() {
  local port="$1" reply
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  reply=""
  read -r -t 2 reply <&3 || true
  exec 3>&- 3<&-
  [ "${reply%$'\r'}" = "+PONG" ]
}

case "$ACTION" in
stop)
  if [ -f "$BASE/pid" ]; then
    pid="$(cat "$BASE/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      say "stopped the private server (pid $pid)"
    fi
    rm -f "$BASE/pid" "$BASE/port"
  fi
  exit 0
  ;;
start) ;;
*) die "unknown action '$ACTION' (use start or stop)" ;;
esac

# 1. One already answering on the default port.
if answers 6379; then
  echo "redis://127.0.0.1:6379/0"
  exit 0
fi

# A private server this script started before.
if [ -f "$BASE/pid" ] && [ -f "$BASE/port" ] && kill -0 "$(cat "$BASE/pid")" 2>/dev/null \
  && answers "$(cat "$BASE/port")"; then
  echo "redis://127.0.0.1:$(cat "$BASE/port")/0"
  exit 0
fi

# 2. A private one.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    die "Redis is not running on localhost:6379 and redis-server is not installed; install it (apt-get install redis-server) or start a Redis"
  fi
  say "installing redis-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq redis-server >&2 || { apt-get update -qq >&2 && apt-get install -y -qq redis-server >&2; } \
    || die "apt-get install redis-server failed; install Redis or start one on localhost:6379"
  # The package may start a system service on 6379: that one is used from now on.
  if answers 6379; then
    echo "redis://127.0.0.1:6379/0"
    exit 0
  fi
fi

mkdir -p "$BASE"
port="$(free_port "a private Redis")"
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$BASE" --daemonize yes --pidfile "$BASE/pid" --logfile "$BASE/redis.log" >&2 \
  || die "redis-server did not start (see $BASE/redis.log)"
for _ in $(seq 100); do
  if answers "$port"; then
    echo "$port" >"$BASE/port"
    say "started a private Redis on 127.0.0.1:$port (stop: bash tests/services/redis.sh stop)"
    echo "redis://127.0.0.1:$port/0"
    exit 0
  fi
  sleep 0.1
done
die "redis-server did not answer on port $port (see $BASE/redis.log)"
