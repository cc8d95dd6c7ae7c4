"""Further element-wise ops met in transformers: arithmetic with a Python scalar, unary functions, selections.

* ``mul.Scalar``, ``div.Scalar`` (``Pass``): ``R_x = R``, the epsilon rule of ``y = c x``; exact.
* ``add.Scalar``, ``sub.Scalar``, ``rsub.Scalar`` (``Norm``/``Epsilon``): ``R_x = +-alpha x R / stab(y)``; the scalar
  keeps the rest, recorded as absorbed (as a bias).
* ``exp``, ``log``, ``sqrt``, ``rsqrt``, ``pow(x, c)``, ``reciprocal``, ``sin``, ``cos``, ``erf``, ``abs`` and the
  other unary functions of ``UNARY`` (``tan``, ``atan``, ``sinh``, ``expm1``, ``log1p``, ``erfc``, ...) (``Pass``):
  ``R_x = R``; exact.
* ``where(c, a, b)``, ``masked_fill(x, m, v)`` (``Route``): ``R_a = where(c, R, 0)``, ``R_b = where(c, 0, R)``; the
  relevance of positions taken from a constant (the fill value) stays there, recorded as absorbed.

Unary functions get the identity (as activations do, AttnLRP's choice for element-wise non-linearities). Where such a
function computes a normaliser (``rsqrt(mean(x^2) + eps)``) it never receives relevance: ``lrp_fx.prepare`` marks the
normaliser constant. The condition of ``where`` and the mask of ``masked_fill`` are booleans and carry no relevance.

* ``cumsum`` (``Norm``/``Epsilon``, group ``pool``): ``R_x[i] = x[i] * sum_{j >= i} R[j] / stab(y[j])``, each summand
  of a prefix sum gets relevance in proportion to its value (the sum rule applied to every prefix); conservative up
  to the stabiliser. Met in the chunked scan of Mamba-2 (segment sums of the discretised decay rates). Cumulative
  sums of masks (position ids) are integer and carry no relevance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Epsilon, Norm, Pass, Route
from .call import RuleCall, sum_to
from .registry import aten, register_rule
from .stabilize import stabilize

SCALINGS = [aten.mul.Scalar, aten.div.Scalar]


@register_rule(SCALINGS, group="scale", accepts=(Pass,), default=Pass())
def scaling(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = c * x`` or ``y = x / c`` with a Python number ``c``: ``R_x = R`` (the epsilon rule of a diagonal linear
    map, ``x * c * R / (c * x) = R``). Exact."""
    return call.first(relevance)


SCALAR_SUMS = [aten.add.Scalar, aten.sub.Scalar, aten.rsub.Scalar]


# not group "add": the non-negativity analysis would carry x >= 0 through "add" ops whatever the scalar's sign
@register_rule(SCALAR_SUMS, group="scalar_add", accepts=(Norm, Epsilon), default=Norm())
def scalar_sum(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = x + alpha * c``, ``x - alpha * c`` or ``c - alpha * x`` (``rsub``) with a Python number ``c``:
    ``R_x = (+-x) * R / stab(y)`` (``-alpha * x`` for ``rsub``); the constant keeps ``R - R_x`` (recorded as
    absorbed), as a bias does."""
    node = call.node
    eps = call.eps
    x = call.arg(0)
    y = call.out(support_only=True)
    coef = -node.kwargs.get("alpha", 1) if node.target is aten.rsub.Scalar else 1
    r = x * (relevance / stabilize(y, eps))
    r = r * coef if coef != 1 else r
    if call.track:
        call.absorb(relevance - r)
    return call.first(r)


UNARY = [
    aten.exp.default,
    aten.log.default,
    aten.sqrt.default,
    aten.rsqrt.default,
    aten.pow.Tensor_Scalar,
    aten.reciprocal.default,
    aten.sin.default,
    aten.cos.default,
    aten.erf.default,
    aten.abs.default,
    aten.tan.default,
    aten.atan.default,
    aten.asin.default,
    aten.acos.default,
    aten.sinh.default,
    aten.cosh.default,
    aten.asinh.default,
    aten.atanh.default,
    aten.expm1.default,
    aten.log1p.default,
    aten.log2.default,
    aten.log10.default,
    aten.exp2.default,
    aten.erfc.default,
]


@register_rule(UNARY, group="activation", accepts=(Pass,), default=Pass())
def unary(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """An element-wise function of one activation (extra arguments are numbers): ``R_x = R``. Exact."""
    return call.first(relevance)


@register_rule(aten.where.self, group="select", accepts=(Route,), default=Route())
def where(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = where(c, a, b)``: ``R_a = where(c, R, 0)``, ``R_b = where(c, 0, R)`` (broadcasts summed back); the
    condition gets none. A constant ``a`` or ``b`` keeps its positions' relevance (recorded as absorbed)."""
    node = call.node
    cond = call.arg(0)
    zero = torch.zeros((), dtype=relevance.dtype, device=relevance.device)
    shares: dict[int, Tensor] = {}
    kept = None
    for i, picked in ((1, torch.where(cond, relevance, zero)), (2, torch.where(cond, zero, relevance))):
        a = node.args[i]
        if call.is_activation(a):
            shares[i] = sum_to(picked, call.value(a).shape)
            kept = shares[i].sum() if kept is None else kept + shares[i].sum()
    if call.track:
        call.absorb(relevance.sum() - (kept if kept is not None else 0.0))
    return call.assign(shares)


@register_rule([aten.masked_fill.Scalar, aten.masked_fill.Tensor], group="select", accepts=(Route,), default=Route())
def masked_fill(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = masked_fill(x, m, v)``: ``R_x = where(m, 0, R)``; filled positions' relevance stays with the constant
    fill value (recorded as absorbed)."""
    mask = call.arg(1)
    zero = torch.zeros((), dtype=relevance.dtype, device=relevance.device)
    r = torch.where(mask, zero, relevance)
    if call.track:
        call.absorb(relevance - r)
    return call.first(r)


@register_rule(aten.cumsum.default, group="pool", accepts=(Norm, Epsilon), default=Norm())
def cumulative_sum(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = cumsum(x, dim)`` (linear, weights 0 or 1): ``s = R / stab(y)``, ``R_x[i] = x[i] * sum_{j >= i} s[j]``.
    Conservative up to the stabiliser: ``sum R_x = sum s * y``."""
    x = call.arg(0)
    dim = call.node.args[1]
    y = call.out(support_only=True)
    eps = getattr(call.rule, "epsilon", None) or getattr(call.rule, "stabilizer", 1e-6)
    s = relevance / stabilize(y, eps)
    r = x * s.flip(dim).cumsum(dim).flip(dim)
    if call.track:
        call.absorb(relevance - s * y)
    return call.first(r.to(x.dtype))
