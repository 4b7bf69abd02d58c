#!/usr/bin/env bash
# Installs pdesim (editable, with the test tools) into the current Python environment.
# A torch that is already installed is kept as it is. Without one, a CPU build is installed
# (no CUDA downloads on a CPU-only machine): from a local wheelhouse that pip is configured
# with if there is one, else from PyTorch's CPU index. With an NVIDIA GPU, the default build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}

if "$PY" -c "import torch" 2>/dev/null; then
  echo "install.sh: keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1; then
  "$PY" -m pip install torch
else
  "$PY" -m pip install --no-index torch 2>/dev/null \
    || "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -q -e ".[dev]"
echo "install.sh: pdesim installed; try 'pdesim run'"
