"""Recurrent networks (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) against LRP for recurrent nets written out by hand.

The references follow Arras et al. (2017, "Explaining recurrent neural network predictions in sentiment analysis";
2019, "Evaluating recurrent neural network explanations"): gates are constant (signal-take-all), products with a
gate hand all relevance to the signal, sums split it in proportion to their summands, and linear maps take the
epsilon rule. torch captures the cells as the same aten ops that any model uses (``linear``, ``sigmoid``, ``tanh``,
``mul``, ``add``); nothing here is specific to recurrent modules. The references put one stabiliser on each whole
pre-activation; the captured graph adds the input and hidden parts in a separate ``add`` (two stabilised divisions),
so they agree up to terms of order ``eps``: tested at ``eps = 1e-12`` in float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_fx

D = torch.float64
EPS = 1e-12


def stab(z):
    return z + EPS * (2.0 * (z >= 0).double() - 1.0)


class Classifier(nn.Module):
    def __init__(self, cell: type[nn.Module], **kw) -> None:
        super().__init__()
        self.rnn = cell(5, 6, batch_first=True, **kw)
        self.head = nn.Linear(6 * (2 if kw.get("bidirectional") else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _epsilon_linear(x, W, z, R):
    """Relevance of ``x`` for ``z = x W^T + (rest)``: ``x * ((R / stab(z)) W)``."""
    return x * ((R / stab(z)) @ W)


def _head_relevance(model, h_last, target):
    z = model.head(h_last)
    R = torch.zeros_like(z)
    R[torch.arange(z.shape[0]), target] = z[torch.arange(z.shape[0]), target]
    return _epsilon_linear(h_last, model.head.weight, z, R)


@torch.no_grad()
def lstm_reference(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    rnn = model.rnn
    W_ih, W_hh, b = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0
    B, T, _ = x.shape
    H = rnn.hidden_size
    h, c = [torch.zeros(B, H, dtype=D)], [torch.zeros(B, H, dtype=D)]
    saved = []
    for t in range(T):
        pre = x[:, t] @ W_ih.T + h[-1] @ W_hh.T + b
        i, f, g, o = pre.sigmoid()[:, :H], pre.sigmoid()[:, H : 2 * H], pre[:, 2 * H : 3 * H].tanh(), pre[:, 3 * H :]
        c_t = f * c[-1] + i * g
        h.append(o.sigmoid() * c_t.tanh())
        c.append(c_t)
        saved.append((i, f, g, pre[:, 2 * H : 3 * H]))
    R_x = torch.zeros_like(x)
    R_h = _head_relevance(model, h[-1], target)
    R_c = torch.zeros(B, H, dtype=D)
    for t in reversed(range(T)):
        i, f, g, pre_g = saved[t]
        R_c = R_c + R_h  # h_t = o * tanh(c_t): the output gate is constant, tanh passes
        R_g = i * g / stab(c[t + 1]) * R_c  # c_t = f * c_{t-1} + i * g: proportional, gates constant
        R_c = f * c[t] / stab(c[t + 1]) * R_c
        R_x[:, t] = _epsilon_linear(x[:, t], W_ih[2 * H : 3 * H], pre_g, R_g)
        R_h = _epsilon_linear(h[t], W_hh[2 * H : 3 * H], pre_g, R_g)
    return R_x


@torch.no_grad()
def gru_reference(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    rnn = model.rnn
    W_ih, W_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    B, T, _ = x.shape
    H = rnn.hidden_size
    h = [torch.zeros(B, H, dtype=D)]
    saved = []
    for t in range(T):
        gi, gh = x[:, t] @ W_ih.T + b_ih, h[-1] @ W_hh.T + b_hh
        if t == 0:
            gh0 = gh
        r = (gi[:, :H] + gh[:, :H]).sigmoid()
        z = (gi[:, H : 2 * H] + gh[:, H : 2 * H]).sigmoid()
        hn = gh[:, 2 * H :]  # W_hn h + b_hn, scaled by the reset gate
        pre_n = gi[:, 2 * H :] + r * hn
        n = pre_n.tanh()
        h.append((1 - z) * n + z * h[-1])
        saved.append((r, z, n, hn, pre_n))
    R_x = torch.zeros_like(x)
    R_h = _head_relevance(model, h[-1], target)
    for t in reversed(range(T)):
        r, z, n, hn, pre_n = saved[t]
        gi = x[:, t] @ W_ih.T + b_ih
        h_new, h_old = h[t + 1], h[t]
        R_n = (1 - z) * n / stab(h_new) * R_h  # h_t = (1 - z) n + z h_{t-1}: proportional, gates constant
        R_old = z * h_old / stab(h_new) * R_h
        # pre_n = (W_in x + b_in) + r * (W_hn h + b_hn): the reset gate is constant
        R_x[:, t] = _epsilon_linear(x[:, t], W_ih[2 * H :], pre_n, R_n)
        R_hn = r * hn / stab(pre_n) * R_n
        if t > 0:
            R_h = R_old + _epsilon_linear(h_old, W_hh[2 * H :], hn, R_hn)
        else:
            # the initial state is a constant (zeros), so r * (W_hn h_0 + b_hn) is a product with one constant factor,
            # which hands all of its relevance to the other: the reset gate, and through it the input's share of
            # r's pre-activation (b_hr + W_hr h_0 keeps the rest, like a bias)
            pre_r = gi[:, :H] + gh0[:, :H]
            R_x[:, t] += _epsilon_linear(x[:, t], W_ih[:H], pre_r, R_hn)
    return R_x


@pytest.mark.parametrize(
    ("cell", "reference"), [(nn.LSTM, lstm_reference), (nn.GRU, gru_reference)], ids=["lstm", "gru"]
)
def test_recurrent_cells_match_lrp_for_recurrent_networks(cell, reference):
    torch.manual_seed(0)
    model = Classifier(cell).double().eval()
    x = torch.randn(3, 7, 5, dtype=D)
    target = torch.tensor([0, 2, 1])
    res = lrp_fx.attribute(model, x, target=target, composite="epsilon", epsilon=EPS, stabilizer=EPS)
    assert not res.fallback_nodes
    expected = reference(model, x, target)
    torch.testing.assert_close(res.relevance, expected, rtol=1e-6, atol=1e-9 * expected.abs().max().item())


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_recurrent_networks_conserve(cell, bidirectional):
    """Two layers, both directions: with every bias zeroed, the relevance reaching the inputs plus what the
    stabilisers absorbed is the explained logit."""
    torch.manual_seed(1)
    model = Classifier(cell, num_layers=2, bidirectional=bidirectional).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.zero_()
    x = torch.randn(2, 6, 5, dtype=D)
    res = lrp_fx.attribute(model, x, target=1, composite="epsilon", track_absorbed=True)
    explained = res.seed.sum()
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), explained)
    assert abs(sum(res.absorbed.values())) < 1e-3 * abs(explained)  # the stabilisers' share is small
    assert res.relevance.abs().sum() > 0
