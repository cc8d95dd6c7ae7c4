"""Reference-point rule: relevance in proportion to the change from a reference input the user names.

For a layer linear in its input, ``z = f(x; W) + b``, and a reference input ``x~`` (a root point in the sense of
deep Taylor decomposition, Montavon et al. 2017, with one reference for every output unit):

    R_x = (x - x~) * J_f^T (R / stab(f(x; W) - f(x~; W)))

Each output's relevance is split over the inputs by their contributions ``w_ij (x_i - x~_i)`` to ``z_j - z~_j``; the
bias cancels. Conservative up to the stabiliser: ``sum R_x = sum R * d / stab(d)``, ``d = f(x; W) - f(x~; W)``. With
``x~ = 0`` it is the epsilon rule without bias. Inputs at their reference get nothing, whatever their value: with the
perturbation baseline of a flipping benchmark (a blurred copy, a mean image) as ``x~``, the first layer answers "what
does moving this pixel from the baseline to its value contribute", the question integrated gradients answers when it
is given the same baseline.

``reference`` lives in the space of the *model input* the layer depends on (the image the user has, not the padded
or normalised tensor the layer sees): a float or a tensor broadcastable to that input, or a callable
``model_input -> reference`` (traced into the program, so it follows every batch: e.g. a Gaussian blur; it must
create any tensor it needs inside, from Python numbers: the program is traced on fake tensors). The rule
maps it to the layer's input by re-running the ops between the model input and the layer (padding, scaling,
normalisation) on the reference.

For sums (``aten.add``/``aten.sub``, group ``"add"``) the same reading gives ``R_a = (a - a~) R / stab(y - y~)``: a
constant operand (a bias-like buffer, a position embedding) sits at its reference and gets nothing, and when only one
operand is an activation it gets all of ``R`` exactly, whatever the reference. On a transformer's embedding sum
(``word + position + token type``) this hands a token the relevance of its whole embedding vector.

The rule extends the registrations of ``linear.py`` and ``elementwise.py`` (``aten.linear``, ``aten.convolution``,
``aten.add``, ``aten.sub``): the other rules of those ops are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, fx

from . import elementwise, linear  # noqa: F401  (registered first: extended below)
from .base import KeyedByValue, Rule
from .call import RuleCall, sum_to
from .linear import Group, Term, _affine, _propagate
from .registry import aten, get_rule, register_rule
from .stabilize import stabilize


@dataclass(frozen=True, eq=False)
class Reference(KeyedByValue, Rule):
    """Reference-point rule: ``R_x = (x - x~) * J^T (R / stab(z - z~))`` with ``x~`` the reference, given in the
    model input's space (float, tensor, or callable ``model_input -> reference``)."""

    reference: Any = 0.0
    stabilizer: float = 1e-6
    support: ClassVar[str] = "none"
    # the reference is baked into the program: a tensor changed in place after a build makes a new program (it kept
    # the old values before); a callable goes by identity
    value_fields: ClassVar[tuple[str, ...]] = ("reference", "stabilizer")


def _model_input(call: RuleCall, node: fx.Node) -> fx.Node:
    """The one floating-point model input (placeholder) ``node`` depends on."""
    found: set[fx.Node] = set()
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen or not call.is_activation(n):
            continue
        seen.add(n)
        if n.op == "placeholder":
            found.add(n)
        stack.extend(m for m in n.all_input_nodes)
    if len(found) != 1:
        names = ", ".join(sorted(n.name for n in found)) or "none"
        raise ValueError(f"the Reference rule needs exactly one model input behind {node.name}; found {names}")
    return found.pop()


def at_reference(call: RuleCall, node: fx.Node) -> Tensor:
    """The value ``node`` takes when the model input it depends on is replaced by the rule's reference: the ops
    between the model input and ``node`` re-run on the reference, constants and parameters as they are."""
    source = _model_input(call, node)
    memo: dict[fx.Node, Any] = {}

    def value(n: Any) -> Any:
        if not isinstance(n, fx.Node):
            return n
        if n in memo:
            return memo[n]
        if not call.is_activation(n):
            v = call.value(n)
        elif n is source:
            x = call.value(n)
            ref = call.rule.reference
            if callable(ref):
                ref = ref(x)
            elif isinstance(ref, Tensor):  # a constant of the program (a real tensor cannot enter the fake trace)
                ref = torch.tensor(ref.tolist(), dtype=x.dtype, device=x.device)
            else:
                ref = x.new_full((), float(ref))
            v = ref.to(x.dtype).expand_as(x)
        else:
            args = fx.node.map_arg(n.args, value)
            kwargs = fx.node.map_arg(n.kwargs, value)
            v = n.target(*args, **kwargs)
        memo[n] = v
        return v

    return value(node)


def reference_linear(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``aten.linear``/``aten.convolution``: ``R_x = (x - x~) * J^T (R / stab(f(x) - f(x~)))``, bias-free."""
    x, w = call.arg(0), call.arg(1)
    x_ref = at_reference(call, call.node.args[0])
    group = Group([Term(x, w, None), Term(x_ref, w, None, -1.0)], eps=call.rule.stabilizer)
    return call.first(_propagate(call, _affine(call), x, [group], relevance))


def reference_sum(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = a +- alpha * b``: ``R_a = (a - a~) R / stab(y - y~)``; a lone activation operand gets all of ``R``."""
    node = call.node
    alpha = node.kwargs.get("alpha", 1)
    coef = (1.0, (-1.0 if node.target is aten.sub.Tensor else 1.0) * alpha)
    active = [i for i in (0, 1) if call.is_activation(node.args[i])]
    if len(active) == 1:
        i = active[0]
        v = call.value(node.args[i])  # y - y~ = coef * (a - a~): R_a = R whatever the coefficient
        return call.assign({i: sum_to(relevance, v.shape)})
    deltas = {i: coef[i] * (call.value(node.args[i]) - at_reference(call, node.args[i])) for i in active}
    s = relevance / stabilize(deltas[0] + deltas[1], call.rule.stabilizer)
    if call.track:
        call.absorb(relevance - s * (deltas[0] + deltas[1]))
    return call.assign({i: sum_to(d * s, call.value(node.args[i]).shape) for i, d in deltas.items()})


def _extend(ops: list[Any], fn: Callable) -> None:
    """Let the registered rule of each op also accept ``Reference``, served by ``fn``; every other rule object goes
    to the op's existing rule function unchanged."""
    for op in ops:
        old = get_rule(op)
        if old is None:
            raise RuntimeError(f"{op} has no rule to extend with Reference (import order)")

        def dispatch(call: RuleCall, relevance: Any, _old: Callable = old.fn) -> Any:
            return fn(call, relevance) if isinstance(call.rule, Reference) else _old(call, relevance)

        dispatch.__qualname__ = f"{old.fn.__qualname__}+reference"
        register_rule(op, group=old.group, accepts=(*old.accepts, Reference), default=old.default, replace=True)(
            dispatch
        )


_extend([aten.linear.default, aten.convolution.default], reference_linear)
_extend([aten.add.Tensor, aten.sub.Tensor], reference_sum)
