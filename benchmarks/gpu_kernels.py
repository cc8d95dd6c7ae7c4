#!/usr/bin/env python
"""Benchmark of the LRP Triton kernels (``kernels/``) against the straightforward torch implementation of each rule.

Run from the repository root on a CUDA machine (written for an H100/H200, torch 2.11, triton 3.6)::

    python benchmarks/gpu_kernels.py                 # correctness + timings, table -> docs/gpu_kernels_table.md
    python benchmarks/gpu_kernels.py --only attention --out /tmp/attn.md
    python benchmarks/gpu_kernels.py --smoke         # CPU, TRITON_INTERPRET=1, tiny shapes, no timing

1. Correctness: every kernel on fresh random inputs vs its torch reference computed in float64 from the same inputs
   (relative error ||out - ref|| / ||ref||; NaN/inf fails). TF32 is off for this part.
2. Timings: ``triton.testing.do_bench`` medians of the kernel path (the public ``torch.ops.lrp_kernels`` operators)
   and of the torch rule written the straightforward way (``*_ref(..., upcast=False)``: materialised modified
   weights/activations, separate matmuls/convolutions, dense N x N attention), plus the peak extra memory of one call
   (``torch.cuda.max_memory_allocated`` above what was allocated before). TF32 is on for float32 timings (matmuls and
   cuDNN, both sides).
3. A ``torch.compile`` check of the operators (Inductor sees the Triton kernels through ``torch.library.triton_op``).

Prints a markdown table and writes it to ``--out``. The first call of each kernel variant autotunes (compiles up to
four block configurations); the script is meant to stay within a few minutes on an H100.
"""

import argparse
import functools
import math
import os
import platform
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU run under TRITON_INTERPRET=1 with tiny shapes, no timing")
    p.add_argument(
        "--out",
        default=None,
        help="markdown output path (default docs/gpu_kernels_table.md; with --smoke a file in the temp dir)",
    )
    p.add_argument("--only", default="linear,conv,attention", help="comma list of: linear, conv, attention")
    p.add_argument(
        "--linear-impls",
        default="fused,stacked",
        help="linear kernel implementations checked and timed: fused (Triton GEMMs), stacked (cuBLAS + fused "
        "elementwise), folded (sign-split rules with fewer cuBLAS GEMMs, kernels/signsplit_folded.py); comma list",
    )
    p.add_argument(
        "--conv-impls",
        default="stacked",
        help="sign-split conv pipelines checked and timed: stacked (conv2d.py), folded (signsplit_folded.py); comma "
        "list",
    )
    p.add_argument(
        "--mixed-alphabeta",
        action="store_true",
        help="also check and time AlphaBeta on a mixed-sign input (the folded pipelines' 8 -> 5 products case)",
    )
    p.add_argument("--warmup", type=float, default=10.0, help="do_bench warmup in ms")
    p.add_argument("--rep", type=float, default=40.0, help="do_bench repetition time in ms")
    p.add_argument("--no-compile-check", action="store_true", help="skip the torch.compile check")
    p.add_argument(
        "--budget",
        type=float,
        default=250.0,
        help="seconds after which remaining timing cases and the compile check are skipped (default 250)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


ARGS = parse_args()
T0 = time.time()
if ARGS.smoke:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton / kernels are imported
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

import kernels  # noqa: E402
from kernels import (  # noqa: E402
    attention_relevance,
    attention_relevance_ref,
    attention_relevance_triton,
    epsilon_conv2d,
    epsilon_conv2d_ref,
    epsilon_conv2d_triton,
    epsilon_linear,
    epsilon_linear_ref,
    epsilon_linear_stacked_triton,
    epsilon_linear_triton,
    signsplit_conv2d,
    signsplit_conv2d_ref,
    signsplit_conv2d_triton,
    signsplit_linear,
    signsplit_linear_ref,
    signsplit_linear_stacked_triton,
    signsplit_linear_triton,
)

SMOKE = ARGS.smoke
DEVICE = "cpu" if SMOKE else "cuda"
# the production path on GPU goes through the torch.library operators; on CPU those run the references, so the
# smoke run calls the Triton launchers directly (interpreted)
K_EPS_LIN = epsilon_linear_triton if SMOKE else epsilon_linear
K_SS_LIN = signsplit_linear_triton if SMOKE else signsplit_linear
K_EPS_CONV = epsilon_conv2d_triton if SMOKE else epsilon_conv2d
K_SS_CONV = signsplit_conv2d_triton if SMOKE else signsplit_conv2d
K_ATTN = attention_relevance_triton if SMOKE else attention_relevance

EPS = {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-2}
TOL = {torch.float32: 1e-3, torch.bfloat16: 6e-2, torch.float16: 1e-2}
DT_NAME = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# rule variants timed (and checked): (name, rule, x_nonneg)
LINEAR_RULES = [("epsilon", "epsilon", False), ("zplus+", "zplus", True), ("alphabeta+", "alphabeta", True)]
LINEAR_RULES += [("gamma", "gamma", False), ("gamma pos+", "gamma+", True)]  # pos: rule gamma+ (before a ReLU)
if ARGS.mixed_alphabeta:
    LINEAR_RULES += [("alphabeta", "alphabeta", False)]


def _impls(text, choices):
    impls = [i.strip() for i in text.split(",") if i.strip()]
    bad = [i for i in impls if i not in choices]
    if bad:
        raise SystemExit(f"unknown implementation(s) {bad}; choose from {choices}")
    return impls


# rules the folded pipelines hand to the stacked ones (one denominator: nothing to share a product with)
STACKED_ONLY = ("epsilon", "zplus", "gamma+")
LINEAR_IMPLS = _impls(ARGS.linear_impls, ("fused", "stacked", "folded"))
CONV_IMPLS = _impls(ARGS.conv_impls, ("stacked", "folded"))


def gen(seed):
    return torch.Generator(device="cpu").manual_seed(seed)


def randn(shape, g, dtype, scale=1.0):
    return (torch.randn(shape, generator=g, dtype=torch.float32) * scale).to(device=DEVICE, dtype=dtype)


def rel_err(out, ref):
    out = out.double()
    ref = ref.double().to(out.device)
    if not torch.isfinite(out).all():
        return float("nan")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------------------
def linear_inputs(M, K, N, dtype, seed, nonneg=False):
    g = gen(seed)
    x = randn((M, K), g, dtype)
    if nonneg:
        x = x.relu()
    w = randn((N, K), g, dtype, 1.0 / math.sqrt(K))
    b = randn((N,), g, dtype, 0.1)
    z = (x.float() @ w.float().T + b.float()).to(dtype)
    r = (randn((M, N), g, torch.float32) * z.float()).to(dtype)
    return x, w, b, z, r


def conv_inputs(n, c, o, hw, dtype, seed, nonneg=False, stride=1, padding=1, groups=1):
    g = gen(seed)
    x = randn((n, c, hw, hw), g, dtype)
    if nonneg:
        x = x.relu()
    w = randn((o, c // groups, 3, 3), g, dtype, 1.0 / math.sqrt(9 * c // groups))
    b = randn((o,), g, dtype, 0.1)
    conv = dict(stride=stride, padding=padding, dilation=1, groups=groups)
    z = F.conv2d(x, w, b, **conv)
    r = (torch.randn(z.shape, generator=g).to(DEVICE) * z.float()).to(dtype)
    return x, w, b, z, r, conv


def attention_inputs(B, H, Hkv, N, d, dtype, seed, padding=False):
    g = gen(seed)
    q = randn((B, H, N, d), g, dtype)
    k = randn((B, Hkv, N, d), g, dtype)
    v = randn((B, Hkv, N, d), g, dtype)
    mask = None
    if padding:
        mask = torch.ones(B, N, dtype=torch.bool)
        mask[0, N - N // 5 :] = False
        mask = mask.to(DEVICE)
    r = randn((B, H, N, d), g, dtype)
    return q, k, v, r, mask


def scale_attention_relevance(q, k, v, r, causal, mask):
    """R_O proportional to O (as relevance from upstream LRP is), so S = R_O / stab(O) stays well-conditioned."""
    o, _ = kernels.attention_forward_ref(q, k, v, causal, mask)
    return (r.float() * o.float()).to(q.dtype)


# ------------------------------------------------------------------------------------------------------------------
# cases: each returns (kernel_fn, torch_fn, ref64_fn) closures
# ------------------------------------------------------------------------------------------------------------------
def linear_case(M, K, N, dtype, rule, nonneg, seed=0, impl="fused"):
    """``impl``: ``fused`` (the Triton GEMMs, through the operators), ``stacked`` (cuBLAS + fused elementwise,
    ``kernels/linear_stacked.py``) or ``folded`` (``kernels/signsplit_folded.py``; epsilon as stacked)."""
    x, w, b, z, r = linear_inputs(M, K, N, dtype, seed, nonneg)
    eps = EPS[dtype]
    k_eps = K_EPS_LIN if impl == "fused" else epsilon_linear_stacked_triton
    k_ss = K_SS_LIN if impl == "fused" else functools.partial(signsplit_linear_stacked_triton, folded=impl == "folded")
    if rule == "epsilon":
        return (
            lambda: k_eps(x, w, z, r, eps),
            lambda: epsilon_linear_ref(x, w, z, r, eps, upcast=False),
            lambda: epsilon_linear_ref(x.double(), w.double(), z.double(), r.double(), eps),
        )
    kw = dict(alpha=2.0, beta=1.0, gamma=0.25, eps=eps, x_nonneg=nonneg)
    d = [t.double() for t in (x, w, b, z, r)]
    return (
        lambda: k_ss(x, w, b, z, r, rule, **kw),
        lambda: signsplit_linear_ref(x, w, b, z, r, rule, upcast=False, **kw),
        lambda: signsplit_linear_ref(*d, rule, **kw),
    )


def conv_case(n, c, o, hw, dtype, rule, nonneg, seed=0, stride=1, padding=1, groups=1, impl="stacked"):
    """``impl``: the sign-split pipeline, ``stacked`` (through the operator) or ``folded`` (its launcher)."""
    x, w, b, z, r, conv = conv_inputs(n, c, o, hw, dtype, seed, nonneg, stride, padding, groups)
    eps = EPS[dtype]
    if rule == "epsilon":
        return (
            lambda: K_EPS_CONV(x, w, z, r, eps, **conv),
            lambda: epsilon_conv2d_ref(x, w, z, r, eps, upcast=False, **conv),
            lambda: epsilon_conv2d_ref(x.double(), w.double(), z.double(), r.double(), eps, **conv),
        )
    kw = dict(alpha=2.0, beta=1.0, gamma=0.25, eps=eps, x_nonneg=nonneg, **conv)
    d = [t.double() for t in (x, w, b, z, r)]
    k_ss = K_SS_CONV if impl == "stacked" else functools.partial(signsplit_conv2d_triton, folded=True)
    return (
        lambda: k_ss(x, w, b, z, r, rule, **kw),
        lambda: signsplit_conv2d_ref(x, w, b, z, r, rule, upcast=False, **kw),
        lambda: signsplit_conv2d_ref(*d, rule, **kw),
    )


def attention_case(B, H, Hkv, N, d, dtype, rule, causal, padding=False, seed=0, scale_r=True):
    q, k, v, r, mask = attention_inputs(B, H, Hkv, N, d, dtype, seed, padding)
    if scale_r:
        r = scale_attention_relevance(q, k, v, r, causal, mask)
    eps = EPS[dtype]
    return (
        lambda: K_ATTN(q, k, v, r, rule, causal, mask, None, eps),
        lambda: attention_relevance_ref(q, k, v, r, rule, causal, mask, None, eps, upcast=False),
        lambda: attention_relevance_ref(q.double(), k.double(), v.double(), r.double(), rule, causal, mask, None, eps),
    )


# ------------------------------------------------------------------------------------------------------------------
# correctness
# ------------------------------------------------------------------------------------------------------------------
def linear_variants(shape, shape_label, dt):
    """``(label, make)`` of every linear rule variant of ``LINEAR_RULES`` on ``shape``, per implementation of
    ``--linear-impls`` (folded: AlphaBeta and Gamma only; its epsilon and ZPlus are the stacked ones)."""
    return [
        (
            f"{'' if impl == 'fused' else impl + ' '}{name} M,K,N={shape_label}",
            lambda r=rule, n=nonneg, im=impl: linear_case(*shape, dt, r, n, impl=im),
        )
        for impl in LINEAR_IMPLS
        for name, rule, nonneg in LINEAR_RULES
        if not (impl == "folded" and rule in STACKED_ONLY)
    ]


def conv_variants():
    """``(name prefix, rule, x_nonneg, impl)`` of the conv cases: every rule stacked, the sign-split ones folded."""
    return [
        (name if impl == "stacked" else f"folded {name}", rule, nonneg, impl)
        for impl in CONV_IMPLS
        for name, rule, nonneg in LINEAR_RULES
        if not (impl == "folded" and rule in STACKED_ONLY)
    ]


def correctness_cases(groups):
    dts = [torch.float32, torch.bfloat16]
    cases = []
    if "linear" in groups:
        shape = (5, 13, 7) if SMOKE else (384, 520, 260)
        for dt in dts:
            cases += [("linear", label, dt, make) for label, make in linear_variants(shape, str(shape), dt)]
    if "conv" in groups:
        geoms = [(2, 3, 4, 7, 1, 1, 1)] if SMOKE else [(4, 32, 48, 29, 1, 1, 1), (4, 32, 64, 30, 2, 1, 2)]
        for dt in dts:
            for n, c, o, hw, st, pad, grp in geoms:
                for name, rule, nonneg, impl in conv_variants():
                    label = f"{name} {c}->{o} {hw}px s{st} g{grp}"
                    kw = dict(stride=st, padding=pad, groups=grp, impl=impl)
                    cases.append(
                        ("conv", label, dt, lambda a=(n, c, o, hw, dt, rule, nonneg), kw=kw: conv_case(*a, **kw))
                    )
    if "attention" in groups:
        # the kernel variants of the timing section (same head dims / flags: no extra compilation), plus key padding
        specs = (
            [(1, 2, 1, 33, 16, "attnlrp", True, True), (1, 2, 2, 17, 16, "cp", False, False)]
            if SMOKE
            else [
                (1, 4, 4, 1000, 64, "attnlrp", False, False),
                (1, 4, 2, 1000, 128, "attnlrp", True, False),
                (1, 4, 2, 1000, 128, "cp", True, False),
                (2, 4, 2, 777, 128, "attnlrp", True, True),
            ]
        )
        for dt in dts:
            for B, H, Hkv, N, d, rule, causal, pad in specs:
                if dt == torch.float32 and not SMOKE and (pad or d != 64):
                    continue  # fp32: one variant (each extra variant compiles ~12 more kernel configs)
                label = f"{rule} B{B} H{H}/{Hkv} N{N} d{d}{' causal' if causal else ''}{' pad' if pad else ''}"
                cases.append(
                    (
                        "attention",
                        label,
                        dt,
                        lambda a=(B, H, Hkv, N, d, dt, rule, causal, pad): attention_case(*a),
                    )
                )
    return cases


def run_correctness(groups):
    rows, failed = [], 0
    for group, label, dt, make in correctness_cases(groups):
        try:
            kern, _, ref64 = make()
            out = kern()
            ref = ref64()
            outs = out if isinstance(out, tuple) else (out,)
            refs = ref if isinstance(ref, tuple) else (ref,)
            errs = [rel_err(a, b) for a, b in zip(outs, refs) if b.abs().sum() > 0]
            err = max(errs)
            ok = math.isfinite(err) and err <= TOL[dt]
        except Exception as e:  # report and go on
            err, ok = float("nan"), False
            label += f" ({type(e).__name__}: {str(e)[:80]})"
            traceback.print_exc()
        failed += not ok
        rows.append((group, label, DT_NAME[dt], err, TOL[dt], "ok" if ok else "FAIL"))
        print(
            f"[{time.time() - T0:5.0f}s check] {group:9s} {DT_NAME[dt]:4s} {label:45s} "
            f"rel.err {err:.2e} {'ok' if ok else 'FAIL'}",
            flush=True,
        )
    return rows, failed


# ------------------------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------------------------
def peak_extra_mib(fn):
    if DEVICE != "cuda":
        fn()
        return float("nan")
    sync()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    sync()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def measure(fn):
    """(median ms, peak extra MiB) or a string reason (OOM, error)."""
    try:
        fn()  # warm-up call: autotuning / cuDNN algorithm selection
        sync()
        mem = peak_extra_mib(fn)
        if SMOKE:
            return float("nan"), mem
        ms = triton.testing.do_bench(fn, warmup=ARGS.warmup, rep=ARGS.rep, return_mode="median")
        return ms, mem
    except torch.cuda.OutOfMemoryError:
        return "OOM"
    except Exception as e:
        traceback.print_exc()
        return f"error: {type(e).__name__}"
    finally:
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def timing_cases(groups):
    cases = []
    if "linear" in groups:
        shapes = [(8, 24, 16)] if SMOKE else [(4096, 4096, 4096), (8192, 8192, 8192)]
        for dt in (torch.float32, torch.bfloat16):
            for shape in shapes:
                variants = linear_variants(shape, ",".join(map(str, shape)), dt)
                cases += [("linear", label, dt, make, None) for label, make in variants]
    if "attention" in groups:
        specs = (
            [(1, 2, 2, 33, 16, "attnlrp", True)]
            if SMOKE
            else [
                (1, 16, 16, 4096, 64, "attnlrp", False),
                (1, 16, 4, 4096, 128, "attnlrp", True),
                (1, 16, 4, 4096, 128, "cp", True),
                (1, 16, 4, 16384, 128, "attnlrp", True),
                (1, 16, 4, 32768, 128, "attnlrp", True),
            ]
        )
        for B, H, Hkv, N, d, rule, causal in specs:
            dense_bytes = 6 * B * H * N * N * 2  # ~6 live N x N bf16 tensors in the dense reference
            cases.append(
                (
                    "attention",
                    f"{rule} B{B} H{H}/{Hkv} N{N} d{d}{' causal' if causal else ''}",
                    torch.bfloat16,
                    lambda a=(B, H, Hkv, N, d, torch.bfloat16, rule, causal): attention_case(*a, scale_r=False),
                    dense_bytes,
                )
            )
    if "conv" in groups:
        # VGG-16 layers at batch 64: (name, C, O, H=W)
        layers = (
            [("tiny", 3, 4, 8)]
            if SMOKE
            else [
                ("conv1_2", 64, 64, 224),
                ("conv2_2", 128, 128, 112),
                ("conv3_3", 256, 256, 56),
                ("conv4_3", 512, 512, 28),
            ]
        )
        batch = 2 if SMOKE else 64
        plan = [(torch.bfloat16, layers), (torch.float32, layers[1::2] if not SMOKE else layers)]
        for dt, ls in plan:
            for lname, c, o, hw in ls:
                for name, rule, nonneg, impl in conv_variants():
                    cases.append(
                        (
                            "conv",
                            f"{name} {lname} {c}->{o} {hw}px b{batch}",
                            dt,
                            lambda a=(batch, c, o, hw, dt, rule, nonneg), im=impl: conv_case(*a, impl=im),
                            None,
                        )
                    )
    return cases


def run_timings(groups, on_row=None):
    rows = []
    total_mem = torch.cuda.get_device_properties(0).total_memory if DEVICE == "cuda" else float("inf")
    for group, label, dt, make, dense_bytes in timing_cases(groups):
        if time.time() - T0 > ARGS.budget:
            rows.append((group, label, DT_NAME[dt], "skipped (time budget)", "skipped (time budget)"))
            continue
        kern, base, _ = make()
        k_res = measure(kern)
        if dense_bytes is not None and dense_bytes > 0.9 * total_mem:
            b_res = f"skipped (needs ~{dense_bytes / 2**30:.0f} GiB)"
        else:
            b_res = measure(base)
        rows.append((group, label, DT_NAME[dt], k_res, b_res))
        print(
            f"[{time.time() - T0:5.0f}s time]  {group:9s} {DT_NAME[dt]:4s} {label:45s} "
            f"triton {fmt_res(k_res)} | torch {fmt_res(b_res)}",
            flush=True,
        )
        del kern, base
        if on_row is not None:
            on_row(rows)
    return rows


def fmt_res(res):
    if isinstance(res, str):
        return res
    ms, mem = res
    ms_s = "-" if math.isnan(ms) else f"{ms:.3f} ms"
    mem_s = "-" if math.isnan(mem) else f"{mem:.0f} MiB"
    return f"{ms_s}, {mem_s}"


# ------------------------------------------------------------------------------------------------------------------
# torch.compile check
# ------------------------------------------------------------------------------------------------------------------
def compile_check():
    def f(x, w, b, z, r, xc, wc, bc, zc, rc, q, k, v, ro):
        return (
            epsilon_linear(x, w, z, r),
            signsplit_linear(x, w, b, z, r, "gamma"),
            signsplit_conv2d(xc, wc, bc, zc, rc, "alphabeta", padding=1),
            attention_relevance(q, k, v, ro, "attnlrp", causal=True),
        )

    try:
        x, w, b, z, r = linear_inputs(64, 96, 80, torch.float32, 1)
        xc, wc, bc, zc, rc, _ = conv_inputs(2, 16, 16, 12, torch.float32, 1)
        q, k, v, ro, _ = attention_inputs(1, 4, 2, 128, 64, torch.float32, 1)
        ro = scale_attention_relevance(q, k, v, ro, True, None)
        args = (x, w, b, z, r, xc, wc, bc, zc, rc, q, k, v, ro)
        eager = f(*args)
        compiled = torch.compile(f, fullgraph=True)(*args)
        flat_e = [t for o in eager for t in (o if isinstance(o, tuple) else (o,))]
        flat_c = [t for o in compiled for t in (o if isinstance(o, tuple) else (o,))]
        err = max(rel_err(a, b) for a, b in zip(flat_c, flat_e) if b.abs().sum() > 0)
        return ("ok" if err < 1e-3 else "MISMATCH") + f" (max rel.err vs eager {err:.1e})"
    except Exception as e:
        traceback.print_exc()
        return f"FAILED: {type(e).__name__}: {str(e)[:200]}"


# ------------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------------
def render(check_rows, n_failed, time_rows, compile_result, elapsed):
    dev = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (TRITON_INTERPRET=1, smoke run)"
    lines = [
        "# LRP Triton kernels: GPU benchmark",
        "",
        f"- device: {dev}; torch {torch.__version__}; triton {triton.__version__}; python {platform.python_version()}",
        "- timings: `triton.testing.do_bench` median; torch column = the rule written the straightforward way in",
        "  torch (`*_ref(..., upcast=False)`); peak = `torch.cuda.max_memory_allocated` of one call above the memory",
        "  allocated before it (inputs excluded); fp32 timings with TF32 enabled on both sides (matmul and cuDNN).",
        "- rule suffix `+`: `x_nonneg=True` (input known non-negative, x- terms skipped, on both sides).",
        '- `gamma pos`: `rule="gamma+"`, Gamma\'s positive half (a layer before a ReLU: no z- block, both sides).',
        f"- total script time: {elapsed:.0f} s",
        "",
        f"## Correctness vs float64 reference ({len(check_rows) - n_failed}/{len(check_rows)} ok)",
        "",
        "| kernel | case | dtype | rel. error | tol | |",
        "|---|---|---|---|---|---|",
    ]
    for group, label, dt, err, tol, status in check_rows:
        lines.append(f"| {group} | {label} | {dt} | {err:.2e} | {tol:.0e} | {status} |")
    if time_rows:
        lines += [
            "",
            "## Timings",
            "",
            "| kernel | case | dtype | triton ms | torch ms | speed-up | triton peak MiB | torch peak MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for group, label, dt, k_res, b_res in time_rows:
            k_ms, k_mem = (k_res, k_res) if isinstance(k_res, str) else k_res
            b_ms, b_mem = (b_res, b_res) if isinstance(b_res, str) else b_res

            def f(v, fmt):
                return v if isinstance(v, str) else ("-" if math.isnan(v) else format(v, fmt))

            speed = "-"
            if not isinstance(k_ms, str) and not isinstance(b_ms, str) and not math.isnan(k_ms) and k_ms > 0:
                speed = f"{b_ms / k_ms:.2f}x"
            lines.append(
                f"| {group} | {label} | {dt} | {f(k_ms, '.3f')} | {f(b_ms, '.3f')} | {speed} | "
                f"{f(k_mem, '.0f')} | {f(b_mem, '.0f')} |"
            )
    lines += ["", f"torch.compile check (Inductor, fullgraph, fp32): {compile_result}", ""]
    return "\n".join(lines)


def main():
    groups = {g.strip() for g in ARGS.only.split(",") if g.strip()}
    unknown = groups - {"linear", "conv", "attention"}
    if unknown:
        sys.exit(f"unknown --only groups: {sorted(unknown)}")
    if not SMOKE and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or use --smoke for a CPU check")
    torch.manual_seed(ARGS.seed)

    out = ARGS.out
    if out is None:
        out = (
            os.path.join(tempfile.gettempdir(), "gpu_kernels_smoke.md")
            if SMOKE
            else os.path.join(ROOT, "docs", "gpu_kernels_table.md")
        )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def write(check_rows, n_failed, time_rows, compile_result):
        # rewritten after every section and timing row: a run cut short still leaves its results
        table = render(check_rows, n_failed, time_rows, compile_result, time.time() - T0)
        with open(out, "w") as fh:
            fh.write(table)
        return table

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    check_rows, n_failed = run_correctness(groups)
    write(check_rows, n_failed, [], "pending")

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    time_rows = run_timings(groups, lambda rows: write(check_rows, n_failed, rows, "pending"))

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if SMOKE or ARGS.no_compile_check:
        compile_result = "not run" + (" (smoke run on CPU)" if SMOKE else "")
    elif time.time() - T0 > ARGS.budget:
        compile_result = "not run (time budget)"
    else:
        write(check_rows, n_failed, time_rows, "running (if this stays, it did not finish)")
        compile_result = compile_check()
    print(f"[compile] {compile_result}")
    table = write(check_rows, n_failed, time_rows, compile_result)
    print()
    print(table)
    print(f"written to {out}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
