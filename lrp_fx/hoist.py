"""Weight hoisting: compute the parameter-only part of an attribution program once, reuse it while unchanged.

An emitted program recomputes, on every call, values that depend on parameters and buffers only: batch norms folded
into the preceding convolution (``W * gamma / sqrt(var + eps)``), the modified weights of z+, gamma and alpha-beta
(``W.clamp(min=0)``, ``W + gamma * W^+``), their biases. For a ResNet-50 at batch 1 that is as much memory traffic as
the activations and, worse, the folded copies stay alive through the relevance pass (the rules need them again).

``hoist_weights`` splits the program graph in two, the way loop-invariant code motion would:

* the *prologue*: every node that no model input and no seed reaches (from parameters, buffers and the trace's
  own constants: Flat's ones, ZBox's bounds), ending at the values the rest needs;
* the *main* program: the original graph with those values as extra inputs.

``WeightCache`` runs the prologue on the first call and again only when a parameter or buffer it reads has changed:
the key is each tensor's storage address, shape, strides, dtype and version counter (in-place updates such as an
optimizer step or ``load_state_dict`` bump the counter; a replaced parameter has a new address: the cache holds a
reference to the old tensor, so its address cannot be reused meanwhile), and an exact copy of a sample of its
elements, for writes through ``.data`` (``p.data.copy_(new)``, ``p.data.mul_(0.9)``, EMA updates), which bump no
version counter: every element of a tensor of up to ``SAMPLE_SIZE`` (1024) elements, beyond that every
``ceil(numel / 1024)``-th element in memory order. So a ``.data`` write is seen when it changes a small tensor at all,
or any sampled element of a large one: a wholesale update always, and a write to any run of ``ceil(numel / 1024)``
consecutive elements (a weight matrix's row when it has at most 1024 rows). A ``.data`` write to a few elements of a
large tensor between the sampled ones is not seen: ``lrp_fx.CACHE.clear()`` or ``reuse_weights=False`` then. The check
costs about 1 % of a ResNet-50 attribution at batch 1 on a 2-core CPU (266 tensors, 0.6 MB of samples).
The hoisted values stay alive between calls (``WeightCache.nbytes``): a memory-for-time trade that
``attribute(..., reuse_weights=False)`` turns off.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx

# Sources of the captured graph whose values do not change from call to call (unless the user updates the model).
WEIGHT_KINDS = ("param", "buffer", "constant")


@dataclass
class HoistedProgram:
    """``main(*placeholders, seed, *prologue(*[placeholders[i] for i in slots]))`` equals the original program.

    ``main`` is built here for the eager runner alone, which rewrites it in place (``lrp_fx.inplace``)."""

    prologue: fx.GraphModule
    main: fx.GraphModule
    slots: list[int]  # indices (into the program's placeholders) of the weights the prologue reads
    n_hoisted_nodes: int

    @functools.cached_property
    def key(self) -> tuple:
        """What the prologue computes: its code, the weights it reads and its constants by value. Two programs of
        one model with equal keys (the same composite at another batch size) cache the same values."""
        consts = []
        for node in self.prologue.graph.nodes:
            if node.op == "get_attr":
                t = getattr(self.prologue, node.target)
                if isinstance(t, Tensor):
                    flat = t.detach().cpu().contiguous().reshape(-1)
                    digest = hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()
                    consts.append((node.target, t.dtype, tuple(t.shape), digest))
                else:
                    consts.append((node.target, repr(t)))
        return (self.prologue.code, tuple(self.slots), tuple(consts))


def _deterministic(node: fx.Node) -> bool:
    tags = getattr(node.target, "tags", ())
    return torch.Tag.nondeterministic_seeded not in tags


def hoist_weights(gm: fx.GraphModule, kinds: list[str]) -> HoistedProgram | None:
    """Split ``gm`` (placeholders: one per captured source with ``kinds[i]``, then the seed) into prologue and main.

    Returns ``None`` when nothing worth hoisting exists (only views of parameters, or no parameter-only node).
    """
    graph = gm.graph
    phs = [n for n in graph.nodes if n.op == "placeholder"]
    weight_phs = {ph for ph, kind in zip(phs, kinds) if kind in WEIGHT_KINDS}
    # tensors the trace itself created (a rule's tensor-valued parameter, e.g. ZBox's per-channel bounds)
    constants = {n for n in graph.nodes if n.op == "get_attr"}
    invariant: set[fx.Node] = set()  # call_function nodes computed from weights and constants only
    # of those, the ones computed from a weight or constant; the rest are built from nothing (``torch.zeros`` of a
    # fixed shape in a rule or a target callable): cheap, and a relevance pass may write into them or return them,
    # so every call builds its own (a cached one would carry one call's writes into the next, or alias its result)
    weighted: set[fx.Node] = set()
    for n in graph.nodes:
        if n.op != "call_function" or not _deterministic(n):
            continue
        if all(a in invariant or a in weight_phs or a in constants for a in n.all_input_nodes):
            invariant.add(n)
            if any(a in weight_phs or a in constants or a in weighted for a in n.all_input_nodes):
                weighted.add(n)
    frontier = [n for n in graph.nodes if n in weighted and any(u not in weighted for u in n.users)]
    if not frontier or any(not isinstance(n.meta.get("val"), Tensor) for n in frontier):
        return None
    if all(_is_view(n) for n in weighted):
        return None  # transposes and reshapes of parameters cost nothing: keep the program as it is

    pro = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    used = [ph for ph in phs if ph in weight_phs and any(u in invariant for u in ph.users)]
    for ph in used:
        env[ph] = pro.node_copy(ph)
    for n in graph.nodes:
        if n in constants and any(u in invariant for u in n.users):
            env[n] = pro.node_copy(n)
        elif n in invariant:
            env[n] = pro.node_copy(n, env.__getitem__)
    pro.output(tuple(env[n] for n in frontier))
    pro.eliminate_dead_code()

    main = fx.Graph()
    menv: dict[fx.Node, fx.Node] = {}
    for ph in phs:
        menv[ph] = main.node_copy(ph)
    for i, n in enumerate(frontier):
        new = main.placeholder(f"hoisted_{i}_{n.name}")
        new.meta = dict(n.meta)
        menv[n] = new
    hoisted = set(frontier)

    def handed_out(a: fx.Node) -> fx.Node:  # a cached value returned as is would be the next call's too: a copy
        return main.call_function(torch.ops.aten.clone.default, (menv[a],)) if a in hoisted else menv[a]

    for n in graph.nodes:
        if n.op == "placeholder" or n in weighted:
            continue
        menv[n] = main.node_copy(n, handed_out if n.op == "output" else menv.__getitem__)
    main.eliminate_dead_code()
    return HoistedProgram(
        prologue=fx.GraphModule(gm, pro),
        main=fx.GraphModule(gm, main),
        slots=[phs.index(ph) for ph in used],
        n_hoisted_nodes=len(weighted),
    )


def _is_view(n: fx.Node) -> bool:
    return n.target is operator.getitem or bool(getattr(n.target, "is_view", False))


def _key(t: Any) -> Any:
    if not isinstance(t, Tensor):
        return ("value", t)
    # ``_version`` is the autograd version counter: the only record of in-place updates (no public equivalent).
    try:
        version = t._version
    except RuntimeError:  # an inference tensor has no version counter: the content sample alone sees updates
        version = None
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device, version)


# Writes through ``.data`` (``p.data.copy_(new)``, EMA updates, weight surgery) do not bump ``_version``: the cache
# also keeps an exact copy of a sample of each weight's elements: all of them up to ``SAMPLE_SIZE``, beyond that every
# ``ceil(numel / SAMPLE_SIZE)``-th element in memory order, the last one among them.
SAMPLE_SIZE = 1024


def _sample(t: Tensor) -> Tensor | None:
    """``t``'s sampled elements as a 1-d view (a copy only for a tensor with gaps or overlaps in memory); ``None``
    for a layout other than strided (sparse, quantized): those are seen through the key alone."""
    if t.layout is not torch.strided or t.is_quantized:
        return None
    n = t.numel()
    if n <= SAMPLE_SIZE:
        return t.reshape(-1)
    if not t.is_contiguous():  # e.g. channels-last: its elements in memory order, if they are dense
        t = t.permute(sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    step = -(-n // SAMPLE_SIZE)
    return t.reshape(-1)[(n - 1) % step :: step]  # every step-th element, the last one among them


def _samples(weights: list[Any]) -> tuple[dict[Any, list[Tensor]], bool]:
    """The weights' samples per device and dtype, and whether every sample is a view of its weight's memory (then
    the same samples read the weights' current contents for as long as their keys are unchanged)."""
    parts: dict[Any, list[Tensor]] = {}
    views = True
    for w in weights:
        if isinstance(w, Tensor):
            sample = _sample(w)
            if sample is not None:
                parts.setdefault((w.device, w.dtype), []).append(sample)
                views = views and sample.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()
    return parts, views


def _fingerprint(parts: dict[Any, list[Tensor]]) -> dict[Any, Tensor]:
    """Copies of the samples as bytes, one tensor per device and dtype (compared with one ``torch.equal`` each: bit
    for bit, so NaNs compare equal; one device sync per group on a GPU)."""
    return {group: torch.cat(p).view(torch.uint8) for group, p in parts.items()}  # cat: a copy


def _same_fingerprint(a: dict[Any, Tensor], b: dict[Any, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[g], b[g]) for g in a)


@dataclass
class WeightCache:
    """The prologue's outputs for the weights they were computed from (see module docstring)."""

    key: list[Any] | None = None
    values: tuple[Tensor, ...] = ()
    refs: list[Any] = field(default_factory=list)  # the weights of ``key``: keeps their storage (addresses) alive
    runs: int = 0  # how many times the prologue ran
    fingerprint: dict[Any, Tensor] = field(default_factory=dict)  # ``_fingerprint`` of the weights of ``key``
    # the samples of the weights of ``key`` when all are views (``_samples``): a call with the same key reuses them
    # instead of slicing every weight again (1.5 of 2.4 ms per call for ResNet-50's 320 tensors on a CPU)
    samples: dict[Any, list[Tensor]] | None = None

    def get(self, hoisted: HoistedProgram, placeholder_values: list[Any]) -> tuple[Tensor, ...]:
        weights = [placeholder_values[i] for i in hoisted.slots]
        key = [_key(w) for w in weights]
        if key == self.key and self.samples is not None:
            # same addresses, layouts and versions, and ``refs`` keeps those storages alive: the views still read
            # these weights' memory, as fresh samples would
            parts, views = self.samples, True
        else:
            parts, views = _samples(weights)
        fingerprint = _fingerprint(parts)
        if key != self.key or not _same_fingerprint(fingerprint, self.fingerprint):
            self.values = tuple(hoisted.prologue(*weights))
            self.key, self.refs, self.fingerprint = key, weights, fingerprint
            self.samples = parts if views else None
            self.runs += 1
        return self.values

    @property
    def nbytes(self) -> int:
        """Bytes held between calls by hoisted values that are not views of the model's own tensors."""
        seen, total = set(), 0
        ref_ptrs = {w.untyped_storage().data_ptr() for w in self.refs if isinstance(w, Tensor)}
        for v in self.values:
            ptr = v.untyped_storage().data_ptr()
            if ptr in ref_ptrs or ptr in seen:
                continue
            seen.add(ptr)
            total += v.untyped_storage().nbytes()
        return total

    def outdated(self) -> bool:
        """Whether the weights this cache was computed from have changed since (new storage, an in-place update):
        its values would be recomputed at its next use, and meanwhile pin memory (the old parameters' products)."""
        return self.key is not None and [_key(w) for w in self.refs] != self.key

    def clear(self) -> None:
        self.key, self.values, self.refs, self.fingerprint, self.samples = None, (), [], {}, None
