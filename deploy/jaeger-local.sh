#!/usr/bin/env bash
# Jaeger v2 on this machine, without Docker: builds Jaeger v1.76.0 (= v2.13.0, the compose
# file's image) from the Go module proxy once, caches the binary, and starts it with
# deploy/jaeger/config.yaml, the configuration file that deploy/compose.yaml uses too
# (OTLP in on 4317/4318, in-memory storage, query API and UI on 16686, all on loopback).
#
# Usage:
#   deploy/jaeger-local.sh                # build when missing, then run Jaeger (foreground)
#   deploy/jaeger-local.sh --build-only   # build when missing, print the binary's path
#   deploy/jaeger-local.sh --help
#
# Environment:
#   JAEGER_BIN       an existing Jaeger v2 binary to use instead of building one
#   JAEGER_CACHE     where the built binary goes
#                    (default ${XDG_CACHE_HOME:-$HOME/.cache}/memento/jaeger-v1.76.0)
#   JAEGER_CONFIG    another configuration file (default deploy/jaeger/config.yaml)
#   JAEGER_LISTEN_HOST, JAEGER_OTLP_GRPC_PORT, JAEGER_OTLP_HTTP_PORT, JAEGER_QUERY_HTTP_PORT,
#   JAEGER_QUERY_GRPC_PORT, JAEGER_HEALTH_PORT, JAEGER_MAX_TRACES, JAEGER_LOG_LEVEL
#                    read by the configuration file (see its header for the defaults)
#
# The build needs Go >= 1.24.6 and the Go module proxy; it takes about 6 minutes on 2 cores
# with a cold module cache (see README.md). `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0`
# itself is refused by Go ("The go.mod file ... contains one or more replace directives"), so
# the script downloads the module with `go mod download` and builds ./cmd/jaeger inside it as
# the main module, with the module's own go.mod and go.sum. Such a binary has no UI assets
# (they come from a separate JavaScript build): its UI page is Jaeger's placeholder, while the
# query API, which Memento's test and walkthrough use, is complete.
set -euo pipefail

readonly JAEGER_MODULE="github.com/jaegertracing/jaeger"
readonly JAEGER_VERSION="v1.76.0"
readonly JAEGER_V2_VERSION="v2.13.0"

here="$(cd "$(dirname "$0")" && pwd)"
cache="${JAEGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/memento/jaeger-$JAEGER_VERSION}"
config="${JAEGER_CONFIG:-$here/jaeger/config.yaml}"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

die() {
  echo "jaeger-local.sh: $*" >&2
  exit 1
}

# Prints the path of a usable binary, building it first when needed.
jaeger_binary() {
  if [ -n "${JAEGER_BIN:-}" ]; then
    [ -x "$JAEGER_BIN" ] || die "JAEGER_BIN=$JAEGER_BIN is not an executable file"
    echo "$JAEGER_BIN"
    return
  fi
  local bin="$cache/jaeger"
  if [ -x "$bin" ]; then
    echo "$bin"
    return
  fi
  command -v go >/dev/null || die "Go is not installed (needed to build Jaeger; or set JAEGER_BIN)"
  mkdir -p "$cache"
  # One build at a time (tests/run.sh and a developer may both ask).
  exec 9>"$cache/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "jaeger-local.sh: building Jaeger $JAEGER_VERSION ($JAEGER_V2_VERSION) into $cache (minutes on a cold Go cache)" >&2
    local started=$SECONDS
    local dir
    dir="$(cd "$cache" && go mod download -json "$JAEGER_MODULE@$JAEGER_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -n "$dir" ] && [ -d "$dir/cmd/jaeger" ] || die "go mod download $JAEGER_MODULE@$JAEGER_VERSION gave no source directory"
    (
      cd "$dir"
      GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" GOWORK=off go build -trimpath \
        -ldflags "-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_V2_VERSION" \
        -o "$bin.tmp" ./cmd/jaeger
    ) || die "go build of Jaeger failed (see above)"
    mv "$bin.tmp" "$bin"
    echo "jaeger-local.sh: built $bin in $((SECONDS - started)) s" >&2
  fi
  flock -u 9
  echo "$bin"
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  --build-only)
    jaeger_binary
    exit 0
    ;;
  "") ;;
  *)
    usage >&2
    exit 2
    ;;
esac

bin="$(jaeger_binary)"
[ -f "$config" ] || die "no configuration file at $config"
host="${JAEGER_LISTEN_HOST:-127.0.0.1}"
cat >&2 <<EOF
jaeger-local.sh: starting $bin --config $config
  OTLP gRPC   $host:${JAEGER_OTLP_GRPC_PORT:-4317}
  OTLP HTTP   http://$host:${JAEGER_OTLP_HTTP_PORT:-4318}/v1/traces
  query + UI  http://$host:${JAEGER_QUERY_HTTP_PORT:-16686}   (API: /api/services, /api/traces/{trace_id})
EOF
exec "$bin" --config "$config"
