"""``rules/reductions.py`` (``prod``, ``cumprod``, ``var``/``std``, ``hypot``) and tensor-bounded ``clamp`` against
their formulas written out in float64, plus conservation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ._reference import Fn, attribute_with, relevance_total, stab

D = torch.float64
_attr, _total = attribute_with, relevance_total


@pytest.mark.parametrize("over", ["dim", "all"])
def test_prod_gives_every_factor_an_equal_share(over):
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=D)
    x[0, 1] = 0.0  # a zero factor changes nothing: the uniform rule ignores the values
    fn = (lambda m, x: x.prod(-1)) if over == "dim" else (lambda m, x: x.prod() * torch.ones(2, dtype=D))
    R = torch.randn_like(fn(None, x))
    res = _attr(Fn(fn), x, R)
    expected = (R[:, None] / 4).expand(3, 4) if over == "dim" else torch.full_like(x, float(R.sum()) / 12)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), R.sum())


def test_cumprod_is_the_uniform_rule_on_every_prefix():
    torch.manual_seed(1)
    x = torch.randn(2, 5, dtype=D)
    R = torch.randn(2, 5, dtype=D)
    res = _attr(Fn(lambda m, x: x.cumprod(1)), x, R)
    expected = torch.zeros_like(x)
    for t in range(5):  # y_t = prod_{i <= t} x_i: each of its t + 1 factors gets R_t / (t + 1)
        expected[:, : t + 1] += R[:, t : t + 1] / (t + 1)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), R.sum())


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.var(-1),
        lambda x: x.var((1, 2), correction=0, keepdim=True),
        lambda x: x.std(1),
        lambda x: x.var(),
    ],
    ids=["var", "var-dims-keepdim", "std", "var-all"],
)
def test_variance_hands_each_element_its_share_of_the_squared_deviation(fn):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, dtype=D)
    R = torch.randn_like(fn(x))
    res = _attr(Fn(lambda m, x: fn(x)), x, R, track_absorbed=True)
    y = fn(x)
    # the reduced dims are those where y has size 1 or is missing: recover them by broadcasting R back
    if y.dim() == 0:
        dims, Rk = (0, 1, 2), R.reshape(1, 1, 1)
    elif y.shape == (2, 3):
        dims, Rk = (2,), R[..., None]
    elif y.shape == (2, 4):
        dims, Rk = (1,), R[:, None]
    else:
        dims, Rk = (1, 2), R
    d2 = (x - x.mean(dims, keepdim=True)) ** 2
    expected = d2 * Rk / stab(d2.sum(dims, keepdim=True))
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(_total(res), R.sum())


def test_hypot_splits_by_squares():
    a, b = torch.randn(2, 3, dtype=D), torch.randn(3, dtype=D)
    R = torch.randn(2, 3, dtype=D)
    res = _attr(Fn(lambda m, a, b: torch.hypot(a, b)), (a, b), R)
    s = R / stab(a * a + b * b)
    torch.testing.assert_close(res.relevance[0], a * a * s)
    torch.testing.assert_close(res.relevance[1], (b * b * s).sum(0))


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, float("inf"), 0.0])
@pytest.mark.parametrize("points", ["prototypes", "both"])
def test_cdist_splits_each_distance_by_its_coordinates_share(p, points):
    """``cdist(x1, x2, p)``: coordinate ``k`` of distance ``ij`` gets ``|d_ijk|^p / stab(sum_k |d_ijk|^p)`` of
    ``R_ij``, all to ``x1`` against constant prototypes, half to each point otherwise; written out per entry."""
    g = torch.Generator().manual_seed(7)
    x1, x2 = torch.randn(2, 3, 4, dtype=D, generator=g), torch.randn(5, 4, dtype=D, generator=g)
    x2[1, :3] = x1[0, 0, :3]  # a distance with three zero coordinates
    R = torch.randn(2, 3, 5, dtype=D, generator=g)
    if points == "prototypes":
        model, inputs = Fn(lambda m, a: torch.cdist(a, m.proto, p=p), proto=x2), x1
    else:
        model, inputs = Fn(lambda m, a, b: torch.cdist(a, b, p=p)), (x1, x2)
    res = _attr(model, inputs, R, track_absorbed=True)
    r1, r2 = torch.zeros_like(x1), torch.zeros_like(x2)
    half = 0.5 if points == "both" else 1.0
    for b, i, j in [(b, i, j) for b in range(2) for i in range(3) for j in range(5)]:
        d = (x1[b, i] - x2[j]).abs()
        if p == float("inf"):
            w = (d == d.max()).double() / int((d == d.max()).sum())
        elif p == 0:
            w = (d != 0).double() / max(int((d != 0).sum()), 1)
        else:
            w = d**p / stab((d**p).sum())
        r1[b, i] += half * w * R[b, i, j]
        r2[j] += half * w * R[b, i, j]
    torch.testing.assert_close(res.relevance if points == "prototypes" else res.relevance[0], r1)
    if points == "both":
        torch.testing.assert_close(res.relevance[1], r2)
    torch.testing.assert_close(_total(res), R.sum())


def test_clamp_with_tensor_bounds_passes_relevance_to_the_clamped_value():
    """Tensor bounds are thresholds, as a ReLU's zero: ``R_x = R``; ``F.cosine_similarity`` (which clamps the
    product of the norms) then hands all relevance to the dot product."""
    x, lo, hi = torch.randn(2, 4, dtype=D), torch.randn(4, dtype=D) - 1, torch.randn(4, dtype=D) + 1
    R = torch.randn(2, 4, dtype=D)
    res = _attr(Fn(lambda m, x, lo, hi: torch.clamp(x, lo, hi)), (x, lo, hi), R)
    torch.testing.assert_close(res.relevance[0], R)
    assert (res.relevance[1] == 0).all() and (res.relevance[2] == 0).all()
    a, b = torch.randn(3, 5, dtype=D), torch.randn(3, 5, dtype=D)
    r = torch.randn(3, dtype=D)
    res = _attr(Fn(lambda m, a, b: F.cosine_similarity(a, b, -1)), (a, b), r, track_absorbed=True)
    torch.testing.assert_close(_total(res), r.sum())
    split = res.relevance[0].sum(-1) + res.relevance[1].sum(-1)  # the dot product: a sum of products
    torch.testing.assert_close(split, r, rtol=1e-4, atol=1e-8)  # up to its stabiliser
