"""Canonicalisation passes on the captured graph (never on the user's module).

* ``fold_batch_norm``: eval-mode batch norm directly after a convolution or linear layer is folded into that layer's
  weight and bias, computed *inside the graph* from the current parameters, so the attribution program stays a
  function of the live weights. This is Zennit's MergeBatchNorm canonizer, done as a graph rewrite.
* ``drop_identities``: no-op copies (clone, alias, eval dropout) are removed so they need no rule and no memory.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

aten = torch.ops.aten
_BN = aten._native_batch_norm_legit_no_training.default
_LINEARS = (aten.convolution.default, aten.linear.default)


def _only_output0_used(bn: fx.Node) -> fx.Node | None:
    users = list(bn.users)
    if len(users) == 1 and users[0].target is operator.getitem and users[0].args[1] == 0:
        return users[0]
    return None


def fold_batch_norm(gm: fx.GraphModule) -> int:
    """Fold ``batch_norm(linear(x, W, b))`` into ``linear(x, W', b')``; returns how many were folded."""
    graph = gm.graph
    folded = 0
    for bn in list(graph.nodes):
        if bn.op != "call_function" or bn.target is not _BN:
            continue
        lin = bn.args[0]
        if not isinstance(lin, fx.Node) or lin.target not in _LINEARS or len(lin.users) != 1:
            continue
        if lin.target is aten.convolution.default and lin.args[6]:  # transposed: output channels are dim 1
            continue
        out = _only_output0_used(bn)
        if out is None:
            continue
        gamma, beta, mean, var = bn.args[1:5]
        eps = bn.args[6]
        w = lin.args[1]
        b = lin.args[2] if len(lin.args) > 2 else None
        with graph.inserting_before(lin):
            scale = graph.call_function(aten.rsqrt.default, (graph.call_function(aten.add.Tensor, (var, eps)),))
            if gamma is not None:
                scale = graph.call_function(aten.mul.Tensor, (scale, gamma))
            w_rank = w.meta["val"].dim() if "val" in w.meta else 4
            shape = [-1] + [1] * (w_rank - 1)
            w_new = graph.call_function(aten.mul.Tensor, (w, graph.call_function(aten.view.default, (scale, shape))))
            centred = (
                graph.call_function(aten.neg.default, (mean,))
                if b is None
                else graph.call_function(aten.sub.Tensor, (b, mean))
            )
            b_new = graph.call_function(aten.mul.Tensor, (centred, scale))
            if beta is not None:
                b_new = graph.call_function(aten.add.Tensor, (b_new, beta))
            args = list(lin.args)
            if len(args) < 3:
                args.append(None)
            args[1], args[2] = w_new, b_new
            new = graph.call_function(lin.target, tuple(args), dict(lin.kwargs))
        new.meta = dict(lin.meta)
        new.meta["lrp_fx_folded"] = bn.name
        # the batch norm's module too: its output is now this node's (``modules=["bn1"]`` asks for it)
        new.meta["lrp_fx_folded_stack"] = dict(bn.meta.get("nn_module_stack") or {})
        new.meta["lrp_fx_weight"] = w  # the original weight, for parameter relevance
        out.replace_all_uses_with(new)
        for dead in (out, bn, lin):
            graph.erase_node(dead)
        folded += 1
    graph.lint()
    gm.recompile()
    return folded


_IDENTITIES = {aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default, aten.detach.default}


def drop_identities(gm: fx.GraphModule) -> int:
    """Remove value-preserving copies; returns how many nodes were removed."""
    removed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        is_copy = node.target in _IDENTITIES and not node.kwargs.get("memory_format")
        is_eval_dropout = node.target is aten.dropout.default and not node.args[2]
        if is_copy or is_eval_dropout:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    gm.graph.lint()
    gm.recompile()
    return removed


def canonicalize(gm: fx.GraphModule) -> dict[str, int]:
    """Run every canonicalisation pass; returns what each did."""
    return {"identities_dropped": drop_identities(gm), "batch_norms_folded": fold_batch_norm(gm)}
