"""Linear-family rules (aten.linear, aten.convolution) against their dense float64 formulas, and conservation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
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


SIGN_SPLIT = ["zplus", "alphabeta", "gamma"]


@pytest.mark.parametrize("layer", ["linear", "conv"])
@pytest.mark.parametrize("name", SIGN_SPLIT)
def test_sign_split_after_relu_matches_dense_formula(layer, name):
    """Non-negative inputs take the folded path's other branch (``P = f(x; W+)``, no ``|x|`` product)."""
    module, shape = _layers()[layer]
    with torch.no_grad():
        module.bias.normal_()
    model = nn.Sequential(nn.ReLU(), module)
    x = torch.randn(shape, dtype=torch.float64)
    R = torch.randn_like(model(x))
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={type(module): RULES[name]})

    def f(inp, w=module.weight):
        return module._conv_forward(inp, w, None) if layer == "conv" else inp @ w.T

    M = dense(f, shape)
    bias = module.bias.detach().repeat_interleave(R[0].numel() // module.bias.numel())
    a = torch.relu(x).reshape(shape[0], -1)
    expected = reference(name, a, M, bias, R.reshape(shape[0], -1)).reshape(shape)
    expected = expected * (x > 0)  # the ReLU's rule hands a position's relevance on as it is; x <= 0 carries none
    torch.testing.assert_close(res.relevance, expected, rtol=1e-10, atol=1e-12)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # after a ReLU, output of mixed sign: gamma's two-sided case
        nn.Conv2d(8, 6, 3, stride=2),  # input of mixed sign
        nn.ReLU(),  # output non-negative on the relevance support: gamma's one-sided case
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 10),
        nn.Tanh(),
        nn.Linear(10, 4),  # input of mixed sign
    ).double()


def _folded_and_by_terms(model, x, target, overrides, **kw):
    """Attribution twice with ``overrides``: plain (the folded evaluation) and with parameter relevance, which takes
    the term-by-term one (one product per sign combination)."""
    kw.update(composite="epsilon", overrides=overrides)
    folded = lrp_fx.attribute(model, x, target=target, **kw)
    return folded, lrp_fx.attribute(model, x, target=target, param_relevance=True, **kw)


@pytest.mark.parametrize("name", SIGN_SPLIT)
def test_folded_sign_split_equals_term_by_term_on_a_network(name):
    """Two implementations of each rule, which must agree on every layer kind of this network."""
    model = _cnn()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    overrides = {nn.Conv2d: RULES[name], nn.Linear: RULES[name]}
    folded, by_terms = _folded_and_by_terms(model, x, 1, overrides, track_absorbed=True)
    assert folded.relevance.abs().sum() > 0
    torch.testing.assert_close(folded.relevance, by_terms.relevance, rtol=1e-10, atol=1e-13)
    assert folded.absorbed.keys() == by_terms.absorbed.keys()
    for node in folded.absorbed:
        torch.testing.assert_close(folded.absorbed[node], by_terms.absorbed[node], rtol=1e-9, atol=1e-12)


PRODUCTS = ("aten.linear", "aten.mm", "aten.addmm", "aten.convolution")


@pytest.mark.parametrize(
    ("name", "relu_first", "products"),
    [
        ("zplus", False, 3),  # term by term: 4
        ("alphabeta", False, 5),  # 8
        ("gamma", False, 3),  # 8
        ("zplus", True, 2),  # 2
        ("alphabeta", True, 3),  # 4
        ("gamma", True, 3),  # 4
    ],
)
def test_sign_split_rules_take_fewer_products(name, relu_first, products):
    """The folded rules' cost in products of the layer (the term-by-term formula's in the comments): one product
    ``P`` serves both denominators, and transposed products are shared where exact (see ``_signsplit_folded``)."""
    layer = nn.Linear(6, 5).double()
    model = nn.Sequential(nn.ReLU(), layer) if relu_first else layer
    x = torch.randn(3, 6, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=0, composite="epsilon", overrides={nn.Linear: RULES[name]})
    nodes = res.program.graph_module.graph.nodes
    count = sum(1 for n in nodes if n.op == "call_function" and str(n.target).startswith(PRODUCTS))
    assert count == 1 + products  # the forward's own product, then the rule's


@pytest.mark.parametrize("relu_first", [True, False], ids=["after-relu", "mixed-input"])
@pytest.mark.parametrize("name", SIGN_SPLIT)
def test_sign_split_is_exact_where_a_denominator_is_only_its_stabiliser(name, relu_first):
    """float32, output 0 with contributions >= 0 only (after a ReLU: its weights positive; on a mixed-sign input:
    its weights take the input's signs). AlphaBeta's negative denominator is then 0, stabilised to 1e-6, so its
    relevance factor is ~1e6 R. The term-by-term formula multiplies it by exact zeros (``x+ W-``, ``x- W+``); the
    folded rule must too: a fold with ``|W|`` would cancel ~1e6 R |x w| terms and leave rounding noise of order
    0.1 R."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 3, bias=False)
    x = torch.randn(4, 6) + 0.5 if relu_first else torch.randn(1, 6)
    with torch.no_grad():
        layer.weight[0] = layer.weight[0].abs() if relu_first else layer.weight[0].abs() * x[0].sign()
    model = nn.Sequential(nn.ReLU(), layer) if relu_first else layer
    folded, by_terms = _folded_and_by_terms(model, x, torch.rand(x.shape[0], 3), {nn.Linear: RULES[name]})
    torch.testing.assert_close(folded.relevance, by_terms.relevance, rtol=1e-5, atol=1e-6)


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


def test_zbox_with_per_feature_bounds_matches_dense_formula():
    """Tensor bounds become program constants (hoisted with their products); the result is the dense formula's."""
    module = nn.Linear(7, 5).double()
    x = torch.randn(4, 7, dtype=torch.float64)
    low, high = -torch.rand(7, dtype=torch.float64) - 1.0, torch.rand(7, dtype=torch.float64) + 1.0
    R = torch.randn(4, 5, dtype=torch.float64)
    res = lrp_fx.attribute(module, x, target=R, composite="epsilon", overrides={nn.Linear: ZBox(low, high)})
    M = dense(lambda inp: inp @ module.weight.T, (4, 7))
    expected = reference("zbox", x, M, module.bias.detach(), R, low=low.expand(4, 7), high=high.expand(4, 7))
    torch.testing.assert_close(res.relevance, expected, rtol=1e-10, atol=1e-12)


class _ValueOfEitherSign(nn.Module):
    """ReLU outputs turned into values of either sign by a number: a pad's fill, a pool's divisor, clamp's max."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        h = x.relu()
        if self.kind == "pad":
            h = F.pad(h, (1, 1, 1, 1), value=-1.0)[:, :, :4, :4]
        elif self.kind == "pool":
            h = F.avg_pool2d(F.pad(h, (0, 1, 0, 1)), 2, stride=1, divisor_override=-3)
        else:
            h = h.clamp(0.5, -1.0) + h  # min > max: clamp's output is -1 everywhere
        return h.flatten(1)


@pytest.mark.parametrize("kind", ["pad", "pool", "clamp"])
def test_numbers_that_make_relu_outputs_negative_are_not_taken_for_non_negative(kind):
    """ZPlus on the head needs its ``x-`` terms where a pad fills -1, a pool divides by -3 or ``clamp(0.5, -1)``
    gives -1: the non-negativity analysis checks the numbers an op computes with, not only ``add``'s and ``mul``'s."""
    torch.manual_seed(1)
    model = nn.Sequential(_ValueOfEitherSign(kind), nn.Linear(16, 3).double()).eval()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    R = torch.randn(5, 3, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={nn.Linear: ZPlus()}, modules=["0"])
    a = model[0](x)
    assert (a < 0).any()
    M = dense(lambda inp: inp @ model[1].weight.T, (5, 16))
    expected = reference("zplus", a, M, model[1].bias.detach(), R)
    torch.testing.assert_close(res.modules["0"], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_zbox_parameter_relevance_with_a_batch(layer, batch):
    """ZBox's bounds are one sample, broadcast over the batch; the weight's relevance takes them expanded, and the
    input relevance is what it is without parameter relevance."""
    torch.manual_seed(2)
    module = nn.Conv2d(2, 3, 3, padding=1).double() if layer == "conv" else nn.Linear(6, 3).double()
    x = torch.randn(batch, 2, 5, 5, dtype=torch.float64) if layer == "conv" else torch.randn(batch, 6).double()
    R = torch.randn_like(module(x))
    kw = dict(target=R, composite="epsilon", overrides={type(module): ZBox(-2.0, 2.0)})
    plain = lrp_fx.attribute(module, x, **kw)
    res = lrp_fx.attribute(module, x, param_relevance=True, **kw)
    torch.testing.assert_close(res.relevance, plain.relevance, rtol=1e-12, atol=1e-12)
    assert res.params["weight"].shape == module.weight.shape and res.params["weight"].abs().sum() > 0


def test_zbox_per_pixel_bounds_are_padded_like_the_input():
    """``padding_mode="reflect"`` captures as index ops before the convolution: bounds shaped like the model's input
    are padded by the same ops, which gives the convolution with the bounds padded by hand."""
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect").double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    low, high = -1.0 - torch.rand(2, 5, 5, dtype=torch.float64), 1.0 + torch.rand(2, 5, 5, dtype=torch.float64)
    R = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    res = lrp_fx.attribute(conv, x, target=R, composite="epsilon", overrides={nn.Conv2d: ZBox(low, high)})

    def pad(t):
        return F.pad(t, (1, 1, 1, 1), mode="reflect")

    xp, lp, hp = pad(x), pad(low[None].expand(2, -1, -1, -1)), pad(high[None].expand(2, -1, -1, -1))
    M = dense(lambda inp: F.conv2d(inp, conv.weight), (2, 2, 7, 7))
    flat = reference("zbox", xp.flatten(1), M, conv.bias.detach().repeat_interleave(25), R.flatten(1),
                     low=lp.flatten(1), high=hp.flatten(1))  # fmt: skip
    # the padded positions are reflections of the input: their relevance returns to the pixels they copy
    expected = torch.autograd.functional.vjp(pad, x, flat.reshape(2, 2, 7, 7))[1]
    torch.testing.assert_close(res.relevance, expected, rtol=1e-10, atol=1e-12)


_SIGNED = {  # a value of either sign, and what the analysis must (True) or must not (False) take for >= 0
    "softplus": (F.softplus, True),
    "square": (lambda h: h**2, True),
    "product with itself": (lambda h: h * h, True),
    "sqrt of relu": (lambda h: torch.sqrt(h.relu()), True),
    "root of relu": (lambda h: h.relu() ** 0.5, True),
    "roll of relu": (lambda h: torch.roll(h.relu(), 1, 1), True),  # captured as index_select with computed positions
    "cube": (lambda h: h**3, False),
    "root of anything": (lambda h: h.abs() ** 0.5 - h.relu(), False),
    "product of two": (lambda h: h * h.flip(1), False),
}


class _Activation(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.fn = _SIGNED[kind][0]

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("kind", list(_SIGNED))
def test_values_proven_non_negative_take_one_product_and_the_dense_formula(kind):
    """ZPlus skips its ``x-`` product exactly where the analysis proves ``x >= 0`` (softplus, even powers, roots and
    indexed routing of a ReLU) and keeps it otherwise; either way the relevance is the dense formula's."""
    torch.manual_seed(4)
    model = nn.Sequential(_Activation(kind), nn.Linear(6, 3).double()).eval()
    x = torch.randn(5, 6, dtype=torch.float64)
    R = torch.randn(5, 3, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={nn.Linear: ZPlus()}, modules=["0"])
    a = model[0](x)
    M = dense(lambda inp: inp @ model[1].weight.T, (5, 6))
    expected = reference("zplus", a, M, model[1].bias.detach(), R)
    torch.testing.assert_close(res.modules["0"], expected, rtol=1e-10, atol=1e-12)
    graph = res.program.graph_module.graph
    aten = torch.ops.aten
    products = [n for n in graph.nodes if n.target in (aten.linear.default, aten.addmm.default, aten.mm.default)]
    # proven: the forward, z+ = x W+ and one VJP; otherwise the x- terms add a product and a second VJP
    assert len(products) == (3 if _SIGNED[kind][1] else 4), [n.format_node() for n in products]


def test_zbox_is_exact_where_the_input_sits_at_its_bounds():
    """A black patch at ``low`` under a positive filter: ZBox's ``z`` vanishes there, ``s ~ R / eps``, and
    ``x J(W)^T s - l J(W+)^T s - h J(W-)^T s`` cancelled to float32 rounding times ``R / eps`` (1-2 % of the
    attribution off float64). As ``(x - l) J(W+)^T s + (x - h) J(W-)^T s`` it is exact there."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    with torch.no_grad():
        model[0].weight[0] = 0.01 + 0.02 * torch.rand(1, 3, 3)  # positive: every output's z is 0 on the patch
        model[0].bias[0] = 0.5  # and the ReLU passes it
    x = torch.rand(1, 1, 8, 8) * 2 - 1
    x[..., 1:7, 1:7] = -1.0  # exactly at low, in both dtypes
    kw = dict(target=0, composite="epsilon", overrides={nn.Conv2d: ZBox(-1.0, 1.0)})
    r32 = lrp_fx.attribute(model, x, **kw).relevance.double()
    r64 = lrp_fx.attribute(model.double(), x.double(), **kw).relevance
    assert (r32 - r64).norm() / r64.norm() < 1e-5


@pytest.mark.parametrize("rule", [ZPlus(1e-2), AlphaBeta(2.0, 1.0, 1e-2), Gamma(0.25, 1e-2)])
def test_float16_sign_split_rules_do_not_overflow_before_the_layer_does(rule):
    """The fewer-products form sums ``z' + f(|x|; |W|)`` before halving: 14000 + 64000 is inf in float16 while the
    layer's output and each product are finite (relative error 0.8-1.5 against float64 before)."""
    lin = nn.Linear(64, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.where(torch.rand(4, 64, generator=torch.Generator().manual_seed(0)) > 0.5, 0.5, -0.5))
    model = nn.Sequential(nn.Identity(), lin, nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[2].weight.fill_(0.5)
        model[2].bias.zero_()
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(1)).sign() * 2000.0  # mixed signs
    kw = dict(target=0, composite="epsilon", epsilon=1e-2, stabilizer=1e-2, overrides={"1": rule})
    r16 = lrp_fx.attribute(model.half(), x.half(), **kw).relevance.double()
    r64 = lrp_fx.attribute(model.double(), x.double(), **kw).relevance
    assert (r16 - r64).norm() / r64.norm() < 1e-2
