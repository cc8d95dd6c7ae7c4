"""The folded sign-split pipeline (kernels/signsplit_folded.py, the stacked launchers' ``folded=True``) beyond the
shared parametrised tests of ``test_kernels_linear.py`` / ``test_kernels_conv2d.py``."""

import pytest
import torch
from _kernel_test_utils import TOL, assert_close_rel
from test_kernels_linear import dense_linear, make_linear

from kernels import signsplit_linear_stacked_triton


def signsplit_linear_folded_triton(*args, **kw):
    return signsplit_linear_stacked_triton(*args, folded=True, **kw)


def test_folded_alphabeta_computes_the_output_it_is_not_given(device):
    x, w, b, z, r = make_linear(9, 12, 10, torch.float32, device, seed=4)
    given = signsplit_linear_folded_triton(x, w, b, z, r, "alphabeta")
    computed = signsplit_linear_folded_triton(x, w, b, None, r, "alphabeta")
    assert_close_rel(computed, given, TOL[torch.float32])


def test_folded_linear_agrees_with_the_dense_formula(device):
    x, w, b, z, r = make_linear(7, 11, 9, torch.float32, device, seed=3)
    for rule in ("alphabeta", "gamma"):
        dense = dense_linear(*(t.double().cpu() for t in (x, w, b, z, r)), rule, eps=1e-6)
        out = signsplit_linear_folded_triton(x, w, b, z, r, rule, eps=1e-6).double().cpu()
        torch.testing.assert_close(out, dense, rtol=1e-4, atol=1e-5)


def test_folded_linear_after_relu_is_exact_where_z_minus_is_only_the_stabiliser(device):
    """An output with only positive weights: z- = 0, its factor beta R / eps ~ 1e6 R. With x >= 0 the folded
    pipeline multiplies it by the weights' exact zeros (stacked [W+; W-]), as the reference does."""
    x, w, _, _, r = make_linear(6, 8, 5, torch.float32, device, bias=False, nonneg=True, seed=5)
    w[0] = w[0].abs()
    z = x @ w.T
    kw = dict(x_nonneg=True, eps=1e-6)
    out = signsplit_linear_folded_triton(x, w, None, z, r, "alphabeta", **kw)
    ref = signsplit_linear_stacked_triton(x, w, None, z, r, "alphabeta", **kw)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_folded_checks_its_inputs(device):
    x, w, b, z, r = make_linear(5, 13, 7, torch.float32, device)
    with pytest.raises(ValueError, match="z"):
        signsplit_linear_folded_triton(x, w, b, z[:, :3], r, "alphabeta")
    with pytest.raises(ValueError, match="gamma rule needs"):
        signsplit_linear_folded_triton(x, w, b, None, r, "gamma")


def test_a_strided_bias_is_read_by_its_strides(device):
    """``F.linear(x, W, B[:, 0])``: the fused kernel and the folded scale kernel read the bias as contiguous (off by
    up to 90 and 3e4 before), the stacked pipeline by reshape. Every path equals the reference."""
    from kernels import signsplit_conv2d_ref, signsplit_conv2d_triton, signsplit_linear_ref, signsplit_linear_triton

    x, w, _, _, r = make_linear(5, 6, 4, torch.float32, device, seed=6)
    b = torch.randn(4, 2, device=device)[:, 0]
    assert not b.is_contiguous()
    z = x @ w.T + b
    for rule in ("alphabeta", "gamma"):
        ref = signsplit_linear_ref(x, w, b, z, r, rule)
        assert_close_rel(signsplit_linear_triton(x, w, b, z, r, rule), ref, TOL[torch.float32])
        assert_close_rel(signsplit_linear_folded_triton(x, w, b, z, r, rule), ref, TOL[torch.float32])
    xc, wc = torch.randn(2, 3, 5, 5, device=device), torch.randn(4, 3, 3, 3, device=device)
    bc = torch.randn(4, 2, device=device)[:, 1]
    zc = torch.nn.functional.conv2d(xc, wc, bc, 1, 1)
    rc = torch.randn_like(zc)
    ref = signsplit_conv2d_ref(xc, wc, bc, zc, rc, "alphabeta", padding=1)
    out = signsplit_conv2d_triton(xc, wc, bc, zc, rc, "alphabeta", padding=1, folded=True)
    assert_close_rel(out, ref, TOL[torch.float32])
