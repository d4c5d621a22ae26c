#!/usr/bin/env bash
# Installs recsim-llm into the active Python environment: the CPU build of torch first (an unpinned
# torch would pull several GB of CUDA packages), then the project with its test tools, the LLM extras and Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip >/dev/null
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install "torch==2.13.0" || python -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
python -m pip install -e ".[dev,llm,ray]"
