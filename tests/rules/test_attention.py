"""Attention rules (``lrp_fx/rules/attention.py``) against their formulas, written densely in float64.

The references spell out every contribution (``c[i, k, j] = A[i, k] * B[k, j]`` for a product) instead of reusing
the rules' matrix forms, so they check the maths and the wiring (reshapes, transposes, heads, masks) at once.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lrp_fx
from lrp_fx.rules.attention import ConstantAttention, Stop, Taylor

from ._reference import Fn, stab

D = torch.float64


def _attr(model, inputs, R, composite="attnlrp", **kw):
    return lrp_fx.attribute(model, inputs, target=R, composite=composite, **kw)


# -- softmax -----------------------------------------------------------------------------------------------------------
def softmax_reference(x, R):
    s = torch.softmax(x, -1)
    out = x * (R - s * R.sum(-1, keepdim=True))
    return torch.where(s == 0, torch.zeros((), dtype=D), out)


def test_softmax_taylor_rule():
    x = torch.randn(3, 4, 6, dtype=D)
    R = torch.randn(3, 4, 6, dtype=D)
    res = _attr(Fn(lambda m, x: torch.softmax(x, -1)), x, R, track_absorbed=True)
    torch.testing.assert_close(res.relevance, softmax_reference(x, R))
    # not conservative: the Taylor bias is recorded as absorbed, and the bookkeeping closes
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())


@pytest.mark.parametrize("fill", [float("-inf"), torch.finfo(D).min])
def test_softmax_masked_logits_give_zero_not_nan(fill):
    x = torch.randn(2, 5, dtype=D)
    mask = torch.tensor([[False, False, True, False, True], [True, False, False, False, False]])
    R = torch.randn(2, 5, dtype=D)

    def fn(m, x):
        return torch.softmax(x + torch.zeros(5, dtype=D).masked_fill(mask[0] | mask[1], fill), -1)

    res = _attr(Fn(fn), x, R)
    assert torch.isfinite(res.relevance).all()
    masked = mask[0] | mask[1]
    assert (res.relevance[:, masked] == 0).all()
    logits = x + torch.zeros(5, dtype=D).masked_fill(masked, fill)
    s = torch.softmax(logits, -1)
    expected = torch.where(masked, 0.0, x * (R - s * R.sum(-1, keepdim=True)) / stab(logits) * logits)
    torch.testing.assert_close(res.relevance, expected)


def test_softmax_pass_and_stop():
    x, R = torch.randn(2, 5, dtype=D), torch.randn(2, 5, dtype=D)
    model = Fn(lambda m, x: torch.softmax(x, -1))
    comp = lrp_fx.composites.preset("attnlrp")
    for rule, expected in ((lrp_fx.rules.Pass(), R), (Stop(), torch.zeros_like(R))):
        res = lrp_fx.attribute(model, x, target=R, composite=comp, overrides={Fn: rule})
        torch.testing.assert_close(res.relevance, expected)


# -- products of two activations ---------------------------------------------------------------------------------------
def product_reference(A, B, R, wa=0.5, wb=0.5):
    """``Y = A @ B`` (batched): ``c[..., i, k, j] = A[..., i, k] B[..., k, j]``, shares ``w * sum c R / stab(Y)``."""
    c = A[..., :, :, None] * B[..., None, :, :]
    s = R / stab(c.sum(-2))
    return wa * (c * s[..., :, None, :]).sum(-1), wb * (c * s[..., :, None, :]).sum(-3)


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, a, b: torch.bmm(a, b),
        lambda m, a, b: a @ b,
        lambda m, a, b: torch.einsum("bik,bkj->bij", a, b),
    ],
)
def test_product_of_two_activations_uniform_epsilon(fn):
    A, B = torch.randn(2, 4, 3, dtype=D), torch.randn(2, 3, 5, dtype=D)
    R = torch.randn(2, 4, 5, dtype=D)
    res = _attr(Fn(fn), (A, B), R)
    ra, rb = product_reference(A, B, R)
    torch.testing.assert_close(res.relevance[0], ra)
    torch.testing.assert_close(res.relevance[1], rb)
    Y = A @ B
    torch.testing.assert_close(res.relevance[0].sum() + res.relevance[1].sum(), (R * Y / stab(Y)).sum())


def test_attention_scores_q_kT_four_dims():
    """``q @ k.transpose(-1, -2)`` over batch and heads (decomposes to expand, view and bmm)."""
    q, k = torch.randn(2, 3, 4, 8, dtype=D), torch.randn(2, 3, 6, 8, dtype=D)
    R = torch.randn(2, 3, 4, 6, dtype=D)
    res = _attr(Fn(lambda m, q, k: q @ k.transpose(-1, -2)), (q, k), R)
    rq, rkT = product_reference(q, k.transpose(-1, -2), R)
    torch.testing.assert_close(res.relevance[0], rq)
    torch.testing.assert_close(res.relevance[1], rkT.transpose(-1, -2))


def test_product_with_a_parameter_is_epsilon_on_the_activation():
    """``x @ W``: ``mm`` with a constant operand becomes ``linear`` (epsilon, the dense-layer rule)."""
    W = torch.randn(6, 4, dtype=D)
    x = torch.randn(2, 3, 6, dtype=D)
    R = torch.randn(2, 3, 4, dtype=D)
    res = _attr(Fn(lambda m, x: x @ m.W, W=W), x, R)
    ra, _ = product_reference(x, W.expand(2, 6, 4), R, wa=1.0, wb=0.0)
    torch.testing.assert_close(res.relevance, ra)
    assert any("linear" in a.op for a in res.program.assignments)


def test_addmm_with_activation_bias():
    C, A, B = torch.randn(4, 5, dtype=D), torch.randn(4, 3, dtype=D), torch.randn(3, 5, dtype=D)
    R = torch.randn(4, 5, dtype=D)
    res = _attr(Fn(lambda m, c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0)), (C, A, B), R, track_absorbed=True)
    Y = 0.5 * C + 2.0 * A @ B
    c = 2.0 * A[:, :, None] * B[None]
    s = R / stab(Y)
    torch.testing.assert_close(res.relevance[0], 0.5 * C * s)
    torch.testing.assert_close(res.relevance[1], 0.5 * (c * s[:, None, :]).sum(-1))
    torch.testing.assert_close(res.relevance[2], 0.5 * (c * s[:, None, :]).sum(0))
    total = sum(r.sum() for r in res.relevance) + sum(res.absorbed.values())
    torch.testing.assert_close(total, R.sum())


def test_cplrp_attention_weights_are_constant_in_products():
    """CP-LRP: in ``softmax(q k^T) @ v`` only ``v`` receives relevance, by the epsilon rule with P constant."""
    q, k, v = (torch.randn(2, 4, 8, dtype=D) for _ in range(3))
    R = torch.randn(2, 4, 8, dtype=D)
    model = Fn(lambda m, q, k, v: torch.softmax(q @ k.transpose(-1, -2), -1) @ v)
    res = _attr(model, (q, k, v), R, composite="cplrp")
    P = torch.softmax(q @ k.transpose(-1, -2), -1)
    _, rv = product_reference(P, v, R, wa=0.0, wb=1.0)
    torch.testing.assert_close(res.relevance[2], rv)
    assert (res.relevance[0] == 0).all() and (res.relevance[1] == 0).all()
    torch.testing.assert_close(rv.sum(), (R * (P @ v) / stab(P @ v)).sum())


# -- scaled dot-product attention --------------------------------------------------------------------------------------
def attention_reference(q, k, v, R, mask=None, causal=False, scale=None, constant_p=False):
    """Dense AttnLRP / CP-LRP for ``softmax(scale q k^T + M) v`` from explicit contributions."""
    groups = q.shape[-3] // k.shape[-3]
    kr, vr = k.repeat_interleave(groups, -3), v.repeat_interleave(groups, -3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    S = scale * (q[..., :, None, :] * kr[..., None, :, :]).sum(-1)
    L = S.clone()
    if causal:
        L = L.masked_fill(~torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        L = L.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else L + mask
    P = torch.softmax(L, -1)
    rp, rv = product_reference(P, vr, R, *((0.0, 1.0) if constant_p else (0.5, 0.5)))
    rv = rv.unflatten(-3, (k.shape[-3], groups)).sum(-3)
    if constant_p:
        return None, None, rv
    # softmax (Taylor): R_L = L * g; the additive mask keeps its share, R_S = S * g; epsilon on S = scale q k^T
    # divides by S again, in the eps -> 0 limit: t = R_S / S = g (0 where P = 0)
    g = rp - P * rp.sum(-1, keepdim=True)
    cq = scale * q[..., :, None, :] * kr[..., None, :, :]  # [.., i, j, d], sum_d cq = S
    t = g
    rq = 0.5 * (cq * t[..., None]).sum(-2)
    rk = 0.5 * (cq * t[..., None]).sum(-3)
    return rq, rk.unflatten(-3, (k.shape[-3], groups)).sum(-3), rv


SDPA_CASES = {
    "plain": {},
    "float_mask": {"mask": "float"},
    "bool_mask": {"mask": "bool"},
    "causal": {"causal": True},
    "scale": {"scale": 0.3},
    "gqa": {"gqa": True},
}


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_scaled_dot_product_attention(case, composite):
    opts = SDPA_CASES[case]
    hk = 1 if opts.get("gqa") else 2
    q = torch.randn(2, 2, 4, 8, dtype=D)
    k, v = torch.randn(2, hk, 5 if not opts.get("causal") else 4, 8, dtype=D), None
    v = torch.randn(2, hk, k.shape[-2], 8, dtype=D)
    mask = None
    if opts.get("mask") == "float":
        mask = torch.zeros(4, k.shape[-2], dtype=D)
        mask[:, -1] = float("-inf")
        mask[0, 1] = torch.finfo(D).min
        mask[1, 0] = -0.7  # a genuine additive bias (ALiBi-like)
    elif opts.get("mask") == "bool":
        mask = torch.ones(4, k.shape[-2], dtype=torch.bool)
        mask[:, 0] = False
    kw = dict(is_causal=opts.get("causal", False), scale=opts.get("scale"), enable_gqa=opts.get("gqa", False))

    def fn(m, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kw)

    R = torch.randn(2, 2, 4, 8, dtype=D)
    res = _attr(Fn(fn), (q, k, v), R, composite=composite, track_absorbed=True)
    assert any("scaled_dot_product_attention" in a.op for a in res.program.assignments)
    rq, rk, rv = attention_reference(q, k, v, R, mask, kw["is_causal"], kw["scale"], constant_p=composite == "cplrp")
    torch.testing.assert_close(res.relevance[2], rv)
    if rq is None:
        assert (res.relevance[0] == 0).all() and (res.relevance[1] == 0).all()
    else:
        torch.testing.assert_close(res.relevance[0], rq)
        torch.testing.assert_close(res.relevance[1], rk)
    total = sum(r.sum() for r in res.relevance) + sum(res.absorbed.values())
    torch.testing.assert_close(total, R.sum())
    assert all(torch.isfinite(r).all() for r in res.relevance)


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
@pytest.mark.parametrize("broadcast", ["heads", "batch"])
def test_attention_with_broadcast_keys_and_values(broadcast, composite):
    """K and V broadcast over the heads (multi-query attention without ``enable_gqa``: Falcon) or the samples (a
    shared memory): the relevance is that of the same keys repeated, summed back, as ``gqa`` does."""
    q = torch.randn(2, 3, 4, 8, dtype=D)
    k, v = (torch.randn((2, 1, 5, 8) if broadcast == "heads" else (1, 3, 5, 8), dtype=D) for _ in range(2))
    R = torch.randn(2, 3, 4, 8, dtype=D)
    res = _attr(Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v)), (q, k, v), R, composite=composite)
    full = _attr(
        Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k.expand(2, 3, 5, 8), v.expand(2, 3, 5, 8))),
        (q, k, v),
        R,
        composite=composite,
    )
    for x, y in zip(res.relevance, full.relevance):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
def test_an_input_dependent_additive_mask_takes_its_share(composite):
    """A learned, input-dependent bias added to the scores (``attn_mask=bias(x)``) gets the share the add rule gives
    it in ``softmax(S + M)``, as in the same block written out; a constant mask keeps it (absorbed)."""
    q, k, v = (torch.randn(2, 2, 4, 8, dtype=D) for _ in range(3))
    bias = torch.randn(2, 1, 1, 4, dtype=D)
    R = torch.randn(2, 2, 4, 8, dtype=D)
    whole = Fn(lambda m, q, k, v, b: F.scaled_dot_product_attention(q, k, v, b))
    pieces = Fn(lambda m, q, k, v, b: torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + b, -1) @ v)
    kw = dict(composite=composite, epsilon=1e-12, stabilizer=1e-12, track_absorbed=True)
    a, b = _attr(whole, (q, k, v, bias), R, **kw), _attr(pieces, (q, k, v, bias), R, **kw)
    for x, y in zip(a.relevance, b.relevance):  # up to where the stabilisers sit
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)
    if composite == "attnlrp":
        assert a.relevance[3].abs().sum() > 0
    total = sum(r.sum() for r in a.relevance) + sum(a.absorbed.values())
    torch.testing.assert_close(total, R.sum())


def test_attention_kept_whole_equals_its_decomposition():
    """The SDPA rule and the rules of its pieces (scale, bmm, add mask, softmax, bmm) agree."""
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=D) for _ in range(3))
    mask = torch.zeros(5, 5, dtype=D)
    mask[:, 3] = torch.finfo(D).min
    R = torch.randn(2, 3, 5, 4, dtype=D)

    def whole(m, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def pieces(m, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) / 2.0 + mask, -1) @ v

    for comp in ("attnlrp", "cplrp"):
        a = _attr(Fn(whole), (q, k, v), R, composite=comp).relevance
        b = _attr(Fn(pieces), (q, k, v), R, composite=comp).relevance
        for x, y in zip(a, b):  # up to where the stabiliser sits: stab(q k^T) / 2 vs stab(q k^T / 2)
            torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)


def test_rule_objects_are_exported():
    assert isinstance(lrp_fx.composites.preset("attnlrp").groups["softmax"], Taylor)
    assert isinstance(lrp_fx.composites.preset("cplrp").groups["matmul"], ConstantAttention)
    assert {"attnlrp", "cplrp"} <= set(lrp_fx.composites.PRESETS)


def test_cplrp_softmax_is_a_constant_in_elementwise_products_too():
    """``a(x) * softmax(g(x))`` (a softmax-weighted mask, RAFT's convex upsampling): under ``cplrp`` the stopped
    softmax is a constant, so ``a`` receives all of the product's relevance and the books close; before, the uniform
    split handed half to the softmax, where ``Stop`` dropped it unrecorded."""
    torch.manual_seed(0)
    a, g, h = (torch.nn.Linear(8, n, bias=False).double() for n in (8, 8, 3))
    model = Fn(lambda m, x: m.h(m.a(x) * torch.softmax(m.g(x), -1)))
    model.a, model.g, model.h = a, g, h
    x = torch.randn(2, 8, dtype=D)
    res = lrp_fx.attribute(model, x, target=1, composite="cplrp", track_absorbed=True)
    explained = res.seed.sum()
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), explained)
    torch.testing.assert_close(res.relevance.sum(), explained, rtol=1e-4, atol=0)  # only stabilisers absorb
    # the rest of the product rule is unchanged: attnlrp keeps the uniform split (half to the softmax's Taylor rule)
    uniform = lrp_fx.attribute(model, x, target=1, composite="attnlrp", track_absorbed=True)
    torch.testing.assert_close(uniform.relevance.sum() + sum(uniform.absorbed.values()), explained)


def test_stop_records_what_it_drops():
    x, R = torch.randn(2, 5, dtype=D), torch.randn(2, 5, dtype=D)
    model = torch.nn.Sequential(torch.nn.Softmax(-1))  # an override keeps Stop even where no product is weighted
    res = lrp_fx.attribute(
        model, x, target=R, composite="cplrp", overrides={torch.nn.Softmax: Stop()}, track_absorbed=True
    )
    assert (res.relevance == 0).all()
    assert sum(res.absorbed.values()) == pytest.approx(float(R.sum()))


# -- dense layers written as products of matrices ----------------------------------------------------------------------
class _DenseAs(torch.nn.Module):
    """One bias-free dense layer, a ReLU and a second one, written as ``nn.Linear``-like ``x @ W.T``, as an einsum
    (captured as ``bmm`` of a batch of one) or as ``bmm`` with the weight expanded over the batch."""

    def __init__(self, how: str):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.how = how
        self.w1 = torch.nn.Parameter(torch.randn(5, 6, generator=g, dtype=D))
        self.w2 = torch.nn.Parameter(torch.randn(3, 5, generator=g, dtype=D))

    def layer(self, x, w):
        if self.how == "einsum":
            return torch.einsum("bti,oi->bto", x, w)
        if self.how == "bmm":
            return torch.bmm(x, w.T.expand(x.shape[0], -1, -1))
        return x @ w.T

    def forward(self, x):
        return self.layer(self.layer(x, self.w1).relu(), self.w2).sum(1)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus", "attnlrp"])
@pytest.mark.parametrize("how", ["einsum", "bmm"])
def test_dense_layers_written_as_products_take_the_presets_epsilon(how, composite):
    """A weight in an einsum or an expanded bmm is a dense layer: it gets ``epsilon=`` as ``x @ W.T`` does (it kept
    1e-6 under the CNN presets), and with one matrix for the whole batch it becomes ``linear``."""
    x = torch.randn(4, 7, 6, dtype=D)
    ref = lrp_fx.attribute(_DenseAs("matmul"), x, target=0, composite=composite, epsilon=0.25)
    res = lrp_fx.attribute(_DenseAs(how), x, target=0, composite=composite, epsilon=0.25)
    torch.testing.assert_close(res.output, ref.output)
    torch.testing.assert_close(res.relevance, ref.relevance, rtol=1e-12, atol=1e-12)
    assert (ref.relevance.sum() - ref.seed.sum()).abs() > 1e-3  # epsilon=0.25 absorbs a visible share
    graph = res.program.graph_module.graph
    assert not any(n.target is torch.ops.aten.bmm.default for n in graph.nodes)


def test_products_of_two_activations_take_the_presets_epsilon():
    """Under a CNN preset a product of two activations (einsum of two inputs) is stabilised with ``epsilon=``."""

    class Bilinear(torch.nn.Module):
        def forward(self, a, b):
            return torch.einsum("bij,bjk->bik", a, b).flatten(1)

    a, b = torch.randn(2, 3, 4, dtype=D), torch.randn(2, 4, 5, dtype=D)
    R = torch.randn(2, 15, dtype=D)
    for eps in (1e-6, 0.5):
        res = lrp_fx.attribute(Bilinear(), (a, b), target=R, composite="epsilon", epsilon=eps)
        s = R.reshape(2, 3, 5) / stab(a @ b, eps)
        torch.testing.assert_close(res.relevance[0], a * (s @ b.transpose(1, 2)) / 2)
        torch.testing.assert_close(res.relevance[1], b * (a.transpose(1, 2) @ s) / 2)


def test_addbmm_is_the_product_rule_with_the_batch_summed():
    """``Y = beta C + alpha sum_b A_b B_b``: ``s = R / stab(Y)`` broadcasts over the batch; two activation factors
    split evenly, ``C`` takes ``beta C s``. Dense contributions ``A[b,i,k] B[b,k,j]``."""
    torch.manual_seed(3)
    a, b, c = torch.randn(3, 4, 5, dtype=D), torch.randn(3, 5, 2, dtype=D), torch.randn(4, 2, dtype=D)
    R = torch.randn(4, 2, dtype=D)

    class M(torch.nn.Module):
        def forward(self, a, b, c):
            return torch.addbmm(c, a, b, beta=0.5, alpha=2.0)

    res = lrp_fx.attribute(M(), (a, b, c), target=R, composite="epsilon", track_absorbed=True)
    y = 0.5 * c + 2.0 * torch.einsum("bik,bkj->ij", a, b)
    s = R / stab(y)
    contrib = 2.0 * torch.einsum("bik,bkj->bikj", a, b) * s[None, :, None, :]  # [b, i, k, j]
    torch.testing.assert_close(res.relevance[0], contrib.sum(3) / 2)
    torch.testing.assert_close(res.relevance[1], contrib.sum(1) / 2)
    torch.testing.assert_close(res.relevance[2], 0.5 * c * s)
    total = sum(r.sum() for r in res.relevance) + sum(res.absorbed.values())
    torch.testing.assert_close(total, R.sum())


@pytest.mark.parametrize("same", [False, True])
def test_bilinear_layer_splits_its_form_between_its_two_inputs(same):
    """``nn.Bilinear`` (``_trilinear``): ``y_o = x1_i W_oij x2_j + b_o``; ``s = R / stab(y - b)`` after the bias's
    add, each input gets half of ``sum_o s_o x1_i W_oij x2_j`` over its own index; ``bilinear(x, x)`` both halves."""
    torch.manual_seed(4)
    layer = torch.nn.Bilinear(4, 4 if same else 3, 2).double()
    x1, x2 = torch.randn(5, 4, dtype=D), torch.randn(5, 4 if same else 3, dtype=D)
    R = torch.randn(5, 2, dtype=D)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x1, x2=None):
            return self.layer(x1, x1 if x2 is None else x2)

    inputs = (x1,) if same else (x1, x2)
    res = lrp_fx.attribute(M(), inputs, target=R, composite="epsilon", track_absorbed=True)
    x2 = x1 if same else x2
    form = torch.einsum("ni,oij,nj->no", x1, layer.weight, x2)
    y = form + layer.bias
    r_form = form * R / stab(y)  # the add rule: the bias's share is its own
    s = r_form / stab(form)
    contrib = torch.einsum("ni,oij,nj,no->nij", x1, layer.weight, x2, s)
    if same:
        torch.testing.assert_close(res.relevance[0], contrib.sum(2) / 2 + contrib.sum(1) / 2)
    else:
        torch.testing.assert_close(res.relevance[0], contrib.sum(2) / 2)
        torch.testing.assert_close(res.relevance[1], contrib.sum(1) / 2)
    total = sum(r.sum() for r in res.relevance) + sum(res.absorbed.values())
    torch.testing.assert_close(total, R.sum())


def test_cplrp_keeps_a_softmax_head_that_weights_no_product():
    """CP-LRP stops attention weights; an ``nn.Softmax`` classifier head got ``Stop`` too, and every input relevance
    was exactly 0. It takes the softmax rule (Taylor) instead, as an explicit override gives it."""
    torch.manual_seed(0)
    enc = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), enc, torch.nn.Flatten(), torch.nn.Linear(80, 4), torch.nn.Softmax(-1)
    ).eval()
    x = torch.randn(2, 5, 6)
    res = lrp_fx.attribute(model, x, target=None, composite="cplrp")
    assert res.relevance.abs().sum() > 0
    ref = lrp_fx.attribute(model, x, target=None, composite="cplrp", overrides={torch.nn.Softmax: Taylor()})
    torch.testing.assert_close(res.relevance, ref.relevance, rtol=0, atol=0)

    class Written(torch.nn.Module):  # attention written out: its softmax weights a product and stays stopped
        def forward(self, x):
            w = torch.softmax(x @ x.transpose(1, 2), -1)
            return torch.softmax((w @ x).sum(1), -1)

    rules = [a.rule for a in lrp_fx.attribute(Written(), x, composite="cplrp").program.assignments if "softmax" in a.op]
    assert rules == ["Stop()", "Taylor()"], rules
