"""Element-wise, pooling and routing rules against their dense float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lrp_fx

from ._reference import stab


class Binary(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, y):
        return self.fn(x, y)


def _attr(model, inputs, R, **kw):
    return lrp_fx.attribute(model, inputs, target=R, composite="epsilon", **kw)


@pytest.mark.parametrize("op", [torch.atan2, torch.pow], ids=["atan2", "pow"])
def test_atan2_and_tensor_pow_split_uniformly_between_activations(op):
    """``atan2(a, b)`` and ``a ** b`` with a tensor exponent: each activation operand gets ``R / 2`` (broadcasts
    summed back); with one operand constant, the other gets all of ``R``."""
    g = torch.Generator().manual_seed(8)
    a = torch.rand(2, 3, dtype=torch.float64, generator=g) + 0.5  # a positive base for pow
    b = torch.randn(3, dtype=torch.float64, generator=g)
    R = torch.randn(2, 3, dtype=torch.float64, generator=g)
    res = _attr(Binary(op), (a, b), R)
    torch.testing.assert_close(res.relevance[0], R / 2)
    torch.testing.assert_close(res.relevance[1], R.sum(0) / 2)

    class ConstantSecond(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("b", b)

        def forward(self, x):
            return op(x, self.b)

    torch.testing.assert_close(_attr(ConstantSecond(), a, R).relevance, R)


def test_add_is_proportional_and_handles_broadcast():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = torch.randn(3, 1, 1, dtype=torch.float64)
    z = x + y
    R = torch.randn_like(z)
    res = _attr(Binary(torch.add), (x, y), R)
    torch.testing.assert_close(res.relevance[0], x * R / stab(z))
    torch.testing.assert_close(res.relevance[1], (y * R / stab(z)).sum(dim=(0, 2, 3), keepdim=True)[0])


def test_sub_keeps_signs_and_conserves():
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    R = torch.randn(5, 6, dtype=torch.float64)
    res = _attr(Binary(torch.sub), (x, y), R)
    z = x - y
    torch.testing.assert_close(res.relevance[0], x * R / stab(z))
    torch.testing.assert_close(res.relevance[1], -y * R / stab(z))
    torch.testing.assert_close(res.relevance[0] + res.relevance[1], R * z / stab(z))


def test_add_with_constant_records_its_share_as_absorbed():
    model = Binary(lambda x, y: x + 2.5 + y)
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    R = torch.randn(3, 4, dtype=torch.float64)
    res = _attr(model, (x, y), R, track_absorbed=True)
    total = res.relevance[0].sum() + res.relevance[1].sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, R.sum())
    assert abs(sum(res.absorbed.values())) > 1e-3  # the constant really kept a share


def test_product_of_activations_splits_uniformly():
    x, y = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 1, dtype=torch.float64)
    R = torch.randn(2, 5, dtype=torch.float64)
    res = _attr(Binary(torch.mul), (x, y), R)
    torch.testing.assert_close(res.relevance[0], R / 2)
    torch.testing.assert_close(res.relevance[1], (R / 2).sum(1, keepdim=True))


def test_constant_gate_hands_the_product_to_the_ungated_factor():
    """``gate="constant"`` (LXT's CP-LRP for gated MLPs): in ``silu(a) * b`` the gate ``silu(a)`` is a constant, so
    ``b`` receives all of ``R`` and ``a`` none; a product of two non-gates (or two gates) stays uniform."""
    a, b = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    R = torch.randn(2, 5, dtype=torch.float64)
    swiglu = Binary(lambda a, b: torch.nn.functional.silu(a) * b)
    for composite in ("attnlrp", "cplrp"):
        gated = lrp_fx.attribute(swiglu, (a, b), target=R, composite=composite, gate="constant")
        torch.testing.assert_close(gated.relevance[1], R)
        assert (gated.relevance[0] == 0).all()
        uniform = lrp_fx.attribute(swiglu, (a, b), target=R, composite=composite)
        torch.testing.assert_close(uniform.relevance[0], R / 2)  # silu: identity rule
        torch.testing.assert_close(uniform.relevance[1], R / 2)
    both = lrp_fx.attribute(Binary(torch.mul), (a, b), target=R, composite="attnlrp", gate="constant")
    torch.testing.assert_close(both.relevance[0], R / 2)
    with pytest.raises(TypeError, match="gate"):
        lrp_fx.attribute(swiglu, (a, b), target=R, composite="epsilon", gate="constant")


def _gelu_new(x):  # GPT-2's and T5 v1.1's gelu_new, written out as Hugging Face writes it
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


@pytest.mark.parametrize(
    "act",
    [lambda x: x * torch.sigmoid(x), lambda x: x * torch.sigmoid(1.702 * x), _gelu_new],
    ids=["silu-written-out", "quick-gelu", "gelu-new"],
)
def test_constant_gate_recognises_activations_written_out(act):
    """``gate="constant"`` treats ``act(a) * b`` alike whether ``act`` is one op or written out (T5 v1.1's
    ``gated-gelu`` MLP uses ``gelu_new``); a squeeze-excitation product ``a * sigmoid(c)`` is no activation."""
    a, b, c = (torch.randn(2, 5, dtype=torch.float64) for _ in range(3))
    R = torch.randn(2, 5, dtype=torch.float64)
    gated = lrp_fx.attribute(Binary(lambda a, b: act(a) * b), (a, b), target=R, composite="cplrp", gate="constant")
    torch.testing.assert_close(gated.relevance[1], R)
    assert (gated.relevance[0] == 0).all()
    uniform = lrp_fx.attribute(Binary(lambda a, b: act(a) * b), (a, b), target=R, composite="cplrp")
    torch.testing.assert_close(uniform.relevance[1], R / 2)

    class Excited(nn.Module):
        def forward(self, a, b, c):
            return (a * torch.sigmoid(c)) * b

    se = lrp_fx.attribute(Excited(), (a, b, c), target=R, composite="cplrp", gate="constant")
    torch.testing.assert_close(se.relevance[1], R / 2)


def test_product_with_parameter_is_identity():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.randn(4, dtype=torch.float64))

        def forward(self, x):
            return x * self.s

    x = torch.randn(3, 4, dtype=torch.float64)
    R = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(_attr(Scale(), x, R).relevance, R)


def test_activation_passes_relevance():
    x = torch.randn(3, 8, dtype=torch.float64)
    R = torch.randn(3, 8, dtype=torch.float64)
    for act in (nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Sigmoid(), nn.Hardswish(), nn.Tanh()):
        torch.testing.assert_close(_attr(act, x, R).relevance, R)


def test_avg_pool_norm_rule():
    pool = nn.AvgPool2d(2)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    z = pool(x)
    R = torch.randn_like(z)
    s = R / stab(z)
    expected = x * s.repeat_interleave(2, -1).repeat_interleave(2, -2) / 4
    torch.testing.assert_close(_attr(pool, x, R).relevance, expected)


def test_mean_norm_rule():
    model = Binary(lambda x, y: x.mean(dim=(2, 3)) + y)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = torch.zeros(2, 3, dtype=torch.float64)
    z = x.mean(dim=(2, 3))
    R = torch.randn_like(z)
    res = _attr(model, (x, y), R)
    # the add hands the mean R * z / stab(z) (y = 0); the mean spreads that in proportion to x over 16 pixels
    r_mean = R * z / stab(z)
    expected = x * (r_mean / stab(z))[..., None, None] / 16
    torch.testing.assert_close(res.relevance[0], expected)


def test_max_pool_winner_takes_all():
    pool = nn.MaxPool2d(2)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    R = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    res = _attr(pool, x, R)
    windows = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(1, 2, 2, 2, 4)
    expected = torch.zeros(1, 2, 2, 2, 4, dtype=torch.float64)
    expected.scatter_(-1, windows.argmax(-1, keepdim=True), R[..., None])
    expected = expected.reshape(1, 2, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(1, 2, 4, 4)
    torch.testing.assert_close(res.relevance, expected)


def test_routing_ops_route_exactly():
    """cat, permute, slice, view, expand: each input position gets the relevance of the outputs it became."""
    model = Binary(lambda x, y: torch.cat([x.permute(0, 2, 1)[:, 1:], y.expand(2, 3, 4)], dim=1).reshape(2, -1))
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    y = torch.randn(1, 1, 4, dtype=torch.float64)
    R = torch.randn(2, 28, dtype=torch.float64)
    res = _attr(model, (x, y), R)
    Rv = R.reshape(2, 7, 4)
    ex = torch.zeros(2, 5, 4, dtype=torch.float64)
    ex[:, 1:] = Rv[:, :4]
    torch.testing.assert_close(res.relevance[0], ex.permute(0, 2, 1))
    torch.testing.assert_close(res.relevance[1], Rv[:, 4:].sum(dim=(0, 1), keepdim=True))
    torch.testing.assert_close(res.relevance[0].sum() + res.relevance[1].sum(), R.sum())


@pytest.mark.parametrize(
    "views",
    [
        [("select", 0), ("select", 1), ("select", 2)],  # q, k, v taken from one fused projection
        [("select", 2), ("select", 0)],  # a gap at index 1
        [("slice", 0, 2), ("slice", 3, 5), ("select", 2)],  # slices and a select tiling the dimension
        [("slice", 1, 4), ("select", 2), ("slice", -2, None)],  # overlapping views: routed one by one
    ],
)
def test_views_of_one_tensor_are_routed_exactly(views):
    """Relevance of several ``select``/``slice`` views of one tensor (gathered into one assembly by the emitter)
    equals their routing one by one, ``J^T R``, the vector-Jacobian product of the views."""
    x = torch.randn(2, 5, 3, dtype=torch.float64)

    def take(x):
        out = []
        for v in views:
            out.append(x[:, v[1]] if v[0] == "select" else x[:, v[1] : v[2]].flatten(1))
        return torch.cat([o.flatten(1) for o in out], 1)

    class Views(nn.Module):
        def forward(self, x):
            return take(x)

    R = torch.randn_like(take(x))
    _, vjp = torch.func.vjp(take, x)
    (expected,) = vjp(R)
    torch.testing.assert_close(_attr(Views(), x, R).relevance, expected)


def test_an_additive_minus_inf_mask_keeps_the_books_finite():
    """``softmax(x + mask)`` with ``-inf`` in the mask (``nn.Transformer.generate_square_subsequent_mask``): the
    add's shares at masked positions are ``0 * -inf``, which must count as 0 in what it records as absorbed."""

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", torch.triu(torch.full((4, 4), float("-inf"), dtype=torch.float64), 1))

        def forward(self, x):
            return torch.softmax(x + self.mask, -1)

    x = torch.randn(2, 4, 4, dtype=torch.float64)
    R = torch.randn(2, 4, 4, dtype=torch.float64)
    res = lrp_fx.attribute(Masked(), x, target=R, composite="attnlrp", track_absorbed=True)
    assert all(math.isfinite(v) for v in res.absorbed.values()), res.absorbed
    assert abs(float(res.relevance.sum()) + sum(res.absorbed.values()) - float(R.sum())) < 1e-9
