"""``log_softmax`` (``rules/attention.py``), order statistics (``rules/misc.py``), step functions marked constant
(``prepare.py``; ``lp_pool``), ``grid_sample`` (``rules/linear.py``) and ``index_put`` overwrites
(``rules/elementwise.py``) against their formulas written out densely in float64, plus conservation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrp_fx
from lrp_fx.rules import registry
from lrp_fx.rules.attention import log_softmax

from ._reference import Fn, attribute_with, reference, relevance_total, stab

D = torch.float64
aten = torch.ops.aten
_attr, _total = attribute_with, relevance_total


# -- log_softmax ------------------------------------------------------------------------------------------------------
def log_softmax_reference(x, R, dim=-1):
    """``R_x = x * (q - s * sum q)``, ``q = R / stab(y)``: gradient times input with each output's relevance
    normalised by its value, as AttnLRP derives its softmax rule, written as ``sum_j x_i dy_j/dx_i R_j / y_j``."""
    y = torch.log_softmax(x, dim).movedim(dim, -1)
    xs, Rs = x.movedim(dim, -1), R.movedim(dim, -1)
    s = y.exp()
    jac = torch.eye(y.shape[-1], dtype=D) - s[..., None, :]  # jac[..., j, i] = dy_j / dx_i = delta_ij - s_i
    out = xs * ((Rs / stab(y))[..., :, None] * jac).sum(-2)
    return out.movedim(-1, dim)


@pytest.mark.parametrize("dim", [-1, 1])
def test_log_softmax_taylor_rule(dim):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=D)
    R = torch.randn(3, 5, 4, dtype=D)
    res = _attr(Fn(lambda m, x: F.log_softmax(x, dim)), x, R, track_absorbed=True)
    torch.testing.assert_close(res.relevance, log_softmax_reference(x, R, dim))
    torch.testing.assert_close(_total(res), R.sum())  # not conservative; the difference is recorded as absorbed
    assert registry.get_rule(aten._log_softmax.default).fn is log_softmax


@pytest.mark.parametrize("composite", ["epsilon", "attnlrp", "cplrp"])
def test_log_softmax_classifier_explains_its_class_against_the_rest(composite):
    """A classifier ending in ``log_softmax``, explaining class ``c`` (``R = onehot(c) * log p_c``): the logits get
    ``z * (onehot(c) - p)`` whatever the sign of ``log p_c``; CP-LRP's constant attention leaves it alone."""
    torch.manual_seed(1)
    lin = nn.Linear(6, 4).double()
    model = nn.Sequential(lin, nn.LogSoftmax(-1)).eval()
    x = torch.randn(3, 6, dtype=D)
    target = torch.tensor([0, 2, 3])
    res = lrp_fx.attribute(model, x, target=target, composite=composite)
    z = lin(x).detach()
    onehot = F.one_hot(target, 4).to(D)
    y = torch.log_softmax(z, -1)
    q = onehot * y / stab(y)  # onehot(c) up to the stabiliser
    r_logits = z * (q - z.softmax(-1) * q.sum(-1, keepdim=True))
    w = lin.weight.detach()
    expected = reference("epsilon", x, w, lin.bias.detach(), r_logits)
    torch.testing.assert_close(res.relevance, expected)
    assert (y.gather(1, target[:, None]) < 0).all()  # the log-probabilities explained are negative ...
    assert (r_logits.gather(1, target[:, None]).sign() == z.gather(1, target[:, None]).sign()).all()  # ... not R


def test_log_softmax_keeps_the_explained_class_whose_probability_underflows():
    """Explaining an unlikely class (log p_c = -150: exp underflows to 0 in float32) must still give its logit
    ``x_c * (1 - p_c) = x_c``; the softmax rule's zeros where ``exp(y) == 0`` dropped it. Masked (-inf) logits
    still get nothing."""
    x = torch.tensor([[-150.0, 0.0, -3.0, float("-inf")]])
    res = lrp_fx.attribute(Fn(lambda m, x: torch.log_softmax(x, -1)), x, target=0, composite="epsilon")
    assert torch.isfinite(res.seed).all()  # 0, not 0 * -inf, at the masked logit
    expected = log_softmax_reference(x[:, :3].double(), res.seed[:, :3].double())
    torch.testing.assert_close(res.relevance[:, :3].double(), expected, rtol=1e-5, atol=1e-5)
    assert res.relevance[0, 0] == -150.0 and res.relevance[0, 3] == 0


def test_log_softmax_pass_override():
    x, R = torch.randn(2, 5, dtype=D), torch.randn(2, 5, dtype=D)
    model = nn.LogSoftmax(-1)
    res = _attr(model, x, R, overrides={nn.LogSoftmax: lrp_fx.rules.Pass()})
    torch.testing.assert_close(res.relevance, R)


# -- order statistics -------------------------------------------------------------------------------------------------
ORDER_STATS = {
    "median.dim": lambda x: torch.median(x, 1, keepdim=True).values,
    "nanmedian.dim": lambda x: torch.nanmedian(x, 1).values,
    "kthvalue": lambda x: torch.kthvalue(x, 3, 1).values,
    "mode": lambda x: torch.mode(x, 1).values,
}
ORDER_INDICES = {
    "median.dim": lambda x: torch.median(x, 1).indices,
    "nanmedian.dim": lambda x: torch.nanmedian(x, 1).indices,
    "kthvalue": lambda x: torch.kthvalue(x, 3, 1).indices,
    "mode": lambda x: torch.mode(x, 1).indices,
}


@pytest.mark.parametrize("name", list(ORDER_STATS))
def test_order_statistic_routes_to_the_selected_element(name):
    torch.manual_seed(2)
    x = torch.randn(3, 7, 2, dtype=D) * 2
    if name == "nanmedian.dim":
        x[0, 1, 0] = float("nan")
    if name == "mode":  # repeated values
        x = x.round()
    fn = ORDER_STATS[name]
    R = torch.randn_like(fn(x))
    res = _attr(Fn(lambda m, x: fn(x)), x, R)
    expected = torch.zeros_like(x).scatter_(1, ORDER_INDICES[name](x)[:, None], R.reshape(3, 1, 2))
    torch.testing.assert_close(res.relevance, expected)


def test_median_over_everything_goes_to_the_median_element():
    x = torch.randn(2, 5, dtype=D)
    res = _attr(Fn(lambda m, x: x.median() * torch.ones(3, dtype=D)), x, torch.randn(3, dtype=D), track_absorbed=True)
    R = res.seed.sum()
    holds = x == x.median()
    torch.testing.assert_close(res.relevance[holds].sum(), R)
    assert (res.relevance[~holds] == 0).all()


# -- step functions: lp_pool ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_lp_pool_hands_each_window_to_its_inputs_by_their_share_of_the_power_sum(p):
    """``lp_pool2d = (sign(s) * relu(|s|) * k^2)^(1/p)``, ``s = avg_pool(x^p)``: the sign is constant (a step
    function), the power and the scaling pass relevance on, so ``R_x = x^p / sum_window(x^p) * R_window``."""
    torch.manual_seed(3)
    x = torch.rand(2, 3, 4, 6, dtype=D) + 0.1
    model = nn.LPPool2d(p, 2)
    R = torch.randn_like(model(x))
    res = _attr(model, x, R, track_absorbed=True)
    xp = x**p
    q = R / stab(F.avg_pool2d(xp, 2)) / 4  # average pooling's rule, stabiliser included
    expected = xp * F.interpolate(q, scale_factor=2, mode="nearest")
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(_total(res), R.sum())


def test_sign_is_marked_a_constant_step():
    from lrp_fx import prepare as prep
    from lrp_fx.capture import capture

    captured = capture(Fn(lambda m, x: torch.sign(x) * x.abs().sqrt()), (torch.randn(3),), {})
    prep.prepare(captured)
    signs = [n for n in captured.graph.nodes if n.target is aten.sign.default]
    assert signs and all(n.meta.get(prep.CONSTANT_KEY) == "step" for n in signs)


# -- grid_sample -----------------------------------------------------------------------------------------------------
def _jacobian(fn, x):
    """Dense ``M`` with ``fn(x)[b].flatten() = M[b] @ x[b].flatten()`` (per sample: the grid may differ per sample)."""
    J = torch.autograd.functional.jacobian(fn, x)  # [B, *out, B, *in]
    B = x.shape[0]
    J = J.reshape(B, -1, B, x[0].numel())
    return torch.stack([J[b, :, b] for b in range(B)])


GRID_MODES = {
    "bilinear-zeros": dict(mode="bilinear", padding_mode="zeros", align_corners=False),
    "nearest-border": dict(mode="nearest", padding_mode="border", align_corners=True),
    "bicubic-reflection": dict(mode="bicubic", padding_mode="reflection", align_corners=False),
}


@pytest.mark.parametrize("kw", list(GRID_MODES.values()), ids=list(GRID_MODES))
def test_grid_sample_is_the_z_rule_of_its_sampling_matrix(kw):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 5, 6, dtype=D)
    grid = torch.rand(2, 4, 7, 2, dtype=D) * 2.4 - 1.2  # some points outside the image

    def sample(t):
        return F.grid_sample(t, grid, **kw)

    z = sample(x)
    R = torch.randn_like(z)
    res = _attr(Fn(lambda m, x: sample(x)), x, R, track_absorbed=True)
    M = _jacobian(sample, x)  # [B, out, in]
    q = (R / stab(z)).reshape(2, -1)
    expected = x.reshape(2, -1) * torch.einsum("bo,boi->bi", q, M)
    torch.testing.assert_close(res.relevance, expected.reshape(x.shape))
    torch.testing.assert_close(_total(res), R.sum())


def test_grid_sample_3d_and_a_grid_computed_from_the_input():
    """A spatial transformer: the grid comes from the image itself, and gets no relevance; the image gets the z-rule
    of the sampling matrix at that grid, and the books close."""
    torch.manual_seed(5)

    class STN(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Linear(2, 12)

        def forward(self, x):
            theta = 0.1 * self.loc(x.mean((2, 3, 4))).view(-1, 3, 4) + torch.eye(3, 4, dtype=x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, align_corners=False)

    model = STN().double().eval()
    x = torch.randn(2, 2, 3, 4, 5, dtype=D)
    z = model(x).detach()
    R = torch.randn_like(z)
    res = _attr(model, x, R, track_absorbed=True)
    with torch.no_grad():
        theta = 0.1 * model.loc(x.mean((2, 3, 4))).view(-1, 3, 4) + torch.eye(3, 4, dtype=D)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    M = _jacobian(lambda t: F.grid_sample(t, grid, align_corners=False), x)
    expected = x.reshape(2, -1) * torch.einsum("bo,boi->bi", (R / stab(z)).reshape(2, -1), M)
    torch.testing.assert_close(res.relevance, expected.reshape(x.shape))
    torch.testing.assert_close(_total(res), R.sum())


# -- index_put overwrite ----------------------------------------------------------------------------------------------
def test_index_overwrite_routes_written_positions_to_the_values_and_splits_repeats():
    idx = torch.tensor([1, 3, 1])  # column 1 written twice: which write wins is unspecified

    def fn(m, x, v):
        y = x.clone()
        y[:, idx] = v
        return y

    torch.manual_seed(6)
    x, v = torch.randn(2, 5, dtype=D), torch.randn(2, 3, dtype=D)
    R = torch.randn(2, 5, dtype=D)
    res = _attr(Fn(fn), (x, v), R)
    r_x, r_v = res.relevance
    expected_x = R.clone()
    expected_x[:, [1, 3]] = 0
    expected_v = torch.stack([R[:, 1] / 2, R[:, 3], R[:, 1] / 2], 1)
    torch.testing.assert_close(r_x, expected_x)
    torch.testing.assert_close(r_v, expected_v)
    torch.testing.assert_close(r_x.sum() + r_v.sum(), R.sum())  # exactly conservative


def test_index_overwrite_with_a_mask_and_a_constant_value_absorbs_the_written_share():
    def fn(m, x):
        y = x * 2
        y[x > 0.5] = 0.0  # clip large values to a constant
        return y

    x = torch.randn(3, 4, dtype=D)
    R = torch.randn(3, 4, dtype=D)
    res = _attr(Fn(fn), x, R, track_absorbed=True)
    written = x > 0.5
    torch.testing.assert_close(res.relevance, torch.where(written, 0.0, R))
    assert sum(res.absorbed.values()) == pytest.approx(float(R[written].sum()))


# -- rounding ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", [torch.round, torch.floor, torch.ceil, torch.trunc])
def test_fake_quantisation_passes_relevance_through_the_rounding(rounding):
    """``round(x / s) * s`` (fake quantisation): the rounding is an activation (identity rule), the scalings pass, so
    the relevance reaches ``x`` unchanged."""
    x = torch.randn(2, 6, dtype=D)
    R = torch.randn(2, 6, dtype=D)
    res = _attr(Fn(lambda m, x: rounding(x / 0.25) * 0.25), x, R)
    torch.testing.assert_close(res.relevance, R)


# -- logsumexp --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dims", "keepdim"), [((-1,), False), ((1, 2), True)])
def test_logsumexp_hands_each_element_its_softmax_weight(dims, keepdim):
    """``R_x = softmax_dims(x) * R``: conservative exactly; one dominant element takes (nearly) all."""
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, dtype=D)
    x[0, 0, 0] = -float("inf")  # a masked entry gets nothing
    fn = Fn(lambda m, x: torch.logsumexp(x, dims, keepdim=keepdim))
    R = torch.randn_like(fn(x))
    res = _attr(fn, x, R, track_absorbed=True)
    weights = torch.exp(x - torch.logsumexp(x, dims, keepdim=True))
    expected = weights * (R if keepdim else R.reshape(torch.logsumexp(x, dims, keepdim=True).shape))
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum(), R.sum())
    assert not res.absorbed or abs(sum(res.absorbed.values())) < 1e-12
    big = torch.tensor([[0.0, 30.0, 1.0]], dtype=D)  # a dominant element: amax's winner takes all in the limit
    r = _attr(Fn(lambda m, x: torch.logsumexp(x, -1)), big, torch.ones(1, dtype=D)).relevance
    assert r[0, 1] > 1 - 1e-12
