#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the integration suite (tests/it) and the
# load-test crate's tests, including interop with the official Python MCP and OpenAI SDKs,
# then the official MCP conformance suite (tests/conformance/run.sh).
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/python-env
export MEMENTO_TEST_PYTHON="${MEMENTO_TEST_PYTHON:-$PWD/.venv/bin/python}"
cargo test --workspace --locked "$@"
# The official MCP conformance suite against a loopback `memento mcp-server` (Node 22 from npm).
bash tests/conformance/run.sh
