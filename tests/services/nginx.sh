#!/usr/bin/env bash
# Makes sure nginx is installed for the tests that run it in front of daemons
# (tests/it/deploy.rs, `memento-loadtest run --daemons N`); they start private instances
# themselves, on free loopback ports, with deploy/nginx/memento.conf.
#
# Usage: bash tests/services/nginx.sh    prints the nginx binary's path on stdout
# Installs the Debian package (`apt-get install nginx`, needs root) when missing, and stops
# the system service the package may start (the tests never use it). With neither nginx nor
# root it exits non-zero and says what is missing.
set -euo pipefail

say() { echo "nginx.sh: $*" >&2; }
die() { say "$*"; exit 1; }

find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }
}

if bin="$(find_nginx)" && [ -n "$bin" ]; then
  echo "$bin"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "nginx is not installed; install it (apt-get install nginx) or run the tests as root"
say "installing nginx with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq nginx >&2 || { apt-get update -qq >&2 && apt-get install -y -qq nginx >&2; } \
  || die "apt-get install nginx failed"
# The package starts a system nginx on port 80 where it can; the tests run their own.
if command -v service >/dev/null 2>&1; then service nginx stop >&2 2>/dev/null || true; fi
bin="$(find_nginx)" || die "nginx installed but not found on PATH"
echo "$bin"
