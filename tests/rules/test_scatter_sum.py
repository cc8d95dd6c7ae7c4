"""Scattered sums (graph message passing): ``index_add``/``index_put(accumulate=True)``, ``scatter_add`` and
``scatter_reduce`` with sum or mean, against the proportional sum written densely in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_fx

from ._reference import stab

D = torch.float64
DST = torch.tensor([0, 2, 2, 1, 0, 2])  # 6 edges into 3 nodes
MODES = ["index_add", "index_put", "scatter_add", "sum", "mean"]


def scatter(mode: str, h: torch.Tensor, m: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    if mode == "index_add":
        return h.index_add(0, dst, m)
    if mode == "index_put":
        return h.index_put((dst,), m, accumulate=True)
    idx = dst[:, None].expand(-1, m.shape[1])
    if mode == "scatter_add":
        return h.scatter_add(0, idx, m)
    return h.scatter_reduce(0, idx, m, mode, include_self=True)


class Scatter(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.register_buffer("dst", DST.clone())

    def forward(self, h, m):
        return scatter(self.mode, h, m, self.dst)


def dense_maps(mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = A_h h + A_m m`` written out: row ``p`` sums node ``p`` and the edges into it (divided by the count for
    ``mean``, whose count includes the node itself)."""
    a_h, a_m = torch.eye(3, dtype=D), torch.zeros(3, 6, dtype=D)
    a_m[DST, torch.arange(6)] = 1.0
    if mode == "mean":
        count = 1 + a_m.sum(1, keepdim=True)
        a_h, a_m = a_h / count, a_m / count
    return a_h, a_m


@pytest.mark.parametrize("mode", MODES)
def test_scatter_sum_matches_the_dense_proportional_sum(mode):
    g = torch.Generator().manual_seed(0)
    h, m = torch.randn(3, 5, dtype=D, generator=g), torch.randn(6, 5, dtype=D, generator=g)
    R = torch.randn(3, 5, dtype=D, generator=g)
    res = lrp_fx.attribute(Scatter(mode), (h, m), target=R, composite="epsilon", track_absorbed=True)
    a_h, a_m = dense_maps(mode)
    y = a_h @ h + a_m @ m
    torch.testing.assert_close(res.output, y)
    q = R / stab(y)
    torch.testing.assert_close(res.relevance[0], h * (a_h.T @ q))
    torch.testing.assert_close(res.relevance[1], m * (a_m.T @ q))
    # conservation: the shares sum to q * y; the stabiliser keeps the rest, recorded as absorbed
    total = res.relevance[0].sum() + res.relevance[1].sum()
    torch.testing.assert_close(total, (q * y).sum())
    torch.testing.assert_close(total + sum(res.absorbed.values()), R.sum())


class MessagePassing(nn.Module):
    """Messages ``relu(W x_e)`` per edge summed into zeros (a constant base) or into a self term, then a head."""

    def __init__(self, mode: str, self_term: bool):
        super().__init__()
        self.msg, self.own, self.head = nn.Linear(4, 5), nn.Linear(4, 5), nn.Linear(5, 2)
        self.mode, self.self_term = mode, self_term
        self.register_buffer("dst", DST.clone())

    def forward(self, edges, nodes):
        m = self.msg(edges).relu()
        h = self.own(nodes).relu() if self.self_term else torch.zeros(3, 5, dtype=edges.dtype)
        return self.head(scatter(self.mode, h, m, self.dst).relu()).sum(0, keepdim=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("self_term", [True, False])
def test_message_passing_model_conserves(mode, self_term):
    torch.manual_seed(0)
    model = MessagePassing(mode, self_term).double().eval()
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(6, 4, dtype=D, generator=g), torch.randn(3, 4, dtype=D, generator=g))
    res = lrp_fx.attribute(model, inputs, target=1, composite="epsilon", track_absorbed=True)
    assert not res.fallback_nodes
    total = res.relevance[0].sum() + res.relevance[1].sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, res.seed.sum(), rtol=1e-10, atol=1e-12)
    assert float(res.relevance[0].abs().sum()) > 0  # the messages receive relevance


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_max_aggregation_routes_each_position_to_its_winning_message(reduce, include_self):
    """``scatter_reduce`` with ``amax``/``amin`` (max aggregation of messages): each output position's relevance goes
    to the candidates equal to it, ties split; node 1 gets no message, so its base keeps it either way."""
    dst = torch.tensor([0, 2, 2, 0, 0, 2])  # node 1: no message

    class Op(nn.Module):
        def forward(self, h, m):
            return h.scatter_reduce(0, dst[:, None].expand(-1, 5), m, reduce, include_self=include_self)

    g = torch.Generator().manual_seed(2)
    h, m = torch.randn(3, 5, dtype=D, generator=g), torch.randn(6, 5, dtype=D, generator=g)
    m[4] = m[0]  # messages 0 and 4 tie on node 0
    y = Op()(h, m)
    R = torch.randn(3, 5, dtype=D, generator=g)
    res = lrp_fx.attribute(Op(), (h, m), target=R, composite="epsilon")
    r_h, r_m = torch.zeros_like(h), torch.zeros_like(m)
    for node in range(3):
        for c in range(5):
            senders = [e for e in range(6) if dst[e] == node]
            cands = [("m", e, m[e, c]) for e in senders]
            if include_self or not senders:
                cands.append(("h", node, h[node, c]))
            winners = [(kind, i) for kind, i, v in cands if v == y[node, c]]
            for kind, i in winners:
                (r_h if kind == "h" else r_m)[i, c] += R[node, c] / len(winners)
    torch.testing.assert_close(res.relevance[0], r_h)
    torch.testing.assert_close(res.relevance[1], r_m)
    torch.testing.assert_close(res.relevance[0].sum() + res.relevance[1].sum(), R.sum())
    assert (res.relevance[1][4] != 0).any() and (res.relevance[1][0] != 0).any()  # the tie is shared


def test_non_linear_reductions_other_than_max_are_refused():
    class Op(nn.Module):
        def forward(self, h, m):
            return h.scatter_reduce(0, DST[:, None].expand(-1, 5), m, "prod")

    h, m = torch.randn(3, 5, dtype=D), torch.randn(6, 5, dtype=D)
    with pytest.raises(lrp_fx.RuleError, match="not a sum or a max"):
        lrp_fx.attribute(Op(), (h, m), target=torch.ones(3, 5, dtype=D))


def test_an_overwrite_with_repeated_indices_splits_each_position_between_its_writes():
    """``h.index_put((dst,), m)`` (no accumulate) with messages sharing destinations: the routing rule of
    ``_index_overwrite`` (``tests/rules/test_logsoftmax_order_sampling_rules.py`` has its formula), conservative."""

    class Op(nn.Module):
        def forward(self, h, m):
            return h.index_put((DST,), m)

    h, m = torch.randn(3, 5, dtype=D), torch.randn(6, 5, dtype=D)
    R = torch.randn(3, 5, dtype=D)
    r_h, r_m = lrp_fx.attribute(Op(), (h, m), target=R).relevance
    count = torch.bincount(DST, minlength=3).to(D)[:, None]
    torch.testing.assert_close(r_m, (R / count.clamp(min=1))[DST])
    torch.testing.assert_close(r_h, torch.where(count > 0, 0.0, R).expand(3, 5))
    torch.testing.assert_close(r_h.sum() + r_m.sum(), R.sum())
