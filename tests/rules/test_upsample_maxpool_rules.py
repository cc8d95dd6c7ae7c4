"""Linear interpolation (``upsample_bilinear2d`` and friends, ``rules/linear.py``) and the winner-takes-all rules of
``rules/routing.py`` (adaptive max pooling, ``maximum``/``minimum``, ``amax``/``amin``) against their formulas written
out densely in float64, plus conservation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrp_fx
import lrp_fx.capture
from lrp_fx.rules import registry
from lrp_fx.rules.linear import average_pool
from lrp_fx.rules.routing import adaptive_max_pool, elementwise_max, reduced_max

from ._reference import Fn, attribute_with, dense, reference, relevance_total, stab

D = torch.float64
aten = torch.ops.aten


_attr, _total = attribute_with, relevance_total


# -- linear interpolation -------------------------------------------------------------------------------------------

BILINEAR = {
    "align_corners=False": dict(scale_factor=2, mode="bilinear", align_corners=False),
    "align_corners=True": dict(size=(7, 9), mode="bilinear", align_corners=True),
    "downsample": dict(size=(3, 4), mode="bilinear", align_corners=False),
    "antialias": dict(size=(3, 4), mode="bilinear", antialias=True),
}


@pytest.mark.parametrize("kw", list(BILINEAR.values()), ids=list(BILINEAR))
def test_bilinear_upsampling_is_the_z_rule_of_its_interpolation_matrix(kw):
    """``R_x = x * M^T (R / stab(M x))`` with ``M`` the interpolation matrix (non-negative, rows summing to one)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=D)

    def up(t):
        return F.interpolate(t, **kw)

    z = up(x)
    R = torch.randn_like(z)
    res = _attr(Fn(lambda m, x: up(x)), x, R, track_absorbed=True)
    M = dense(up, x.shape)
    assert (M >= 0).all()
    torch.testing.assert_close(M.sum(1), torch.ones(M.shape[0], dtype=D))
    expected = reference("epsilon", x.reshape(2, -1), M, None, R.reshape(2, -1)).reshape(x.shape)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), (R * z / stab(z)).sum())  # conservative up to the stabiliser
    torch.testing.assert_close(_total(res), R.sum())


def test_bicubic_antialiased_is_the_epsilon_rule_of_its_interpolation_matrix():
    """Kept whole by capture (it had no rule): ``R_x = x * M^T (R / stab(M x))``, ``M`` with negative weights."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 8, dtype=D)

    def down(t):
        return F.interpolate(t, size=(4, 3), mode="bicubic", antialias=True)

    R = torch.randn_like(down(x))
    res = _attr(Fn(lambda m, x: down(x)), x, R, track_absorbed=True)
    M = dense(down, x.shape)
    assert (M < 0).any()
    expected = reference("epsilon", x.reshape(2, -1), M, None, R.reshape(2, -1)).reshape(x.shape)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(_total(res), R.sum())


@pytest.mark.parametrize("how", ["bicubic antialias", "grid_sample bicubic"])
def test_bicubic_of_a_relu_is_not_taken_for_non_negative(how):
    """Negative weights overshoot below zero next to an edge: ZPlus on the next layer keeps its ``x-`` terms."""
    torch.manual_seed(2)
    grid = torch.rand(1, 12, 12, 2, dtype=D) * 2 - 1

    def cubic(t):
        if how == "bicubic antialias":
            return F.interpolate(t, size=(12, 12), mode="bicubic", antialias=True)
        return F.grid_sample(t, grid.expand(t.shape[0], -1, -1, -1), mode="bicubic", align_corners=False)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(144, 3).double()

        def forward(self, x):
            return self.head(cubic(x.relu()).flatten(1))

    model = Model().eval()
    x = torch.zeros(3, 1, 8, 8, dtype=D)
    x[:, :, 2:6, 2:6] = torch.rand(3, 1, 4, 4, dtype=D) + 1.0  # a bright square on black: the cubic overshoots
    R = torch.randn(3, 3, dtype=D)
    res = _attr(model, x, R, overrides={nn.Linear: lrp_fx.rules.ZPlus()})
    a = cubic(x.relu()).flatten(1)
    assert (a < 0).any()
    R_a = reference("zplus", a, dense(lambda t: t @ model.head.weight.T, a.shape), model.head.bias.detach(), R)
    expected = reference("epsilon", x.relu().reshape(3, -1), dense(cubic, x.shape), None, R_a).reshape(x.shape)
    torch.testing.assert_close(res.relevance, expected)


def test_bilinear_registrations_and_flat_override():
    for op in (aten.upsample_bilinear2d.vec, aten.upsample_bilinear2d.default, aten._upsample_bilinear2d_aa.vec):
        assert registry.get_rule(op).fn is average_pool and registry.get_rule(op).group == "pool"
    x = torch.randn(2, 2, 4, 5, dtype=D)
    model = nn.Upsample(scale_factor=2, mode="bilinear")
    R = torch.randn_like(model(x))
    res = _attr(model, x, R, overrides={nn.Upsample: lrp_fx.rules.Flat()})
    M = dense(model, x.shape)
    # Flat: R_x = M^T (R / stab(M 1)), and M 1 = 1
    expected = (R.reshape(2, -1) / stab(M.sum(1))) @ M
    torch.testing.assert_close(res.relevance, expected.reshape(x.shape))


@pytest.mark.parametrize("mode, shape, size", [("linear", (2, 3, 5), 9), ("trilinear", (1, 2, 2, 3, 3), (3, 4, 5))])
def test_linear_and_trilinear_rules_when_kept_whole(monkeypatch, mode, shape, size):
    """``upsample_linear1d`` and ``upsample_trilinear3d`` decompose during capture (into index, multiply and add ops
    with their own rules); kept whole they get the same rule as bilinear."""
    ops = [aten.upsample_linear1d.vec, aten.upsample_trilinear3d.vec]
    monkeypatch.setattr(lrp_fx.capture, "KEEP_WHOLE", [*lrp_fx.capture.KEEP_WHOLE, *ops])
    x = torch.randn(*shape, dtype=D)

    def up(t):
        return F.interpolate(t, size=size, mode=mode)

    z = up(x)
    R = torch.randn_like(z)
    res = _attr(Fn(lambda m, x: up(x)), x, R, track_absorbed=True)
    assert {a.op for a in res.program.assignments} & {str(op) for op in ops}
    M = dense(up, x.shape)
    b = x.shape[0]
    expected = reference("epsilon", x.reshape(b, -1), M, None, R.reshape(b, -1)).reshape(x.shape)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(_total(res), R.sum())


class SegHead(nn.Module):
    """FCN/DeepLab-style: features at low resolution, classifier, bilinear upsampling to the input size."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1))

    def forward(self, x):
        out = self.body(x)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_segmentation_head_end_to_end_conserves():
    torch.manual_seed(0)
    model = SegHead().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=D)
    y = model(x)
    R = torch.zeros_like(y)
    R[:, 1] = y[:, 1]  # explain class 1 at every pixel
    for composite in ("epsilon", "epsilon_plus_flat"):
        res = _attr(model, x, R, composite=composite, track_absorbed=True)
        assert torch.isfinite(res.relevance).all()
        torch.testing.assert_close(_total(res), R.sum())


# -- adaptive max pooling -------------------------------------------------------------------------------------------


def _windows(n, out):
    return [(math.floor(i * n / out), math.ceil((i + 1) * n / out)) for i in range(out)]


def test_adaptive_max_pool2d_winner_takes_all():
    """Overlapping adaptive windows (5 -> 3): an input that wins two windows gets both relevances."""
    torch.manual_seed(0)
    pool = nn.AdaptiveMaxPool2d((3, 2))
    x = torch.randn(2, 3, 5, 6, dtype=D)
    R = torch.randn(2, 3, 3, 2, dtype=D)
    res = _attr(pool, x, R, track_absorbed=True)
    expected = torch.zeros_like(x)
    for i, (h0, h1) in enumerate(_windows(5, 3)):
        for j, (w0, w1) in enumerate(_windows(6, 2)):
            win = x[:, :, h0:h1, w0:w1].reshape(2, 3, -1)
            k = win.argmax(-1)
            for b in range(2):
                for c in range(3):
                    hh, ww = divmod(int(k[b, c]), w1 - w0)
                    expected[b, c, h0 + hh, w0 + ww] += R[b, c, i, j]
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(_total(res), R.sum())
    torch.testing.assert_close(res.relevance.sum(), R.sum())  # exactly conservative


@pytest.mark.parametrize(
    "pool, shape",
    [(nn.AdaptiveMaxPool1d(3), (2, 3, 7)), (nn.AdaptiveMaxPool3d((2, 1, 2)), (1, 2, 3, 4, 5))],
    ids=["1d", "3d"],
)
def test_adaptive_max_pool_1d_3d_is_the_pooling_gradient(pool, shape):
    assert registry.get_rule(aten.adaptive_max_pool3d.default).fn is adaptive_max_pool
    x = torch.randn(*shape, dtype=D)
    R = torch.randn_like(pool(x))
    res = _attr(pool, x, R, track_absorbed=True)
    xg = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(pool(xg), xg, R)  # the gradient routes each output to its argmax
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), R.sum())


def test_cnn_with_adaptive_max_pool_end_to_end_conserves():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d((2, 2)), nn.Flatten(), nn.Linear(20, 4)
    )
    model = model.double().eval()
    x = torch.randn(2, 3, 7, 7, dtype=D)
    res = lrp_fx.attribute(model, x, target=1, composite="epsilon_plus", track_absorbed=True)
    torch.testing.assert_close(_total(res), model(x)[:, 1].sum())


# -- maximum / minimum ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [torch.maximum, torch.minimum, torch.fmax, torch.fmin])
def test_elementwise_max_winner_takes_all_and_ties_split(op):
    """Small integers force ties; ``b`` is broadcast and collects the relevance of every position it won."""
    assert registry.get_rule(aten.maximum.default).fn is elementwise_max
    torch.manual_seed(0)
    a = torch.randint(-2, 3, (3, 4), dtype=D)
    b = torch.randint(-2, 3, (1, 4), dtype=D)
    R = torch.randn(3, 4, dtype=D)
    res = _attr(Fn(lambda m, a, b: op(a, b)), (a, b), R, track_absorbed=True)
    bb = b.expand_as(a)
    first = a > bb if op in (torch.maximum, torch.fmax) else a < bb
    tie = a == bb
    assert tie.any() and not tie.all()
    r_a = torch.where(tie, R / 2, torch.where(first, R, 0.0))
    r_b = torch.where(tie, R / 2, torch.where(first, 0.0, R)).sum(0, keepdim=True)
    torch.testing.assert_close(res.relevance[0], r_a)
    torch.testing.assert_close(res.relevance[1], r_b)
    torch.testing.assert_close(res.relevance[0].sum() + res.relevance[1].sum(), R.sum())


def test_maximum_with_a_constant_keeps_its_wins_as_absorbed():
    x = torch.randn(3, 5, dtype=D)
    R = torch.randn(3, 5, dtype=D)
    res = _attr(
        Fn(lambda m, x: torch.maximum(x, m.floor), floor=torch.full((5,), 0.1, dtype=D)), x, R, track_absorbed=True
    )
    torch.testing.assert_close(res.relevance, torch.where(x > 0.1, R, 0.0))
    torch.testing.assert_close(_total(res), R.sum())


# -- amax / amin ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, dims",
    [
        (lambda x: x.amax(1), (1,)),
        (lambda x: x.amin((1, 2), keepdim=True), (1, 2)),
        (lambda x: x.amax(-1, keepdim=True), (2,)),
        (lambda x: x.max(), (0, 1, 2)),
        (lambda x: x.min(), (0, 1, 2)),
    ],
    ids=["amax", "amin-keepdim", "amax-last", "max-all", "min-all"],
)
def test_reduced_max_winner_takes_all_and_ties_split(fn, dims):
    assert registry.get_rule(aten.amax.default).fn is reduced_max
    torch.manual_seed(1)
    x = torch.randint(-3, 4, (2, 3, 4), dtype=D)  # many ties
    y = fn(x)
    R = torch.randn_like(y)
    res = _attr(Fn(lambda m, x: fn(x)), x, R, track_absorbed=True)
    kept = [1 if d in dims else n for d, n in enumerate(x.shape)]
    wins = (x == y.reshape(kept)).double()
    expected = wins * R.reshape(kept) / wins.sum(dims, keepdim=True)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), R.sum())
    torch.testing.assert_close(_total(res), R.sum())


def test_global_max_pooling_head_end_to_end_conserves():
    """``amax`` over the spatial dimensions (global max pooling) between a CNN body and a classifier."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            h = self.conv(x).relu()
            return self.fc(torch.maximum(h.amax((2, 3)), h.amin((2, 3))))

    model = Net().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=D)
    res = lrp_fx.attribute(model, x, target=2, composite="epsilon", track_absorbed=True)
    torch.testing.assert_close(_total(res), model(x)[:, 2].sum())
