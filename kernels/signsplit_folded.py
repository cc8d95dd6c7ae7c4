r"""AlphaBeta and Gamma for linear layers and convolutions with fewer library products.

Why
===
The sign-split rules are sums over sign combinations. Written out (``linear_signsplit.py``, and the stacked
pipeline of ``conv2d.py``) AlphaBeta and Gamma on a mixed-sign input take four products of the layer for the
denominators ``z+``/``z-`` and four transposed products for the relevance; with ``x >= 0`` two and two. On a GPU
those products are cuBLAS/cuDNN calls that no kernel of ours beats (``docs/gpu.md``), so the way to a faster rule is
fewer of them. The same algebra as the library's torch path (``lrp_fx/rules/linear.py::_signsplit_folded``):

* ``z'`` = the layer's output less its bias (the caller has it: ``z``) and ``P = sum (x w)+`` =
  ``f(x; W+)`` when ``x >= 0``, else ``(z' + f(|x|; |W|)) / 2``: **one** product for both denominators,
  ``z+ = a z' + c P + b1`` and ``z- = a z' + c (z' - P) + b2`` (``(a, c) = (0, 1)`` AlphaBeta, ``(1, gamma)`` Gamma,
  ``b1 = a b + c b+``, ``b2 = a b + c b-``). ``P >= 0`` and ``z' - P <= 0`` are enforced against rounding.
* relevance: the stacked pipeline's transposed products (``[W1; W2]`` with ``x >= 0``, the 2x2 block weight
  otherwise), except Gamma on a mixed-sign input, which folds its four into two,
  ``x ((a + c/2) S W) + |x| ((c/2) D |W|)`` with ``S = s+ + s-``, ``D = s+ - s-``. The fold cancels terms instead of
  skipping them. Gamma's numerators ``x w + gamma (x w)+-`` lose only ``gamma/2 |x w|`` to that, but an AlphaBeta
  numerator is a sum of one sign, exactly zero where its factor ``beta R / eps`` can be ~1e6 R (an output whose
  contributions all have one sign, common with small fan-in: depthwise convolutions, padded borders), so AlphaBeta
  keeps the exact products.

Products of the layer per call, mixed-sign input / ``x >= 0``: AlphaBeta 5 / 3, Gamma 3 / 3, against 8 / 4
stacked. Pipeline: [torch ``|x|``, ``|W|`` or ``W+``] -> one library product ``P`` -> one Triton kernel (bias,
denominators, stabilised division, masks, fold) -> library transposed products -> one Triton combine. ZPlus has no
second denominator to share a product with; it stays on the stacked pipeline.

Maths of the results: ``signsplit_linear_ref`` / ``signsplit_conv2d_ref`` (same results up to rounding).
"""

import torch
import triton
import triton.language as tl

from ._common import launcher, stab_tl
from .conv2d import (
    _EW_BLOCK,
    _EW_WARPS,
    ONE_SIDED,
    RULES,
    _combine,
    _ew_grid,
    _sign_split,
    signsplit_stacked,
    stacked_weight,
)

__all__ = ["signsplit_folded"]


@triton.jit
def _folded_scale_kernel(
    z_ptr,
    b_ptr,
    p_ptr,
    r_ptr,
    s_ptr,
    INNER,
    N_BLOCKS,
    SPATIAL,
    GROUPS,
    OG,
    ROW_STRIDE,
    PART_OFFSET,
    alpha,
    beta,
    gamma,
    eps,
    RULE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    MIXED: tl.constexpr,
    FOLD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """z, p, R [rows, INNER] (row = one group of one sample, INNER = OG channels x SPATIAL), bias [channels] -> s1, s2.

    RULE 1 (alphabeta): s1 = alpha R / (z+ + eps), s2 = beta R / (eps - z-) (z- <= 0); 2 (gamma):
    s1 = [z > 0] R / stab(z+), s2 = [z < 0] R / stab(z-). ``MIXED``: ``p`` holds f(|x|; |W|), else f(x; W+).
    ``FOLD``: the kernel writes the fold's ``(a + c/2)(s1 + s2)`` and ``(c/2)(s1 - s2)`` instead of s1, s2.
    Output part ``j`` of row ``r`` at ``s_ptr + r * ROW_STRIDE + j * PART_OFFSET``.
    """
    pid = tl.program_id(0)
    row = (pid // N_BLOCKS).to(tl.int64)
    offs = (pid % N_BLOCKS) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INNER
    base = row * INNER + offs
    z = tl.load(z_ptr + base, mask=mask, other=1.0).to(tl.float32)
    p = tl.load(p_ptr + base, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + base, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        ch = (row % GROUPS) * OG + offs // SPATIAL  # a row is one group (OG channels x SPATIAL) of one sample
        b = tl.load(b_ptr + ch, mask=mask, other=0.0).to(tl.float32)
    else:
        b = tl.zeros_like(z)
    zb = z - b
    if MIXED:
        p = tl.maximum((zb + p) * 0.5, 0.0)
    n = tl.minimum(zb - p, 0.0)
    if RULE == 1:
        z1 = p + tl.maximum(b, 0.0)
        z2 = n + tl.minimum(b, 0.0)
        s1 = alpha * r / (z1 + eps)
        s2 = beta * r / (eps - z2)
        a = 0.0
        c = 1.0
    else:
        z1 = zb + gamma * p + b + gamma * tl.maximum(b, 0.0)
        z2 = zb + gamma * n + b + gamma * tl.minimum(b, 0.0)
        s1 = tl.where(z > 0, r / stab_tl(z1, eps), 0.0)
        s2 = tl.where(z < 0, r / stab_tl(z2, eps), 0.0)
        a = 1.0
        c = gamma
    if FOLD:
        first = (a + 0.5 * c) * (s1 + s2)
        second = 0.5 * c * (s1 - s2)
    else:
        first = s1
        second = s2
    out = s_ptr + row * ROW_STRIDE + offs
    tl.store(out, first.to(s_ptr.dtype.element_ty), mask=mask)
    tl.store(out + PART_OFFSET, second.to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _combine_folded_kernel(x_ptr, gw_ptr, ga_ptr, out_ptr, N, BLOCK: tl.constexpr):
    """out = x * g_w + |x| * g_abs, all flat [N]."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    gw = tl.load(gw_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    ga = tl.load(ga_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x * gw + tl.abs(x) * ga).to(out_ptr.dtype.element_ty), mask=mask)


def signsplit_folded(x, weight, bias, z, relevance, rule, params, x_nonneg, groups, forward, transpose, wrap):
    """The folded pipeline, shared by linear layers and convolutions (arguments as ``conv2d.signsplit_stacked``).

    ``z`` is the layer's output ``f(x; W, b)``; without it one more product computes it. ZPlus and ``gamma+`` go to
    the stacked pipeline: one denominator, nothing to share a product with.
    """
    if rule in ONE_SIDED:
        return signsplit_stacked(
            x, weight, bias, z, relevance, rule, params, x_nonneg, groups, forward, transpose, wrap
        )
    alpha, beta, gamma, eps = params
    x, relevance = x.contiguous(), relevance.contiguous()
    z = (forward(x, weight, bias) if z is None else z).contiguous()
    rows = x.shape[0] * groups
    inner_in = x[0].numel() // groups
    inner_out = relevance[0].numel() // groups
    og = relevance.shape[1] // groups
    spatial = inner_out // og
    fold = rule == "gamma" and not x_nonneg
    if x_nonneg:
        p = forward(x, weight.clamp(min=0), None).contiguous()
    else:
        w_abs = weight.abs()
        p = forward(x.abs(), w_abs, None).contiguous()
    if fold:
        s = torch.empty((2, *relevance.shape), dtype=x.dtype, device=x.device)
        row_stride, part = inner_out, relevance.numel()  # two tensors shaped like the output
    else:
        s = torch.empty((x.shape[0], 2 * relevance.shape[1], *relevance.shape[2:]), dtype=x.dtype, device=x.device)
        row_stride, part = 2 * inner_out, inner_out  # [rows, (s1, s2), inner]: the stacked weight's output blocks
    grid, n_blocks = _ew_grid(rows, inner_out)
    launcher(_folded_scale_kernel, wrap)[grid](
        z,
        bias.contiguous() if bias is not None else z,  # read as contiguous
        p,
        relevance,
        s,
        inner_out,
        n_blocks,
        spatial,
        groups,
        og,
        row_stride,
        part,
        float(alpha),
        float(beta),
        float(gamma),
        float(eps),
        RULE=RULES[rule],
        HAS_BIAS=bias is not None,
        MIXED=not x_nonneg,
        FOLD=fold,
        BLOCK=_EW_BLOCK,
        num_warps=_EW_WARPS,
    )
    if not fold:  # the stacked pipeline's backward: exact zeros stay exact (see the module docstring)
        x_in = x if x_nonneg else _sign_split(x, rows, inner_in, wrap)
        g = transpose(x_in, stacked_weight(weight, rule, gamma, groups, x_nonneg), s).contiguous()
        if x_nonneg:
            return _combine(x, g, g, rows, inner_in, False, wrap)
        return _combine(x, g, torch.empty_like(x), rows, inner_in, True, wrap)
    g_w = transpose(x, weight, s[0]).contiguous()
    g_abs = transpose(x, w_abs, s[1]).contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    launcher(_combine_folded_kernel, wrap)[(triton.cdiv(n, _EW_BLOCK),)](
        x, g_w, g_abs, out, n, BLOCK=_EW_BLOCK, num_warps=_EW_WARPS
    )
    return out
