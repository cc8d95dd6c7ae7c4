"""Parity with LXT 2.1 (AttnLRP's reference implementation) on Llama, GPT-2 and torchvision's ViT-B/16, in float64.

LXT imports only with transformers 4.x while this suite runs on transformers 5, so the comparison runs in its own
environment: ``bash benchmarks/lxt_env.sh`` builds ``.venv-lxt`` (or ``$LXT_VENV``), and this test runs
``benchmarks/lxt_parity.py`` there. Without that environment it is skipped.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV = pathlib.Path(os.environ.get("LXT_VENV", ROOT / ".venv-lxt"))
PYTHON = VENV / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(
    not PYTHON.exists(), reason=f"no LXT environment at {VENV}: build it with `bash benchmarks/lxt_env.sh`"
)
def test_relevance_equals_lxt():
    proc = subprocess.run(
        [str(PYTHON), str(ROOT / "benchmarks" / "lxt_parity.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "PASS" in proc.stdout.splitlines()[-1], report
