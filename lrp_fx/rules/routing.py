"""Routing ops: views, permutations, slices, concatenation, indexing, padding, max pooling.

These ops are linear in their activation input and only move (or copy) values, so their vector-Jacobian product is
the exact relevance routing: every output position hands its relevance to the input position it came from, and a
copied input (expand, repeat) collects the relevance of all its copies. One generic rule covers all of them, scatters
(in-place slice assignment) included; ``copy`` has its own (it has no autograd formula).

Maxima are winner-takes-all: max pooling (plain and adaptive) through the forward's indices; ``maximum``/``minimum``
between tensors and ``amax``/``amin`` over dimensions to the operand or position that holds the max, ties split
equally; the soft maximum ``logsumexp`` to every element by its softmax weight. All exactly conservative.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor

from .autodiff import vjp_multi
from .base import Gradient, Route, WinnerTakesAll
from .call import RuleCall, keepdim_shape, reduced_dims, sum_to
from .registry import aten, register_rule

ROUTING_OPS = [
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.permute.default,
    aten.transpose.int,
    aten.t.default,
    aten.expand.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.slice.Tensor,
    aten.select.int,
    aten.narrow.default,
    aten.cat.default,
    aten.stack.default,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.unbind.int,
    aten.clone.default,
    aten.alias.default,
    aten.contiguous.default,
    aten._to_copy.default,
    aten.flatten.using_ints,
    aten.index.Tensor,
    aten.index_select.default,
    aten.gather.default,
    aten.constant_pad_nd.default,
    aten.roll.default,
    aten.flip.default,
    aten.repeat.default,
    aten.channel_shuffle.default,
    aten.pixel_shuffle.default,
    aten.pixel_unshuffle.default,
    aten.unfold.default,
    aten.diagonal.default,
    aten.dropout.default,
    aten.lift_fresh_copy.default,
    aten.detach.default,
    aten.chunk.default,
    aten.tensor_split.sections,
    aten.movedim.int,
    aten.unflatten.int,
    aten.tile.default,
    aten.upsample_nearest2d.vec,
    aten.upsample_nearest2d.default,
    # in-place slice assignment (``y[:, 1:3] = x``, circular padding) after functionalisation: the scatters that
    # write the assigned values back (scattered positions to the source, the rest to the base); ``copy`` below
    aten.slice_scatter.default,
    aten.select_scatter.default,
    aten.diagonal_scatter.default,
]


def _routing_vjp(call: RuleCall, relevance) -> list[Tensor | None]:
    node = call.node
    positions = [i for i, n in enumerate(call.inputs) if call.is_activation(n)]
    if not positions:
        return [None] * len(call.inputs)
    values = [call.value(n) for n in call.inputs]

    # rebuild the op's arguments with the flat input values substituted in order
    def run(*flat):
        it = iter(flat)

        def sub(a):
            if hasattr(a, "op") and hasattr(a, "target"):  # fx.Node
                return next(it)
            if isinstance(a, (list, tuple)):
                return type(a)(sub(b) for b in a)
            return a

        args = sub(tuple(node.args))
        kwargs = {k: sub(v) for k, v in node.kwargs.items()}
        return node.target(*args, **kwargs)

    cotangents = list(relevance) if isinstance(relevance, (list, tuple)) else [relevance]
    grads = vjp_multi(run, values, cotangents, wrt=positions)
    out: list[Tensor | None] = [None] * len(call.inputs)
    for p, g in zip(positions, grads):
        out[p] = g
    return out


# routing ops that may hand relevance to something other than their tensor inputs: the fill value of a pad, and
# the rounding of a cast to a narrower dtype
_LOSSY_ROUTING = {aten.constant_pad_nd.default, aten._to_copy.default}


def _loses_relevance(call: RuleCall) -> bool:
    """Whether ``J^T R`` can sum to less than ``R`` at this node: a constant tensor input (``cat`` of a class token
    and patch embeddings), a pad value, or a cast. Every other routing op maps each output element to one input
    element (copies summed back), so its routing is exactly conservative."""
    return call.node.target in _LOSSY_ROUTING or any(not call.is_activation(n) for n in call.inputs)


def _sum64(ts: Any) -> Tensor | float:
    parts = [t.to(torch.float64).sum() for t in (ts if isinstance(ts, (list, tuple)) else [ts]) if t is not None]
    return sum(parts) if parts else 0.0


@register_rule(ROUTING_OPS, group="routing", accepts=(Route,), default=Route())
def route(call: RuleCall, relevance) -> list[Tensor | None]:
    """Exact routing: ``R_x = J^T R`` for an op that only selects, moves or copies its input.

    Conservative, except where part of the output comes from a constant: positions taken from a constant tensor
    input (a ViT's class token in ``cat``) or from a pad value keep their relevance, and a cast to a narrower dtype
    rounds it; ``sum R - sum R_x`` is then recorded as absorbed (with ``track_absorbed``), so it is accounted, not
    lost."""
    out = _routing_vjp(call, relevance)
    if call.track and _loses_relevance(call):
        call.absorb(torch.as_tensor(_sum64(relevance) - _sum64(out)))
    return out


@register_rule(aten.copy.default, group="routing", accepts=(Route,), default=Route())
def copy_into(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = copy(dst, src)``, the functional form of ``dst.copy_(src)`` (in-place slice assignment, circular
    padding): ``y`` is ``src`` broadcast to ``dst``'s shape and cast to its dtype, ``dst``'s values are discarded.
    ``R_src = sum_to(R)`` (the relevance of every position it was broadcast to), ``R_dst = 0``. Exactly conservative
    (a constant ``src`` keeps ``R``, and a cast to a narrower dtype rounds it; both recorded as absorbed)."""
    src = call.node.args[1]
    if not call.is_activation(src):
        if call.track:
            call.absorb(relevance)
        return call.assign({})
    v = call.value(src)
    r = sum_to(relevance, v.shape).to(v.dtype)
    if call.track and r.dtype != relevance.dtype:
        call.absorb(torch.as_tensor(_sum64(relevance) - _sum64(r)))
    return call.assign({1: r})


def gradient_fallback(call: RuleCall, relevance) -> list[Tensor | None]:
    """The declared fallback of permissive mode: the op's VJP applied to the relevance (not an LRP rule)."""
    return _routing_vjp(call, relevance)


@register_rule(operator.getitem, group="getitem", accepts=(Route,), default=Route())
def getitem(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """Element ``i`` of a multi-output op: its relevance goes into slot ``i`` of the producer's relevance list."""
    raise AssertionError("getitem is handled by the emitter")  # slots are filled in lrp_fx.program


MAX_POOLS = {
    aten.max_pool2d_with_indices.default: aten.max_pool2d_with_indices_backward.default,
    aten.max_pool3d_with_indices.default: aten.max_pool3d_with_indices_backward.default,
}


@register_rule(list(MAX_POOLS), group="maxpool", accepts=(WinnerTakesAll, Gradient), default=WinnerTakesAll())
def max_pool(call: RuleCall, relevance: list) -> list[Tensor | None]:
    """Winner takes all: the relevance of each pooled output goes to the input that was the max (the gradient of
    max pooling, using the indices kept from the forward pass)."""
    r = relevance[0]
    if r is None:
        return call.first(None)
    x = call.arg(0)
    indices = call.out(index=1)
    node = call.node
    kernel, stride, padding, dilation, ceil = (list(node.args[1:]) + [None] * 5)[:5]
    stride = stride or []
    padding = padding if padding is not None else [0] * len(kernel)
    dilation = dilation if dilation is not None else [1] * len(kernel)
    backward = MAX_POOLS[node.target]
    return call.first(backward(r, x, kernel, stride, padding, dilation, bool(ceil), indices))


ADAPTIVE_MAX_POOLS = {
    aten.adaptive_max_pool2d.default: aten.adaptive_max_pool2d_backward.default,
    aten.adaptive_max_pool3d.default: aten.adaptive_max_pool3d_backward.default,
}


@register_rule(list(ADAPTIVE_MAX_POOLS), group="maxpool", accepts=(WinnerTakesAll, Gradient), default=WinnerTakesAll())
def adaptive_max_pool(call: RuleCall, relevance: list) -> list[Tensor | None]:
    """``adaptive_max_pool1d/2d/3d`` (1d captures as 2d on an unsqueezed input): winner takes all, as ``max_pool``,
    through the indices kept from the forward pass. An input that wins several (overlapping) windows collects the
    relevance of each. Exactly conservative."""
    r = relevance[0]
    if r is None:
        return call.first(None)
    x = call.arg(0)
    indices = call.out(index=1)
    return call.first(ADAPTIVE_MAX_POOLS[call.node.target](r, x, indices))


# Winner takes all between operands or over dimensions. Where several candidates tie for the max, each gets an equal
# share (what the op's gradient does too); a position that no candidate equals (a NaN output) passes nothing on.
ELEMENTWISE_MAX = [
    aten.maximum.default,
    aten.minimum.default,
    aten.fmax.default,
    aten.fmin.default,
    aten.max.other,
    aten.min.other,
]


@register_rule(ELEMENTWISE_MAX, group="maxpool", accepts=(WinnerTakesAll, Gradient), default=WinnerTakesAll())
def elementwise_max(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = maximum(a, b)`` (``minimum``, ``fmax``, ``fmin``): ``t_a = [a == y]``, ``t_b = [b == y]``,
    ``R_a = t_a R / (t_a + t_b)``, ``R_b = t_b R / (t_a + t_b)`` (broadcasts summed back): the winner takes all,
    a tie is split equally. A constant operand keeps the relevance of the positions it wins (recorded as absorbed).
    Exactly conservative."""
    if isinstance(call.rule, Gradient):
        return _routing_vjp(call, relevance)
    node = call.node
    y = call.out()
    wins = [(call.value(a) == y).to(relevance.dtype) for a in node.args[:2]]
    share = relevance / (wins[0] + wins[1]).clamp(min=1)
    shares: dict[int, Tensor] = {}
    kept = None
    for i, a in enumerate(node.args[:2]):
        if call.is_activation(a):
            shares[i] = sum_to(wins[i] * share, call.value(a).shape)
            kept = shares[i].sum() if kept is None else kept + shares[i].sum()
    if call.track:
        call.absorb(relevance.sum() - (kept if kept is not None else 0.0))
    return call.assign(shares)


REDUCED_MAX = [aten.amax.default, aten.amin.default, aten.max.default, aten.min.default]


@register_rule(REDUCED_MAX, group="maxpool", accepts=(WinnerTakesAll, Gradient), default=WinnerTakesAll())
def reduced_max(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = amax(x, dims, keepdim)`` (``amin``; ``max()``/``min()`` over everything): ``t = [x == y]`` (``y``
    broadcast back over ``dims``), ``R_x = t * R / sum_dims(t)``: the relevance of each output goes to the position
    that holds the max, split equally between ties. Exactly conservative. (``max.dim``, which also returns indices,
    is routed in ``misc.py``.)"""
    if isinstance(call.rule, Gradient):
        return _routing_vjp(call, relevance)
    x = call.arg(0)
    if x.dim() == 0:
        return call.first(relevance)
    dims = reduced_dims(call, x)
    kept_shape = keepdim_shape(x, dims)
    wins = (x == call.out().reshape(kept_shape)).to(relevance.dtype)
    ties = wins.sum(dims, keepdim=True).clamp(min=1)
    return call.first(wins * (relevance.reshape(kept_shape) / ties))


@register_rule(aten.logsumexp.default, group="maxpool", accepts=(WinnerTakesAll, Gradient), default=WinnerTakesAll())
def soft_maximum(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = logsumexp(x, dims, keepdim)``, the soft maximum: ``R_x = softmax_dims(x) * R`` with ``softmax_dims(x) =
    exp(x - y)``, the gradient of ``logsumexp`` (``Gradient`` gives the same numbers). Each element's share is its
    softmax weight, which sum to one, so exactly conservative; where one element dominates, it takes all, as
    ``amax``'s rule gives. (Decomposed, ``x - max`` divided the relevance by ``stab(0)`` at the maximum.)"""
    x = call.arg(0)
    if x.dim() == 0:
        return call.first(relevance)
    kept_shape = keepdim_shape(x, reduced_dims(call, x))
    y = call.out().reshape(kept_shape)
    weights = torch.exp(x - y)
    weights = torch.where(torch.isfinite(y), weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
    return call.first(weights * relevance.reshape(kept_shape).to(weights.dtype))
