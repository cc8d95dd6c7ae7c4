#!/usr/bin/env bash
# Build the environment for the LXT parity check (benchmarks/lxt_parity.py): a venv at .venv-lxt (git-ignored) that
# reuses torch and torchvision from the main environment (--system-site-packages) and shadows transformers 5 with
# transformers 4.57.6, the version LXT 2.1 imports with. lrp_fx is installed in editable mode from this checkout.
#
# LXT is installed without its declared dependencies (accelerate, bitsandbytes, open_clip_torch, tabulate,
# matplotlib, zennit): its efficient (monkey-patching) mode needs none of them beyond torch and transformers, and
# `import lxt` needs zennit, which the main environment's test extra provides (installed here if missing).
#
# Usage: bash benchmarks/lxt_env.sh            (PYTHON=... to pick the interpreter, LXT_VENV=... the location)
#        .venv-lxt/bin/python benchmarks/lxt_parity.py
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
VENV="${LXT_VENV:-.venv-lxt}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q "transformers==4.57.6"
"$PY" -m pip install -q --no-deps "lxt==2.1"
"$PY" -c "import zennit" 2>/dev/null || "$PY" -m pip install -q "zennit==0.5.1"
"$PY" -m pip install -q --no-deps -e .

"$PY" - <<'EOF'
import torch
import torchvision
import transformers

import lrp_fx
import lxt.efficient

assert transformers.__version__.startswith("4."), transformers.__version__
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}")
print(f"lxt from {lxt.efficient.__file__}")
print(f"lrp_fx from {lrp_fx.__file__}")
EOF
