"""Instance norm (``_native_batch_norm_legit.no_stats``, ``rules/norm.py``) and in-place slice assignment
(``copy``, ``slice_scatter``, ``select_scatter``, ``rules/routing.py``; circular padding) against their formulas
written out densely in float64, plus conservation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrp_fx
from lrp_fx.rules import registry
from lrp_fx.rules.norm import instance_norm
from lrp_fx.rules.routing import copy_into, route

from ._reference import Fn, attribute_with, dense, reference, relevance_total, stab

D = torch.float64
aten = torch.ops.aten


_attr, _total = attribute_with, relevance_total


def _ops(res):
    return {a.op for a in res.program.assignments}


# -- instance norm --------------------------------------------------------------------------------------------------


def _instance_norm(affine, dims=(2, 3)):
    norm = nn.InstanceNorm2d(3, affine=affine).double()
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    return norm


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
def test_instance_norm_rules_against_their_formulas(affine):
    """``Pass`` (an override): ``R_x = (y - beta) * R / stab(y)``; ``Epsilon`` (the default, every preset; as for
    layer norm): ``v = gamma * rstd * R / stab(y)``, ``R_x = x * (v - mean_hw(v))``, the statistics per sample and
    channel."""
    assert registry.get_rule(aten._native_batch_norm_legit.no_stats).fn is instance_norm
    torch.manual_seed(0)
    norm = _instance_norm(affine)
    x = torch.randn(2, 3, 4, 5, dtype=D) + 0.5
    y = norm(x).detach()
    R = torch.randn_like(y)
    gamma = norm.weight.detach().view(1, 3, 1, 1) if affine else 1.0
    beta = norm.bias.detach().view(1, 3, 1, 1) if affine else 0.0
    rstd = torch.rsqrt(x.var((2, 3), unbiased=False, keepdim=True) + norm.eps)

    passed = _attr(norm, x, R, track_absorbed=True, overrides={nn.InstanceNorm2d: lrp_fx.rules.Pass()})
    assert "aten._native_batch_norm_legit.no_stats" in _ops(passed)
    torch.testing.assert_close(passed.relevance, (y - beta) * R / stab(y))
    torch.testing.assert_close(_total(passed), R.sum())

    v = gamma * rstd * R / stab(y)
    expected = x * (v - v.mean((2, 3), keepdim=True))
    for composite in ("epsilon", "epsilon_plus_flat", "attnlrp", "cplrp"):
        res = _attr(norm, x, R, composite=composite, track_absorbed=True)
        torch.testing.assert_close(res.relevance, expected)
        torch.testing.assert_close(_total(res), R.sum())
    # conservative up to beta and the stabiliser, for both rules
    torch.testing.assert_close(expected.sum(), ((y - beta) * R / stab(y)).sum())


@pytest.mark.parametrize("composite", ["epsilon", "attnlrp"])
def test_instance_norm_matches_group_norm_with_one_channel_per_group(composite):
    """Instance norm is group norm with ``C`` groups: both get the same relevance (the layer-norm treatment)."""
    torch.manual_seed(0)
    inorm = _instance_norm(True)
    gnorm = nn.GroupNorm(3, 3, eps=inorm.eps).double()
    gnorm.load_state_dict(inorm.state_dict())
    x = torch.randn(2, 3, 4, 5, dtype=D)
    R = torch.randn(2, 3, 4, 5, dtype=D)
    torch.testing.assert_close(_attr(inorm, x, R, composite).relevance, _attr(gnorm, x, R, composite).relevance)


def test_batch_norm_without_running_statistics_uses_batch_statistics():
    """``BatchNorm2d(track_running_stats=False)`` captures as the same op with statistics over batch and space."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, track_running_stats=False).double()
    with torch.no_grad():
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(4, 3, 2, 3, dtype=D)
    y = bn.eval()(x).detach()
    R = torch.randn_like(y)
    rstd = torch.rsqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + bn.eps)
    v = bn.weight.detach().view(1, 3, 1, 1) * rstd * R / stab(y)
    res = _attr(bn, x, R, composite="attnlrp", track_absorbed=True)
    torch.testing.assert_close(res.relevance, x * (v - v.mean((0, 2, 3), keepdim=True)))
    torch.testing.assert_close(_total(res), R.sum())


def test_instance_norm_with_running_statistics_is_the_batch_norm_rule():
    """With ``track_running_stats=True`` eval mode normalises with the running statistics, a per-channel affine map
    (``_native_batch_norm_legit_no_training``): the batch-norm rule, ``Pass`` by default."""
    norm = nn.InstanceNorm2d(3, affine=True, track_running_stats=True).double().eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 4, 4, dtype=D)
    R = torch.randn(2, 3, 4, 4, dtype=D)
    res = _attr(norm, x, R, track_absorbed=True)
    assert "aten._native_batch_norm_legit_no_training.default" in _ops(res)
    torch.testing.assert_close(res.relevance, R)


def test_style_network_with_instance_norm_end_to_end_conserves():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.InstanceNorm2d(4, affine=True),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    model = model.double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=D)
    for composite in ("epsilon_plus", "attnlrp"):
        res = lrp_fx.attribute(model, x, target=0, composite=composite, track_absorbed=True)
        torch.testing.assert_close(_total(res), model(x)[:, 0].sum())


# -- in-place slice assignment, scatters, circular padding ----------------------------------------------------------


def _assign_slice(m, x, y):
    x = x.clone()
    x[:, :, 1:3] = y
    return x


def _assign_select(m, x, y):
    x = x.clone()
    x[:, 1] = y
    return x


def _assign_broadcast(m, x, y):
    x = x.clone()
    x[:, 1:3] = y  # y: [1, 5], broadcast over two rows and the batch
    return x


CASES = {
    "slice": (_assign_slice, (2, 3, 5), (2, 3, 2), lambda R: (R[:, :, 1:3], (slice(None), slice(None), slice(1, 3)))),
    "select": (_assign_select, (2, 3, 5), (2, 5), lambda R: (R[:, 1], (slice(None), 1))),
    "broadcast": (
        _assign_broadcast,
        (2, 3, 5),
        (1, 5),
        lambda R: (R[:, 1:3].sum((0, 1))[None], (slice(None), slice(1, 3))),
    ),
    "slice_scatter": (
        lambda m, x, y: torch.slice_scatter(x, y, dim=2, start=0, end=4, step=2),
        (2, 3, 5),
        (2, 3, 2),
        lambda R: (R[:, :, 0:4:2], (slice(None), slice(None), slice(0, 4, 2))),
    ),
    "select_scatter": (
        lambda m, x, y: torch.select_scatter(x, y, dim=2, index=-1),
        (2, 3, 5),
        (2, 3),
        lambda R: (R[:, :, -1], (slice(None), slice(None), -1)),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_assignment_routes_scattered_positions_to_the_source(case):
    """``x[idx] = y``: ``R_y = R[idx]`` (summed over broadcast copies), ``R_x = R`` with ``idx`` zeroed."""
    fn, xs, ys, pick = CASES[case]
    x, y = torch.randn(*xs, dtype=D), torch.randn(*ys, dtype=D)
    R = torch.randn_like(fn(None, x, y))
    res = _attr(Fn(fn), (x, y), R, track_absorbed=True)
    r_y, idx = pick(R)
    r_x = R.clone()
    r_x[idx] = 0.0
    torch.testing.assert_close(res.relevance[0], r_x)
    torch.testing.assert_close(res.relevance[1], r_y)
    torch.testing.assert_close(res.relevance[0].sum() + res.relevance[1].sum(), R.sum())  # exact
    torch.testing.assert_close(_total(res), R.sum())


@pytest.mark.parametrize(
    "fn, ys, pick",
    [
        (lambda m, x, y: torch.select_scatter(x, y, 1, 2), (2, 4), lambda R: (R[:, 2], (slice(None), 2))),
        (lambda m, x, y: torch.diagonal_scatter(x, y, 0, 1, 2), (2, 3), lambda R: (R.diagonal(0, 1, 2), None)),
    ],
    ids=["select_scatter", "diagonal_scatter"],
)
def test_scatters_kept_whole_route_exactly(monkeypatch, fn, ys, pick):
    """``select_scatter`` and ``diagonal_scatter`` decompose into ``where`` during capture with torch 2.14; kept
    whole (other versions, other decomposition tables) their routing rule gives the same relevance."""
    import lrp_fx.capture

    ops = [aten.select_scatter.default, aten.diagonal_scatter.default]
    monkeypatch.setattr(lrp_fx.capture, "KEEP_WHOLE", [*lrp_fx.capture.KEEP_WHOLE, *ops])
    x, y = torch.randn(2, 3, 4, dtype=D), torch.randn(*ys, dtype=D)
    R = torch.randn(2, 3, 4, dtype=D)
    res = _attr(Fn(fn), (x, y), R, track_absorbed=True)
    assert _ops(res) & {str(op) for op in ops}
    r_y, idx = pick(R)
    r_x = R.clone()
    if idx is None:
        r_x.diagonal(0, 1, 2).zero_()
    else:
        r_x[idx] = 0.0
    torch.testing.assert_close(res.relevance[0], r_x)
    torch.testing.assert_close(res.relevance[1], r_y)
    torch.testing.assert_close(_total(res), R.sum())


def test_scatter_registrations():
    for op in (aten.slice_scatter.default, aten.select_scatter.default, aten.diagonal_scatter.default):
        assert registry.get_rule(op).fn is route
    assert registry.get_rule(aten.copy.default).fn is copy_into


def test_assigning_a_constant_keeps_its_relevance_as_absorbed():
    def fn(m, x):
        x = x.clone()
        x[:, 1:3] = m.fill
        return x

    x = torch.randn(2, 4, dtype=D)
    R = torch.randn(2, 4, dtype=D)
    res = _attr(Fn(fn, fill=torch.randn(2, dtype=D)), x, R, track_absorbed=True)
    r_x = R.clone()
    r_x[:, 1:3] = 0.0
    torch.testing.assert_close(res.relevance, r_x)
    torch.testing.assert_close(_total(res), R.sum())


def test_circular_padding_conv_is_the_conv_rule_on_the_padded_input():
    """``Conv2d(padding_mode="circular")`` captures as ``empty`` filled by slice copies and scatters, then a
    convolution without padding. Reference: the epsilon rule on the padded input, routed back through the padding
    matrix ``P`` (each input position collects the relevance of all its copies)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    x = torch.randn(2, 2, 4, 5, dtype=D)
    R = torch.randn(2, 3, 4, 5, dtype=D)
    res = _attr(conv, x, R, track_absorbed=True)
    assert {"aten.copy.default", "aten.slice_scatter.default"} <= _ops(res)

    def pad(t):
        return F.pad(t, (1, 1, 1, 1), mode="circular")

    P = dense(pad, x.shape)  # [padded, in], 0/1
    xp = pad(x)
    M = dense(lambda t: F.conv2d(t, conv.weight.detach()), xp.shape)
    r_pad = reference("epsilon", xp.reshape(2, -1), M, conv.bias.detach().repeat_interleave(20), R.reshape(2, -1))
    torch.testing.assert_close(res.relevance, (r_pad @ P).reshape(x.shape))
    torch.testing.assert_close(_total(res), R.sum())


def test_circular_padding_cnn_end_to_end_conserves():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, padding_mode="circular"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, 3),
    )
    model = model.double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=D)
    for composite in ("epsilon", "epsilon_plus_flat"):
        res = lrp_fx.attribute(model, x, target=1, composite=composite, track_absorbed=True)
        torch.testing.assert_close(_total(res), model(x)[:, 1].sum())


def test_a_stack_of_instance_normed_convolutions_conserves_under_cnn_presets():
    """Four conv + instance norm + ReLU blocks (RAFT's encoders): with the norm's epsilon rule (proportional to its
    input, the CNN presets' default now) the relevance stays on the scale of the explained logit and conserves; the
    element-wise ``Pass`` rule is not proportional to the input, which the convolution before divides by, and
    there the relevance grew to 1e4 times the logit."""
    torch.manual_seed(0)
    layers = []
    for i in range(4):
        layers += [nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1, bias=False), nn.InstanceNorm2d(16), nn.ReLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4, bias=False))
    model = model.eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=D)
    for composite in ("epsilon", "epsilon_plus", "cplrp"):
        res = lrp_fx.attribute(model, x, composite=composite, track_absorbed=True)
        explained = float(res.seed.sum())
        assert res.relevance.abs().max() < abs(explained)
        assert abs(float(res.relevance.sum()) - explained) < 1e-3 * abs(explained)
    passed = lrp_fx.attribute(model, x, composite="epsilon", overrides={nn.InstanceNorm2d: lrp_fx.rules.Pass()})
    assert passed.relevance.abs().max() > 100 * abs(float(passed.seed.sum()))  # what the default avoids
