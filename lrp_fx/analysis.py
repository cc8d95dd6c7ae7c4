"""Facts about the captured graph that rule assignment, rules and the planner use.

* ``activations``: nodes that depend on a floating-point model input; only they carry relevance.
* ``live``: activations on a path from an input to the explained output.
* ``nonneg``: nodes provably >= 0 (ReLU outputs and what routing or pooling makes of them). Sign-split rules skip
  their ``x^-`` terms exactly there.
* ``support_follows_value``: nodes whose incoming relevance provably vanishes wherever their value is 0. A rule that
  needs a value only where its relevance is non-zero (``support_only`` promises) may then be served the output of a
  following ReLU instead of the pre-activation: equal on the support, and kept anyway for the next layer.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten

_NONNEG_SOURCES = {
    aten.relu.default,
    aten.sigmoid.default,
    aten.exp.default,
    aten._softmax.default,
    aten.hardsigmoid.default,
    aten.relu6.default,
    aten.abs.default,
    aten.softplus.default,
    aten.sqrt.default,  # NaN, not a negative number, where the input is negative
}
_NONNEG_IF_ALL_INPUTS = {"routing", "maxpool", "pool", "add", "mul", "getitem"}
# interpolations with negative weights (bicubic): a non-negative image can overshoot below zero at an edge
_BICUBIC = {aten._upsample_bicubic2d_aa.default, aten._upsample_bicubic2d_aa.vec}
_GRID_SAMPLERS = {aten.grid_sampler_2d.default, aten.grid_sampler_3d.default}  # interpolation_mode 2: bicubic
# routing ops whose tensor inputs after the first are positions (integer or bool), not values
_INDEXED_ROUTING = {aten.index.Tensor, aten.index_select.default, aten.gather.default}


def activations(graph: fx.Graph, float_inputs: set[fx.Node]) -> set[fx.Node]:
    found = set(float_inputs)
    for node in graph.nodes:
        if node.meta.get("lrp_fx_constant"):  # masks, normalisers, gates: no relevance (lrp_fx.prepare)
            continue
        if node.op == "call_function" and any(n in found for n in node.all_input_nodes):
            found.add(node)
    return found


def live(graph: fx.Graph, acts: set[fx.Node], output: fx.Node) -> list[fx.Node]:
    """Activations from which ``output`` is reachable, in topological order."""
    reach = {output}
    for node in reversed(list(graph.nodes)):
        if node in reach:
            reach.update(n for n in node.all_input_nodes if n in acts)
    return [n for n in graph.nodes if n in reach and n in acts]


def _value_arguments_nonneg(node: fx.Node) -> bool:
    """Whether every number ``node`` computes with is >= 0: the ``Scalar`` arguments of its schema (a pad's fill
    value, ``add``'s ``alpha``, a ``mul`` by a number) and an average pool's ``divisor_override``. Sizes, dims and
    strides (``int`` arguments, negative dims included) do not scale values and are not checked."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return True
    bound = dict(zip((a.name for a in schema.arguments), node.args))
    bound.update(node.kwargs)
    for arg in schema.arguments:
        v = bound.get(arg.name)
        if isinstance(v, fx.Node) or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if ("number" in str(arg.type) or arg.name == "divisor_override") and v < 0:  # number: a Scalar
            return False
    if node.target in (aten.add.Tensor, aten.mul.Tensor):  # a number in place of the Tensor ``other``
        return all(not isinstance(a, (int, float)) or a >= 0 for a in node.args[1:] if not isinstance(a, fx.Node))
    return True


def _bounds_nonneg(node: fx.Node) -> bool:
    """``clamp(x, min, max)`` / ``hardtanh(x, min, max)`` with ``min >= 0`` and no ``max < 0`` (min > max makes the
    output ``max`` everywhere)."""
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min", node.kwargs.get("min_val"))
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max", node.kwargs.get("max_val"))
    if node.target is aten.hardtanh.default:
        low = -1.0 if low is None else low
        high = 1.0 if high is None else high
    return isinstance(low, (int, float)) and low >= 0 and (not isinstance(high, (int, float)) or high >= 0)


def _is_position(node: fx.Node, arg: fx.Node) -> bool:
    """Whether ``arg`` enters ``node`` only as positions (the index of a gather, a roll's computed indices)."""
    if node.target not in _INDEXED_ROUTING or arg is node.args[0]:
        return False
    val = arg.meta.get("val")
    return isinstance(val, torch.Tensor) and not val.is_floating_point() and not val.is_complex()


def _square(node: fx.Node) -> bool:
    """``x * x`` and ``x ** p`` for an even integer ``p``: >= 0 whatever the sign of ``x``."""
    if node.target is aten.mul.Tensor:
        return len(node.args) == 2 and node.args[0] is node.args[1]
    if node.target is aten.pow.Tensor_Scalar:
        p = node.args[1]
        return isinstance(p, (int, float)) and not isinstance(p, bool) and float(p).is_integer() and p % 2 == 0
    return False


def nonneg(graph: fx.Graph, acts: set[fx.Node], groups: dict[fx.Node, str]) -> set[fx.Node]:
    found: set[fx.Node] = set()
    for node in graph.nodes:
        if node not in acts or node.op != "call_function":
            continue
        if node.target in _NONNEG_SOURCES or _square(node):
            found.add(node)
        elif node.target in (aten.hardtanh.default, aten.clamp.default):
            if _bounds_nonneg(node):
                found.add(node)
        elif node.target is aten.pow.Tensor_Scalar:  # a power of a non-negative base (inf at 0 ** -p)
            if node.args[0] in found:
                found.add(node)
        elif groups.get(node) in _NONNEG_IF_ALL_INPUTS:
            if node.target is aten.sub.Tensor or node.target in _BICUBIC:
                continue
            if node.target in _GRID_SAMPLERS and (len(node.args) < 3 or node.args[2] not in (0, 1)):
                continue  # bilinear (0) and nearest (1) take convex combinations; bicubic (2) need not
            values = [n for n in node.all_input_nodes if not _is_position(node, n)]
            if values and all(n in found for n in values) and _value_arguments_nonneg(node):
                found.add(node)
    return found


def support_follows_value(live_nodes: list[fx.Node], supports: dict[fx.Node, str], output: fx.Node) -> set[fx.Node]:
    """Nodes whose relevance vanishes where their value vanishes (see module docstring).

    ``supports[c]`` is the support property of the rule assigned to consumer ``c``: "proportional" (its input
    relevance has the form ``x * something``), "follows" (holds for its input if it holds for its output; getitem
    counts as this) or "none". A node qualifies when each live consumer is proportional, or follows and qualifies.
    """
    live_set = set(live_nodes)
    ok: set[fx.Node] = set()
    for node in reversed(live_nodes):
        if node is output or any(u.op == "output" for u in node.users):
            continue  # the seed is arbitrary
        users = [u for u in node.users if u in live_set]
        if not users:
            continue
        if all(_passes(u, supports, ok) for u in users):
            ok.add(node)
    return ok


def _passes(user: fx.Node, supports: dict[fx.Node, str], ok: set[fx.Node]) -> bool:
    kind = "follows" if user.target is operator.getitem else supports.get(user, "none")
    return kind == "proportional" or (kind == "follows" and user in ok)
