r"""Linear-layer LRP rules in the structure of ``conv2d.py``: cuBLAS GEMMs + fused Triton elementwise kernels.

Why a second implementation of the linear rules
===============================================
``linear_epsilon.py`` and ``linear_signsplit.py`` fuse the LRP arithmetic into hand-written Triton GEMMs (the
design the kernels issue asks for: no modified weight copy, one read of each weight tile). On an H200 they were
slower than the torch rule (0.16-0.63x, ``docs/gpu.md``): the torch rule's GEMMs are cuBLAS, and on large layers the
GEMMs are the cost. The convolution rules won (1.1-2.2x) with a different structure, which this module applies to
``nn.Linear``, a 1x1 convolution:

* the four GEMMs of a sign-split rule are *one* GEMM over stacked operands: ``[x+, x-] @ W_stack^T`` with

  .. code-block:: text

      W_stack = [[W1, W2],     # -> z+   (columns: x+, x-)
                 [W2, W1]]     # -> z-

  gives ``[z+, z-]``, and ``[s+, s-] @ W_stack`` gives ``[s+ W1 + s- W2, s+ W2 + s- W1]``, the factors of ``x+``
  and ``x-`` (ZPlus keeps the first block row, ``x_nonneg`` the first block column). Same multiply-adds as four
  GEMMs, in one cuBLAS call on a 2x larger problem;
* the elementwise work (sign split, stabilised division with the alpha/beta or gamma masks, the final product with
  ``x+``/``x-``) runs in the three fused kernels of ``conv2d.py``, which see ``[M, P * K]`` as ``rows x parts x inner``.

The cost is the stacked weight, a transient ``[2N, 2K]`` tensor (``4 N K`` elements) formed with torch; ``W`` is not
modified. Which implementation is faster per shape is for ``benchmarks/gpu_kernels.py`` to measure on a GPU.

Maths: ``signsplit_linear`` / ``epsilon_linear`` (same signatures, same results up to rounding).
"""

import torch
import torch.nn.functional as F

from ._common import check_triton_inputs
from .conv2d import _EPSILON, _combine, _relevance_scale, signsplit_stacked
from .linear_epsilon import _check_shapes
from .linear_signsplit import GAMMAS, _check

__all__ = ["epsilon_linear_stacked_triton", "signsplit_linear_stacked_triton"]


def epsilon_linear_stacked_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    z: torch.Tensor,
    relevance: torch.Tensor,
    eps: float = 1e-6,
    *,
    _wrap: bool = False,
) -> torch.Tensor:
    """Epsilon rule ``R_x = x * ((R / stab(z)) @ W)``: fused Triton division, cuBLAS GEMM, fused Triton product.

    2-D ``x [M, K]``, ``weight [N, K]``, ``z``/``relevance [M, N]``, one dtype, CUDA (or ``TRITON_INTERPRET=1``).
    """
    _check_shapes(x, weight, z, relevance)
    check_triton_inputs(x, weight, z, relevance)
    x, z, relevance = x.contiguous(), z.contiguous(), relevance.contiguous()
    s = torch.empty_like(relevance)
    _relevance_scale(z, relevance, relevance, s, 1, s.numel(), 1.0, 1.0, eps, _EPSILON, _wrap)
    g = (s @ weight).contiguous()
    return _combine(x, g, g, 1, x.numel(), False, _wrap)


def signsplit_linear_stacked_triton(
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
    folded: bool = False,
    _wrap: bool = False,
) -> torch.Tensor:
    """ZPlus / AlphaBeta / Gamma: Triton split -> one stacked cuBLAS GEMM -> Triton scale (in place) -> one stacked
    cuBLAS GEMM -> Triton combine. Arguments as ``signsplit_linear_triton`` (2-D, one dtype). ``folded``: the
    pipeline of ``signsplit_folded.py`` instead (fewer GEMMs for AlphaBeta and Gamma; ``z`` saves one more)."""
    _check(x, weight, bias, z, relevance, rule)
    check_triton_inputs(x, weight, bias, z if rule in GAMMAS or folded else None, relevance)
    if x.numel() == 0:
        return torch.zeros_like(x)
    pipeline = signsplit_stacked
    if folded:
        from .signsplit_folded import signsplit_folded as pipeline  # imports this module's imports
    # the pipeline of the convolution rules with a linear layer's GEMMs: [M, K] is [N, C] with no spatial dims
    return pipeline(
        x,
        weight,
        bias,
        z,
        relevance,
        rule,
        (alpha, beta, gamma, eps),
        x_nonneg,
        1,
        F.linear,
        lambda x_in, w, s: s @ w,
        _wrap,
    )
