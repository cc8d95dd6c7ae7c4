"""Products and second moments over a dimension: ``prod``, ``cumprod``, ``var`` (and ``std``), ``hypot``.

* ``prod`` / ``cumprod`` (``UniformProduct``, group ``mul``): AttnLRP's uniform rule for a product of ``n`` factors,
  each factor gets ``R / n`` (``mul`` of two activations gives each ``R / 2``); a cumulative product hands factor ``i``
  ``sum_{t >= i} R_t / (t + 1)``. Conservative, and independent of the factors' values, so a factor near zero cannot
  blow the relevance up.
* ``var`` (``std`` captures as ``sqrt(var)``, and ``sqrt`` passes) (``Norm``, group ``pool``): ``d = x - mean(x)``,
  ``R_x = d^2 * R / stab(sum d^2)``, each element by its share of the squared deviation (the sum rule applied to
  ``sum d^2``; the correction ``N - c`` cancels). Conservative up to the stabiliser. Where a variance normalises
  an activation (layer norm written out) ``lrp_fx.prepare`` marks it constant and this rule does not run.
* ``hypot(a, b) = sqrt(a^2 + b^2)`` (``Norm``, group ``pool``): ``R_a = a^2 R / stab(a^2 + b^2)``, ``R_b`` likewise.
* ``cdist(x1, x2, p)`` (``Norm``, group ``pool``): the distance's relevance is split over coordinates by their share
  of ``sum_k |d_k|^p``, as ``hypot``'s by squares, then between the two points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Epsilon, Norm, UniformProduct
from .call import RuleCall, keepdim_shape, reduced_dims, sum_to
from .registry import aten, register_rule
from .stabilize import stabilize


@register_rule([aten.prod.dim_int, aten.prod.default], group="mul", accepts=(UniformProduct,), default=UniformProduct())
def uniform_product(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = prod(x, dim)``: every factor gets ``R / n``, ``n`` the number of factors. Exactly conservative."""
    x = call.arg(0)
    if x.dim() == 0:
        return call.first(relevance)
    dims = reduced_dims(call, x)
    n = 1
    for d in dims:
        n *= x.shape[d]
    share = relevance.reshape(keepdim_shape(x, dims)) / n
    return call.first(share.expand(x.shape).to(x.dtype))


@register_rule(aten.cumprod.default, group="mul", accepts=(UniformProduct,), default=UniformProduct())
def uniform_cumulative_product(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y_t = prod_{i <= t} x_i``: ``R_x[i] = sum_{t >= i} R_t / (t + 1)``, the uniform rule on every prefix.
    Exactly conservative."""
    x = call.arg(0)
    if x.dim() == 0:
        return call.first(relevance)
    dim = call.node.args[1] % x.dim()
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    factors = torch.arange(1, x.shape[dim] + 1, dtype=relevance.dtype, device=relevance.device).reshape(shape)
    return call.first((relevance / factors).flip(dim).cumsum(dim).flip(dim).to(x.dtype))


@register_rule(
    [aten.var.correction, aten.var.dim, aten.var.default], group="pool", accepts=(Norm, Epsilon), default=Norm()
)
def squared_deviation_share(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = var(x, dims)``: ``R_x = d^2 * R / stab(sum_dims d^2)`` with ``d = x - mean_dims(x)``. Conservative up
    to the stabiliser (what it keeps is recorded as absorbed)."""
    x = call.arg(0)
    dims = reduced_dims(call, x)  # var(x, unbiased): every dim
    kept = keepdim_shape(x, dims)
    d2 = (x - x.mean(dims, keepdim=True)) ** 2
    total = d2.sum(dims, keepdim=True)
    s = relevance.reshape(kept).to(x.dtype) / stabilize(total, call.eps, nonneg=True)
    r = d2 * s
    if call.track:
        call.absorb(relevance.reshape(kept) - s * total)
    return call.first(r)


@register_rule(aten.hypot.default, group="pool", accepts=(Norm, Epsilon), default=Norm())
def hypotenuse(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = hypot(a, b)``: ``R_a = a^2 R / stab(a^2 + b^2)``, ``R_b = b^2 R / stab(a^2 + b^2)`` (broadcasts summed
    back); a constant operand keeps its share (absorbed)."""
    node = call.node
    a, b = call.value(node.args[0]), call.value(node.args[1])
    sq = [a * a, b * b]
    s = relevance / stabilize(sq[0] + sq[1], call.eps, nonneg=True)
    shares: dict[int, Tensor] = {}
    kept: Tensor | float = 0.0
    for i in (0, 1):
        if call.is_activation(node.args[i]):
            shares[i] = sum_to(sq[i] * s, call.value(node.args[i]).shape)
            kept = kept + shares[i].sum()
    if call.track:
        call.absorb(relevance.sum() - kept)
    return call.assign(shares)


@register_rule(aten._cdist_forward.default, group="pool", accepts=(Norm,), default=Norm())
def distance_share(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y_ij = ||x1_i - x2_j||_p`` (``torch.cdist``; prototype and nearest-neighbour heads). With ``d = x1_i - x2_j``,
    coordinate ``k`` gets ``R_ijk = w_ijk R_ij``, ``w_ijk = |d_ijk|^p / stab(sum_k |d_ijk|^p)`` (the share of the
    norm's sum, as for ``hypot``; ``p = inf``: the coordinates of the largest ``|d|``, ties split; ``p = 0``: the
    differing coordinates, equally). ``R_ijk`` goes to ``x1_ik`` if ``x2`` is constant (a prototype), to ``x2_jk`` if
    ``x1`` is, and half to each if both are activations (the distance is symmetric, and a split proportional to the
    points would divide by ``d``, which vanishes at the nearest prototype). Conservative up to the stabiliser (a zero
    distance keeps its relevance; recorded as absorbed)."""
    node = call.node
    x1, x2, p = call.value(node.args[0]), call.value(node.args[1]), float(node.args[2])
    d = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).abs()  # [..., P, R, M]
    if p == float("inf"):
        weight = (d == d.amax(-1, keepdim=True)).to(d.dtype)
    elif p == 0:
        weight = (d != 0).to(d.dtype)
    else:
        weight = d**p
    total = weight.sum(-1, keepdim=True)
    counts = p in (0, float("inf"))  # counts need no stabiliser: a zero count means a zero distance
    per_coordinate = weight * (
        relevance.unsqueeze(-1).to(d.dtype)
        / (total.clamp(min=1) if counts else stabilize(total, call.eps, nonneg=True))
    )
    act = [call.is_activation(node.args[0]), call.is_activation(node.args[1])]
    if act[0] and act[1]:
        per_coordinate = per_coordinate * 0.5
    shares: dict[int, Tensor] = {}
    if act[0]:
        shares[0] = sum_to(per_coordinate.sum(-2), x1.shape)
    if act[1]:
        shares[1] = sum_to(per_coordinate.sum(-3), x2.shape)
    if call.track:
        kept = sum(r.sum() for r in shares.values()) if shares else 0.0
        call.absorb(relevance.sum() - kept)
    return call.assign(shares)
