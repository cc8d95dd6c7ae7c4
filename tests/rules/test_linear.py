"""Linear-family rules (aten.linear, aten.convolution) against their dense float64 formulas, and conservation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

from ._reference import dense, reference

RULES = {
    "epsilon": Epsilon(),
    "zplus": ZPlus(),
    "alphabeta": AlphaBeta(2.0, 1.0),
    "gamma": Gamma(0.25),
    "flat": Flat(),
    "wsquare": WSquare(),
    "zbox": ZBox(-1.5, 2.0),
}


def _layers():
    lin = nn.Linear(7, 5).double()
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    return {"linear": (lin, (4, 7)), "conv": (conv, (2, 2, 7, 6))}


@pytest.mark.parametrize("layer", ["linear", "conv"])
@pytest.mark.parametrize("name", list(RULES))
def test_rule_matches_dense_formula(layer, name):
    module, shape = _layers()[layer]
    with torch.no_grad():
        module.bias.normal_()
    x = torch.randn(shape, dtype=torch.float64)
    out = module(x)
    R = torch.randn_like(out)
    res = lrp_fx.attribute(module, x, target=R, composite="epsilon", overrides={type(module): RULES[name]})

    def f(inp, w=module.weight):
        return module._conv_forward(inp, w, None) if layer == "conv" else inp @ w.T

    M = dense(f, shape)
    per_position = out[0].numel() // module.bias.numel()  # conv outputs flatten as (channel, position)
    bias = module.bias.detach().repeat_interleave(per_position)
    kw = {"low": -1.5, "high": 2.0} if name == "zbox" else {}
    expected = reference(name, x.reshape(shape[0], -1), M, bias, R.reshape(shape[0], -1), **kw)
    torch.testing.assert_close(res.relevance.reshape(shape[0], -1), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(RULES))
def test_conservation_accounts_for_bias_and_stabilizer(name):
    """sum(R_in) + absorbed = sum(R_out), the absorbed share computed from its own formula."""
    module = nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    R = torch.randn_like(module(x))
    res = lrp_fx.attribute(
        module, x, target=R, composite="epsilon", overrides={nn.Conv2d: RULES[name]}, track_absorbed=True
    )
    absorbed = sum(res.absorbed.values())
    torch.testing.assert_close(res.relevance.sum() + absorbed, R.sum(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["epsilon", "zplus", "gamma"])
def test_conservative_without_bias(name):
    """With no bias and positive inputs these rules lose nothing but the stabiliser (~1e-6)."""
    module = nn.Linear(6, 4, bias=False).double()
    x = torch.rand(3, 6, dtype=torch.float64) + 0.1
    with torch.no_grad():
        module.weight.add_(0.3)  # keep outputs away from zero so the stabiliser stays negligible
    R = torch.rand(3, 4, dtype=torch.float64)
    res = lrp_fx.attribute(module, x, target=R, composite="epsilon", overrides={nn.Linear: RULES[name]})
    torch.testing.assert_close(res.relevance.sum(), R.sum(), rtol=1e-5, atol=0)


def test_nonneg_input_skips_negative_terms_exactly():
    """After a ReLU the x^- terms of ZPlus are dropped; the result equals the full formula."""
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, 3)).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    R = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon_plus")
    conv = model[1]
    a = torch.relu(x)
    M = dense(lambda inp: conv._conv_forward(inp, conv.weight, None), a.shape)
    bias = conv.bias.detach().repeat_interleave(16)
    expected = reference("zplus", a.reshape(2, -1), M, bias, R.reshape(2, -1)).reshape_as(x)
    torch.testing.assert_close(res.relevance, expected, rtol=1e-10, atol=1e-12)


def test_parameter_relevance_sums_like_input_relevance():
    """Epsilon: sum R_W = sum_k s_k (z_k - b_k) = sum R_x."""
    module = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    res = lrp_fx.attribute(
        module, x, target=torch.randn(4, 3, dtype=torch.float64), composite="epsilon", param_relevance=True
    )
    assert set(res.params) == {"weight"}
    torch.testing.assert_close(res.params["weight"].sum(), res.relevance.sum(), rtol=1e-10, atol=1e-12)
    expected = (res.params["weight"]).shape
    assert expected == module.weight.shape


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
def test_transformer_presets_take_the_gamma_rule_on_linear_layers(composite):
    """``gamma=`` with ``attnlrp``/``cplrp`` puts the gamma rule on linear layers (the AttnLRP paper's option for
    vision transformers), checked against the dense formula; without it they use epsilon."""
    module = nn.Linear(7, 5).double()
    with torch.no_grad():
        module.bias.normal_()
    x = torch.randn(4, 7, dtype=torch.float64)
    R = torch.randn_like(module(x))
    M = dense(lambda inp: inp @ module.weight.T, (4, 7))
    bias = module.bias.detach()
    for gamma in (0.1, 0.5):
        res = lrp_fx.attribute(module, x, target=R, composite=composite, gamma=gamma)
        expected = reference("gamma", x, M, bias, R, gamma=gamma)
        torch.testing.assert_close(res.relevance, expected, rtol=1e-10, atol=1e-12)
    plain = lrp_fx.attribute(module, x, target=R, composite=composite)
    torch.testing.assert_close(plain.relevance, reference("epsilon", x, M, bias, R), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="gamma"):
        lrp_fx.attribute(module, x, target=R, composite="epsilon_plus", gamma=0.25)


class _Difference(nn.Module):
    def forward(self, a, b):
        return torch.add(a, b, alpha=-2.0)  # of non-negative operands, yet of either sign


def test_add_with_negative_alpha_is_not_taken_for_non_negative():
    """ZPlus drops its ``x-`` terms only where ``x >= 0`` is proven; ``add(relu, relu, alpha=-2)`` proves nothing."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix, self.head = _Difference(), nn.Linear(4, 3).double()

        def forward(self, x):
            return self.head(self.mix(x[:, :4].relu(), x[:, 4:].relu()))

    torch.manual_seed(0)
    model = Model().eval()
    x = torch.randn(6, 8, dtype=torch.float64)
    R = torch.randn(6, 3, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={nn.Linear: ZPlus()}, modules=["mix"])
    a = torch.add(x[:, :4].relu(), x[:, 4:].relu(), alpha=-2.0)
    assert (a < 0).any()
    M = dense(lambda inp: inp @ model.head.weight.T, (6, 4))
    expected = reference("zplus", a, M, model.head.bias.detach(), R)
    torch.testing.assert_close(res.modules["mix"], expected, rtol=1e-10, atol=1e-12)
