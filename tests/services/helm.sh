#!/usr/bin/env bash
# Helm for tests/it/deploy.rs (`helm template deploy/helm/memento`): prints the binary's path.
#
# Usage: bash tests/services/helm.sh
# Uses $HELM_BIN, else `helm` on PATH, else a copy built earlier into
# ${XDG_CACHE_HOME:-$HOME/.cache}/memento/helm-v3.19.0/, else builds it there from the Go
# module proxy (`go install helm.sh/helm/v3/cmd/helm@v3.19.0`, about 2 minutes on 2 cores with
# a cold module cache). Exits non-zero when none of these works (no Go, no proxy); the test
# then checks the chart's files structurally and says so.
set -euo pipefail
readonly VERSION=v3.19.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/memento/helm-$VERSION"

say() { echo "helm.sh: $*" >&2; }

if [ -n "${HELM_BIN:-}" ] && [ -x "$HELM_BIN" ]; then echo "$HELM_BIN"; exit 0; fi
if command -v helm >/dev/null 2>&1; then command -v helm; exit 0; fi
if [ -x "$cache/helm" ]; then echo "$cache/helm"; exit 0; fi
command -v go >/dev/null 2>&1 || { say "neither helm nor Go is installed"; exit 1; }
mkdir -p "$cache"
say "building helm $VERSION with Go into $cache (once)"
GOBIN="$cache" go install "helm.sh/helm/v3/cmd/helm@$VERSION" >&2 || { say "go install failed"; exit 1; }
echo "$cache/helm"
