#!/usr/bin/env bash
# Run a benchmark on a GPU box that has torch, transformers, accelerate and peft but no network
# (and not the rest of our dependencies): install the wheels carried in .whl/ into /tmp/site,
# print the versions that will run, then run the command given.
#   bash benchmarks/gpu_run.sh python3 benchmarks/gpu_graph.py --device cuda
# Fill .whl/ on a machine with network (names and versions: the CPU venv's `pip freeze`):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl NAME==VERSION ...
# The set that ran on an H200 (Python 3.12, torch 2.11) is listed in benchmarks/results/gpu_graph_runs.md.
set -u
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  if [ ! -f /tmp/site/.sx-installed ]; then  # once per machine
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    touch /tmp/site/.sx-installed
  fi
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 USE_HUB_KERNELS=0
python3 - <<'PY'
import importlib
import torch
names = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "dagster", "duckdb", "pandas", "pyarrow", "tokenizers"]
versions = []
for n in names:
    try:
        versions.append(f"{n} {importlib.import_module(n).__version__}")
    except Exception as e:  # noqa: BLE001 - report every missing piece, not the first
        versions.append(f"{n} MISSING ({type(e).__name__}: {e})")
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"{gpu}; " + ", ".join(versions), flush=True)
PY
exec "$@"
