"""Dense float64 reference formulas for the linear-family rules.

Every rule is written over explicit contributions ``c[b, o, i]`` of input ``i`` to output ``o``. Convolutions are
covered by the same formulas through their dense matrix (the Jacobian of ``x -> conv(x, W)``): each entry of that
matrix is one kernel weight, so the matrix of ``W^+`` is the positive part of the matrix of ``W``.
"""

from __future__ import annotations

import torch
from torch import nn


class Fn(nn.Module):
    """A module computing ``fn(self, *inputs)``, with each keyword tensor as a parameter ``self.<name>``."""

    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, nn.Parameter(v))

    def forward(self, *xs):
        return self.fn(self, *xs)


def stab(z, eps=1e-6):
    return z + eps * (2.0 * (z >= 0).double() - 1.0)


def dense(fn, x_shape):
    """Matrix ``M`` with ``fn(x).flatten() = M @ x.flatten()`` for one sample (linear, bias-free ``fn``)."""
    n = int(torch.tensor(x_shape[1:]).prod())
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *x_shape[1:])
    return fn(eye).reshape(n, -1).T  # [out, in]


def reference(rule: str, x, M, b, R, *, M_pos=None, M_neg=None, gamma=0.25, alpha=2.0, beta=1.0, low=0.0, high=1.0):
    """Relevance of ``x`` [B, in] for outputs ``z = x M^T + b`` [B, out] with relevance ``R`` [B, out]."""
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    M_pos = M.clamp(min=0) if M_pos is None else M_pos
    M_neg = M.clamp(max=0) if M_neg is None else M_neg
    b = torch.zeros(M.shape[0], dtype=torch.float64) if b is None else b
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    X, XP, XN = x[:, None, :], xp[:, None, :], xn[:, None, :]
    if rule == "epsilon":
        c = X * M
        z = c.sum(-1) + b
        return (c * (R / stab(z))[..., None]).sum(1)
    if rule == "zplus":
        c = XP * M_pos + XN * M_neg
        z = c.sum(-1) + bp
        return (c * (R / stab(z))[..., None]).sum(1)
    if rule == "alphabeta":
        cp = XP * M_pos + XN * M_neg
        cn = XP * M_neg + XN * M_pos
        zp, zn = cp.sum(-1) + bp, cn.sum(-1) + bn
        return alpha * (cp * (R / stab(zp))[..., None]).sum(1) - beta * (cn * (R / stab(zn))[..., None]).sum(1)
    if rule == "gamma":
        Ma, Mb = M + gamma * M_pos, M + gamma * M_neg
        ba, bb = b + gamma * bp, b + gamma * bn
        cp = XP * Ma + XN * Mb
        cn = XP * Mb + XN * Ma
        o = (X * M).sum(-1) + b
        sp = (o > 0) * R / stab(cp.sum(-1) + ba)
        sn = (o < 0) * R / stab(cn.sum(-1) + bb)
        return (cp * sp[..., None]).sum(1) + (cn * sn[..., None]).sum(1)
    if rule == "flat":
        c = (M != 0).double().expand(x.shape[0], -1, -1)  # every connection counts once
        return (c * (R / stab(c.sum(-1)))[..., None]).sum(1)
    if rule == "wsquare":
        c = (M * M).expand(x.shape[0], -1, -1)
        return (c * (R / stab(c.sum(-1) + b * b))[..., None]).sum(1)
    if rule == "zbox":
        L = torch.full_like(X, low) if not torch.is_tensor(low) else low[:, None, :]
        H = torch.full_like(X, high) if not torch.is_tensor(high) else high[:, None, :]
        c = X * M - L * M_pos - H * M_neg
        z = c.sum(-1) + b - bp - bn
        return (c * (R / stab(z))[..., None]).sum(1)
    raise ValueError(rule)


def attribute_with(model, x, R, composite="epsilon", **kw):
    """``lrp_fx.attribute`` with the output relevance ``R`` given as the target."""
    import lrp_fx

    return lrp_fx.attribute(model, x, target=R, composite=composite, **kw)


def relevance_total(res):
    """Input relevance (over every input) plus everything absorbed: equals the seed's sum when the books close."""
    rel = res.relevance if isinstance(res.relevance, torch.Tensor) else sum(r.sum() for r in res.relevance)
    return rel.sum() + sum(res.absorbed.values())
