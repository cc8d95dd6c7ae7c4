"""What a rule function sees: ``RuleCall``.

A rule function gets a ``RuleCall`` and the relevance arriving at its node's output, and returns one relevance per
tensor input (``call.inputs``), ``None`` where nothing flows. Forward values are requested through the call, never
read directly: each request becomes a Promise that the planner resolves by keeping or recomputing the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, fx

from .base import Epsilon, Rule

if TYPE_CHECKING:  # pragma: no cover
    from ..program import ProgramBuilder


def flat_input_nodes(node: fx.Node) -> list[fx.Node]:
    """Every ``fx.Node`` occurrence in ``node.args`` then ``node.kwargs``, in order, duplicates kept."""
    found: list[fx.Node] = []

    def visit(a: Any) -> None:
        if isinstance(a, fx.Node):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            for b in a:
                visit(b)
        elif isinstance(a, dict):
            for b in a.values():
                visit(b)

    visit(node.args)
    visit(node.kwargs)
    return found


class RuleCall:
    """One application of a rule to one node of the captured graph."""

    def __init__(self, node: fx.Node, rule: Rule, builder: ProgramBuilder) -> None:
        self.node = node
        self.rule = rule
        self._builder = builder
        self.inputs = flat_input_nodes(node)

    # -- forward values (through Promises) -------------------------------------------------------------------------
    def value(self, n: Any, *, support_only: bool = False) -> Any:
        """Forward value of ``n`` (a node, or a constant passed through).

        ``support_only=True`` declares that the value is only needed where this node's incoming relevance is
        non-zero; the planner may then serve it from an equivalent kept value (see ``lrp_fx.analysis``).
        """
        if isinstance(n, fx.Node):
            return self._builder.promise(n, requester=self.node, support_only=support_only)
        if isinstance(n, (list, tuple)):
            return type(n)(self.value(m, support_only=support_only) for m in n)
        return n

    def arg(self, i: int, default: Any = None, *, support_only: bool = False) -> Any:
        """Forward value of positional argument ``i`` (``default`` if absent)."""
        if i >= len(self.node.args):
            return default
        return self.value(self.node.args[i], support_only=support_only)

    def out(self, *, support_only: bool = False, index: int | None = None) -> Any:
        """Forward value of this node's output (a tuple for multi-output ops, or its element ``index``)."""
        return self._builder.promise(self.node, requester=self.node, support_only=support_only, index=index)

    def out_nonneg(self, *, support_only: bool = False) -> bool:
        """Whether the value ``out(support_only=...)`` serves is provably >= 0 (then ``stab(z) = z + eps``)."""
        return self._builder.served_by(self.node, support_only) in self._builder.nonneg

    # -- facts from the analyses -----------------------------------------------------------------------------------
    def is_activation(self, n: Any) -> bool:
        """Whether ``n`` depends on a model input (only activations receive relevance)."""
        return isinstance(n, fx.Node) and n in self._builder.activations

    def rule_of(self, n: Any) -> Rule | None:
        """The rule assigned to node ``n`` (``None`` if it has none: a constant, or a node relevance never reaches)."""
        assigned = self._builder.assignment.get(n) if isinstance(n, fx.Node) else None
        return assigned[1] if assigned is not None else None

    def nonneg(self, n: Any) -> bool:
        """Whether ``n`` is provably >= 0 (output of ReLU, max-pool of such, ...)."""
        return isinstance(n, fx.Node) and n in self._builder.nonneg

    @property
    def eps(self) -> float:
        """The stabiliser of this node's rule: ``Epsilon``'s ``epsilon``, else its ``stabilizer`` (1e-6 without)."""
        rule = self.rule
        return rule.epsilon if isinstance(rule, Epsilon) else getattr(rule, "stabilizer", 1e-6)

    @property
    def options(self) -> Any:
        return self._builder.options

    # -- bookkeeping -------------------------------------------------------------------------------------------------
    @property
    def track(self) -> bool:
        """Whether absorbed relevance is being recorded (tests and the coverage report turn this on)."""
        return self._builder.options.track_absorbed

    def absorb(self, amount: Tensor) -> None:
        """Record relevance this node absorbed (bias and stabiliser shares), summed over everything."""
        if self.track:
            self._builder.record_absorbed(self.node, amount.sum().to(torch.float64))

    def want_params(self) -> bool:
        return self._builder.wants_param_relevance(self.node)

    def param_relevance(self, arg_index: int, relevance: Tensor) -> None:
        self._builder.record_param_relevance(self.node, self.node.args[arg_index], relevance)

    def kernels(self, t: Tensor) -> Any:
        """The ``kernels`` package (Triton kernels as ``torch.library`` ops) where this call may use it: ``t`` on
        CUDA under ``LRP_FX_KERNELS=auto`` (any device under ``all``), no bookkeeping (absorbed shares, parameter
        relevance: they stay on the torch path) and Triton installed; ``None`` otherwise."""
        mode = self.options.kernels
        if mode == "off" or (mode == "auto" and not t.is_cuda) or self.track or self.want_params():
            return None
        try:
            import kernels
        except ImportError:  # Triton missing: the torch rules serve
            return None
        return kernels

    # -- shaping the answer ------------------------------------------------------------------------------------------
    def assign(self, per_arg: dict[int, Any]) -> list[Tensor | None]:
        """Build the answer from ``{positional arg index: relevance (or list of relevances for a list arg)}``."""
        out: list[Tensor | None] = []
        for i, a in enumerate(self.node.args):
            r = per_arg.get(i)
            if isinstance(a, fx.Node):
                out.append(r)
            elif isinstance(a, (list, tuple)):
                nodes = [b for b in a if isinstance(b, fx.Node)]
                rs = list(r) if r is not None else [None] * len(nodes)
                if len(rs) != len(nodes):
                    raise ValueError(f"{self.node.target}: {len(rs)} relevances for {len(nodes)} list entries")
                out.extend(rs)
        out.extend(None for _ in range(len(self.inputs) - len(out)))  # kwargs tensors get nothing
        return out

    def first(self, relevance: Tensor | None) -> list[Tensor | None]:
        """All relevance to positional argument 0."""
        return self.assign({0: relevance})


def times_finite(s: Tensor, v: Tensor | float) -> Tensor:
    """``s * v``, 0 where ``s`` is: a share of an additive ``-inf`` mask, where ``-0 * -inf`` would be NaN."""
    return torch.where(s == 0, torch.zeros((), dtype=s.dtype, device=s.device), s * v)


def sum_to(t: Tensor, shape: Sequence[int]) -> Tensor:
    """Reduce a broadcast result back to an operand's shape (the VJP of broadcasting)."""
    if tuple(t.shape) == tuple(shape):
        return t
    return t.sum_to_size(shape) if len(shape) else t.sum()


def reduced_dims(call: RuleCall, x: Tensor, position: int = 1) -> list[int]:
    """The dimensions a reduction node reduces (``amax``, ``logsumexp``, ``prod``, ``var``, ...), non-negative: its
    ``dim`` argument at ``position`` (or keyword), every dimension where none is given, the list is empty, or the
    argument there is a flag (``var(x, unbiased)``)."""
    args = call.node.args
    dims = args[position] if len(args) > position else call.node.kwargs.get("dim")
    if dims is None or isinstance(dims, bool):
        return list(range(x.dim()))
    dims = [dims] if isinstance(dims, int) else list(dims)
    return [d % x.dim() for d in dims] or list(range(x.dim()))


def keepdim_shape(x: Tensor, dims: Sequence[int]) -> list[int]:
    """``x``'s shape with the reduced ``dims`` kept as size 1 (a reduction's output with ``keepdim=True``)."""
    return [1 if d in dims else n for d, n in enumerate(x.shape)]
