#!/usr/bin/env bash
# The main job: install, materialize the whole Self-Explore graph for the embedded default
# (tiny-synthetic, CPU, no network), then print the eval table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/sx-dagster run --experiment "${1:-tiny-synthetic}"
