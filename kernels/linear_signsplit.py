r"""Sign-split LRP rules (ZPlus, AlphaBeta, Gamma) for a linear layer as two Triton GEMM kernels.

Maths
=====
``x`` [M, K], ``W`` [N, K], ``b`` [N] or None, relevance ``R`` [M, N], ``f(x; W, b) = x @ W.T + b``.
Signs: ``x+ = clamp(x, min=0)``, ``x- = clamp(x, max=0)``, likewise ``W+``, ``W-``, ``b+``, ``b-``;
``stab(z) = z + eps * sgn(z)`` with ``sgn(0) = +1``.

All three rules use one *weight pair* ``(W1, W2)`` and *bias pair* ``(b1, b2)``:

==========  ===================================  ===================================
rule        (W1, W2)                             (b1, b2)
==========  ===================================  ===================================
zplus       (W+, W-)                             (b+, -)
alphabeta   (W+, W-)                             (b+, b-)
gamma       (W + gamma W+, W + gamma W-)         (b + gamma b+, b + gamma b-)
==========  ===================================  ===================================

Forward (modified outputs, one pass over x and W):

.. math::

    z^+ = x^+ W_1^T + x^- W_2^T + b_1, \qquad z^- = x^+ W_2^T + x^- W_1^T + b_2

Scaled relevances (computed in the forward kernel's epilogue, ``o = z`` is the original output):

* zplus: ``sp = R / stab(z+)`` (no ``sn``);
* alphabeta: ``sp = alpha R / stab(z+)``, ``sn = -beta R / stab(z-)``;
* gamma: ``sp = [o > 0] R / stab(z+)``, ``sn = [o < 0] R / stab(z-)``;
* gamma+: gamma's positive half, ``sn = 0``: gamma where ``R`` vanishes wherever ``o < 0`` (a layer before a ReLU).
  These kernels run it as gamma on ``R`` zeroed there; the stacked pipeline drops the ``z-`` block instead.

Backward (one pass over W):

.. math::

    R^x = x^+ \odot (s^+ W_1 + s^- W_2) + x^- \odot (s^+ W_2 + s^- W_1)

which expands to Zennit's definitions, e.g. AlphaBeta
``alpha (x+ (sp' W+) + x- (sp' W-)) - beta (x+ (sn' W-) + x- (sn' W+))`` with ``sp' = R / stab(zp)``.

With ``x_nonneg`` (the caller guarantees ``x >= 0``) every ``x-`` term is skipped: half the dots.

Kernels
=======
* ``_signsplit_linear_fwd_kernel``: tile [BLOCK_M, BLOCK_N] of ``z+`` (and ``z-``); per K step it loads one ``x``
  tile and one ``W`` tile, forms ``x+``/``x-`` and ``W1``/``W2`` in registers (no modified weight copy in memory)
  and issues 2 dots (zplus) or 4 dots (alphabeta, gamma), halved with ``x_nonneg``. The epilogue adds the bias pair,
  loads ``R`` (and ``o``) and writes ``sp``/``sn`` in the input dtype (the dot dtype of the backward pass).
* ``_signsplit_linear_bwd_kernel``: tile [BLOCK_M, BLOCK_K] of ``R_x``; per N step one ``W`` tile and the ``sp``/``sn``
  tiles feed up to 4 dots into two accumulators (for ``x+`` and ``x-``); the epilogue multiplies by ``x+``/``x-``.
"""

import torch
import triton
import triton.language as tl

from ._common import (
    GAMMAS,
    RULES,
    check_triton_inputs,
    compute_dtype,
    dot_flags,
    gemm_configs,
    gemm_prune,
    launcher,
    linear_impl,
    mma,
    stab,
    stab_tl,
    swizzle_2d,
    triton_op,
    use_triton,
)

__all__ = ["RULES", "signsplit_linear", "signsplit_linear_triton", "signsplit_linear_ref"]


@triton.jit
def _weight_pair(w, gamma, RULE: tl.constexpr):
    """(W1, W2) of the rule, formed in registers from one weight tile, returned in the tile's dtype."""
    wf = w.to(tl.float32)
    wpos = tl.maximum(wf, 0.0)
    wneg = tl.minimum(wf, 0.0)
    if RULE == 2:
        w1 = wf + gamma * wpos
        w2 = wf + gamma * wneg
    else:
        w1 = wpos
        w2 = wneg
    return w1.to(w.dtype), w2.to(w.dtype)


@triton.autotune(
    configs=gemm_configs("BLOCK_N", "BLOCK_K"),
    key=["M", "N", "K", "RULE", "X_NONNEG"],
    prune_configs_by={"early_config_prune": gemm_prune(("x_ptr",), "w_ptr", "BLOCK_N", "BLOCK_K")},
)
@triton.jit
def _signsplit_linear_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    o_ptr,
    r_ptr,
    sp_ptr,
    sn_ptr,
    M,
    N,
    K,
    alpha,
    beta,
    gamma,
    eps,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    stride_rm,
    stride_rn,
    stride_sm,
    stride_sn,
    RULE: tl.constexpr,
    X_NONNEG: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = swizzle_2d(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    rows = offs_m.to(tl.int64)
    cols = offs_n.to(tl.int64)

    acc_p = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_n = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(
            x_ptr + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        )
        # W^T tile [BLOCK_K, BLOCK_N]
        w = tl.load(
            w_ptr + offs_k[:, None] * stride_wk + cols[None, :] * stride_wn,
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        w1, w2 = _weight_pair(w, gamma, RULE)
        x_pos = tl.maximum(x, 0.0).to(x.dtype)
        acc_p = mma(x_pos, w1, acc_p, DOT_FP32, ALLOW_TF32)
        if RULE != 0:
            acc_n = mma(x_pos, w2, acc_n, DOT_FP32, ALLOW_TF32)
        if not X_NONNEG:
            x_neg = tl.minimum(x, 0.0).to(x.dtype)
            acc_p = mma(x_neg, w2, acc_p, DOT_FP32, ALLOW_TF32)
            if RULE != 0:
                acc_n = mma(x_neg, w1, acc_n, DOT_FP32, ALLOW_TF32)

    if HAS_BIAS:
        b = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        if RULE == 2:
            b1 = b + gamma * tl.maximum(b, 0.0)
            b2 = b + gamma * tl.minimum(b, 0.0)
        else:
            b1 = tl.maximum(b, 0.0)
            b2 = tl.minimum(b, 0.0)
        acc_p += b1[None, :]
        acc_n += b2[None, :]

    mask_mn = mask_m[:, None] & mask_n[None, :]
    r = tl.load(r_ptr + rows[:, None] * stride_rm + cols[None, :] * stride_rn, mask=mask_mn, other=0.0)
    r = r.to(tl.float32)
    s_p = r / stab_tl(acc_p, eps)
    s_off = rows[:, None] * stride_sm + cols[None, :] * stride_sn
    if RULE == 0:
        tl.store(sp_ptr + s_off, s_p.to(sp_ptr.dtype.element_ty), mask=mask_mn)
    else:
        s_n = r / stab_tl(acc_n, eps)
        if RULE == 1:
            s_p = alpha * s_p
            s_n = -beta * s_n
        else:
            o = tl.load(o_ptr + rows[:, None] * stride_om + cols[None, :] * stride_on, mask=mask_mn, other=0.0)
            o = o.to(tl.float32)
            s_p = tl.where(o > 0, s_p, 0.0)
            s_n = tl.where(o < 0, s_n, 0.0)
        tl.store(sp_ptr + s_off, s_p.to(sp_ptr.dtype.element_ty), mask=mask_mn)
        tl.store(sn_ptr + s_off, s_n.to(sn_ptr.dtype.element_ty), mask=mask_mn)


@triton.autotune(
    configs=gemm_configs("BLOCK_K", "BLOCK_N"),
    key=["M", "N", "K", "RULE", "X_NONNEG"],
    prune_configs_by={"early_config_prune": gemm_prune(("sp_ptr", "sn_ptr"), "w_ptr", "BLOCK_K", "BLOCK_N")},
)
@triton.jit
def _signsplit_linear_bwd_kernel(
    x_ptr,
    w_ptr,
    sp_ptr,
    sn_ptr,
    out_ptr,
    M,
    N,
    K,
    gamma,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_sm,
    stride_sn,
    stride_om,
    stride_ok,
    RULE: tl.constexpr,
    X_NONNEG: tl.constexpr,
    DOT_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_k = swizzle_2d(tl.program_id(0), M, K, BLOCK_M, BLOCK_K, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_k = offs_k < K
    rows = offs_m.to(tl.int64)

    acc_p = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)  # multiplies x+
    acc_n = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)  # multiplies x-
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        mask_mn = mask_m[:, None] & mask_n[None, :]
        s_off = rows[:, None] * stride_sm + offs_n[None, :] * stride_sn
        w = tl.load(
            w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :] * stride_wk,
            mask=mask_n[:, None] & mask_k[None, :],
            other=0.0,
        )
        w1, w2 = _weight_pair(w, gamma, RULE)
        s_p = tl.load(sp_ptr + s_off, mask=mask_mn, other=0.0).to(w.dtype)
        acc_p = mma(s_p, w1, acc_p, DOT_FP32, ALLOW_TF32)
        if not X_NONNEG:
            acc_n = mma(s_p, w2, acc_n, DOT_FP32, ALLOW_TF32)
        if RULE != 0:
            s_n = tl.load(sn_ptr + s_off, mask=mask_mn, other=0.0).to(w.dtype)
            acc_p = mma(s_n, w2, acc_p, DOT_FP32, ALLOW_TF32)
            if not X_NONNEG:
                acc_n = mma(s_n, w1, acc_n, DOT_FP32, ALLOW_TF32)

    mask_mk = mask_m[:, None] & mask_k[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask_mk, other=0.0)
    x = x.to(tl.float32)
    out = tl.maximum(x, 0.0) * acc_p
    if not X_NONNEG:
        out += tl.minimum(x, 0.0) * acc_n
    tl.store(
        out_ptr + rows[:, None] * stride_om + offs_k[None, :] * stride_ok,
        out.to(out_ptr.dtype.element_ty),
        mask=mask_mk,
    )


def _check(x, weight, bias, z, relevance, rule):
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    if x.dim() != 2 or weight.dim() != 2 or relevance.dim() != 2:
        raise ValueError("signsplit_linear expects 2-D x [M, K], weight [N, K] and relevance [M, N]")
    M, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K or relevance.shape != (M, N):
        raise ValueError(
            f"shape mismatch: x {tuple(x.shape)}, weight {tuple(weight.shape)}, relevance {tuple(relevance.shape)}"
        )
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"bias must have shape ({N},), got {tuple(bias.shape)}")
    if rule in GAMMAS and z is None:
        raise ValueError(f"the {rule} rule needs the original output z")
    if z is not None and z.shape != (M, N):  # read by gamma, and by the folded pipeline
        raise ValueError(f"z must have shape ({M}, {N}), got {tuple(z.shape)}")


def signsplit_linear_triton(
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
    *,
    _wrap: bool = False,
) -> torch.Tensor:
    """Launch the forward + backward Triton kernels (2-D inputs, one dtype, CUDA or TRITON_INTERPRET=1).

    ``_wrap`` is internal (True inside the ``triton_op``: launch through ``torch.library.wrap_triton``).
    """
    _check(x, weight, bias, z, relevance, rule)
    check_triton_inputs(x, weight, bias, z if rule in GAMMAS else None, relevance)
    if rule == "gamma+":  # gamma with s- = 0: R zeroed where o < 0 (the stacked pipeline skips the z- block instead)
        relevance, rule = torch.where(z < 0, torch.zeros_like(relevance), relevance), "gamma"
    M, K = x.shape
    N = weight.shape[0]
    code = RULES[rule]
    out = torch.empty((M, K), dtype=x.dtype, device=x.device)
    if M == 0 or K == 0:
        return out
    s_p = torch.empty((M, N), dtype=x.dtype, device=x.device)
    s_n = torch.empty((M, N), dtype=x.dtype, device=x.device) if code != 0 else s_p
    o = z if code == 2 else relevance  # placeholder pointer when z is unused
    # the kernel reads the bias as contiguous (``B[:, 0]`` has stride 2); a placeholder pointer when there is none
    b = bias.contiguous() if bias is not None else weight
    flags = dot_flags(x.dtype)

    def grid_fwd(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    launcher(_signsplit_linear_fwd_kernel, _wrap)[grid_fwd](
        x,
        weight,
        b,
        o,
        relevance,
        s_p,
        s_n,
        M,
        N,
        K,
        float(alpha),
        float(beta),
        float(gamma),
        float(eps),
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        o.stride(0),
        o.stride(1),
        relevance.stride(0),
        relevance.stride(1),
        s_p.stride(0),
        s_p.stride(1),
        RULE=code,
        X_NONNEG=bool(x_nonneg),
        HAS_BIAS=bias is not None,
        **flags,
    )

    def grid_bwd(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_K"]),)

    launcher(_signsplit_linear_bwd_kernel, _wrap)[grid_bwd](
        x,
        weight,
        s_p,
        s_n,
        out,
        M,
        N,
        K,
        float(gamma),
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        s_p.stride(0),
        s_p.stride(1),
        out.stride(0),
        out.stride(1),
        RULE=code,
        X_NONNEG=bool(x_nonneg),
        **flags,
    )
    return out


def signsplit_linear_ref(
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
    upcast: bool = True,
) -> torch.Tensor:
    """Torch reference, written the straightforward way: materialised modified weights, separate matmuls.

    Any leading dims on x, z, relevance. With ``x_nonneg`` the ``x-`` terms are dropped (``x+ = clamp(x, min=0)``).
    With ``upcast`` 16-bit inputs are computed in float32; the result has ``x``'s dtype.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    dt = compute_dtype(x.dtype) if upcast else x.dtype
    xf, wf, rf = x.to(dt), weight.to(dt), relevance.to(dt)
    bf = bias.to(dt) if bias is not None else None
    x_pos = xf.clamp(min=0)
    x_neg = None if x_nonneg else xf.clamp(max=0)
    w_pos, w_neg = wf.clamp(min=0), wf.clamp(max=0)

    def f(inp, w, b=None):
        out = inp @ w.T
        return out if b is None else out + b

    if rule in GAMMAS:
        w1, w2 = wf + gamma * w_pos, wf + gamma * w_neg
        b1 = None if bf is None else bf + gamma * bf.clamp(min=0)
        b2 = None if bf is None else bf + gamma * bf.clamp(max=0)
    else:
        w1, w2 = w_pos, w_neg
        b1 = None if bf is None else bf.clamp(min=0)
        b2 = None if bf is None else bf.clamp(max=0)

    z_p = f(x_pos, w1, b1)
    if x_neg is not None:
        z_p = z_p + f(x_neg, w2)
    if rule in ("zplus", "gamma+"):  # one denominator; gamma+ is gamma's positive half alone
        s_p = rf / stab(z_p, eps)
        if rule == "gamma+":
            s_p = torch.where(z.to(dt) > 0, s_p, torch.zeros_like(s_p))
        out = x_pos * (s_p @ w1)
        if x_neg is not None:
            out = out + x_neg * (s_p @ w2)
        return out.to(x.dtype)

    z_n = f(x_pos, w2, b2)
    if x_neg is not None:
        z_n = z_n + f(x_neg, w1)
    s_p = rf / stab(z_p, eps)
    s_n = rf / stab(z_n, eps)
    if rule == "alphabeta":
        out = alpha * (x_pos * (s_p @ w_pos)) - beta * (x_pos * (s_n @ w_neg))
        if x_neg is not None:
            out = out + alpha * (x_neg * (s_p @ w_neg)) - beta * (x_neg * (s_n @ w_pos))
        return out.to(x.dtype)

    o = z.to(dt)
    s_p = torch.where(o > 0, s_p, torch.zeros_like(s_p))
    s_n = torch.where(o < 0, s_n, torch.zeros_like(s_n))
    out = x_pos * (s_p @ w1) + x_pos * (s_n @ w2)
    if x_neg is not None:
        out = out + x_neg * (s_p @ w2) + x_neg * (s_n @ w1)
    return out.to(x.dtype)


@triton_op(
    "signsplit_linear",
    schema=(
        "(Tensor x, Tensor weight, Tensor? bias, Tensor? z, Tensor relevance, str rule, float alpha, float beta, "
        "float gamma, float eps, bool x_nonneg) -> Tensor"
    ),
)
def _signsplit_linear_op(
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
) -> torch.Tensor:
    impl = linear_impl()
    zz = z if rule in GAMMAS or impl == "folded" else None  # the folded pipeline saves a GEMM with z
    tensors = [t for t in (x, weight, bias, zz, relevance) if t is not None]
    if use_triton(*tensors) and len({t.dtype for t in tensors}) == 1:
        launch = signsplit_linear_triton
        if impl == "stacked":
            from .linear_stacked import signsplit_linear_stacked_triton as launch  # imports this module
        elif impl == "folded":
            from functools import partial

            from .linear_stacked import signsplit_linear_stacked_triton  # imports this module

            launch = partial(signsplit_linear_stacked_triton, folded=True)
        return launch(x, weight, bias, zz, relevance, rule, alpha, beta, gamma, eps, x_nonneg, _wrap=True)
    return signsplit_linear_ref(x, weight, bias, zz, relevance, rule, alpha, beta, gamma, eps, x_nonneg)


def signsplit_linear(
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
) -> torch.Tensor:
    """ZPlus / AlphaBeta / Gamma LRP through a linear layer (Zennit's definitions; see the module docstring).

    Args:
        x: input [..., K]; weight: [N, K]; bias: [N] or None; z: original output ``x @ W.T + b`` [..., N]
        (read by the gamma rules and by the folded pipeline, may be None otherwise); relevance: [..., N]; rule:
        "zplus", "alphabeta", "gamma" or "gamma+" (gamma's positive half alone: gamma before a ReLU, at half the
        products); alpha, beta: AlphaBeta weights; gamma: Gamma factor; eps: stabiliser; x_nonneg:
        the caller guarantees ``x >= 0`` (e.g. after a ReLU), the ``x-`` terms are skipped.

    Returns R_x [..., K] in ``x``'s dtype, through ``torch.ops.lrp_kernels.signsplit_linear`` (Triton kernels on CUDA,
    the torch reference otherwise).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    lead = x.shape[:-1]
    z2 = z.reshape(-1, z.shape[-1]) if z is not None else None
    out = torch.ops.lrp_kernels.signsplit_linear(
        x.reshape(-1, x.shape[-1]),
        weight,
        bias,
        z2,
        relevance.reshape(-1, relevance.shape[-1]),
        rule,
        float(alpha),
        float(beta),
        float(gamma),
        float(eps),
        bool(x_nonneg),
    )
    return out.reshape(*lead, x.shape[-1])
