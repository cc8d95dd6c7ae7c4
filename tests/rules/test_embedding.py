"""Embeddings (``lrp_fx/rules/embedding.py``): per-token relevance for integer ids, in float64."""

from __future__ import annotations

import torch
from torch import nn

import lrp_fx

from ._reference import stab

D = torch.float64


class TokenModel(nn.Module):
    def __init__(self, reshape: bool = False):
        super().__init__()
        self.emb = nn.Embedding(11, 6, dtype=D)
        self.lin = nn.Linear(6, 3, bias=False, dtype=D)
        self.reshape = reshape

    def forward(self, ids, mask=None):
        if self.reshape:  # GPT-2 style: input_ids.view(-1, n)
            ids = ids.view(-1, 4)
        h = self.emb(ids)
        if mask is not None:
            h = h * mask[..., None].to(h.dtype)
        return self.lin(h).sum(1)


def _reference(model, ids, R):
    """Epsilon on the linear layer, then the sum over positions (Norm): relevance of each embedding vector."""
    e = model.emb(ids)
    z = model.lin(e)  # [b, t, 3]
    y = z.sum(1)
    r_z = z * (R / stab(y))[:, None]
    r_e = e * ((r_z / stab(z)) @ model.lin.weight)
    return r_e.sum(-1)


def test_token_relevance_is_the_embedding_relevance_summed_over_hidden():
    model = TokenModel()
    ids = torch.randint(0, 11, (2, 4))
    R = torch.randn(2, 3, dtype=D)
    res = lrp_fx.attribute(model, ids, target=R, composite="attnlrp")
    assert res.relevance.shape == ids.shape and res.relevance.dtype == D
    torch.testing.assert_close(res.relevance, _reference(model, ids, R))


def test_reshaped_ids_are_hoisted_after_the_lookup():
    model = TokenModel(reshape=True)
    ids = torch.randint(0, 11, (8,))
    R = torch.randn(2, 3, dtype=D)
    res = lrp_fx.attribute(model, ids, target=R, composite="attnlrp")
    assert res.relevance.shape == (8,)
    torch.testing.assert_close(res.relevance, _reference(model, ids.view(-1, 4), R).reshape(8))
    assert res.program.canonicalized["embedding_indices_hoisted"] == 1


def test_masks_receive_no_relevance():
    model = TokenModel()
    ids = torch.randint(0, 11, (2, 4))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    R = torch.randn(2, 3, dtype=D)
    res = lrp_fx.attribute(model, {"ids": ids, "mask": mask}, target=R, composite="attnlrp")
    assert res.relevance["mask"] is None
    assert (res.relevance["ids"][mask == 0] == 0).all()
    torch.testing.assert_close(res.relevance["ids"].sum(), (R * 1.0).sum(), rtol=1e-4, atol=1e-6)
