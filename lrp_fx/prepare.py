"""Graph preparation for transformers: what carries relevance, and ops rewritten into the form rules expect.

Runs on the captured graph after ``canonicalize`` (``lrp_fx.api`` calls ``prepare(captured)``). Four rewrites and one
marking pass; each is exact (the graph computes the same values):

* ``matmul_to_linear``: ``mm(x, W)`` and ``addmm(b, x, W)`` with a constant ``W`` (a parameter, buffer or anything not
  computed from a model input), as ``x @ W`` and GPT-2's ``Conv1D`` decompose, become ``linear(x, W^T, b)``, so they
  get the linear-family rules and the composite's choice for dense layers.
* ``embedding_bag_to_lookup``: ``nn.EmbeddingBag`` in ``sum``/``mean`` mode becomes ``embedding(W, ids)`` summed per
  bag with ``index_add`` (divided by the bag sizes for ``mean``), in ``max`` mode a ``scatter_reduce`` with
  ``amax``, so its ids get per-token relevance too.
* ``hoist_embedding_indices``: ``embedding(W, f(ids))`` with ``f`` a chain of reshapes, slices or permutations of an
  integer model input becomes ``f'(embedding(W, ids))`` (``f'`` the same ops on a tensor with a trailing hidden
  dimension), so the token ids feed the embedding directly and can receive per-token relevance
  (``lrp_fx.rules.embedding``).
* ``mark_constants``: nodes that carry no relevance get ``node.meta["lrp_fx_constant"] = reason``; the activation
  analysis (``lrp_fx.analysis.activations``) treats them as constants although they are computed from inputs:

  - ``"mask"``: every non-floating result (boolean masks, comparisons, integer indices, positions);
  - ``"shape"``: values that only use an input's shape (``full_like``, ``zeros_like``, ``new_ones``, ...);
  - ``"step"``: piecewise-constant functions (``sign``, ``sgn``, ``heaviside``), whose derivative is zero wherever it
    exists: ``sign(z) * relu(|z|)`` (``lp_pool``) hands all its relevance to ``relu(|z|)``;
  - ``"normaliser"``: the root of a statistic that an activation is divided by or multiplied with, i.e. ``rsqrt``,
    ``sqrt`` or ``pow(., +-0.5)`` of an expression built from a reduction (``mean``, ``sum``, ``var``) plus or times
    constants, and vector norms. RMS norm (``x * rsqrt(mean(x^2) + eps) * w``) then becomes the identity on ``x``,
    and ``x / ||x||`` hands all relevance to ``x``: the normaliser is treated as constant, as layer norm's is;
  - ``"gate"``: in ``u * g`` where ``u`` is a scaled copy of some ``x`` and ``g`` an element-wise function of that
    same ``x`` only (GPT-2's ``gelu_new`` ``0.5 x (1 + tanh(...))``, exact GELU ``0.5 x (1 + erf(x / sqrt 2))``,
    ``x * sigmoid(x)``), the gate ``g`` is constant, so the decomposed activation passes relevance through unchanged
    as the whole activation ops do;
  - ``"gate"`` also: in ``a * g`` where ``g`` is the output of a sigmoid-type function (``sigmoid``,
    ``hardsigmoid``: a value in [0, 1]) and ``a`` is not, ``g`` is a gate (squeeze-excitation in EfficientNet,
    MobileNetV3 and RegNetY; LSTM and GLU gates). Following Arras et al. (2017, "signal-take-all"), the gate is
    constant and all relevance goes to the gated signal: splitting it uniformly would hand half of it to the
    gate's logits, where ``R / stab(g)`` explodes for gates near zero. The complement ``1 - g`` of such a gate is a
    gate too (a GRU's state update ``(1 - z) * h + z * q``).
  - ``"decay"``: in a product of two activations (``mul``, or ``bmm``/``mm`` from an ``einsum``), a factor that is
    the output of ``exp`` (through slices, reshapes, permutations and casts) is a state-space decay, the
    discretised state matrix ``exp(dt * A)`` of Mamba's selective scan and Mamba-2's chunked scan. Following
    MambaLRP (Rezaei Jafari et al., 2024) it is constant: the recurrence ``h_t = exp(dt_t A) h_{t-1} + B_t x_t`` is
    then linear in the state, which receives all relevance of ``exp(dt_t A) * h_{t-1}``; with the uniform rule the
    decay would take half of it at every step and pass it to ``dt`` through the identity on ``exp`` (and the
    relevance of ``exp(0) = 1`` on Mamba-2's diagonal blocks would have nowhere to go);
  - ``"router"``: in ``e * w`` where ``w`` is a mixture-of-experts router weight (the values of a ``topk`` over the
    router's scores, possibly renormalised by their sum, reshaped or cast) and ``e`` an expert's output, ``w`` is a
    gate: constant, so the expert output receives all of the product's relevance and the router none (Mixtral,
    Qwen2-MoE, OLMoE).

``token_inputs(captured)`` lists the integer model inputs that feed an embedding as its indices (after hoisting):
``lrp_fx.attribute`` gives them per-token relevance.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from .capture import Captured
from .rules.norm import is_normaliser

aten = torch.ops.aten

CONSTANT_KEY = "lrp_fx_constant"
# the output of an activation written out (``x * sigmoid(x)``, ``gelu_new``): a gate for ``ConstantGate`` as a whole
# activation op is (``rules.elementwise.is_gate``)
ACTIVATION_KEY = "lrp_fx_activation"

# ops whose result depends on an input's shape, dtype or device only
SHAPE_ONLY = {
    aten.full_like.default,
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.empty_like.default,
    aten.rand_like.default,
    aten.randn_like.default,
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_full.default,
    aten.new_empty.default,
    aten.scalar_tensor.default,
    aten.sym_size.int,
    aten.sym_numel.default,
}

# piecewise-constant functions: their value carries no relevance (the derivative is zero wherever it exists), so a
# product ``sign(z) * f(z)`` (``lp_pool``'s decomposition) hands all of its relevance to ``f(z)``
STEP_FUNCTIONS = {aten.sign.default, aten.sgn.default, aten.heaviside.default}

# element-wise ops, for recognising decomposed activations (gates)
ELEMENTWISE = {
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.div.Tensor,
    aten.div.Scalar,
    aten.add.Tensor,
    aten.add.Scalar,
    aten.sub.Tensor,
    aten.sub.Scalar,
    aten.rsub.Scalar,
    aten.neg.default,
    aten.pow.Tensor_Scalar,
    aten.tanh.default,
    aten.sigmoid.default,
    aten.erf.default,
    aten.exp.default,
    aten.log.default,
    aten.sqrt.default,
    aten.rsqrt.default,
    aten.reciprocal.default,
    aten.abs.default,
    aten.clamp.default,
    aten.clamp_min.default,
    aten.clamp_max.default,
    aten.relu.default,
    aten.gelu.default,
    aten.silu.default,
    aten.softplus.default,
    aten.hardtanh.default,
}
# functions with values in [0, 1] whose product with a signal is a gate
GATE_FUNCTIONS = {aten.sigmoid.default, aten.hardsigmoid.default}
_SCALINGS = {aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar, aten.neg.default}

# index chains that may sit between token ids and an embedding (each maps positions, never values)
_INDEX_CHAIN = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.slice.Tensor,
    aten.select.int,
    aten.expand.default,
    aten.permute.default,
    aten.clone.default,
    aten.alias.default,
    aten._to_copy.default,
}


def _val(n: Any) -> Any:
    return n.meta.get("val") if isinstance(n, fx.Node) else None


def input_nodes(captured: Captured) -> dict[int, fx.Node]:
    """``{flat input leaf index: placeholder}`` for the model's own inputs."""
    phs = [n for n in captured.graph.nodes if n.op == "placeholder"]
    return {src.index: ph for ph, src in zip(phs, captured.sources) if src.kind == "input"}


def input_dependent(graph: fx.Graph, inputs: set[fx.Node]) -> set[fx.Node]:
    """Nodes computed from a model input (whatever its dtype)."""
    found = set(inputs)
    for node in graph.nodes:
        if node.op == "call_function" and any(n in found for n in node.all_input_nodes):
            found.add(node)
    return found


def prepare(captured: Captured) -> dict[str, int]:
    """Run every rewrite and the marking pass; returns what each did."""
    gm = captured.gm
    inputs = set(input_nodes(captured).values())
    counts = {
        "matmuls_to_linear": matmul_to_linear(gm, input_dependent(gm.graph, inputs)),
        "embedding_bags_to_lookups": embedding_bag_to_lookup(gm),
        "embedding_indices_hoisted": hoist_embedding_indices(gm, inputs),
    }
    counts["constants_marked"] = mark_constants(gm, input_dependent(gm.graph, inputs))
    gm.graph.lint()
    gm.recompile()
    return counts


# -- rewrites --------------------------------------------------------------------------------------------------------
def _one_matrix(graph: fx.Graph, w: fx.Node) -> fx.Node | None:
    """The ``[K, N]`` matrix a constant ``bmm`` operand ``[B, K, N]`` holds for every batch entry: its only entry
    (``B == 1``, as ``torch.einsum`` with a weight captures) or the matrix it expands (``W.expand(B, K, N)``)."""
    val = _val(w)
    if val is None or val.dim() != 3:
        return None
    if w.op == "call_function" and w.target is aten.expand.default:
        src = w.args[0]
        sval = _val(src)
        if sval is not None and (sval.dim() == 2 or (sval.dim() == 3 and sval.shape[0] == 1)):
            return src if sval.dim() == 2 else _call(graph, aten.select.int, (src, 0, 0))
    if isinstance(val.shape[0], int) and val.shape[0] == 1:
        return _call(graph, aten.select.int, (w, 0, 0))
    return None


def matmul_to_linear(gm: fx.GraphModule, dependent: set[fx.Node]) -> int:
    graph = gm.graph
    done = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default, aten.bmm.default):
            continue
        if node.target is aten.bmm.default:  # a dense layer written as einsum or as a bmm with an expanded weight
            x, w = node.args[:2]
            if x not in dependent or w in dependent:
                continue
            with graph.inserting_before(node):
                w = _one_matrix(graph, w)
            if w is None:
                continue
            b = None
        elif node.target is aten.mm.default:
            x, w = node.args[:2]
            b = None
        else:
            b, x, w = node.args[:3]
            beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
            bval = _val(b)
            if beta != 1 or alpha != 1 or b in dependent or bval is None or bval.dim() != 1:
                continue
        if x not in dependent or w in dependent:
            continue
        with graph.inserting_before(node):
            wt = graph.call_function(aten.t.default, (w,))
            new = graph.call_function(aten.linear.default, (x, wt, b))
        new.meta = dict(node.meta)
        new.meta["lrp_fx_rewritten_from"] = str(node.target)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        done += 1
    return done


def _chain_to_input(idx: Any, inputs: set[fx.Node]) -> list[fx.Node] | None:
    """The index-chain nodes from an input placeholder to ``idx`` (outermost last), or None."""
    chain: list[fx.Node] = []
    n = idx
    while isinstance(n, fx.Node) and n not in inputs:
        if n.op != "call_function" or n.target not in _INDEX_CHAIN:
            return None
        if len(n.all_input_nodes) != 1:
            return None
        chain.append(n)
        n = n.args[0]
    if not isinstance(n, fx.Node):
        return None
    return list(reversed(chain))


def _lifted(op: Any, args: tuple, rank: int, hidden: int) -> tuple | None:
    """Arguments of ``op`` applied to a tensor with a trailing dimension of size ``hidden`` more than its integer
    original of ``rank`` dimensions."""

    def dim(d: int) -> int:
        return d + rank if d < 0 else d

    rest = list(args[1:])
    if op in (aten.view.default, aten._unsafe_view.default, aten.reshape.default):
        return (list(rest[0]) + [hidden],)
    if op is aten.unsqueeze.default:
        return (rest[0] if rest[0] >= 0 else rest[0] - 1,)
    if op is aten.squeeze.dim:
        return (dim(rest[0]),)
    if op is aten.squeeze.dims:
        return ([dim(d) for d in rest[0]],)
    if op in (aten.slice.Tensor, aten.select.int):
        return (dim(rest[0]), *rest[1:])
    if op is aten.expand.default:
        return (list(rest[0]) + [hidden],)
    if op is aten.permute.default:
        return ([dim(d) for d in rest[0]] + [rank],)
    if op in (aten.clone.default, aten.alias.default, aten._to_copy.default):
        return ()
    return None


def hoist_embedding_indices(gm: fx.GraphModule, inputs: set[fx.Node]) -> int:
    graph = gm.graph
    done = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.embedding.default:
            continue
        idx = node.args[1]
        if idx in inputs:
            continue
        chain = _chain_to_input(idx, inputs)
        if not chain:
            continue
        source = chain[0].args[0]
        weight = _val(node.args[0])
        if _val(source) is None or source.meta["val"].is_floating_point() or weight is None:
            continue
        steps = []
        for link in chain:
            val = _val(link.args[0])
            lifted = None if val is None else _lifted(link.target, link.args, val.dim(), int(weight.shape[-1]))
            if lifted is None:
                break
            steps.append((link, lifted))
        if len(steps) != len(chain):
            continue
        with graph.inserting_before(node):
            cur = graph.call_function(aten.embedding.default, (node.args[0], source, *node.args[2:]), dict(node.kwargs))
            cur.meta = dict(node.meta)
            cur.meta.pop("val", None)
            for link, args in steps:
                target = aten.clone.default if link.target is aten._to_copy.default else link.target
                cur = graph.call_function(target, (cur, *args))
                cur.meta = {k: v for k, v in node.meta.items() if k != "val"}
        node.replace_all_uses_with(cur)
        graph.erase_node(node)
        for link in reversed(chain):
            if not link.users:
                graph.erase_node(link)
        done += 1
    return done


_EMBEDDING_BAGS = {aten._embedding_bag.default, aten._embedding_bag_forward_only.default}
_BAG_MODES = {0: "sum", 1: "mean", 2: "max"}


def _call(
    graph: fx.Graph, target: Any, args: tuple, kwargs: dict | None = None, like: fx.Node | None = None
) -> fx.Node:
    """Insert ``target(*args, **kwargs)`` with its fake ``val`` (later passes read dtypes and shapes from it)."""
    node = graph.call_function(target, args, kwargs or {})
    if like is not None:
        node.meta.update({k: v for k, v in like.meta.items() if k != "val"})
    vals = [a.meta.get("val") for a in node.all_input_nodes]
    mode = next((v.fake_mode for v in vals if hasattr(v, "fake_mode")), None)
    if mode is not None and all(v is not None for v in vals):
        fake = {a: a.meta["val"] for a in node.all_input_nodes}
        with mode:
            node.meta["val"] = target(*fx.node.map_arg(args, fake.get), **fx.node.map_arg(kwargs or {}, fake.get))
    return node


def _per_hidden_unit(graph: fx.Graph, t: fx.Node, hidden: int) -> fx.Node:
    """``[n] -> [n, hidden]`` (an expanded view): one bag's index or start per hidden unit."""
    return _call(graph, aten.expand.default, (_call(graph, aten.unsqueeze.default, (t, 1)), [-1, hidden]))


def embedding_bag_to_lookup(gm: fx.GraphModule) -> int:
    """``_embedding_bag(W, ids, offsets, ..., mode)`` in mode ``sum`` or ``mean`` (``nn.EmbeddingBag``, the text
    classifier of the PyTorch tutorials) becomes ``embedding(W, ids)`` summed per bag with ``index_add`` (divided by
    the bag's size for ``mean``), so the token ids feed an embedding (per-token relevance) and the bag's sum takes
    the sum rule. ``per_sample_weights`` multiply the looked-up rows, ``padding_idx`` rows are zeroed by a mask.
    Mode ``max`` becomes ``scatter_reduce(zeros, 0, bag, rows, "amax", include_self=False)`` (winner takes all per
    hidden unit; an empty bag stays zero, as in torch); ``padding_idx`` rows are scattered into one extra bag that
    is cut off, so they take no part in the max, as in torch. Exact. Only the bag output may be used (not the bag
    indices it also returns)."""
    graph = gm.graph
    done = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _EMBEDDING_BAGS:
            continue
        names = ["weight", "indices", "offsets", "scale_grad_by_freq", "mode", "sparse", "per_sample_weights"]
        names += ["include_last_offset", "padding_idx"]
        a = dict(zip(names, node.args))
        a.update(node.kwargs)
        mode, psw = _BAG_MODES.get(a.get("mode", 0)), a.get("per_sample_weights")
        users = list(node.users)
        ids, offsets, weight = a["indices"], a["offsets"], a["weight"]
        vals = [_val(ids), _val(offsets), _val(weight)]
        if (
            mode is None
            or any(u.target is not operator.getitem or u.args[1] != 0 for u in users)
            or any(v is None for v in vals)
            or vals[0].dim() != 1
            or not isinstance(vals[2].shape[1], int)  # the hidden size: static, it shapes the bag sums
        ):
            continue
        padding, fdtype = a.get("padding_idx"), vals[2].dtype
        with graph.inserting_before(node):
            # sizes come from tensors (``*_like``), never as numbers: under ``lrp_fx.export`` they are symbolic
            rows = _call(graph, aten.embedding.default, (weight, ids), like=node)
            keep = is_token = None
            if padding is not None and padding >= 0:  # padding rows count neither in the sum nor in the size
                is_token = _call(graph, aten.ne.Scalar, (ids, padding), like=node)
                keep = _call(graph, aten._to_copy.default, (is_token,), {"dtype": fdtype}, like=node)
                keep.meta[CONSTANT_KEY] = "mask"  # computed from the ids, but a mask: it carries no relevance
                if mode != "max":  # a zeroed row would compete for the max: max sends padding rows elsewhere
                    rows = _call(graph, aten.mul.Tensor, (rows, _call(graph, aten.unsqueeze.default, (keep, 1))))
            if psw is not None:
                scale = _call(graph, aten.unsqueeze.default, (psw, 1), like=node)
                rows = _call(graph, aten.mul.Tensor, (rows, scale), like=node)
            starts = offsets
            if a.get("include_last_offset"):
                starts = _call(graph, aten.slice.Tensor, (offsets, 0, 0, -1), like=node)
            # bag of each row: how many bag starts are at or before its position, minus one
            pos = _call(graph, aten.cumsum.default, (_call(graph, aten.ones_like.default, (ids,)), 0), like=node)
            after = _call(
                graph,
                aten.gt.Tensor,
                (_call(graph, aten.unsqueeze.default, (pos, 1)), _call(graph, aten.unsqueeze.default, (starts, 0))),
                like=node,
            )
            bag = _call(graph, aten.sub.Tensor, (_call(graph, aten.sum.dim_IntList, (after, [1])), 1), like=node)
            hidden = int(vals[2].shape[1])
            grid = _per_hidden_unit(graph, starts, hidden)
            zeros = _call(graph, aten.zeros_like.default, (grid,), {"dtype": fdtype}, like=node)
            if mode == "max":
                if is_token is not None:
                    # padding rows go to one extra bag after the last, cut off below: they take no part in any max
                    # (a bag of padding only stays zero, as in torch) and so get no relevance
                    extra = _call(graph, aten.new_zeros.default, (zeros, [1, hidden]), like=node)
                    zeros = _call(graph, aten.cat.default, ([zeros, extra],), like=node)
                    count = _call(graph, aten.sum.default, (_call(graph, aten.ones_like.default, (starts,)),))
                    bag = _call(graph, aten.where.self, (is_token, bag, count), like=node)
                spread = _per_hidden_unit(graph, bag, hidden)
                out = _call(
                    graph, aten.scatter_reduce.two, (zeros, 0, spread, rows, "amax"), {"include_self": False}, like=node
                )
                if is_token is not None:
                    out = _call(graph, aten.slice.Tensor, (out, 0, 0, -1), like=node)
            else:
                out = _call(graph, aten.index_add.default, (zeros, 0, bag, rows), like=node)
            if mode == "mean":
                ones = keep if keep is not None else _call(graph, aten.ones_like.default, (ids,), {"dtype": fdtype})
                empty = _call(graph, aten.zeros_like.default, (starts,), {"dtype": fdtype}, like=node)
                size = _call(graph, aten.index_add.default, (empty, 0, bag, ones), like=node)
                size = _call(graph, aten.clamp_min.default, (size, 1), like=node)
                size.meta[CONSTANT_KEY] = "mask"  # the bag sizes: a count
                out = _call(graph, aten.div.Tensor, (out, _call(graph, aten.unsqueeze.default, (size, 1))), like=node)
        for u in users:
            u.replace_all_uses_with(out)
            graph.erase_node(u)
        graph.erase_node(node)
        done += 1
    return done


# -- marking -----------------------------------------------------------------------------------------------------------
def _non_float(node: fx.Node) -> bool:
    val = _val(node)
    return isinstance(val, torch.Tensor) and not (val.is_floating_point() or val.is_complex())


def _ew_sources(node: Any, dependent: set[fx.Node], memo: dict) -> frozenset:
    """The non-element-wise input-dependent nodes that ``node`` is an element-wise function of."""
    if not isinstance(node, fx.Node) or node not in dependent:
        return frozenset()
    if node in memo:
        return memo[node]
    if node.op == "call_function" and node.target in ELEMENTWISE:
        out = frozenset().union(*(_ew_sources(a, dependent, memo) for a in node.all_input_nodes))
    else:
        out = frozenset([node])
    memo[node] = out
    return out


def _common_root(u: Any, v: Any, dependent: set[fx.Node], memo: dict) -> fx.Node | None:
    """The one input-dependent node both ``u`` and ``v`` are element-wise functions of, if there is one."""
    su = _ew_sources(u, dependent, memo)
    return next(iter(su)) if len(su) == 1 and su == _ew_sources(v, dependent, memo) else None


def _scaled_copy_of(node: Any, root: fx.Node, dependent: set[fx.Node]) -> bool:
    """Whether ``node`` is ``root`` times constants (``c * x``, ``x / c``, ``-x``)."""
    while node is not root:
        if not isinstance(node, fx.Node) or node.op != "call_function" or node.target not in _SCALINGS:
            return False
        ins = [a for a in node.all_input_nodes if a in dependent]
        if len(ins) != 1 or (node.target in (aten.div.Tensor, aten.div.Scalar) and node.args[0] is not ins[0]):
            return False
        node = ins[0]
    return True


def _is_one(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == 1


def _is_gate(node: Any) -> bool:
    """Whether ``node`` is a sigmoid-type function's output, possibly reshaped (``g[:, :, None, None]``)."""
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in _INDEX_CHAIN:
        node = node.args[0]
    if not (isinstance(node, fx.Node) and node.op == "call_function"):
        return False
    # 1 - g: the complementary gate, in [0, 1] too (a GRU's (1 - z) * h); captured as sub(1, g) or rsub(g, 1)
    if not node.kwargs and len(node.args) == 2:
        if node.target is aten.sub.Tensor and _is_one(node.args[0]):
            return _is_gate(node.args[1])
        if node.target is aten.rsub.Scalar and _is_one(node.args[1]):
            return _is_gate(node.args[0])
    return node.target in GATE_FUNCTIONS


# ops between a router's top-k values and the product with an expert's output (reshapes, casts, normalisation)
_ROUTER_PATH = _INDEX_CHAIN | {aten.div.Tensor, aten.div.Scalar, aten.mul.Scalar}


def _is_router_weight(node: Any) -> bool:
    """Whether ``node`` is a mixture-of-experts router weight: the values of a ``topk`` (of the router's softmax or
    sigmoid scores), possibly renormalised (``w / sum(w)``), scaled by a number, reshaped or cast."""
    for _ in range(16):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return False
        if node.target is operator.getitem:
            src = node.args[0]
            return isinstance(src, fx.Node) and src.target is aten.topk.default and node.args[1] == 0
        if node.target not in _ROUTER_PATH:
            return False
        node = node.args[0]  # the numerator of a renormalisation, the tensor of a reshape or cast
    return False


_MATMULS = {aten.bmm.default, aten.mm.default}


def _is_decay(node: Any) -> bool:
    """Whether ``node`` is the output of ``exp``, possibly sliced, reshaped, permuted or cast: a state-space model's
    discretised state matrix ``exp(dt * A)`` (Mamba's ``discrete_A``; Mamba-2's segment-sum decays ``L``,
    ``decay_states``, ``decay_chunk``, ``state_decay_out``)."""
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in _INDEX_CHAIN:
        node = node.args[0]
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is aten.exp.default


def mark_constants(gm: fx.GraphModule, dependent: set[fx.Node]) -> int:
    marked = 0
    memo: dict = {}

    def mark(n: fx.Node, reason: str) -> None:
        nonlocal marked
        if CONSTANT_KEY not in n.meta:
            n.meta[CONSTANT_KEY] = reason
            marked += 1

    for node in gm.graph.nodes:
        if node.op != "call_function" or node not in dependent:
            continue
        if _non_float(node):
            if not (node.target in _INDEX_CHAIN and _feeds_lookup(node)):  # token ids reshaped for a lookup
                mark(node, "mask")
        elif node.target in SHAPE_ONLY:
            mark(node, "shape")
        elif node.target in STEP_FUNCTIONS:
            mark(node, "step")
        elif is_normaliser(node, dependent):
            mark(node, "normaliser")
        elif node.target is aten.mul.Tensor and all(a in dependent for a in node.args[:2]):
            u, v = node.args[:2]
            gu, gv = (_is_gate(a) for a in (u, v))
            if gu != gv:  # exactly one operand is a sigmoid-type gate
                mark(u if gu else v, "gate")
                signal, root = (v if gu else u), _common_root(u, v, dependent, memo)
                if root is not None and _scaled_copy_of(signal, root, dependent):
                    node.meta[ACTIVATION_KEY] = True  # x * sigmoid(x), quick GELU x * sigmoid(1.702 x), written out
                continue
            ru, rv = (_is_router_weight(a) for a in (u, v))
            if ru != rv:  # exactly one operand is a mixture-of-experts router weight
                mark(u if ru else v, "router")
                continue
            du, dv = (_is_decay(a) for a in (u, v))
            if du != dv:  # exactly one operand is a state-space decay exp(dt * A)
                mark(u if du else v, "decay")
                continue
            root = _common_root(u, v, dependent, memo) if u is not v else None
            if root is not None:
                cu, cv = _scaled_copy_of(u, root, dependent), _scaled_copy_of(v, root, dependent)
                if cu and not cv and len(v.users) == 1:
                    mark(v, "gate")
                    node.meta[ACTIVATION_KEY] = True
                elif cv and not cu and len(u.users) == 1:
                    mark(u, "gate")
                    node.meta[ACTIVATION_KEY] = True
        elif node.target in _MATMULS and all(a in dependent for a in node.args[:2]):
            u, v = node.args[:2]
            du, dv = (_is_decay(a) for a in (u, v))
            if du != dv:  # a state-space decay matrix (Mamba-2's inter-chunk recurrence)
                mark(u if du else v, "decay")
    return marked


def is_constant(node: fx.Node) -> bool:
    """Whether ``mark_constants`` marked ``node`` as carrying no relevance."""
    return CONSTANT_KEY in node.meta


def token_inputs(captured: Captured) -> list[int]:
    """Flat input indices of integer model inputs used as embedding indices (they get per-token relevance)."""
    found = []
    for i, ph in input_nodes(captured).items():
        val = _val(ph)
        if not isinstance(val, torch.Tensor) or val.is_floating_point() or val.is_complex() or val.dtype is torch.bool:
            continue
        if _feeds_lookup(ph):
            found.append(i)
    return sorted(found)


def _feeds_lookup(node: fx.Node, depth: int = 0) -> bool:
    """Whether ``node`` (or a reshape of it) is the indices of an embedding or of an embedding bag (an unrewritten
    bag, e.g. one whose bag indices are used too, then fails with a ``MissingRuleError`` that names it, not as an
    input without relevance)."""
    for u in node.users:
        if u.op != "call_function":
            continue
        if (u.target is aten.embedding.default or u.target in _EMBEDDING_BAGS) and u.args[1] is node:
            return True
        if u.target in _INDEX_CHAIN and depth < 4 and _feeds_lookup(u, depth + 1):
            return True
    return False
