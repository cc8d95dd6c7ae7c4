"""The reference-point rule (``rules/reference.py``) against its dense float64 formula, its conservation, the mapping
of the reference through the ops before the layer, and the pad-fill handling of the input-modifying rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import lrp_fx
from lrp_fx.rules import Epsilon, Flat, Reference, WSquare, ZBox

from ._reference import Fn, dense, stab


def reference_formula(x, x_ref, M, R, eps=1e-6):
    """``R_i = sum_j M_ji (x_i - x~_i) R_j / stab(sum_i M_ji (x_i - x~_i))`` for ``x`` [B, in], ``R`` [B, out]."""
    c = (x - x_ref)[:, None, :] * M  # [B, out, in]
    return (c * (R / stab(c.sum(-1), eps))[..., None]).sum(1)


def _layers():
    lin = nn.Linear(7, 5).double()
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    return {"linear": (lin, (4, 7)), "conv": (conv, (2, 2, 7, 6))}


@pytest.mark.parametrize("layer", ["linear", "conv"])
@pytest.mark.parametrize("kind", ["float", "tensor", "callable"])
def test_reference_rule_matches_dense_formula(layer, kind):
    torch.manual_seed(0)
    module, shape = _layers()[layer]
    with torch.no_grad():
        module.bias.normal_()
    x = torch.randn(shape, dtype=torch.float64)
    ref_tensor = torch.randn(shape[1:], dtype=torch.float64)
    ref = {"float": 0.3, "tensor": ref_tensor, "callable": lambda t: 0.5 * t + 0.1}[kind]
    x_ref = {"float": torch.full_like(x, 0.3), "tensor": ref_tensor.expand_as(x), "callable": 0.5 * x + 0.1}[kind]
    R = torch.randn_like(module(x))
    res = lrp_fx.attribute(module, x, target=R, composite="epsilon", overrides={type(module): Reference(ref)})

    def f(inp, w=module.weight):
        return module._conv_forward(inp, w, None) if layer == "conv" else inp @ w.T

    M = dense(f, shape)
    flat = lambda t: t.reshape(shape[0], -1)  # noqa: E731
    expected = reference_formula(flat(x), flat(x_ref), M, flat(R))
    torch.testing.assert_close(flat(res.relevance), expected, rtol=1e-10, atol=1e-12)


def test_reference_rule_is_conservative_and_zero_at_the_reference():
    """The bias cancels: sum R_x = sum R up to the stabiliser; an input equal to its reference gets nothing."""
    torch.manual_seed(1)
    module = nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    R = torch.randn_like(module(x))
    res = lrp_fx.attribute(
        module, x, target=R, composite="epsilon", overrides={nn.Conv2d: Reference(0.25)}, track_absorbed=True
    )
    absorbed = sum(res.absorbed.values())
    torch.testing.assert_close(res.relevance.sum() + absorbed, R.sum(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.relevance.sum(), R.sum(), rtol=1e-4, atol=0)  # only the stabiliser is lost
    ref_values = torch.randn_like(x).tolist()  # a callable creates its tensors inside: traced on fake tensors
    rule = Reference(lambda t: torch.where(torch.arange(6).view(1, 1, 6, 1) < 2, t, t.new_tensor(ref_values)))
    res = lrp_fx.attribute(module, x, target=R, composite="epsilon", overrides={nn.Conv2d: rule})
    assert res.relevance[:, :, :2].abs().max() == 0  # the top two rows are at their reference
    assert res.relevance[:, :, 2:].abs().min() > 0


def test_reference_is_mapped_through_the_ops_before_the_layer():
    """``conv(pad(0.5 x))``: the reference is given for the model input ``x``; the rule sees ``pad(0.5 x~)``, and the
    padding (at its reference) gets nothing."""
    torch.manual_seed(2)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    model = Fn(lambda self, x: F.conv2d(F.pad(x * 0.5, (0, 1, 0, 1)), self.w, stride=2), w=w)
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    blur = lambda t: F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)  # noqa: E731
    R = torch.randn_like(model(x))
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon_plus", reference=blur)
    shape = (3, 2, 9, 9)
    M = dense(lambda t: F.conv2d(t, w, stride=2), shape)
    xp, xr = F.pad(x * 0.5, (0, 1, 0, 1)), F.pad(blur(x) * 0.5, (0, 1, 0, 1))
    expected = reference_formula(xp.reshape(3, -1), xr.reshape(3, -1), M, R.reshape(3, -1)).reshape(shape)
    assert expected[..., 8, :].abs().max() == 0 and expected[..., :, 8].abs().max() == 0
    torch.testing.assert_close(res.relevance, expected[..., :8, :8], rtol=1e-9, atol=1e-12)  # mul: R passes


def test_preset_reference_replaces_the_first_layer_rule():
    comp = lrp_fx.composites.preset("epsilon_gamma_box", reference=0.0)
    assert comp.first_layer == Reference(0.0)
    comp = lrp_fx.composites.preset("epsilon_plus_flat", reference=0.25, stabilizer=1e-3)
    assert comp.first_layer == Reference(0.25, 1e-3)
    with pytest.raises(TypeError, match="low=... and high="):
        lrp_fx.composites.preset("epsilon_gamma_box")


def test_reference_on_sums():
    """``y = a + c`` with ``c`` constant: ``a`` gets all of R (the constant sits at its reference); two activations
    share R by their changes from the reference."""
    torch.manual_seed(3)
    bias = torch.randn(5, dtype=torch.float64)
    model = Fn(lambda self, x: (x + self.c) * 1.0, c=bias)
    x = torch.randn(4, 5, dtype=torch.float64)
    R = torch.randn(4, 5, dtype=torch.float64)
    norm = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={Fn: Epsilon()})
    ref = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={Fn: Reference(0.0)})
    torch.testing.assert_close(ref.relevance, R)
    torch.testing.assert_close(norm.relevance, x * R / stab(x + bias))

    two = Fn(lambda self, x: x * self.c + x.flip(-1), c=bias)
    x_ref = torch.randn(5, dtype=torch.float64)
    res = lrp_fx.attribute(two, x, target=R, composite="epsilon", overrides={Fn: Reference(x_ref)})
    da, db = (x - x_ref) * bias, (x - x_ref).flip(-1)
    s = R / stab(da + db)
    # a = x * c gets (a - a~) s and passes it to x (a product with a constant); b = flip(x) gets (b - b~) s
    torch.testing.assert_close(res.relevance, da * s + (db * s).flip(-1))


@pytest.mark.parametrize(
    "rule", [Flat(), WSquare(), ZBox(-1.0, 2.0), ZBox(torch.tensor([-1.0, -2.0]).view(2, 1, 1), 2.0)]
)
def test_pad_fill_is_a_constant_for_input_modifying_rules(rule):
    """``conv(pad(x))`` and ``conv(x, padding=p)`` are the same function and get the same Flat, WSquare and ZBox
    relevance: the fill values are constants, as the convolution's own padding is (and as Zennit treats a padding
    module inside the convolution module)."""
    torch.manual_seed(4)
    w, b = torch.randn(3, 2, 3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    explicit = Fn(lambda self, x: F.conv2d(F.pad(x, (1, 1, 1, 1)), self.w, self.b), w=w, b=b)
    implicit = Fn(lambda self, x: F.conv2d(x, self.w, self.b, padding=1), w=w, b=b)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64)
    R = torch.randn_like(implicit(x))
    got = lrp_fx.attribute(explicit, x, target=R, composite="epsilon", overrides={Fn: rule})
    want = lrp_fx.attribute(implicit, x, target=R, composite="epsilon", overrides={Fn: rule})
    torch.testing.assert_close(got.relevance, want.relevance, rtol=1e-10, atol=1e-12)


def test_pad_fill_asymmetric_matches_the_dense_formula():
    """TF-"SAME" padding (right/bottom only) under Flat: each output's relevance spread over its receptive field's
    real pixels only (the dense matrix of the convolution over the padded input, restricted to real pixels)."""
    torch.manual_seed(5)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    model = Fn(lambda self, x: F.conv2d(F.pad(x, (0, 1, 0, 1)), self.w, stride=2), w=w)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    R = torch.randn_like(model(x))
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={Fn: Flat()})
    M = dense(lambda t: F.conv2d(F.pad(t, (0, 1, 0, 1)), w, stride=2), (2, 2, 6, 6))  # [out, real inputs]
    c = (M != 0).double()
    expected = (c[None] * (R.reshape(2, -1) / stab(c.sum(-1)))[..., None]).sum(1)
    torch.testing.assert_close(res.relevance.reshape(2, -1), expected, rtol=1e-10, atol=1e-12)
