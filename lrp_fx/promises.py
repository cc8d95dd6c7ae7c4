"""Promises and their planner.

A rule that needs a forward value asks for it through ``RuleCall.value``; in the traced attribution graph the request
is a ``lrp_fx::promise(value, id)`` node. ``PromisePlanner`` then resolves every promise node:

* **keep**: the promise is replaced by the forward value itself, which stays alive until its last rule runs;
* **recompute**: the chain of cheap forward ops (element-wise, views, copies, layer norms) from the nearest kept
  values is copied just before the first rule that needs the value, so the forward value can be freed after the
  forward pass.

Requests no rule result depends on (a routing rule's VJP traces its input only for the shape) are dropped first and
counted as ``dead``. Memory is counted per storage: a promised view is served by the node it views (its *owner*),
kept or recomputed with it, and ``bytes_kept`` counts each kept storage once.

Default is keep-everything (fastest). With ``memory_budget`` (bytes of kept activations) the planner recomputes
owners in execution order until the budget holds: a chain may run through owners recomputed before it, at most
``max_chain`` data-moving ops long (views are free), and only where the value is at least 1/8 of the bytes its chain
reads (a residual stream rebuilt add by add through whole stages is not worth it). ``memory_budget=0`` thus keeps
what only a matmul, convolution or reduction could rebuild, about what autograd saves for an input gradient.
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
    dead: int = 0  # requests traced by a rule whose result does not depend on them, dropped before planning

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
            "dead": self.dead,
        }


def _nbytes(node: fx.Node) -> int:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.numel() * val.element_size()
    return 0


def _is_view(node: fx.Node) -> bool:
    """A view (or a tuple element of one): re-running it moves no data."""
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:
        return _is_view(node.args[0])
    return getattr(node.target, "is_view", False)


def _viewed(view: fx.Node) -> fx.Node:
    """The node a view (or a tuple element of one) looks into."""
    return view.args[0] if isinstance(view.args[0], fx.Node) else view.all_input_nodes[0]


def _owner(node: fx.Node) -> fx.Node:
    """The node whose storage ``node`` is a view of (``node`` itself when it is not a view)."""
    while _is_view(node) and node.all_input_nodes:
        node = _viewed(node)
    return node


def _view_path(node: fx.Node, owner: fx.Node) -> list[fx.Node]:
    """The views from ``owner`` down to ``node``, in execution order."""
    path = []
    while node is not owner:
        path.append(node)
        node = _viewed(node)
    return path[::-1]


def _bytes_read(chain: list[fx.Node]) -> int:
    """Activation bytes the data-moving ops of a recompute chain read (views read nothing; parameters and inputs
    are there anyway)."""
    return sum(
        _nbytes(a)
        for n in chain
        if not _is_view(n)
        for a in n.all_input_nodes
        if a.op not in ("placeholder", "get_attr")
    )


def _cheap(node: fx.Node) -> bool:
    """Element-wise, view-like or a memory-bound copy or normalisation: recomputing costs a pass or two over
    memory, no matmul or convolution."""
    if node.op != "call_function":
        return False
    target = node.target
    if target is operator.getitem:
        return _cheap(node.args[0])
    tags = getattr(target, "tags", ())
    if torch.Tag.pointwise in tags:
        return True
    return _is_view(node) or target in _MEMORY_BOUND


_MEMORY_BOUND = {
    aten.cat.default,
    aten.clone.default,
    aten._to_copy.default,
    aten.max_pool2d_with_indices.default,
    aten.constant_pad_nd.default,
    # A layer norm's output is two passes over its input (statistics, then the affine map); rebuilding it from the
    # residual stream, which the add rules keep anyway, frees one activation per norm.
    aten.native_layer_norm.default,
}


class PromisePlanner:
    """Resolve the promise nodes of a traced attribution graph (see module docstring)."""

    def __init__(self, gm: fx.GraphModule, memory_budget: int | None = None, max_chain: int = 8) -> None:
        self.gm = gm
        self.budget = memory_budget
        self.max_chain = max_chain

    def plan(self, records: dict[int, PromiseRecord]) -> PromiseStats:
        graph = self.gm.graph
        requested = sum(1 for n in graph.nodes if n.op == "call_function" and n.target is PROMISE)
        # A rule may trace more than its result needs (a routing rule's VJP re-runs a view of its input only for the
        # view's shape): those promises are dead. Dropped first, they neither count as kept nor hold their value
        # (or the chain to it) as an anchor the recompute search must stop at.
        graph.eliminate_dead_code()
        promises = [n for n in graph.nodes if n.op == "call_function" and n.target is PROMISE]
        order = {n: i for i, n in enumerate(graph.nodes)}
        by_value: dict[fx.Node, list[fx.Node]] = {}
        for p in promises:
            by_value.setdefault(p.args[0], []).append(p)
        stats = PromiseStats(
            promises=len(promises), values=len(by_value), budget=self.budget, dead=requested - len(promises)
        )
        live_ids = {p.args[1] for p in promises}
        stats.aliased = sum(1 for pid, r in records.items() if r.aliased_to and pid in live_ids)
        forward = self._forward_nodes()
        # Memory is held by storages, not by nodes: a kept view keeps its base alive, and re-running a view of a
        # kept base saves nothing. So decisions are made per owner (the node a promised value is a view of, or the
        # value itself), and a recomputed owner brings its promised views back with it.
        groups: dict[fx.Node, list[fx.Node]] = {}
        for v in by_value:
            groups.setdefault(_owner(v), []).append(v)
        owned = {o for o in groups if o.op not in ("placeholder", "get_attr")}
        recompute: dict[fx.Node, list[fx.Node]] = {}
        if self.budget is not None:
            # In execution order, so that an owner's ancestors are decided first: a chain then stops at kept
            # owners only and runs on through recomputed ones (a layer norm's output and the contiguous copy of it
            # that a linear layer reads are both rebuilt from the residual stream), and no later decision can take
            # away a value an earlier chain starts from.
            kept_bytes = sum(_nbytes(o) for o in owned)
            available = set(owned)
            for o in sorted(owned, key=order.__getitem__):
                if kept_bytes <= self.budget:
                    break
                chain = self._chain(o, available=available - {o}, forward=forward)
                if chain is None or _nbytes(o) * 8 < _bytes_read(chain):
                    continue  # nothing cheap rebuilds it, or it is small next to what rebuilding reads (a norm's rstd)
                recompute[o] = chain
                available.discard(o)
                kept_bytes -= _nbytes(o)
        for o, values in groups.items():
            uses = [p for v in values for p in by_value[v]]
            if o in recompute:
                first = min(uses, key=order.__getitem__)
                mapping: dict[fx.Node, fx.Node] = {}
                with graph.inserting_before(first):
                    for n in recompute[o] + [n for v in values for n in _view_path(v, o)]:
                        if n not in mapping:
                            mapping[n] = graph.node_copy(n, lambda a, m=mapping: m.get(a, a))
                            mapping[n].meta["lrp_fx_recomputed"] = True
                for v in values:
                    for p in by_value[v]:
                        p.replace_all_uses_with(mapping[v])
                stats.recomputed += len(values)
                stats.bytes_recomputed += _nbytes(o)
                stats.chain_lengths.append(len(recompute[o]))
            else:
                for v in values:
                    for p in by_value[v]:
                        p.replace_all_uses_with(v)
                if o in owned:
                    stats.kept += len(values)
                    stats.bytes_kept += _nbytes(o)
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
            if n not in forward or not _cheap(n):
                return False
            # Views are free to re-run, so only the ops that move data count against ``max_chain``; the second
            # bound keeps a chain of many views from copying a large part of the graph. ``seen`` holds the nodes
            # visited so far, whether or not their inputs are resolved yet.
            ops = sum(1 for c in seen if not _is_view(c))
            if (not _is_view(n) and ops >= self.max_chain) or len(seen) >= 4 * self.max_chain:
                return False
            seen.add(n)
            if not all(need(a) for a in n.all_input_nodes):
                return False
            chain.append(n)
            return True

        return chain if need(v) and chain else None
