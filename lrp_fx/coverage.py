"""Rule coverage of one model: which aten ops its graph has, which rule each got, which have none, and what the
promise planner did. ``lrp-fx coverage`` prints :meth:`CoverageReport.render`.

Only *live* nodes need a rule: those that relevance flows through (on a path from a floating-point or token input
to the explained output). Nodes that only compute shapes, masks or constants are counted but need none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from .capture import user_frame
from .promises import PromiseStats

__all__ = ["CoverageReport", "MissingOp", "coverage", "report"]


@dataclass
class MissingOp:
    """An aten op without a registered rule: how many live nodes use it and where in the user's code."""

    op: str
    nodes: list[str]
    sources: list[str]


@dataclass
class CoverageReport:
    """Counts over the captured (canonicalised) graph of one model and input signature."""

    model: str
    inputs: str
    composite: str
    nodes: int  # call_function nodes of the captured graph
    op_counts: dict[str, int]  # op -> nodes
    live: int  # nodes relevance flows through (each needs a rule)
    ruled: int  # live nodes with a registered rule
    rules: dict[str, dict[str, int]]  # op -> {rule repr: live nodes}
    missing: list[MissingOp] = field(default_factory=list)
    stats: PromiseStats | None = None
    build_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def unique_ops(self) -> int:
        return len(self.op_counts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "inputs": self.inputs,
            "composite": self.composite,
            "nodes": self.nodes,
            "unique_ops": self.unique_ops,
            "live": self.live,
            "ruled": self.ruled,
            "ok": self.ok,
            "ops": {op: {"nodes": n, "rules": self.rules.get(op, {})} for op, n in self.op_counts.items()},
            "missing": [{"op": m.op, "nodes": m.nodes, "sources": m.sources} for m in self.missing],
            "promises": self.stats.as_dict() if self.stats is not None else None,
            "build_seconds": round(self.build_seconds, 3),
        }

    def render(self, ops: bool = True) -> str:
        """A plain-text report: summary, the per-op table (with ``ops``), missing ops with source lines, promises."""
        pct = 100.0 * self.ruled / self.live if self.live else 100.0
        lines = [
            f"coverage of {self.model} on {self.inputs}, composite {self.composite!r}",
            f"  aten nodes          {self.nodes:6d}   (call_function nodes of the captured, canonicalised graph)",
            f"  unique ops          {self.unique_ops:6d}",
            f"  live nodes          {self.live:6d}   (relevance flows through them; each needs a rule)",
            f"  nodes with a rule   {self.ruled:6d}   ({self.ruled}/{self.live} = {pct:.1f}% of live nodes)",
        ]
        if ops:
            width = max((len(op) for op in self.op_counts), default=10)
            lines += ["", f"  {'op':<{width}}  nodes  live  rule"]
            for op, n in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
                rules = self.rules.get(op, {})
                live = sum(rules.values())
                text = ", ".join(f"{r} x{c}" if len(rules) > 1 else r for r, c in rules.items()) or "-"
                lines.append(f"  {op:<{width}}  {n:5d}  {live:4d}  {text}")
        if self.missing:
            lines += ["", f"ops without a rule ({len(self.missing)}):"]
            for m in self.missing:
                lines.append(f"  {m.op}  x{len(m.nodes)}")
                lines += [f"      at {src}" for src in m.sources]
        if self.stats is not None:
            s = self.stats
            lines += [
                "",
                f"promises: {s.promises} requests ({s.dead} traced but unused, dropped) for {s.values} forward values: "
                f"{s.kept} kept "
                f"({s.bytes_kept / 2**20:.2f} MiB), {s.recomputed} recomputed ({s.bytes_recomputed / 2**20:.2f} MiB), "
                f"{s.aliased} aliased; recompute chains max {s.max_chain}, mean {s.mean_chain:.2f}; "
                f"budget {'none' if s.budget is None else s.budget}",
            ]
        lines += [
            f"program built in {self.build_seconds:.2f} s",
            "",
            "OK: every live node has a rule"
            if self.ok
            else f"MISSING: {len(self.missing)} op(s), {self.live - self.ruled} live node(s) without a rule",
        ]
        return "\n".join(lines)


def _describe_inputs(inputs: Any) -> str:
    def one(x: Any) -> str:
        shape = getattr(x, "shape", None)
        if shape is None:
            return type(x).__name__
        return f"{str(x.dtype).replace('torch.', '')}[{'x'.join(map(str, shape))}]"

    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(one(v) for v in inputs) + ")"
    return one(inputs)


def _add_missing(missing: dict[str, MissingOp], op: str, node: str, source: str, max_sources: int) -> None:
    """Record one node of ``op`` without a rule, and its source line (up to ``max_sources`` distinct ones)."""
    entry = missing.setdefault(op, MissingOp(op, [], []))
    entry.nodes.append(node)
    if source not in entry.sources and len(entry.sources) < max_sources:
        entry.sources.append(source)


def _composite_name(composite: Any) -> str:
    return composite if isinstance(composite, str) else getattr(composite, "name", repr(composite))


def _whole_output(output: Tensor) -> Tensor:
    return output


def coverage(
    model: nn.Module,
    inputs: Any,
    composite: str = "epsilon_plus_flat",
    *,
    name: str | None = None,
    max_sources: int = 3,
    **attribute_kwargs: Any,
) -> CoverageReport:
    """Build (and run once) the attribution program of ``model`` on ``inputs`` with ``strict=False``, so that ops
    without a rule are listed instead of raised, and count what it contains.

    ``max_sources`` limits the source lines listed per missing op; ``attribute_kwargs`` go to ``lrp_fx.attribute``
    (``target``, ``output``, ``memory_budget``, rule parameters...).
    """
    from .api import attribute

    # which ops have rules does not depend on the target: the whole output, whatever its shape (a segmentation map,
    # a dict's "out"), where a class index would need [batch, classes]
    attribute_kwargs.setdefault("target", _whole_output)
    res = attribute(model, inputs, composite=composite, strict=False, **attribute_kwargs)
    program = res.program
    graph = program.captured.graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    op_counts = Counter(str(n.target) for n in calls)
    rules: dict[str, Counter] = {}
    for a in program.assignments:
        rules.setdefault(a.op, Counter())["(gradient fallback: no rule)" if a.fallback else a.rule] += 1
    by_name = {n.name: n for n in calls}
    missing: dict[str, MissingOp] = {}
    for a in program.assignments:
        if not a.fallback:
            continue
        node = by_name.get(a.node)
        _add_missing(missing, a.op, a.node, user_frame(node) if node is not None else "<unknown>", max_sources)
    return CoverageReport(
        model=name or type(model).__name__,
        inputs=_describe_inputs(inputs),
        composite=_composite_name(composite),
        nodes=len(calls),
        op_counts=dict(op_counts),
        live=len(program.assignments),
        ruled=sum(1 for a in program.assignments if not a.fallback),
        rules={op: dict(c) for op, c in rules.items()},
        missing=list(missing.values()),
        stats=res.stats,
        build_seconds=program.build_seconds,
    )


def report(
    model: nn.Module,
    example_inputs: Any,
    composite: str = "attnlrp",
    *,
    output: Any = None,
    name: str | None = None,
    trace: bool = True,
    max_sources: int = 3,
    **rule_params: Any,
) -> CoverageReport:
    """Coverage without running the model: capture, canonicalise and prepare the graph, assign rules (``strict=False``
    semantics: ops without a rule are listed) and, with ``trace=True``, trace the attribution program with fake
    tensors and plan its promises. Nothing is computed, so a model and inputs on the ``meta`` device work: published
    sizes cost no memory (``torch.device("meta")`` around the model's construction, ``device="meta"`` inputs).

    ``output`` selects the explained output as in ``lrp_fx.attribute``; ``rule_params`` go to the preset.
    """
    import time

    from torch.utils import _pytree as pytree

    from .api import _builder, _split_inputs
    from .composites import resolve
    from .program import Options, feed

    start = time.perf_counter()
    args, kwargs = _split_inputs(example_inputs)
    leaves, _ = pytree.tree_flatten((args, kwargs))
    floats = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor) and leaf.is_floating_point()]
    comp = resolve(composite, None, rule_params)
    builder, _ = _builder(model, args, kwargs, floats, comp, Options(strict=False), output)
    captured = builder.captured
    stats = None
    if trace:
        stats = builder.build(feed(captured, model, leaves)).stats
    calls = [n for n in captured.graph.nodes if n.op == "call_function"]
    rules: dict[str, Counter] = {}
    missing: dict[str, MissingOp] = {}
    ruled = 0
    for node, (op_rule, rule) in builder.assignment.items():
        op = str(node.target)
        rules.setdefault(op, Counter())["(gradient fallback: no rule)" if op_rule is None else repr(rule)] += 1
        if op_rule is not None:
            ruled += 1
            continue
        _add_missing(missing, op, node.name, user_frame(node), max_sources)
    return CoverageReport(
        model=name or type(model).__name__,
        inputs=_describe_inputs(example_inputs),
        composite=_composite_name(composite),
        nodes=len(calls),
        op_counts=dict(Counter(str(n.target) for n in calls)),
        live=len(builder.assignment),
        ruled=ruled,
        rules={op: dict(c) for op, c in rules.items()},
        missing=list(missing.values()),
        stats=stats,
        build_seconds=time.perf_counter() - start,
    )
