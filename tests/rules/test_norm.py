"""Normalisers (``lrp_fx/rules/norm.py``, marked constant by ``lrp_fx.prepare``) against their formulas in float64."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import lrp_fx

from ._reference import Fn, stab

D = torch.float64


def _attr(model, x, R, **kw):
    return lrp_fx.attribute(model, x, target=R, composite="attnlrp", **kw)


def _ops(res):
    return {a.op for a in res.program.assignments}


def test_rms_norm_module_is_the_identity():
    """``x * rsqrt(mean(x^2) + eps) * w``: normaliser constant, weight a constant factor: ``R_x = R``."""
    norm = nn.RMSNorm(8, dtype=D)
    with torch.no_grad():
        norm.weight.normal_()
    x, R = torch.randn(3, 4, 8, dtype=D), torch.randn(3, 4, 8, dtype=D)
    res = _attr(norm, x, R)
    torch.testing.assert_close(res.relevance, R)
    assert not any(op.startswith(("aten.rsqrt", "aten.pow", "aten.mean")) for op in _ops(res))


def test_hand_written_rms_norm_is_the_identity():
    def fn(m, x):  # Llama's LlamaRMSNorm
        variance = x.pow(2).mean(-1, keepdim=True)
        return m.w * (x * torch.rsqrt(variance + 1e-6))

    x, R = torch.randn(2, 5, 8, dtype=D), torch.randn(2, 5, 8, dtype=D)
    torch.testing.assert_close(_attr(Fn(fn, w=torch.randn(8, dtype=D)), x, R).relevance, R)


def test_l2_normalisation_hands_everything_to_the_numerator():
    x, R = torch.randn(3, 6, dtype=D), torch.randn(3, 6, dtype=D)
    torch.testing.assert_close(_attr(Fn(lambda m, x: F.normalize(x, dim=-1)), x, R).relevance, R)


def test_a_norm_that_is_the_output_keeps_its_relevance():
    """``sqrt(sum(x^2))`` as the explained output is a feature, not a normaliser: identity through sqrt and pow,
    proportional through the sum."""
    x = torch.randn(3, 6, dtype=D)
    R = torch.randn(3, dtype=D)
    res = _attr(Fn(lambda m, x: x.pow(2).sum(-1).sqrt()), x, R)
    z = (x * x).sum(-1)
    torch.testing.assert_close(res.relevance, x * x * (R / stab(z))[:, None])


def test_hand_written_layer_norm_conserves():
    """``(x - mean) / sqrt(var + eps)``: the root of the variance is constant; the centring is linear and its share
    returns to ``x`` through the ``sub`` and ``mean`` rules."""

    def fn(m, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return (x - u) / torch.sqrt(s + 1e-5)

    x, R = torch.randn(4, 8, dtype=D), torch.randn(4, 8, dtype=D)
    res = _attr(Fn(fn), x, R, track_absorbed=True)
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())  # only stabilisers absorb
    torch.testing.assert_close(res.relevance.sum(), R.sum(), rtol=1e-2, atol=0)
    assert "aten.sqrt.default" not in _ops(res)


def test_layer_norm_module_is_the_epsilon_rule_with_constant_normaliser():
    """``nn.LayerNorm`` (``native_layer_norm``) under the transformer presets: the epsilon rule on the map made linear
    by a constant normaliser, centring included (``R_x = x * (v - mean(v))``, ``v = gamma * rstd * R / stab(y)``),
    which is what the hand-written layer norm gets from the ``sub`` and ``mean`` rules. ``Pass`` keeps the element-wise
    variant ``R_x = (y - beta) * R / stab(y)``."""
    ln = nn.LayerNorm(8, dtype=D)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x, R = torch.randn(3, 4, 8, dtype=D) + 0.5, torch.randn(3, 4, 8, dtype=D)
    y = ln(x).detach()
    rstd = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    v = ln.weight.detach() * rstd * R / stab(y)
    expected = x * (v - v.mean(-1, keepdim=True))
    for composite in ("attnlrp", "cplrp"):
        res = lrp_fx.attribute(ln, x, target=R, composite=composite)
        torch.testing.assert_close(res.relevance, expected)

    def fn(m, x):
        u = x.mean(-1, keepdim=True)
        return (x - u) * torch.rsqrt((x - u).pow(2).mean(-1, keepdim=True) + 1e-5) * m.w + m.b

    hand = Fn(fn, w=ln.weight.detach().clone(), b=ln.bias.detach().clone())
    tiny = dict(epsilon=1e-12, stabilizer=1e-12)  # the stabilisers sit in different places
    torch.testing.assert_close(_attr(hand, x, R, **tiny).relevance, _attr(ln, x, R, **tiny).relevance)
    passed = lrp_fx.attribute(ln, x, target=R, composite="attnlrp", overrides={nn.LayerNorm: lrp_fx.rules.Pass()})
    torch.testing.assert_close(passed.relevance, (y - ln.bias.detach()) * R / stab(y))
