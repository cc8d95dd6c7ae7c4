"""Element-wise ops of ``lrp_fx/rules/pointwise.py`` and the constants ``lrp_fx.prepare`` marks, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.rules import registry
from lrp_fx.rules.pointwise import cumulative_sum

from ._reference import stab

D = torch.float64
aten = torch.ops.aten


class Fn(nn.Module):
    def __init__(self, fn, **buffers):
        super().__init__()
        self.fn = fn
        for k, v in buffers.items():
            self.register_buffer(k, v)

    def forward(self, *xs):
        return self.fn(self, *xs)


def _attr(model, x, R, **kw):
    return lrp_fx.attribute(model, x, target=R, composite="attnlrp", **kw)


def test_scalar_scaling_is_the_identity():
    x, R = torch.randn(3, 4, dtype=D), torch.randn(3, 4, dtype=D)
    for fn in (lambda m, x: aten.mul.Scalar(x, -2.5), lambda m, x: aten.div.Scalar(x, 3.0)):
        torch.testing.assert_close(_attr(Fn(fn), x, R).relevance, R)


@pytest.mark.parametrize("op, coef", [(aten.add.Scalar, 1.0), (aten.sub.Scalar, 1.0), (aten.rsub.Scalar, -1.0)])
def test_scalar_sums_are_proportional(op, coef):
    x, R = torch.randn(3, 4, dtype=D), torch.randn(3, 4, dtype=D)
    res = _attr(Fn(lambda m, x: op(x, 0.75)), x, R, track_absorbed=True)
    y = op(x, 0.75)
    torch.testing.assert_close(res.relevance, coef * x * R / stab(y))
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())


@pytest.mark.parametrize(
    "fn",
    [
        torch.exp,
        torch.sqrt,
        torch.rsqrt,
        torch.log,
        torch.erf,
        torch.sin,
        torch.cos,
        torch.reciprocal,
        torch.abs,
        torch.square,
    ],
)
def test_unary_functions_pass_relevance(fn):
    x = torch.rand(3, 4, dtype=D) + 0.5
    R = torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(_attr(Fn(lambda m, x: fn(x)), x, R).relevance, R)


def test_where_routes_by_the_condition():
    x, y = torch.randn(3, 4, dtype=D), torch.randn(1, 4, dtype=D)
    R = torch.randn(3, 4, dtype=D)
    res = _attr(Fn(lambda m, x, y: torch.where(x > 0, x, y)), (x, y), R)
    torch.testing.assert_close(res.relevance[0], torch.where(x > 0, R, 0.0))
    torch.testing.assert_close(res.relevance[1], torch.where(x > 0, 0.0, R).sum(0, keepdim=True))


def test_masked_fill_and_mask_paths_carry_no_relevance():
    """The mask is computed from ``x`` but, boolean, carries none; the filled positions' relevance stays with the fill
    value (absorbed)."""
    x, R = torch.randn(3, 5, dtype=D), torch.randn(3, 5, dtype=D)
    res = _attr(Fn(lambda m, x: x.masked_fill(x > 0.5, -1.0)), x, R, track_absorbed=True)
    torch.testing.assert_close(res.relevance, torch.where(x > 0.5, 0.0, R))
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())


def test_cumsum_rule_function():
    assert registry.get_rule(aten.cumsum.default).fn is cumulative_sum  # registered by default
    x, R = torch.rand(2, 5, dtype=D) + 0.1, torch.randn(2, 5, dtype=D)
    res = _attr(Fn(lambda m, x: torch.cumsum(x, 1)), x, R, track_absorbed=True)
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())
    y = torch.cumsum(x, 1)
    M = torch.tril(torch.ones(5, 5, dtype=D))  # y = x M^T: y_i = sum_{j <= i} x_j
    expected = (x[:, None, :] * M * (R / stab(y))[:, :, None]).sum(1)
    torch.testing.assert_close(res.relevance, expected)


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def test_rotary_embedding_with_constant_cos_sin():
    """``q cos + rotate_half(q) sin`` (Llama): cos, sin are constants, so both products pass relevance to ``q``; the
    sum splits proportionally. Conservative."""
    pos = torch.arange(5, dtype=D)[:, None] * (1.0 / 10000 ** (torch.arange(0, 8, 2, dtype=D) / 8))
    emb = torch.cat((pos, pos), -1)
    model = Fn(lambda m, q: q * m.cos + _rotate_half(q) * m.sin, cos=emb.cos(), sin=emb.sin())
    q, R = torch.randn(2, 5, 8, dtype=D), torch.randn(2, 5, 8, dtype=D)
    res = _attr(model, q, R)
    a, b = q * emb.cos(), _rotate_half(q) * emb.sin()
    s = R / stab(a + b)
    rb = b * s  # relevance of rotate_half(q): its first half came from -q2, its second from q1
    expected = a * s + torch.cat((rb[..., 4:], rb[..., :4]), -1)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), (R * (a + b) / stab(a + b)).sum())


GATES = {
    "gelu_new": lambda m, x: (
        0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    ),
    "gelu_erf": lambda m, x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "silu": lambda m, x: x * torch.sigmoid(x),
    "quick_gelu": lambda m, x: x * torch.sigmoid(1.702 * x),
}


@pytest.mark.parametrize("name", list(GATES))
def test_decomposed_activations_pass_relevance(name):
    """An activation written as ``x * g(x)`` is an activation: the gate is constant and ``R_x = R``."""
    x, R = torch.randn(3, 6, dtype=D), torch.randn(3, 6, dtype=D)
    torch.testing.assert_close(_attr(Fn(GATES[name]), x, R).relevance, R)


def test_gating_two_different_activations_splits_uniformly():
    """SwiGLU ``silu(a) * b``: two activations, each gets half (AttnLRP's uniform rule)."""
    a, b = torch.randn(3, 6, dtype=D), torch.randn(3, 6, dtype=D)
    R = torch.randn(3, 6, dtype=D)
    res = _attr(Fn(lambda m, a, b: torch.nn.functional.silu(a) * b), (a, b), R)
    torch.testing.assert_close(res.relevance[0], R / 2)
    torch.testing.assert_close(res.relevance[1], R / 2)


@pytest.mark.parametrize("gate", [torch.sigmoid, torch.nn.functional.hardsigmoid])
def test_squeeze_excitation_gate_is_a_constant(gate):
    """``x * gate(fc(mean(x)))``: the gate is constant (signal-take-all), ``x`` receives all of ``R``; the gate's
    branch receives nothing, so its near-zero logits cannot blow the relevance up."""
    torch.manual_seed(0)
    fc = nn.Linear(4, 4).double()

    def se(m, x):
        g = gate(m.fc(x.mean(dim=(2, 3))))
        return x * g[:, :, None, None]

    model = Fn(se)
    model.fc = fc
    x, R = torch.randn(2, 4, 3, 3, dtype=D), torch.randn(2, 4, 3, 3, dtype=D)
    torch.testing.assert_close(_attr(model, x, R).relevance, R)


def test_gru_update_gate_and_its_complement_are_constants():
    """A GRU's state update ``(1 - z) * h + z * q``, ``z = sigmoid(.)``: ``z`` and ``1 - z`` are both gates (values in
    [0, 1]), so ``h`` and ``q`` receive the proportional shares of the sum and the gate's logits nothing (Arras et
    al.'s signal-take-all for recurrent gates)."""
    torch.manual_seed(1)
    h, q, u = (torch.randn(3, 5, dtype=D) for _ in range(3))
    R = torch.randn(3, 5, dtype=D)
    res = _attr(Fn(lambda m, h, q, u: (1 - torch.sigmoid(u)) * h + torch.sigmoid(u) * q), (h, q, u), R)
    z = torch.sigmoid(u)
    a, b = (1 - z) * h, z * q
    s = R / stab(a + b)
    torch.testing.assert_close(res.relevance[0], a * s)
    torch.testing.assert_close(res.relevance[1], b * s)
    assert (res.relevance[2] == 0).all()
