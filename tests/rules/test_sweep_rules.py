"""Rules added by the transformers coverage sweep, against their formulas written densely in float64: group norm
(``rules/norm.py``), top-k / sort / max selections (``rules/misc.py``), further unary functions
(``rules/pointwise.py``) and mixture-of-experts router weights marked as gates (``lrp_fx.prepare``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrp_fx
from lrp_fx.rules import get_rule

from ._reference import Fn, stab

D = torch.float64
aten = torch.ops.aten


def _attr(model, x, R, **kw):
    return lrp_fx.attribute(model, x, target=R, composite="attnlrp", **kw)


def _ops(res):
    return {n.target for n in res.program.captured.graph.nodes if n.op == "call_function"}


# -- group norm --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_statistics_constant_epsilon_on_the_affine_part(groups):
    """``Pass`` (an override; the presets use ``Epsilon``, below): ``R_x = (y - beta) * R / stab(y)``, ``beta``
    broadcast over channels; ``beta`` absorbs ``beta * R / stab(y)``."""
    gen = torch.Generator().manual_seed(groups)
    x = torch.randn(2, 4, 6, generator=gen, dtype=D)
    w, b = torch.randn(4, generator=gen, dtype=D), torch.randn(4, generator=gen, dtype=D)
    R = torch.randn(2, 4, 6, generator=gen, dtype=D)
    model = Fn(lambda m, x: F.group_norm(x, groups, m.w, m.b), w=w, b=b)
    res = lrp_fx.attribute(
        model, x, target=R, composite="epsilon", track_absorbed=True, overrides={Fn: lrp_fx.rules.Pass()}
    )
    assert aten.native_group_norm.default in _ops(res)
    mean = x.view(2, groups, -1).mean(-1, keepdim=True)
    var = x.view(2, groups, -1).var(-1, unbiased=False, keepdim=True)
    xhat = ((x.view(2, groups, -1) - mean) / torch.sqrt(var + 1e-5)).view_as(x)
    y = xhat * w.view(1, 4, 1) + b.view(1, 4, 1)
    expected = (y - b.view(1, 4, 1)) * R / stab(y)
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())


def test_group_norm_without_affine_is_exact():
    x, R = torch.randn(2, 6, 5, dtype=D), torch.randn(2, 6, 5, dtype=D)
    model = Fn(lambda m, x: F.group_norm(x, 3))
    res = lrp_fx.attribute(model, x, target=R, composite="epsilon", overrides={Fn: lrp_fx.rules.Pass()})
    y = F.group_norm(x, 3)
    torch.testing.assert_close(res.relevance, y * R / stab(y))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_epsilon_on_the_map_made_linear(groups):
    """``Epsilon`` (attnlrp, cplrp): with the normaliser constant, ``y = J x + beta`` is linear; the epsilon rule
    ``R_x[j] = sum_i x[j] J[i, j] R[i] / stab(y[i])`` with ``J`` written out densely."""
    gen = torch.Generator().manual_seed(10 + groups)
    n, c, p = 2, 4, 3
    x = torch.randn(n, c, p, generator=gen, dtype=D) + 0.3
    w, b = torch.randn(c, generator=gen, dtype=D), torch.randn(c, generator=gen, dtype=D)
    R = torch.randn(n, c, p, generator=gen, dtype=D)
    model = Fn(lambda m, x: F.group_norm(x, groups, m.w, m.b), w=w, b=b)
    y = F.group_norm(x, groups, w, b)
    expected = torch.zeros_like(x)
    size = c // groups * p  # elements per group
    for s in range(n):
        for g in range(groups):
            xs = x[s, g * c // groups : (g + 1) * c // groups].reshape(-1)
            rstd = 1 / torch.sqrt(xs.var(unbiased=False) + 1e-5)
            gamma = w[g * c // groups : (g + 1) * c // groups].repeat_interleave(p)
            J = gamma[:, None] * rstd * (torch.eye(size, dtype=D) - 1.0 / size)  # J[i, j] = d y_i / d x_j
            ys = y[s, g * c // groups : (g + 1) * c // groups].reshape(-1)
            rs = R[s, g * c // groups : (g + 1) * c // groups].reshape(-1)
            r_x = (xs[None, :] * J * (rs / stab(ys))[:, None]).sum(0)
            expected[s, g * c // groups : (g + 1) * c // groups] = r_x.view(-1, p)
    for composite in ("epsilon", "epsilon_plus_flat", "attnlrp", "cplrp"):
        res = lrp_fx.attribute(model, x, target=R, composite=composite, track_absorbed=True)
        torch.testing.assert_close(res.relevance, expected)
        bias_share = (b.view(1, c, 1) * R / stab(y)).sum()
        torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())
        torch.testing.assert_close(R.sum() - res.relevance.sum(), bias_share + (R - R * y / stab(y)).sum())


# -- selections: topk, sort, max ---------------------------------------------------------------------------------------
def _selection_reference(x, idx, R, dim):
    """``R_x = J^T R``: every selected value hands its relevance to the position it came from."""
    return torch.zeros_like(x).scatter_add(dim, idx, R)


@pytest.mark.parametrize(
    "select, dim",
    [
        (lambda x: torch.topk(x, 3, dim=-1), -1),
        (lambda x: torch.topk(x, 2, dim=1, largest=False), 1),
        (lambda x: torch.sort(x, dim=-1, descending=True), -1),
        (lambda x: torch.max(x, dim=-1, keepdim=True), -1),
        (lambda x: torch.min(x, dim=1, keepdim=True), 1),
    ],
)
def test_selections_route_values_to_their_source(select, dim):
    x = torch.randn(3, 5, 7, dtype=D)
    values, idx = select(x)
    R = torch.randn_like(values)
    res = _attr(Fn(lambda m, x: select(x)[0]), x, R)
    torch.testing.assert_close(res.relevance, _selection_reference(x, idx, R, dim))
    torch.testing.assert_close(res.relevance.sum(), R.sum())


def test_selection_rules_are_registered_as_routing():
    for op in (aten.topk.default, aten.sort.default, aten.max.dim, aten.min.dim):
        assert get_rule(op).group == "routing"


# -- unary functions ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn", [torch.atan, torch.sinh, torch.expm1, torch.log1p, torch.erfc, torch.tan, torch.asinh, torch.exp2]
)
def test_further_unary_functions_pass_relevance(fn):
    """``R_x = R`` (the identity AttnLRP uses for element-wise non-linearities)."""
    x, R = torch.rand(3, 4, dtype=D) * 0.5 + 0.1, torch.randn(3, 4, dtype=D)
    torch.testing.assert_close(_attr(Fn(lambda m, x: fn(x)), x, R).relevance, R)


# -- mixture-of-experts router weights ---------------------------------------------------------------------------------
class TinyMoE(nn.Module):
    """Mixtral's sparse block in miniature: softmax router, top-k, renormalised weights, per-token experts gathered
    from stacked weights (the ``batched_mm`` layout of transformers), weighted sum."""

    def __init__(self, hidden=4, experts=3, k=2, renormalise=True):
        super().__init__()
        self.router = nn.Linear(hidden, experts, bias=False, dtype=D)
        self.w = nn.Parameter(torch.randn(experts, hidden, hidden, dtype=D))
        self.k, self.renormalise = k, renormalise

    def forward(self, x):  # x [tokens, hidden]
        probs = torch.softmax(self.router(x), -1)
        weights, idx = torch.topk(probs, self.k, dim=-1)
        if self.renormalise:
            weights = weights / weights.sum(-1, keepdim=True)
        xs = x.repeat_interleave(self.k, dim=0)  # [tokens * k, hidden]
        out = torch.bmm(self.w[idx.reshape(-1)], xs.unsqueeze(-1)).squeeze(-1)  # expert outputs
        out = out * weights.reshape(-1, 1)
        return out.view(x.shape[0], self.k, -1).sum(1)


@pytest.mark.parametrize("renormalise", [True, False])
def test_router_weights_are_gates(renormalise):
    """``y = sum_k w_k E_k(x)``: the router weights ``w_k`` are constants, so each product ``w_k * E_k(x)`` hands all of
    its relevance to the expert output and the router gets none; an expert ``E_k(x) = W_k x`` (one factor constant)
    is an epsilon layer. Dense reference: ``R_x[t, i] = sum_k x[t, i] * w_k W_k[o, i] * R[t, o] / stab(y[t, o])``
    (with ``R_e = R`` for the expert output before the weighted sum's Norm rule)."""
    torch.manual_seed(0)
    model = TinyMoE(renormalise=renormalise)
    x = torch.randn(5, 4, dtype=D)
    R = torch.randn(5, 4, dtype=D)
    res = _attr(model, x, R, track_absorbed=True)
    assert not any("topk" in a.op or "_softmax" in a.op for a in res.program.assignments)  # the router is not live
    with torch.no_grad():
        probs = torch.softmax(model.router(x), -1)
        w, idx = torch.topk(probs, 2, dim=-1)
        if renormalise:
            w = w / w.sum(-1, keepdim=True)
        W = model.w[idx]  # [tokens, k, out, in]
        e = torch.einsum("tkoi,ti->tko", W, x)  # expert outputs
        y = (e * w[..., None]).sum(1)
        # weighted sum (Norm): each term w_k e_k gets (w_k e_k) R / stab(y); the product passes it to e_k (gate);
        # the expert (epsilon) hands x_i W_k[o, i] (R_e / stab(e_k))[o] to x_i
        r_e = (e * w[..., None]) * (R / stab(y))[:, None, :]
        expected = torch.einsum("tkoi,ti,tko->ti", W, x, r_e / stab(e))
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())


# -- state-space decays ------------------------------------------------------------------------------------------------
class TinyScan(nn.Module):
    """A diagonal selective scan (Mamba's reference loop in miniature): ``h_t = exp(dt_t * A) * h_{t-1} + b * x_t``,
    ``dt_t = softplus(x_t W)`` computed from the input, output ``sum_n c_n h_T[n]``."""

    def __init__(self, n=4):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n, n, dtype=D) * 0.5)
        self.a_log = nn.Parameter(torch.randn(n, dtype=D) * 0.3)
        self.b = nn.Parameter(torch.randn(n, dtype=D))
        self.c = nn.Parameter(torch.randn(n, dtype=D))

    def decays(self, x):
        return torch.exp(F.softplus(x @ self.w) * -torch.exp(self.a_log))  # [B, T, N], in (0, 1)

    def forward(self, x):  # x [B, T, N]
        a = self.decays(x)
        h = torch.zeros_like(x[:, 0])
        for t in range(x.shape[1]):
            h = a[:, t] * h + self.b * x[:, t]
        return (h * self.c).sum(-1)


def test_state_space_decays_are_constant():
    """The decay ``exp(dt_t A)`` is marked constant (``lrp_fx.prepare``, MambaLRP): the scan is linear in the state, so
    ``R_{h_{t-1}} = a_t h_{t-1} R_{h_t} / stab(h_t)`` and ``R_{x_t} = b x_t R_{h_t} / stab(h_t)``, and nothing reaches
    ``dt``. Reference: that recursion, written out in float64; conservative up to the stabilisers."""
    torch.manual_seed(0)
    model = TinyScan()
    x = torch.randn(2, 5, 4, dtype=D)
    R = torch.randn(2, dtype=D)
    res = _attr(model, x, R, track_absorbed=True)
    assert not any(a.op in ("aten.exp.default", "aten.softplus.default") for a in res.program.assignments)
    with torch.no_grad():
        a = model.decays(x)
        hs = [torch.zeros_like(x[:, 0])]
        for t in range(x.shape[1]):
            hs.append(a[:, t] * hs[-1] + model.b * x[:, t])
        y = (hs[-1] * model.c).sum(-1)
        r_h = (hs[-1] * model.c) * (R / stab(y))[:, None]  # the output sum (Norm), then c * h hands all to h
        expected = torch.zeros_like(x)
        for t in range(x.shape[1], 0, -1):
            s = r_h / stab(hs[t])
            expected[:, t - 1] = model.b * x[:, t - 1] * s
            r_h = a[:, t - 1] * hs[t - 1] * s
    torch.testing.assert_close(res.relevance, expected)
    torch.testing.assert_close(res.relevance.sum() + sum(res.absorbed.values()), R.sum())


# -- routing that hands relevance to constants -------------------------------------------------------------------------
def test_routing_records_what_a_constant_keeps():
    """``cat([cls, x])`` with a constant class token, a pad and a cast to float32: ``R_x = J^T R`` (exact routing) and
    the relevance of the positions taken from the constant, the pad value and the rounding of the cast are recorded as
    absorbed, so ``sum R_x + absorbed = sum R`` to round-off."""

    def fn(m, x):
        y = torch.cat([m.cls.expand(x.shape[0], 1, -1), x], dim=1)  # [B, 1 + T, H]
        y = F.pad(y, (0, 0, 0, 2), value=0.5)  # two constant rows
        return y.float().double()

    x = torch.randn(2, 3, 4, dtype=D)
    R = torch.randn(2, 6, 4, dtype=D)
    res = _attr(Fn(fn, cls=torch.randn(1, 1, 4, dtype=D)), x, R, track_absorbed=True)
    expected = R.float().double()[:, 1:4]
    torch.testing.assert_close(res.relevance, expected)
    total = res.relevance.sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, R.sum(), rtol=1e-12, atol=1e-12)
    assert len(res.absorbed) >= 2  # the cat and the pad (and the cast) each keep a share
