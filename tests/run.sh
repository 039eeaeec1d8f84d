#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the integration suite (tests/it) and the
# load-test crate's tests, including interop with the official Python MCP and OpenAI SDKs and
# the trace tests against a real Jaeger v2 (built once with Go by deploy/jaeger-local.sh when
# $JAEGER_BIN is not set; about 6 minutes on 2 cores the first time, cached afterwards).
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/python-env
export MEMENTO_TEST_PYTHON="${MEMENTO_TEST_PYTHON:-$PWD/.venv/bin/python}"
JAEGER_BIN="$(bash deploy/jaeger-local.sh --build-only)"
export JAEGER_BIN
cargo test --workspace --locked "$@"
