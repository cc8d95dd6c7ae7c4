"""Embeddings: relevance per token.

``y = embedding(W, ids)`` looks up row ``W[ids[t]]`` for every token position ``t``. When ``ids`` is an integer model
input (``lrp_fx.prepare`` moves reshapes of the ids after the lookup so that it feeds the embedding directly), the
ids are a relevance source like a floating-point input, and

    R_ids[t] = sum_h R_y[t, h]

the relevance of the token's embedding vector summed over the hidden size. Conservative: ``sum R_ids = sum R_y``.
``lrp_fx.attribute`` returns it as the relevance of the integer input (a float tensor of the ids' shape). Lookups of
constant indices (position ids, token-type buffers) are constants: their embeddings keep the relevance an ``add``
hands them, as biases do.
"""

from __future__ import annotations

from torch import Tensor

from .base import Pass
from .call import RuleCall
from .registry import aten, register_rule


@register_rule(aten.embedding.default, group="embedding", accepts=(Pass,), default=Pass())
def embedding(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``R_ids = sum_h R_y[..., h]`` to the indices; the table gets none. Exact (conservative)."""
    ids = call.node.args[1]
    if not call.is_activation(ids):
        return call.assign({})
    return call.assign({1: relevance.sum(-1)})
