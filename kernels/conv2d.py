r"""Epsilon and sign-split (ZPlus, AlphaBeta, Gamma) LRP for ``conv2d``: cuDNN GEMMs + fused Triton elementwise kernels.

Maths
=====
``z = conv2d(x, W, b)`` (NCHW, stride/padding/dilation/groups), relevance ``R`` at the output. ``@ W`` of the linear
rules becomes the transposed convolution ``conv2d_input(x.shape, W, .)`` (the input-gradient of the convolution).

* epsilon: ``R_x = x * conv2d_input(R / stab(z), W)``.
* sign-split rules, with the weight pair ``(W1, W2)`` and bias pair ``(b1, b2)`` of ``signsplit_linear``
  (zplus/alphabeta: ``(W+, W-)``, ``(b+, b-)``; gamma: ``(W + gamma W+, W + gamma W-)``,
  ``(b + gamma b+, b + gamma b-)``):

  .. math::

      z^+ = \mathrm{conv}(x^+, W_1) + \mathrm{conv}(x^-, W_2) + b_1, \qquad
      z^- = \mathrm{conv}(x^+, W_2) + \mathrm{conv}(x^-, W_1) + b_2

      R^x = x^+ \odot \mathrm{conv}^T(s^+, W_1) + x^+ \odot \mathrm{conv}^T(s^-, W_2)
          + x^- \odot \mathrm{conv}^T(s^+, W_2) + x^- \odot \mathrm{conv}^T(s^-, W_1)

  with ``s+``/``s-`` as in ``signsplit_linear`` (zplus: ``R / stab(z+)``; alphabeta: ``alpha R / stab(z+)``,
  ``-beta R / stab(z-)``; gamma: ``[o > 0] R / stab(z+)``, ``[o < 0] R / stab(z-)``). ``gamma+`` is gamma's
  positive half alone, ``s- = 0``: gamma where ``R`` vanishes wherever ``o < 0`` (a layer before a ReLU), which
  needs neither ``z-`` nor the products with ``s-``.

Structure
=========
The four convolutions of a sign-split rule are one convolution over *channel-stacked* tensors: the input
``[x+, x-]`` (2C channels) and the block weight

.. code-block:: text

    W_stack = [[W1, W2],     # output block z+  (columns: input blocks x+, x-)
               [W2, W1]]     # output block z-

so ``conv2d([x+, x-], W_stack)`` yields ``[z+, z-]`` and ``conv2d_input(., W_stack, [s+, s-])`` yields
``[s+ W1 + s- W2, s+ W2 + s- W1]``, the two factors of ``x+`` and ``x-``. With groups the blocks are stacked inside
each group, so the stacked convolution keeps ``groups``. ZPlus and ``gamma+`` drop the ``z-`` block, ``x_nonneg`` the
``x-`` block.

The convolutions run in cuDNN (``torch.nn.functional.conv2d`` and ``torch.nn.grad.conv2d_input``); the LRP-specific
work is elementwise and memory-bound, and runs in three fused Triton kernels:

* ``_sign_split_kernel``: ``x -> [x+, x-]`` (one read of x, one write of the stacked tensor);
* ``_relevance_scale_kernel``: ``[z+, z-], R, o -> [s+, s-]`` (stabilised division, alpha/beta or sign masks), in place;
* ``_combine_kernel``: ``x, [g+, g-] -> x+ g+ + x- g-`` (or ``x * g`` for one block).

All three see a tensor as ``rows x parts x inner`` (``rows = batch * groups``, ``inner = channels/groups * H * W``), the
layout of NCHW tensors whose channels are stacked per group.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import (
    GAMMAS,
    INTERPRET,
    RULES,
    check_triton_inputs,
    compute_dtype,
    conv_impl,
    launcher,
    stab,
    stab_tl,
    triton_op,
    use_triton,
)

__all__ = [
    "epsilon_conv2d",
    "epsilon_conv2d_triton",
    "epsilon_conv2d_ref",
    "signsplit_conv2d",
    "signsplit_conv2d_triton",
    "signsplit_conv2d_ref",
]

ONE_SIDED = ("zplus", "gamma+")  # rules without a z- block
_EPSILON = 3  # scale-kernel code: s = R / stab(z), no z- block

# Elementwise kernels are memory-bound: one fixed block configuration, no autotuning (autotuning would also
# re-run the in-place scale kernel on its own output).
_EW_BLOCK = 256 if INTERPRET else 1024
_EW_WARPS = 4


@triton.jit
def _sign_split_kernel(x_ptr, out_ptr, INNER, N_BLOCKS, BLOCK: tl.constexpr):
    """x [rows, INNER] -> out [rows, 2, INNER] = [clamp(x, min=0), clamp(x, max=0)]."""
    pid = tl.program_id(0)
    row = (pid // N_BLOCKS).to(tl.int64)
    offs = (pid % N_BLOCKS) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INNER
    x = tl.load(x_ptr + row * INNER + offs, mask=mask, other=0.0)
    base = out_ptr + row * 2 * INNER + offs
    tl.store(base, tl.maximum(x, 0.0).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(base + INNER, tl.minimum(x, 0.0).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _relevance_scale_kernel(
    z_ptr, r_ptr, o_ptr, s_ptr, INNER, N_BLOCKS, alpha, beta, eps, RULE: tl.constexpr, BLOCK: tl.constexpr
):
    """z [rows, P, INNER] (P = 1 for zplus/epsilon, 2 otherwise), R and o [rows, INNER] -> s [rows, P, INNER].

    RULE 0 (zplus) / 3 (epsilon): s = R / stab(z); 1 (alphabeta): [alpha R / stab(z+), -beta R / stab(z-)];
    2 (gamma): [(o > 0) R / stab(z+), (o < 0) R / stab(z-)]; 4 (gamma+): (o > 0) R / stab(z+).
    ``s_ptr`` may equal ``z_ptr`` (in place).
    """
    pid = tl.program_id(0)
    row = (pid // N_BLOCKS).to(tl.int64)
    offs = (pid % N_BLOCKS) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INNER
    r = tl.load(r_ptr + row * INNER + offs, mask=mask, other=0.0).to(tl.float32)
    if RULE == 0 or RULE == 3 or RULE == 4:
        z = tl.load(z_ptr + row * INNER + offs, mask=mask, other=1.0).to(tl.float32)
        s = r / stab_tl(z, eps)
        if RULE == 4:
            o = tl.load(o_ptr + row * INNER + offs, mask=mask, other=0.0).to(tl.float32)
            s = tl.where(o > 0, s, 0.0)
        tl.store(s_ptr + row * INNER + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
    else:
        zbase = row * 2 * INNER + offs
        z_p = tl.load(z_ptr + zbase, mask=mask, other=1.0).to(tl.float32)
        z_n = tl.load(z_ptr + zbase + INNER, mask=mask, other=1.0).to(tl.float32)
        s_p = r / stab_tl(z_p, eps)
        s_n = r / stab_tl(z_n, eps)
        if RULE == 1:
            s_p = alpha * s_p
            s_n = -beta * s_n
        else:
            o = tl.load(o_ptr + row * INNER + offs, mask=mask, other=0.0).to(tl.float32)
            s_p = tl.where(o > 0, s_p, 0.0)
            s_n = tl.where(o < 0, s_n, 0.0)
        tl.store(s_ptr + zbase, s_p.to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(s_ptr + zbase + INNER, s_n.to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _combine_kernel(x_ptr, g_ptr, out_ptr, INNER, N_BLOCKS, TWO: tl.constexpr, BLOCK: tl.constexpr):
    """x [rows, INNER], g [rows, P, INNER] -> out = x+ g[:, 0] + x- g[:, 1] (TWO) or x g[:, 0]. ``out`` may be g."""
    pid = tl.program_id(0)
    row = (pid // N_BLOCKS).to(tl.int64)
    offs = (pid % N_BLOCKS) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INNER
    x = tl.load(x_ptr + row * INNER + offs, mask=mask, other=0.0).to(tl.float32)
    if TWO:
        gbase = row * 2 * INNER + offs
        g_p = tl.load(g_ptr + gbase, mask=mask, other=0.0).to(tl.float32)
        g_n = tl.load(g_ptr + gbase + INNER, mask=mask, other=0.0).to(tl.float32)
        out = tl.maximum(x, 0.0) * g_p + tl.minimum(x, 0.0) * g_n
    else:
        g = tl.load(g_ptr + row * INNER + offs, mask=mask, other=0.0).to(tl.float32)
        out = x * g
    tl.store(out_ptr + row * INNER + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _ew_grid(rows: int, inner: int):
    n_blocks = triton.cdiv(inner, _EW_BLOCK)
    return (rows * n_blocks,), n_blocks


def _sign_split(x: torch.Tensor, rows: int, inner: int, wrap: bool) -> torch.Tensor:
    """``x [N, C, ...]`` -> ``[N, 2C, ...]``, the blocks ``x+``, ``x-`` stacked per group (``rows = N * groups``)."""
    out = torch.empty((x.shape[0], 2 * x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
    grid, n_blocks = _ew_grid(rows, inner)
    launcher(_sign_split_kernel, wrap)[grid](x, out, inner, n_blocks, BLOCK=_EW_BLOCK, num_warps=_EW_WARPS)
    return out


def _relevance_scale(z, relevance, o, out, rows, inner, alpha, beta, eps, code, wrap):
    grid, n_blocks = _ew_grid(rows, inner)
    launcher(_relevance_scale_kernel, wrap)[grid](
        z,
        relevance,
        o,
        out,
        inner,
        n_blocks,
        float(alpha),
        float(beta),
        float(eps),
        RULE=code,
        BLOCK=_EW_BLOCK,
        num_warps=_EW_WARPS,
    )
    return out


def _combine(x, g, out, rows, inner, two, wrap):
    grid, n_blocks = _ew_grid(rows, inner)
    launcher(_combine_kernel, wrap)[grid](x, g, out, inner, n_blocks, TWO=two, BLOCK=_EW_BLOCK, num_warps=_EW_WARPS)
    return out


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_args(stride, padding, dilation):
    return _pair(stride), _pair(padding), _pair(dilation)


def weight_pair(weight: torch.Tensor, rule: str, gamma: float) -> tuple:
    """(W1, W2) of a sign-split rule (works for any parameter tensor, e.g. the bias)."""
    pos, neg = weight.clamp(min=0), weight.clamp(max=0)
    if rule in GAMMAS:
        return weight + gamma * pos, weight + gamma * neg
    return pos, neg


def stacked_weight(weight: torch.Tensor, rule: str, gamma: float, groups: int, x_nonneg: bool) -> torch.Tensor:
    """Block weight of the channel-stacked convolution, shape [groups * P_out * O/g, P_in * C/g, kh, kw].

    Per group: output blocks (z+, z-) x input blocks (x+, x-) = [[W1, W2], [W2, W1]], truncated to P_out = 1 for
    zplus and gamma+ and to P_in = 1 with ``x_nonneg``.
    """
    w1, w2 = weight_pair(weight, rule, gamma)
    o, cg = weight.shape[:2]
    og = o // groups
    v1 = w1.reshape(groups, og, cg, *weight.shape[2:])
    v2 = w2.reshape(groups, og, cg, *weight.shape[2:])
    p_in = 1 if x_nonneg else 2
    rows = [[v1, v2], [v2, v1]][: 1 if rule in ONE_SIDED else 2]
    block = torch.stack([torch.stack(r[:p_in], dim=2) for r in rows], dim=1)  # g, P_out, og, P_in, cg, kh, kw
    return block.reshape(groups * len(rows) * og, p_in * cg, *weight.shape[2:])


def stacked_bias(bias: torch.Tensor | None, rule: str, gamma: float, groups: int) -> torch.Tensor | None:
    """Bias of the stacked convolution: per group (b1, b2), truncated to b1 for zplus and gamma+."""
    if bias is None:
        return None
    b1, b2 = weight_pair(bias, rule, gamma)
    og = bias.shape[0] // groups
    parts = [b1.reshape(groups, og), b2.reshape(groups, og)][: 1 if rule in ONE_SIDED else 2]
    return torch.stack(parts, dim=1).reshape(-1)


def _check_conv(x, weight, z, relevance, groups, rule=None):
    if rule is not None and rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    if x.dim() != 4 or weight.dim() != 4 or relevance.dim() != 4:
        raise ValueError("conv2d LRP expects 4-D NCHW x, weight [O, C/groups, kh, kw] and relevance [N, O, H', W']")
    if x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(f"channels do not match: x {tuple(x.shape)}, weight {tuple(weight.shape)}, groups {groups}")
    if relevance.shape[:2] != (x.shape[0], weight.shape[0]):
        raise ValueError(f"relevance {tuple(relevance.shape)} does not match x {tuple(x.shape)} / weight")
    if z is not None and z.shape != relevance.shape:
        raise ValueError(f"z {tuple(z.shape)} and relevance {tuple(relevance.shape)} differ")


def epsilon_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float = 1e-6,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    _wrap: bool = False,
) -> torch.Tensor:
    """Epsilon rule: fused Triton ``R / stab(z)``, cuDNN ``conv2d_input``, fused Triton ``x * g`` (in place).

    ``_wrap`` is internal (True inside the ``triton_op``: launch through ``torch.library.wrap_triton``).
    """
    _check_conv(x, weight, z, relevance, groups)
    check_triton_inputs(x, weight, z, relevance)
    stride, padding, dilation = _conv_args(stride, padding, dilation)
    x, z, relevance = x.contiguous(), z.contiguous(), relevance.contiguous()
    s = torch.empty_like(relevance)
    _relevance_scale(z, relevance, relevance, s, 1, s.numel(), 1.0, 1.0, eps, _EPSILON, _wrap)
    g = torch.nn.grad.conv2d_input(x.shape, weight, s, stride, padding, dilation, groups).contiguous()
    return _combine(x, g, g, 1, x.numel(), False, _wrap)


def signsplit_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None,
    relevance: torch.Tensor,
    rule: str,
    alpha: float = 2.0,
    beta: float = 1.0,
    gamma: float = 0.25,
    eps: float = 1e-6,
    x_nonneg: bool = False,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    folded: bool = False,
    _wrap: bool = False,
) -> torch.Tensor:
    """Sign-split rule: Triton split -> one stacked cuDNN conv -> Triton scale -> one stacked cuDNN conv2d_input ->
    Triton combine. With ``x_nonneg`` x itself is the (only) input block. ``folded``: the pipeline of
    ``signsplit_folded.py`` instead (fewer convolutions for AlphaBeta and Gamma; ``z`` saves one more). ``_wrap`` is
    internal (see ``epsilon_conv2d_triton``)."""
    zz = z if rule in GAMMAS or folded else None
    _check_conv(x, weight, zz, relevance, groups, rule)
    if rule in GAMMAS and z is None:
        raise ValueError(f"the {rule} rule needs the original output z")
    check_triton_inputs(x, weight, bias, zz, relevance)
    stride, padding, dilation = _conv_args(stride, padding, dilation)
    pipeline = signsplit_stacked
    if folded:
        from .signsplit_folded import signsplit_folded as pipeline  # imports this module
    return pipeline(
        x,
        weight,
        bias,
        z,
        relevance,
        rule,
        (alpha, beta, gamma, eps),
        x_nonneg,
        groups,
        lambda x_in, w, b: F.conv2d(x_in, w, b, stride, padding, dilation, groups),
        lambda x_in, w, s: torch.nn.grad.conv2d_input(x_in.shape, w, s, stride, padding, dilation, groups),
        _wrap,
    )


def signsplit_stacked(x, weight, bias, z, relevance, rule, params, x_nonneg, groups, forward, transpose, wrap):
    """The stacked sign-split pipeline, shared by convolutions and linear layers (``linear_stacked.py``).

    ``x [N, C, ...]``, ``relevance`` and ``z`` (the original output, read by the gamma rules only; may be ``None``
    otherwise) ``[N, O, ...]``; ``weight [O, C / groups, ...]``; ``params = (alpha, beta, gamma, eps)``.
    ``forward(x_in, w, b)`` is the layer applied to the stacked input with the stacked weight and bias,
    ``transpose(x_in, w, s)`` its input-gradient map; both run as library calls (cuDNN / cuBLAS). Triton split ->
    forward -> Triton scale (in place) -> transpose -> Triton combine.
    """
    alpha, beta, gamma, eps = params
    x, relevance = x.contiguous(), relevance.contiguous()
    o = z.contiguous() if rule in GAMMAS else relevance  # the scale kernel reads a tensor here for every rule
    rows = x.shape[0] * groups
    inner_in = x[0].numel() // groups
    inner_out = relevance[0].numel() // groups
    x_in = x if x_nonneg else _sign_split(x, rows, inner_in, wrap)
    w_stack = stacked_weight(weight, rule, gamma, groups, x_nonneg)
    zz = forward(x_in, w_stack, stacked_bias(bias, rule, gamma, groups)).contiguous()
    s = _relevance_scale(zz, relevance, o, zz, rows, inner_out, alpha, beta, eps, RULES[rule], wrap)
    g = transpose(x_in, w_stack, s).contiguous()
    if x_nonneg:
        return _combine(x, g, g, rows, inner_in, False, wrap)
    return _combine(x, g, torch.empty_like(x), rows, inner_in, True, wrap)


def epsilon_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float = 1e-6,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    upcast: bool = True,
) -> torch.Tensor:
    """Torch reference ``x * conv2d_input(R / stab(z), W)`` (16-bit inputs computed in float32 with ``upcast``)."""
    dt = compute_dtype(x.dtype) if upcast else x.dtype
    stride, padding, dilation = _conv_args(stride, padding, dilation)
    s = relevance.to(dt) / stab(z.to(dt), eps)
    g = torch.nn.grad.conv2d_input(x.shape, weight.to(dt), s, stride, padding, dilation, groups)
    return (x.to(dt) * g).to(x.dtype)


def signsplit_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None,
    relevance: torch.Tensor,
    rule: str,
    alpha: float = 2.0,
    beta: float = 1.0,
    gamma: float = 0.25,
    eps: float = 1e-6,
    x_nonneg: bool = False,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    upcast: bool = True,
) -> torch.Tensor:
    """Torch reference, the straightforward way: materialised x+/x-, modified weights, one conv per term."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    dt = compute_dtype(x.dtype) if upcast else x.dtype
    stride, padding, dilation = _conv_args(stride, padding, dilation)
    xf, wf, rf = x.to(dt), weight.to(dt), relevance.to(dt)
    bf = bias.to(dt) if bias is not None else None
    x_pos = xf.clamp(min=0)
    x_neg = None if x_nonneg else xf.clamp(max=0)
    w1, w2 = weight_pair(wf, rule, gamma)
    b1, b2 = weight_pair(bf, rule, gamma) if bf is not None else (None, None)

    def conv(inp, w, b=None):
        return F.conv2d(inp, w, b, stride, padding, dilation, groups)

    def conv_t(s, w):
        return torch.nn.grad.conv2d_input(x.shape, w, s, stride, padding, dilation, groups)

    z_p = conv(x_pos, w1, b1)
    if x_neg is not None:
        z_p = z_p + conv(x_neg, w2)
    s_p = rf / stab(z_p, eps)
    if rule == "gamma+":  # gamma's positive half alone
        s_p = torch.where(z.to(dt) > 0, s_p, torch.zeros_like(s_p))
    if rule in ONE_SIDED:
        out = x_pos * conv_t(s_p, w1)
        if x_neg is not None:
            out = out + x_neg * conv_t(s_p, w2)
        return out.to(x.dtype)
    z_n = conv(x_pos, w2, b2)
    if x_neg is not None:
        z_n = z_n + conv(x_neg, w1)
    s_n = rf / stab(z_n, eps)
    if rule == "alphabeta":
        s_p, s_n = alpha * s_p, -beta * s_n
    else:
        o = z.to(dt)
        s_p = torch.where(o > 0, s_p, torch.zeros_like(s_p))
        s_n = torch.where(o < 0, s_n, torch.zeros_like(s_n))
    out = x_pos * conv_t(s_p, w1) + x_pos * conv_t(s_n, w2)
    if x_neg is not None:
        out = out + x_neg * conv_t(s_p, w2) + x_neg * conv_t(s_n, w1)
    return out.to(x.dtype)


@triton_op(
    "epsilon_conv2d",
    schema=(
        "(Tensor x, Tensor weight, Tensor z, Tensor relevance, float eps, int[] stride, int[] padding, "
        "int[] dilation, int groups) -> Tensor"
    ),
)
def _epsilon_conv2d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    ts = (x, weight, z, relevance)
    if use_triton(*ts) and len({t.dtype for t in ts}) == 1:
        return epsilon_conv2d_triton(x, weight, z, relevance, eps, stride, padding, dilation, groups, _wrap=True)
    return epsilon_conv2d_ref(x, weight, z, relevance, eps, stride, padding, dilation, groups)


@triton_op(
    "signsplit_conv2d",
    schema=(
        "(Tensor x, Tensor weight, Tensor? bias, Tensor? z, Tensor relevance, str rule, float alpha, float beta, "
        "float gamma, float eps, bool x_nonneg, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor"
    ),
)
def _signsplit_conv2d_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None,
    relevance: torch.Tensor,
    rule: str,
    alpha: float,
    beta: float,
    gamma: float,
    eps: float,
    x_nonneg: bool,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    folded = conv_impl() == "folded"
    zz = z if rule in GAMMAS or folded else None  # the folded pipeline saves a convolution with z
    ts = [t for t in (x, weight, bias, zz, relevance) if t is not None]
    args = (x, weight, bias, zz, relevance, rule, alpha, beta, gamma, eps, x_nonneg, stride, padding, dilation, groups)
    if use_triton(*ts) and len({t.dtype for t in ts}) == 1:
        return signsplit_conv2d_triton(*args, folded=folded, _wrap=True)
    return signsplit_conv2d_ref(*args)


def _as_list(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


def epsilon_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float = 1e-6,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Epsilon-LRP through ``conv2d``: ``R_x = x * conv2d_input(R / stab(z), W)``.

    x [N, C, H, W], weight [O, C/groups, kh, kw], z (the layer output) and relevance [N, O, H', W']; stride, padding
    (integers, no strings) and dilation as int or pair. Returns R_x in ``x``'s dtype through
    ``torch.ops.lrp_kernels.epsilon_conv2d`` (Triton + cuDNN on CUDA, the torch reference otherwise).
    """
    return torch.ops.lrp_kernels.epsilon_conv2d(
        x, weight, z, relevance, float(eps), _as_list(stride), _as_list(padding), _as_list(dilation), int(groups)
    )


def signsplit_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None,
    relevance: torch.Tensor,
    rule: str,
    alpha: float = 2.0,
    beta: float = 1.0,
    gamma: float = 0.25,
    eps: float = 1e-6,
    x_nonneg: bool = False,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """ZPlus / AlphaBeta / Gamma LRP through ``conv2d`` (same formulas as ``signsplit_linear``, ``@ W`` being the
    transposed convolution; ``gamma+``: gamma's positive half, equal to gamma before a ReLU at half the convolutions).
    ``z`` (original output) is read by the gamma rules, and by the folded pipeline. Returns R_x in ``x``'s dtype
    through ``torch.ops.lrp_kernels.signsplit_conv2d``."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    return torch.ops.lrp_kernels.signsplit_conv2d(
        x,
        weight,
        bias,
        z,
        relevance,
        rule,
        float(alpha),
        float(beta),
        float(gamma),
        float(eps),
        bool(x_nonneg),
        _as_list(stride),
        _as_list(padding),
        _as_list(dilation),
        int(groups),
    )
