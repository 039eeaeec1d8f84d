#!/usr/bin/env bash
# A PostgreSQL for the tests (and for `memento-loadtest`), started only when needed.
#
# Usage:
#   bash tests/services/postgres.sh [start]   prints the URL to use on stdout (one line);
#                                              its messages go to stderr
#   bash tests/services/postgres.sh stop      stops the private cluster this script started
#
#   MEMENTO_TEST_POSTGRES_URL="$(bash tests/services/postgres.sh)"
#
# `start`, in order:
#   1. a PostgreSQL already accepting connections on localhost:5432 (user $PGUSER or
#      `postgres`, password $PGPASSWORD when set) is used as it is, with a database
#      `memento_test` created in it when missing;
#   2. otherwise a private cluster: the PostgreSQL binaries (installed with
#      `apt-get install postgresql` when missing, which needs root) initdb a data directory
#      under ${MEMENTO_SERVICES_DIR:-target/services}/pg, listening on 127.0.0.1 only on a free
#      port, trust authentication for the `memento` role (loopback only, test data only), with
#      a database `memento_test`. A cluster already started there is reused.
#   With neither possible it exits non-zero and says what is missing.
# Run as root, the server runs as the `postgres` system user (PostgreSQL refuses root).
set -euo pipefail
cd "$(dirname "$0")/../.."

SERVICE=postgres.sh SUBDIR=pg
# shellcheck source=tests/services/lib.sh
source tests/services/lib.sh
DATA="$BASE/data"
# Used instead when running as root and the `postgres` user cannot reach $BASE.
ALT_BASE="${TMPDIR:-/tmp}/memento-services-$(printf '%s' "$SERVICES_DIR" | md5sum | cut -c1-12)/pg"
DB=memento_test
ROLE=memento

pg_bin_dir() {
  local dir
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}


case "$ACTION" in
stop)
  for base in "$BASE" "$ALT_BASE"; do
    if [ -f "$base/started-by-script" ] && [ -f "$base/data/postmaster.pid" ]; then
      BIN="$(pg_bin_dir)" || die "cannot stop: pg_ctl not found"
      as_owner "$BIN/pg_ctl" -D "$base/data" -m fast -w stop >&2 || true
      rm -f "$base/started-by-script"
      say "stopped the private cluster in $base/data"
    fi
  done
  exit 0
  ;;
start) ;;
*) die "unknown action '$ACTION' (use start or stop)" ;;
esac

# 1. One already listening on the default port.
if command -v psql >/dev/null 2>&1; then
  EXTERNAL_USER="${PGUSER:-postgres}"
  EXTERNAL="postgresql://${EXTERNAL_USER}@localhost:5432"
  if PGCONNECT_TIMEOUT=3 psql "$EXTERNAL/postgres" -XAtqc 'SELECT 1' >/dev/null 2>&1; then
    if [ "$(psql "$EXTERNAL/postgres" -XAtqc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
      psql "$EXTERNAL/postgres" -Xqc "CREATE DATABASE $DB" >&2 ||
        die "the PostgreSQL on localhost:5432 accepts connections but CREATE DATABASE $DB failed"
    fi
    say "using the PostgreSQL already listening on localhost:5432"
    echo "$EXTERNAL/$DB"
    exit 0
  fi
fi

# 2. A private cluster.
BIN="$(pg_bin_dir)" || {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq postgresql >&2 || die "apt-get install postgresql failed"
    BIN="$(pg_bin_dir)" || die "postgresql was installed but pg_ctl/initdb are not found"
  else
    die "no PostgreSQL listens on localhost:5432 and the PostgreSQL server binaries (pg_ctl, initdb) are missing; install the 'postgresql' package, or run as root so this script can (apt-get install postgresql)"
  fi
}
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  die "running as root but there is no 'postgres' system user to run the server as (PostgreSQL refuses root); install the 'postgresql' package"
fi

mkdir -p "$BASE"
if [ "$(id -u)" = 0 ]; then
  chown postgres "$BASE"
  # The `postgres` user must reach the directory (a clone under /root is 0700): else use
  # one under /tmp, named after the services directory.
  if ! runuser -u postgres -- test -w "$BASE"; then
    BASE="$ALT_BASE"
    mkdir -p "$BASE"
    chmod 755 "$(dirname "$BASE")"
    chown postgres "$BASE"
    say "the postgres user cannot reach $SERVICES_DIR/pg; using $BASE"
  fi
  DATA="$BASE/data"
fi

if [ -f "$BASE/port" ] && [ -f "$DATA/postmaster.pid" ]; then
  PORT="$(cat "$BASE/port")"
  if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    say "reusing the private cluster on 127.0.0.1:$PORT"
    echo "postgresql://$ROLE@127.0.0.1:$PORT/$DB"
    exit 0
  fi
fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  rm -rf "$DATA"
  as_owner mkdir -p "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U "$ROLE" --auth=trust -E UTF8 --locale=C.UTF-8 >"$BASE/initdb.log" 2>&1 ||
    as_owner "$BIN/initdb" -D "$DATA" -U "$ROLE" --auth=trust -E UTF8 --locale=C >"$BASE/initdb.log" 2>&1 ||
    die "initdb failed, see $BASE/initdb.log"
fi

PORT="$(free_port "the private PostgreSQL")"

rm -f "$DATA/postmaster.pid"
# Sockets in the data directory (the owner can always write there); TCP on loopback only.
# max_connections: parallel tests each open a small pool.
as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DATA -c max_connections=400 -c shared_buffers=128MB" \
  start >&2 || die "the private PostgreSQL did not start, see $DATA/server.log"
echo "$PORT" >"$BASE/port"
touch "$BASE/started-by-script"
"$BIN/psql" "postgresql://$ROLE@127.0.0.1:$PORT/postgres" -XAtqc \
  "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 ||
  "$BIN/psql" "postgresql://$ROLE@127.0.0.1:$PORT/postgres" -Xqc "CREATE DATABASE $DB" >&2 ||
  die "CREATE DATABASE $DB failed on the private PostgreSQL"
say "private PostgreSQL on 127.0.0.1:$PORT (data in $DATA)"
echo "postgresql://$ROLE@127.0.0.1:$PORT/$DB"
