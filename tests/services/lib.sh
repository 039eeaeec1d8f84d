# What the private-service starters share (postgres.sh, redis.sh): sourced, never run.
# Before sourcing, set SERVICE (the script's name, for messages) and SUBDIR (its folder
# under the services directory). Defines ACTION ($1, default start), SERVICES_DIR (absolute,
# created), BASE ($SERVICES_DIR/$SUBDIR), say, die, port_free and free_port.

ACTION="${1:-start}"
SERVICES_DIR="${MEMENTO_SERVICES_DIR:-target/services}"
mkdir -p "$SERVICES_DIR"
SERVICES_DIR="$(cd "$SERVICES_DIR" && pwd)"
BASE="$SERVICES_DIR/$SUBDIR"

say() { echo "$SERVICE: $*" >&2; }
die() { say "$*"; exit 1; }

# True when nothing listens on 127.0.0.1:$1 (bash's /dev/tcp: needs no extra tool).
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a free port in 20000-39999, or dies naming $1 (what the port is for).
free_port() {
  local candidate
  for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 20000))
    if port_free "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  die "no free port found for $1"
}
