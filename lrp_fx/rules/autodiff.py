"""Vector-Jacobian products used by rules.

Rules are traced into the attribution program, so a VJP taken here with ``torch.autograd.grad`` becomes the same aten
backward ops autograd would run (``convolution_backward``, ``mm``, ``slice_backward``...). The forward call made only
to obtain the VJP is dead code in the traced graph and is eliminated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def vjp(fn: Callable[..., Tensor], primals: Sequence[object], cotangent: Tensor, wrt: Sequence[int]) -> list[Tensor]:
    """``J^T cotangent`` of ``fn(*primals)`` with respect to the primals at positions ``wrt`` (zeros if unused)."""
    with torch.enable_grad():
        args = list(primals)
        leaves = []
        for i in wrt:
            leaf = args[i].detach().requires_grad_(True)
            args[i] = leaf
            leaves.append(leaf)
        out = fn(*args)
        if isinstance(out, (tuple, list)):
            out = out[0]
        grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g.detach() for leaf, g in zip(leaves, grads)]


def vjp_multi(
    fn: Callable[..., object], primals: Sequence[object], cotangents: Sequence[Tensor | None], wrt: Sequence[int]
) -> list[Tensor]:
    """VJP of a multi-output ``fn``; ``None`` cotangents mean no relevance on that output."""
    with torch.enable_grad():
        args = list(primals)
        leaves = []
        for i in wrt:
            leaf = args[i].detach().requires_grad_(True)
            args[i] = leaf
            leaves.append(leaf)
        outs = fn(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        pairs = [(o, c) for o, c in zip(outs, cotangents) if c is not None and o.requires_grad]
        if not pairs:
            return [torch.zeros_like(leaf) for leaf in leaves]
        grads = torch.autograd.grad([o for o, _ in pairs], leaves, [c for _, c in pairs], allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g.detach() for leaf, g in zip(leaves, grads)]
