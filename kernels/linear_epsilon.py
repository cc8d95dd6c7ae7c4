r"""Epsilon-LRP for a linear layer as one fused Triton GEMM.

Maths
=====
Linear layer ``z = x @ W.T + b`` with ``x`` [M, K], ``W`` [N, K], relevance ``R`` [M, N] at the output:

.. math::

    s_{mn} = \frac{R_{mn}}{\mathrm{stab}(z_{mn})}, \qquad
    \mathrm{stab}(z) = z + \varepsilon\,\mathrm{sgn}(z),\ \mathrm{sgn}(0) = +1

    R^x_{mk} = x_{mk} \sum_n s_{mn} W_{nk}

i.e. ``R_x = x * ((R / stab(z)) @ W)``: each contribution ``z_mnk = x_mk W_nk`` receives the share
``z_mnk / stab(z_mn)`` of ``R_mn`` (the bias keeps its own share).

Kernel
======
One program computes an output tile ``R_x[BLOCK_M, BLOCK_K]`` and walks the reduction dimension N:

* prologue: load the ``R`` and ``z`` tiles [BLOCK_M, BLOCK_N], form ``s = R / stab(z)`` in fp32 registers and cast
  it to the dot dtype (``R / stab(z)`` is never written to memory);
* main loop: ``acc += s @ W[n:n+BLOCK_N, k:k+BLOCK_K]`` with an fp32 accumulator;
* epilogue: multiply by the ``x`` tile and store in ``x``'s dtype.

Programs are ordered in groups of ``GROUP_M`` rows (as in the Triton matmul tutorial) for L2 reuse.
"""

import torch
import triton
import triton.language as tl

from ._common import (
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

__all__ = ["epsilon_linear", "epsilon_linear_triton", "epsilon_linear_ref"]


@triton.autotune(
    configs=gemm_configs("BLOCK_K", "BLOCK_N"),
    key=["M", "N", "K"],
    prune_configs_by={"early_config_prune": gemm_prune(("r_ptr", "z_ptr"), "w_ptr", "BLOCK_K", "BLOCK_N")},
)
@triton.jit
def _epsilon_linear_kernel(
    x_ptr,
    w_ptr,
    z_ptr,
    r_ptr,
    out_ptr,
    M,
    N,
    K,
    eps,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_zm,
    stride_zn,
    stride_rm,
    stride_rn,
    stride_om,
    stride_ok,
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

    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        mask_mn = mask_m[:, None] & mask_n[None, :]
        # prologue: s = R / stab(z) in registers (padding: R = 0, z = 1 -> s = 0)
        r = tl.load(r_ptr + rows[:, None] * stride_rm + offs_n[None, :] * stride_rn, mask=mask_mn, other=0.0)
        z = tl.load(z_ptr + rows[:, None] * stride_zm + offs_n[None, :] * stride_zn, mask=mask_mn, other=1.0)
        s = r.to(tl.float32) / stab_tl(z.to(tl.float32), eps)
        w = tl.load(
            w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :] * stride_wk,
            mask=mask_n[:, None] & mask_k[None, :],
            other=0.0,
        )
        acc = mma(s.to(w.dtype), w, acc, DOT_FP32, ALLOW_TF32)

    # epilogue: R_x = x * (s @ W)
    mask_mk = mask_m[:, None] & mask_k[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask_mk, other=0.0)
    out = x.to(tl.float32) * acc
    tl.store(
        out_ptr + rows[:, None] * stride_om + offs_k[None, :] * stride_ok,
        out.to(out_ptr.dtype.element_ty),
        mask=mask_mk,
    )


def _check_shapes(x, weight, z, relevance):
    if x.dim() != 2 or weight.dim() != 2 or z.dim() != 2 or relevance.dim() != 2:
        raise ValueError("epsilon_linear expects 2-D x [M, K], weight [N, K], z and relevance [M, N]")
    M, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K or z.shape != (M, N) or relevance.shape != (M, N):
        raise ValueError(
            f"shape mismatch: x {tuple(x.shape)}, weight {tuple(weight.shape)}, z {tuple(z.shape)}, "
            f"relevance {tuple(relevance.shape)}"
        )


def epsilon_linear_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float = 1e-6,
    *,
    _wrap: bool = False,
) -> torch.Tensor:
    """Launch the fused Triton kernel (2-D inputs, one dtype, CUDA or TRITON_INTERPRET=1). Returns R_x [M, K].

    ``_wrap`` is internal (True inside the ``triton_op``: launch through ``torch.library.wrap_triton``).
    """
    _check_shapes(x, weight, z, relevance)
    check_triton_inputs(x, weight, z, relevance)
    M, K = x.shape
    N = weight.shape[0]
    out = torch.empty((M, K), dtype=x.dtype, device=x.device)
    if M == 0 or K == 0:
        return out

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_K"]),)

    launcher(_epsilon_linear_kernel, _wrap)[grid](
        x,
        weight,
        z,
        relevance,
        out,
        M,
        N,
        K,
        float(eps),
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        z.stride(0),
        z.stride(1),
        relevance.stride(0),
        relevance.stride(1),
        out.stride(0),
        out.stride(1),
        **dot_flags(x.dtype),
    )
    return out


def epsilon_linear_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float = 1e-6,
    upcast: bool = True,
) -> torch.Tensor:
    """Torch reference ``x * ((R / stab(z)) @ W)`` (any leading dims on x, z, R).

    With ``upcast`` the computation runs in float32 for 16-bit inputs (float64 stays float64); the result is
    returned in ``x``'s dtype.
    """
    dt = compute_dtype(x.dtype) if upcast else x.dtype
    s = relevance.to(dt) / stab(z.to(dt), eps)
    return (x.to(dt) * (s @ weight.to(dt))).to(x.dtype)


@triton_op(
    "epsilon_linear",
    schema="(Tensor x, Tensor weight, Tensor z, Tensor relevance, float eps) -> Tensor",
)
def _epsilon_linear_op(
    x: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, relevance: torch.Tensor, eps: float
) -> torch.Tensor:
    if use_triton(x, weight, z, relevance) and len({x.dtype, weight.dtype, z.dtype, relevance.dtype}) == 1:
        launch = epsilon_linear_triton
        if linear_impl() != "fused":  # "folded" has nothing to fold for epsilon: the stacked pipeline
            from .linear_stacked import epsilon_linear_stacked_triton as launch  # imports this module
        return launch(x, weight, z, relevance, eps, _wrap=True)
    return epsilon_linear_ref(x, weight, z, relevance, eps)


def epsilon_linear(
    x: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, relevance: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Epsilon-LRP through a linear layer: ``R_x = x * ((R / stab(z)) @ W)``.

    Args:
        x: input [..., K]; weight: [N, K]; z: the layer output ``x @ W.T + b`` [..., N];
        relevance: relevance at the output [..., N]; eps: stabiliser.

    Returns R_x [..., K] in ``x``'s dtype. Calls ``torch.ops.lrp_kernels.epsilon_linear``: the fused Triton kernel
    for CUDA tensors (float32/16/bfloat16), the torch reference otherwise.
    """
    lead = x.shape[:-1]
    out = torch.ops.lrp_kernels.epsilon_linear(
        x.reshape(-1, x.shape[-1]),
        weight,
        z.reshape(-1, z.shape[-1]),
        relevance.reshape(-1, relevance.shape[-1]),
        float(eps),
    )
    return out.reshape(*lead, x.shape[-1])
