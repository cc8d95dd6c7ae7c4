"""Linear-layer kernels: Triton vs torch reference, torch reference vs an independent float64 formula, conservation."""

import pytest
import torch
from _kernel_test_utils import EPS, TOL, assert_close_rel

import kernels
from kernels import (
    epsilon_linear,
    epsilon_linear_ref,
    epsilon_linear_stacked_triton,
    epsilon_linear_triton,
    signsplit_linear,
    signsplit_linear_ref,
    signsplit_linear_stacked_triton,
    signsplit_linear_triton,
)

SHAPES = [(5, 13, 7), (40, 35, 50), (1, 16, 16)]  # (M, K, N)
RULES = ["zplus", "alphabeta", "gamma", "gamma+"]  # gamma+: gamma's positive half (before a ReLU)


def make_linear(M, K, N, dtype, device="cpu", bias=True, nonneg=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g, dtype=torch.float64)
    if nonneg:
        x = x.relu()
    w = torch.randn(N, K, generator=g, dtype=torch.float64) / K**0.5
    b = torch.randn(N, generator=g, dtype=torch.float64) * 0.1 if bias else None
    z = x @ w.T + (b if b is not None else 0)
    r = torch.randn(M, N, generator=g, dtype=torch.float64)

    def cast(t):
        return None if t is None else t.to(device=device, dtype=dtype)

    return cast(x), cast(w), cast(b), cast(z), cast(r)


# ---------------------------------------------------------------------------------------------------------------
# independent dense float64 formulas: explicit contributions c[m, n, k] = x[m, k] * W[n, k]
# ---------------------------------------------------------------------------------------------------------------
def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def dense_linear(x, w, b, z, r, rule, alpha=2.0, beta=1.0, gamma=0.25, eps=1e-6):
    c = torch.einsum("mk,nk->mnk", x, w)
    b = torch.zeros(w.shape[0], dtype=x.dtype) if b is None else b
    c_pos, c_neg = c.clamp(min=0), c.clamp(max=0)
    if rule == "epsilon":
        return torch.einsum("mnk,mn->mk", c, r / _stab(c.sum(-1) + b, eps))
    if rule == "zplus":
        zp = c_pos.sum(-1) + b.clamp(min=0)
        return torch.einsum("mnk,mn->mk", c_pos, r / _stab(zp, eps))
    if rule == "alphabeta":
        zp = c_pos.sum(-1) + b.clamp(min=0)
        zn = c_neg.sum(-1) + b.clamp(max=0)
        return alpha * torch.einsum("mnk,mn->mk", c_pos, r / _stab(zp, eps)) - beta * torch.einsum(
            "mnk,mn->mk", c_neg, r / _stab(zn, eps)
        )
    assert rule in ("gamma", "gamma+")  # gamma+ keeps the positive half only
    cp, cn = c + gamma * c_pos, c + gamma * c_neg
    zp = cp.sum(-1) + b + gamma * b.clamp(min=0)
    zn = cn.sum(-1) + b + gamma * b.clamp(max=0)
    sp = (z > 0) * r / _stab(zp, eps)
    sn = (z < 0) * r / _stab(zn, eps) if rule == "gamma" else torch.zeros_like(r)
    return torch.einsum("mnk,mn->mk", cp, sp) + torch.einsum("mnk,mn->mk", cn, sn)


def test_stab_convention():
    z = torch.tensor([-2.0, -0.0, 0.0, 3.0], dtype=torch.float64)
    assert kernels.stab(z, 0.5).tolist() == [-2.5, 0.5, 0.5, 3.5]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rule", ["epsilon", *RULES])
def test_reference_matches_dense_formula(rule, bias):
    x, w, b, z, r = make_linear(6, 9, 5, torch.float64, bias=bias)
    dense = dense_linear(x, w, b, z, r, rule, alpha=1.5, beta=0.5, gamma=0.3, eps=1e-3)
    if rule == "epsilon":
        ref = epsilon_linear_ref(x, w, z, r, eps=1e-3)
    else:
        ref = signsplit_linear_ref(x, w, b, z, r, rule, alpha=1.5, beta=0.5, gamma=0.3, eps=1e-3)
    torch.testing.assert_close(ref, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_reference_x_nonneg_drops_negative_terms(rule):
    x, w, b, z, r = make_linear(6, 9, 5, torch.float64, nonneg=True)
    full = signsplit_linear_ref(x, w, b, z, r, rule)
    skip = signsplit_linear_ref(x, w, b, z, r, rule, x_nonneg=True)
    torch.testing.assert_close(skip, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("launch", [epsilon_linear_triton, epsilon_linear_stacked_triton], ids=["fused", "stacked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_epsilon_linear_triton(device, shape, dtype, launch):
    x, w, b, z, r = make_linear(*shape, dtype, device)
    out = launch(x, w, z, r, EPS[dtype])
    assert out.dtype == dtype
    assert_close_rel(out, epsilon_linear_ref(x, w, z, r, EPS[dtype]), TOL[dtype])


def test_epsilon_linear_triton_strided(device):
    x, w, b, z, r = make_linear(11, 19, 23, torch.float32, device)
    xt = x.T.contiguous().T  # column-major
    wt = w.T.contiguous().T
    rt = r.T.contiguous().T
    out = epsilon_linear_triton(xt, wt, z, rt, 1e-6)
    assert_close_rel(out, epsilon_linear_ref(x, w, z, r, 1e-6), TOL[torch.float32])


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_linear_triton(device, rule, dtype, bias, nonneg):
    x, w, b, z, r = make_linear(5, 13, 7, dtype, device, bias=bias, nonneg=nonneg, seed=1)
    kw = dict(alpha=2.0, beta=1.0, gamma=0.25, eps=EPS[dtype], x_nonneg=nonneg)
    out = signsplit_linear_triton(x, w, b, z, r, rule, **kw)
    assert out.dtype == dtype
    assert_close_rel(out, signsplit_linear_ref(x, w, b, z, r, rule, **kw), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_linear_triton_multi_tile(device, rule, dtype):
    x, w, b, z, r = make_linear(40, 35, 50, dtype, device, seed=2)
    kw = dict(alpha=1.5, beta=0.5, gamma=0.5, eps=EPS[dtype])
    out = signsplit_linear_triton(x, w, b, z, r, rule, **kw)
    assert_close_rel(out, signsplit_linear_ref(x, w, b, z, r, rule, **kw), TOL[dtype])


def test_signsplit_linear_triton_strided(device):
    x, w, b, z, r = make_linear(9, 21, 17, torch.float32, device, seed=3)
    out = signsplit_linear_triton(x.T.contiguous().T, w.T.contiguous().T, b, z.T.contiguous().T, r, "gamma")
    assert_close_rel(out, signsplit_linear_ref(x, w, b, z, r, "gamma"), TOL[torch.float32])


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "alphabeta"])
def test_conservation_triton(device, rule):
    # zero bias, positive x: sum R_x = sum R (epsilon and AlphaBeta(2, 1): alpha - beta = 1)
    x, w, _, z, r = make_linear(8, 24, 12, torch.float32, device, bias=False, nonneg=True, seed=4)
    x = x + 0.01
    z = x @ w.T
    if rule == "epsilon":
        out = epsilon_linear_triton(x, w, z, r, 1e-9)
    else:
        out = signsplit_linear_triton(x, w, None, z, r, rule, eps=1e-9)
    torch.testing.assert_close(out.sum(1), r.sum(1), rtol=1e-4, atol=1e-4)


def test_conservation_gamma_reference():
    x, w, _, z, r = make_linear(8, 24, 12, torch.float64, bias=False, seed=5)
    out = signsplit_linear_ref(x, w, None, z, r, "gamma", eps=1e-12)
    torch.testing.assert_close(out.sum(1), (r * (z != 0)).sum(1), rtol=1e-9, atol=1e-9)


def test_ops_dispatch_cpu_to_reference():
    # public functions on CPU tensors go through torch.ops.lrp_kernels.* and the torch reference
    x, w, b, z, r = make_linear(6, 5, 4, torch.float64)
    x3, z3, r3 = x.reshape(2, 3, 5), z.reshape(2, 3, 4), r.reshape(2, 3, 4)
    out = epsilon_linear(x3, w, z3, r3, 1e-4)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out.reshape(6, 5), epsilon_linear_ref(x, w, z, r, 1e-4))
    for rule in RULES:
        out = signsplit_linear(x3, w, b, z3, r3, rule)
        torch.testing.assert_close(out.reshape(6, 5), signsplit_linear_ref(x, w, b, z, r, rule))


def test_signsplit_linear_errors():
    x, w, b, z, r = make_linear(3, 4, 5, torch.float32)
    with pytest.raises(ValueError):
        signsplit_linear(x, w, b, z, r, "nope")
    with pytest.raises(ValueError):
        signsplit_linear_triton(x, w, b, None, r, "gamma")
    with pytest.raises(ValueError):
        signsplit_linear_triton(x, w[:, :3], b, z, r, "zplus")


@pytest.mark.gpu
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_linear_cuda_large(rule):
    x, w, b, z, r = make_linear(300, 520, 260, torch.bfloat16, "cuda", seed=6)
    out = signsplit_linear(x, w, b, z, r, rule, eps=1e-2)
    assert_close_rel(out, signsplit_linear_ref(x, w, b, z, r, rule, eps=1e-2), TOL[torch.bfloat16])


# ---------------------------------------------------------------------------------------------------------------
# the stacked implementation (cuBLAS GEMMs + the fused elementwise kernels of conv2d.py)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folded", [False, True], ids=["stacked", "folded"])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_linear_stacked(device, rule, dtype, bias, nonneg, folded):
    """Both library-GEMM pipelines: stacked, and folded (kernels/signsplit_folded.py)."""
    x, w, b, z, r = make_linear(40, 35, 50, dtype, device, bias=bias, nonneg=nonneg, seed=2)
    kw = dict(alpha=1.5, beta=0.5, gamma=0.3, eps=EPS[dtype], x_nonneg=nonneg)
    out = signsplit_linear_stacked_triton(x, w, b, z, r, rule, folded=folded, **kw)
    assert out.dtype == dtype
    assert_close_rel(out, signsplit_linear_ref(x, w, b, z, r, rule, **kw), TOL[dtype])


def test_stacked_and_fused_linear_kernels_agree_with_the_dense_formula(device):
    x, w, b, z, r = make_linear(7, 11, 9, torch.float32, device, seed=3)
    dense = dense_linear(*(t.double().cpu() for t in (x, w, b, z, r)), "alphabeta", eps=1e-6)
    for fn in (signsplit_linear_stacked_triton, signsplit_linear_triton):
        out = fn(x, w, b, z, r, "alphabeta", eps=1e-6).double().cpu()
        torch.testing.assert_close(out, dense, rtol=1e-4, atol=1e-5)


def test_linear_implementation_switch_is_validated(monkeypatch):
    from kernels._common import linear_impl

    monkeypatch.delenv("LRP_FX_LINEAR_KERNEL", raising=False)
    assert linear_impl() == "fused"
    monkeypatch.setenv("LRP_FX_LINEAR_KERNEL", "Stacked")
    assert linear_impl() == "stacked"
    monkeypatch.setenv("LRP_FX_LINEAR_KERNEL", "folded")
    assert linear_impl() == "folded"
    monkeypatch.setenv("LRP_FX_LINEAR_KERNEL", "cublas")
    with pytest.raises(ValueError, match="LRP_FX_LINEAR_KERNEL"):
        linear_impl()
