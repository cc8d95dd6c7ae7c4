"""The prepared GPU scripts run their code paths on this CPU, so that a lent GPU machine's few minutes are not lost to
a script that broke since it was last run there: ``benchmarks/gpu.py --dry-run`` (end to end, one call per
measurement) and ``benchmarks/gpu_kernels.py --smoke`` (the kernels under ``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("triton")


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_gpu_end_to_end_dry_run(tmp_path):
    args = ["benchmarks/gpu.py", "--dry-run", "--out", str(tmp_path), "--table", "t.md", "--models", "resnet18"]
    args += ["--batch", "1", "--dtypes", "fp32", "--presets", "epsilon", "--no-torch-rules", "--reuse-weights-check"]
    run(args + ["--folded-conv"], tmp_path)
    table = (tmp_path / "t.md").read_text()
    assert "FAILED" not in table, table
    methods = re.findall(r"^\| resnet18 \| fp32 \| ([^|]+) \|", table, re.M)
    assert [m.strip() for m in methods] == [
        "forward",
        "fwd+input-grad",
        "lrp epsilon (kernels)",
        "lrp epsilon (kernels, reuse_weights=False)",
        "lrp epsilon (kernels, folded conv)",
    ], table
    # the float64 reference column: fp32 on CPU is far from TF32's 1e-1
    errors = [float(row.rstrip(" |").rsplit("|", 1)[-1]) for row in table.splitlines() if "lrp epsilon" in row]
    assert errors and all(e < 1e-2 for e in errors), table


def test_gpu_kernels_smoke_stacked_linear(tmp_path):
    out = tmp_path / "k.md"
    run(
        ["benchmarks/gpu_kernels.py", "--smoke", "--only", "linear", "--linear-impls", "stacked", "--out", str(out)],
        tmp_path,
    )
    table = out.read_text()
    assert "Correctness vs float64 reference (10/10 ok)" in table, table  # 5 variants, fp32 and bf16
    assert "| linear | epsilon " not in table  # the fused kernels were left out
    assert "| linear | stacked gamma pos+ M" in table


def test_gpu_kernels_smoke_folded(tmp_path):
    out = tmp_path / "k.md"
    args = ["benchmarks/gpu_kernels.py", "--smoke", "--only", "linear,conv", "--linear-impls", "folded"]
    run(args + ["--conv-impls", "folded", "--mixed-alphabeta", "--out", str(out)], tmp_path)
    table = out.read_text()
    # folded alphabeta+, gamma and alphabeta (epsilon and zplus have nothing to fold), linear and conv, fp32 and bf16
    assert "Correctness vs float64 reference (12/12 ok)" in table, table
    assert "| linear | folded alphabeta M,K,N" in table and "| conv | folded gamma " in table, table


def test_gpu_attention_end_to_end_cpu_run(tmp_path):
    """``benchmarks/gpu_attention_e2e.py`` on this CPU: the kernel op (its torch reference here, ``all``) next to
    the dense rule, with their relative difference in the last column."""
    out = tmp_path / "a.md"
    args = ["benchmarks/gpu_attention_e2e.py", "--device", "cpu", "--tokens", "32", "--repeats", "1"]
    run(args + ["--dtypes", "fp32", "--out", str(out)], tmp_path)
    table = out.read_text()
    diffs = re.findall(r"^\| 32 \| fp32 \| lrp (\w+), kernel \(all\) \|.*\| ([0-9.e+-]+) \|$", table, re.M)
    assert [p for p, _ in diffs] == ["attnlrp", "cplrp"], table
    assert all(float(d) < 1e-4 for _, d in diffs), table
