"""Embeddings (``lrp_fx/rules/embedding.py``): per-token relevance for integer ids, in float64."""

from __future__ import annotations

import pytest
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


# -- nn.EmbeddingBag (lrp_fx.prepare.embedding_bag_to_lookup) ---------------------------------------------------------
class BagModel(nn.Module):
    """The PyTorch text-classification tutorial's model: a bag of embeddings (1-d ids with offsets, or 2-d ids with
    one bag per row), optionally weighted per sample by a constant, and a linear head."""

    def __init__(self, mode: str, padding_idx: int | None = None, weights: torch.Tensor | None = None):
        super().__init__()
        self.bag = nn.EmbeddingBag(11, 6, mode=mode, padding_idx=padding_idx, dtype=D)
        self.lin = nn.Linear(6, 3, dtype=D)
        self.weights = weights

    def forward(self, ids, offsets=None):
        return self.lin(self.bag(ids, offsets, per_sample_weights=self.weights))


def _bag_reference(model, ids, bag_of, R_bag):
    """Each token's share of its bag's sum, per hidden unit: ``rows[n] / stab(sum over the bag) * R[bag(n)]``, summed
    over the hidden size (``mean`` divides numerator and denominator alike)."""
    rows = model.bag.weight[ids].clone()
    if model.bag.padding_idx is not None:
        rows[ids == model.bag.padding_idx] = 0
    if model.weights is not None:
        rows = rows * model.weights[:, None]
    sums = torch.zeros(int(bag_of.max()) + 1, 6, dtype=D).index_add(0, bag_of, rows)
    return (rows * R_bag[bag_of] / stab(sums[bag_of])).sum(-1)


@torch.no_grad()
def _bag_output_relevance(model, ids, offsets, target):
    """Epsilon on the head: the relevance of the bag output."""
    h = model.bag(ids, offsets, per_sample_weights=model.weights)
    z = model.lin(h)
    R = torch.zeros_like(z)
    R[torch.arange(z.shape[0]), target] = z[torch.arange(z.shape[0]), target]
    return h * ((R / stab(z)) @ model.lin.weight)


@pytest.mark.parametrize(
    ("mode", "padding_idx", "weighted"),
    [("sum", None, False), ("mean", None, False), ("mean", 0, False), ("sum", 0, True)],
    ids=["sum", "mean", "mean-padding", "sum-padding-weights"],
)
def test_embedding_bag_gives_each_token_its_share_of_the_bag(mode, padding_idx, weighted):
    torch.manual_seed(3)
    weights = torch.rand(9, dtype=D) + 0.5 if weighted else None
    model = BagModel(mode, padding_idx, weights).eval()
    ids = torch.tensor([3, 0, 5, 3, 7, 1, 0, 9, 2])
    offsets = torch.tensor([0, 4, 4])  # the second bag is empty
    res = lrp_fx.attribute(model, (ids, offsets), target=1, composite="epsilon", track_absorbed=True)
    r_ids, r_offsets = res.relevance
    assert r_offsets is None
    bag_of = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2, 2])
    expected = _bag_reference(model, ids, bag_of, _bag_output_relevance(model, ids, offsets, torch.ones(3).long()))
    torch.testing.assert_close(r_ids, expected)
    if padding_idx is not None:
        assert (r_ids[ids == padding_idx] == 0).all()
    total = r_ids.sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, res.seed.sum())  # the head's bias keeps its share, recorded


def test_embedding_bag_over_rows_matches_an_embedding_and_a_sum():
    """2-d ids (one bag per row) give what the same model written with ``nn.Embedding`` and ``sum`` gives."""
    torch.manual_seed(4)
    model = BagModel("sum").eval()
    ids = torch.randint(0, 11, (3, 5))
    res = lrp_fx.attribute(model, ids, target=2, composite="epsilon")

    class Written(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = nn.Embedding(11, 6, dtype=D), model.lin
            self.emb.weight = model.bag.weight

        def forward(self, ids):
            return self.lin(self.emb(ids).sum(1))

    written = lrp_fx.attribute(Written().eval(), ids, target=2, composite="epsilon")
    torch.testing.assert_close(res.relevance, written.relevance)
    assert res.relevance.shape == ids.shape


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("layout", ["offsets", "rows"])
def test_embedding_bag_max_hands_each_hidden_unit_to_the_token_holding_its_max(layout, padding_idx):
    """``mode="max"``: per bag and hidden unit, the token whose row holds the max gets that unit's relevance (ties
    split); a token's relevance is its units' sum. Exactly conservative; an empty bag passes nothing on. Padding
    tokens take no part in the max (their zero row would win over negative rows) and get nothing; a bag of padding
    only gives zeros, as in torch."""
    torch.manual_seed(6)
    model = BagModel("max", padding_idx=padding_idx).eval()
    if layout == "offsets":
        ids, offsets = torch.tensor([3, 0, 5, 3, 7, 1, 0, 9, 2, 0]), torch.tensor([0, 4, 4, 9])  # bag 1 is empty
        bag_of = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2, 2, 3])  # bag 3 holds the padding token only
        inputs = (ids, offsets)
    else:
        ids = torch.tensor([[3, 0, 5, 3], [7, 1, 0, 9], [0, 0, 0, 0]])  # a repeated token (3) ties with itself
        offsets, bag_of, inputs = None, torch.arange(3).repeat_interleave(4), ids
    flat = ids.reshape(-1)
    output = model(*inputs) if layout == "offsets" else model(ids)
    res = lrp_fx.attribute(model, inputs, target=1, composite="epsilon", track_absorbed=True)
    torch.testing.assert_close(res.output, output)
    r_ids = res.relevance[0] if layout == "offsets" else res.relevance.reshape(-1)
    R_bag = _bag_output_relevance(model, ids, offsets, torch.ones(len(output)).long())
    rows = model.bag.weight[flat]
    competes = flat != padding_idx if padding_idx is not None else torch.ones(len(flat), dtype=torch.bool)
    expected = torch.zeros(len(flat), dtype=D)
    for n in competes.nonzero().flatten():
        for h in range(6):
            members = ((bag_of == bag_of[n]) & competes).nonzero().flatten()
            top = rows[members, h].max()
            if rows[n, h] == top:
                expected[n] += R_bag[bag_of[n], h] / int((rows[members, h] == top).sum())
    torch.testing.assert_close(r_ids, expected)
    torch.testing.assert_close(r_ids.sum() + sum(res.absorbed.values()), res.seed.sum())
    if padding_idx is not None:  # the zero padding row would have won somewhere: this input tells the two apart
        competing = BagModel("max").eval()
        competing.load_state_dict(model.state_dict())
        assert not torch.allclose(competing(*inputs) if layout == "offsets" else competing(ids), output)


def test_embedding_bag_exports_with_a_dynamic_number_of_tokens():
    """``lrp_fx.export`` makes the token count symbolic: the rewrite takes every size from tensors."""
    torch.manual_seed(5)
    model = BagModel("mean").eval()
    ids, offsets = torch.randint(0, 11, (9,)), torch.tensor([0, 4])
    program = lrp_fx.export(model, (ids, offsets), composite="epsilon")
    for n in (9, 13):
        ids = torch.randint(0, 11, (n,))
        ref = lrp_fx.attribute(model, (ids, offsets), target=0, composite="epsilon")
        out, rel = program.module()(ids, offsets, ref.seed)[:2]
        torch.testing.assert_close(rel, ref.relevance[0])
