"""Promises and their planner.

A rule that needs a forward value asks for it through ``RuleCall.value``; in the traced attribution graph the request
is a ``lrp_fx::promise(value, id)`` node. ``PromisePlanner`` then resolves every promise node:

* **keep**: the promise is replaced by the forward value itself, which stays alive until its last rule runs;
* **recompute**: the chain of cheap forward ops (element-wise, views) from the nearest kept ancestors is copied just
  before the first rule that needs the value, so the forward value can be freed after the forward pass.

Default is keep-everything (fastest). With ``memory_budget`` (bytes of kept activations) the planner recomputes
values, cheapest chains first (shorter chain, then larger saving), until the budget holds or nothing cheap is left.
Decisions are deterministic and reported in ``PromiseStats``. This is the save-versus-recompute decision of
AOTAutograd's partitioner, made for the relevance pass's needs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx

aten = torch.ops.aten


@torch.library.custom_op("lrp_fx::promise", mutates_args=())
def promise(value: torch.Tensor, promise_id: int) -> torch.Tensor:
    """A rule's request for a forward value. Never executed in a planned program (the planner removes it)."""
    return value.clone()


@promise.register_fake
def _(value: torch.Tensor, promise_id: int) -> torch.Tensor:
    # keep the strides (expanded views have zero strides): rules trace views of promised values
    return value.new_empty_strided(value.size(), value.stride())


PROMISE = torch.ops.lrp_fx.promise.default


@dataclass
class PromiseRecord:
    """One request: which captured node's value, for whose rule, and how it was served."""

    promise_id: int
    value_of: str
    requester: str
    support_only: bool
    aliased_to: str | None = None  # support-only request served by an equal-on-support kept value


@dataclass
class PromiseStats:
    """What the planner did (the paper's promise count, chain length and density, in bytes)."""

    promises: int = 0
    values: int = 0
    kept: int = 0
    recomputed: int = 0
    aliased: int = 0
    bytes_kept: int = 0
    bytes_recomputed: int = 0
    chain_lengths: list[int] = field(default_factory=list)
    budget: int | None = None

    @property
    def max_chain(self) -> int:
        return max(self.chain_lengths, default=0)

    @property
    def mean_chain(self) -> float:
        return sum(self.chain_lengths) / len(self.chain_lengths) if self.chain_lengths else 0.0

    def as_dict(self) -> dict:
        return {
            "promises": self.promises,
            "values": self.values,
            "kept": self.kept,
            "recomputed": self.recomputed,
            "aliased": self.aliased,
            "bytes_kept": self.bytes_kept,
            "bytes_recomputed": self.bytes_recomputed,
            "max_chain": self.max_chain,
            "mean_chain": round(self.mean_chain, 2),
            "budget": self.budget,
        }


def _nbytes(node: fx.Node) -> int:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.numel() * val.element_size()
    return 0


def _cheap(node: fx.Node) -> bool:
    """Element-wise or view-like: recomputing costs one pass over memory, no matmul or convolution."""
    if node.op != "call_function":
        return False
    target = node.target
    if target is operator.getitem:
        return _cheap(node.args[0])
    tags = getattr(target, "tags", ())
    if torch.Tag.pointwise in tags:
        return True
    schema = getattr(target, "_schema", None)
    if schema is not None and getattr(target, "is_view", False):
        return True
    return target in _ROUTING_COPIES


_ROUTING_COPIES = {
    aten.cat.default,
    aten.clone.default,
    aten._to_copy.default,
    aten.max_pool2d_with_indices.default,
    aten.constant_pad_nd.default,
}


class PromisePlanner:
    """Resolve the promise nodes of a traced attribution graph (see module docstring)."""

    def __init__(self, gm: fx.GraphModule, memory_budget: int | None = None, max_chain: int = 8) -> None:
        self.gm = gm
        self.budget = memory_budget
        self.max_chain = max_chain

    def plan(self, records: dict[int, PromiseRecord]) -> PromiseStats:
        graph = self.gm.graph
        promises = [n for n in graph.nodes if n.op == "call_function" and n.target is PROMISE]
        by_value: dict[fx.Node, list[fx.Node]] = {}
        for p in promises:
            by_value.setdefault(p.args[0], []).append(p)
        stats = PromiseStats(promises=len(promises), values=len(by_value), budget=self.budget)
        stats.aliased = sum(1 for r in records.values() if r.aliased_to)
        forward = self._forward_nodes()
        activations = {v for v in by_value if v.op != "placeholder"}
        used_later = {n for n in forward if any(u not in forward for u in n.users)}
        recompute: dict[fx.Node, list[fx.Node]] = {}
        if self.budget is not None:
            kept_bytes = sum(_nbytes(v) for v in activations)
            pinned: set[fx.Node] = set()
            candidates = []
            for v in sorted(activations, key=lambda n: n.name):
                chain = self._chain(v, available=used_later - {v}, forward=forward)
                if chain is not None:
                    candidates.append((len(chain), -_nbytes(v), v.name, v, chain))
            for _, _, _, v, chain in sorted(candidates, key=lambda c: c[:3]):
                if kept_bytes <= self.budget:
                    break
                if v in pinned:
                    continue
                roots = {a for n in chain for a in n.all_input_nodes if a not in chain}
                if any(r in recompute for r in roots):
                    continue
                recompute[v] = chain
                pinned.update(roots)
                kept_bytes -= _nbytes(v)
        for v, uses in by_value.items():
            if v in recompute:
                chain = recompute[v]
                first = uses[0]
                mapping: dict[fx.Node, fx.Node] = {}
                with graph.inserting_before(first):
                    for n in chain:
                        mapping[n] = graph.node_copy(n, lambda a, m=mapping: m.get(a, a))
                for p in uses:
                    p.replace_all_uses_with(mapping[v])
                stats.recomputed += 1
                stats.bytes_recomputed += _nbytes(v)
                stats.chain_lengths.append(len(chain))
            else:
                for p in uses:
                    p.replace_all_uses_with(v)
                if v in activations:
                    stats.kept += 1
                    stats.bytes_kept += _nbytes(v)
            for p in uses:
                graph.erase_node(p)
        graph.eliminate_dead_code()
        graph.lint()
        self.gm.recompile()
        return stats

    def _forward_nodes(self) -> set[fx.Node]:
        """Nodes computed by the forward part: no promise (and hence no relevance) among their ancestors."""
        relevance: set[fx.Node] = set()
        forward: set[fx.Node] = set()
        for n in self.gm.graph.nodes:
            if n.op == "output":
                continue
            if (n.op == "call_function" and n.target is PROMISE) or any(a in relevance for a in n.all_input_nodes):
                relevance.add(n)
            elif n.meta.get("lrp_fx_seed"):
                relevance.add(n)
            else:
                forward.add(n)
        return forward

    def _chain(self, v: fx.Node, available: set[fx.Node], forward: set[fx.Node]) -> list[fx.Node] | None:
        """Cheap forward nodes to re-run, in order, to rebuild ``v`` from available values; ``None`` if none."""
        chain: list[fx.Node] = []
        seen: set[fx.Node] = set()

        def need(n: fx.Node) -> bool:
            if n in seen or (n is not v and n in available) or n.op in ("placeholder", "get_attr"):
                return True
            if n not in forward or not _cheap(n) or len(chain) >= self.max_chain:
                return False
            seen.add(n)
            if not all(need(a) for a in n.all_input_nodes):
                return False
            chain.append(n)
            return True

        return chain if need(v) and chain else None
