#!/usr/bin/env bash
# Makes the static (model2vec-style) model distilled from the test MiniLM once, caches it, and
# prints its directory (for [embeddings] model_dir or `memento-loadtest recall --model-dir`).
#
# `memento embeddings distill` runs each of the 30,522 vocabulary tokens through
# all-MiniLM-L6-v2 (from tests/models/fetch.sh): a few minutes on 2 cores with a release
# binary, much longer with a debug one. Cached under ~/.cache/memento/models (or
# $MEMENTO_MODEL_CACHE); idempotent.
# Usage: STATIC_DIR="$(bash tests/models/distill.sh [MEMENTO_BIN])"
#        MEMENTO_BIN defaults to target/release/memento.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${1:-target/release/memento}"
CACHE="${MEMENTO_MODEL_CACHE:-$HOME/.cache/memento/models}"
TARGET="$CACHE/static-all-minilm-l6-v2-1"
if [ ! -f "$TARGET/static.safetensors" ] || [ ! -f "$TARGET/vocab.txt" ]; then
  [ -x "$BIN" ] || { echo "tests/models/distill.sh: no memento binary at $BIN (build it, or pass its path)" >&2; exit 1; }
  MODEL="$(bash tests/models/fetch.sh)"
  mkdir -p "$CACHE"
  rm -rf "$TARGET.partial"
  "$BIN" embeddings distill --from "$MODEL" --out "$TARGET.partial" >&2
  rm -rf "$TARGET"
  mv "$TARGET.partial" "$TARGET"
fi
echo "$TARGET"
