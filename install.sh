#!/usr/bin/env bash
# Installs pdesim (editable, with the test tools) into the current Python environment.
#
# torch: one already installed is kept as it is, never reinstalled. Without one:
# - with an NVIDIA GPU (nvidia-smi answers), the default build from the configured index;
# - without one, a CPU build only, never a CUDA build: first from what pip finds with no index
#   at all (a local wheelhouse in the user's pip configuration), then from PyTorch's CPU index,
#   tried once with a short timeout (no retries: a machine that cannot reach it learns so in
#   seconds, not minutes). If neither has one, the script stops and says how to install it.
# The user's own index settings are left alone: the CPU index is named for that one command only.
# Set PYTHON to choose the interpreter, PDESIM_EXTRAS to choose the extras (default: dev).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
EXTRAS=${PDESIM_EXTRAS:-dev}
CPU_INDEX=https://download.pytorch.org/whl/cpu

torch_version() { "$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null; }

if version=$(torch_version); then
  echo "install.sh: keeping the installed torch $version"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  "$PY" -m pip install -q torch
  echo "install.sh: installed torch $(torch_version) (default build) because an NVIDIA GPU answered nvidia-smi"
elif "$PY" -m pip install -q --no-index torch 2>/dev/null; then
  echo "install.sh: installed torch $(torch_version) from the local wheelhouse (no NVIDIA GPU: CPU build)"
elif "$PY" -m pip install -q --retries 0 --timeout 15 --index-url "$CPU_INDEX" torch 2>/dev/null; then
  echo "install.sh: installed torch $(torch_version) from PyTorch's CPU index (no NVIDIA GPU: CPU build)"
else
  echo "install.sh: no NVIDIA GPU and no CPU build of torch reachable (local wheelhouse or $CPU_INDEX);" \
    "install a CPU torch yourself (e.g. pip install torch --index-url $CPU_INDEX) and rerun" >&2
  exit 1
fi
# torch is in place, so resolving pdesim's dependencies keeps it (torch>=2.1 is satisfied).
"$PY" -m pip install -q -e ".[$EXTRAS]"
echo "install.sh: pdesim installed with extras [$EXTRAS]; try 'pdesim run'"
