#!/usr/bin/env bash
# The web page's end-to-end test in a real browser. Installs what it needs, loudly:
# Debian's Chromium (apt-get, when /usr/bin/chromium is missing) and playwright-core (npm ci
# from the committed package-lock.json; it downloads no browser). Builds `memento`, then runs
# tests/e2e/web.test.mjs. Screenshots of every step land in target/e2e-artifacts/.
# Usage: bash tests/e2e/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "e2e: $* missing and I am not root (no sudo): apt-get install $*" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "e2e: installing Debian's chromium (apt-get)"
  apt_install chromium
fi
[ -x "$CHROMIUM_PATH" ] || { echo "e2e: no Chromium at $CHROMIUM_PATH after installing" >&2; exit 1; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: installing nodejs and npm (apt-get)"
  apt_install nodejs npm
fi

(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)

if [ -z "${MEMENTO_BIN:-}" ]; then
  cargo build --locked --bin memento
  export MEMENTO_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/memento"
fi
export CHROMIUM_PATH
export MEMENTO_E2E_ARTIFACTS="${MEMENTO_E2E_ARTIFACTS:-$ROOT/target/e2e-artifacts}"
rm -rf "$MEMENTO_E2E_ARTIFACTS"
mkdir -p "$MEMENTO_E2E_ARTIFACTS"

echo "e2e: $("$CHROMIUM_PATH" --version 2>/dev/null || echo chromium), node $(node --version)"
(cd tests/e2e && node --test --test-reporter=spec web.test.mjs)
echo "e2e: screenshots in $MEMENTO_E2E_ARTIFACTS"
