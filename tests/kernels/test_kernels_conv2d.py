"""conv2d kernels: Triton (+ torch convolutions) vs torch reference, reference vs an unfold/fold float64 formula."""

import pytest
import torch
import torch.nn.functional as F
from _kernel_test_utils import EPS, TOL, assert_close_rel

from kernels import (
    epsilon_conv2d,
    epsilon_conv2d_ref,
    epsilon_conv2d_triton,
    signsplit_conv2d,
    signsplit_conv2d_ref,
    signsplit_conv2d_triton,
)
from kernels.conv2d import stacked_weight

RULES = ["zplus", "alphabeta", "gamma", "gamma+"]  # gamma+: gamma's positive half (before a ReLU)
# (C, O, H, W, k, stride, padding, dilation, groups)
GEOMS = [
    (3, 4, 7, 6, 3, 1, 1, 1, 1),
    (4, 6, 9, 8, 3, 2, 1, 1, 2),
    (4, 4, 8, 7, 3, 1, 2, 2, 4),  # depthwise, dilated
    (3, 5, 6, 6, 1, 1, 0, 1, 1),  # 1x1
]


def make_conv(geom, dtype, device="cpu", bias=True, nonneg=False, batch=2, seed=0):
    C, n_out, H, W, k, stride, padding, dilation, groups = geom
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, C, H, W, generator=g, dtype=torch.float64)
    if nonneg:
        x = x.relu()
    w = torch.randn(n_out, C // groups, k, k, generator=g, dtype=torch.float64) / (C // groups * k * k) ** 0.5
    b = torch.randn(n_out, generator=g, dtype=torch.float64) * 0.1 if bias else None
    z = F.conv2d(x, w, b, stride, padding, dilation, groups)
    r = torch.randn(z.shape, generator=g, dtype=torch.float64)

    def cast(t):
        return None if t is None else t.to(device=device, dtype=dtype)

    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return cast(x), cast(w), cast(b), cast(z), cast(r), conv


def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def dense_conv(x, w, b, z, r, rule, conv, alpha=2.0, beta=1.0, gamma=0.25, eps=1e-6):
    """Explicit contributions c[n, o, p, l] = patch[n, p, l] * W[o, p] via unfold, relevance folded back."""
    n, C, H, W = x.shape
    n_out, cg, kh, kw = w.shape
    groups = conv["groups"]
    og = n_out // groups
    b = torch.zeros(n_out, dtype=x.dtype) if b is None else b
    uargs = dict(kernel_size=(kh, kw), dilation=conv["dilation"], padding=conv["padding"], stride=conv["stride"])
    out = torch.zeros_like(x)
    for gi in range(groups):
        xs = x[:, gi * cg : (gi + 1) * cg]
        ws = w[gi * og : (gi + 1) * og].reshape(og, -1)
        bs = b[gi * og : (gi + 1) * og]
        rs = r[:, gi * og : (gi + 1) * og].reshape(n, og, -1)
        zs = z[:, gi * og : (gi + 1) * og].reshape(n, og, -1)
        patches = F.unfold(xs, **uargs)  # n, p, l
        c = torch.einsum("npl,op->nopl", patches, ws)
        cp, cn = c.clamp(min=0), c.clamp(max=0)
        if rule == "epsilon":
            rp = torch.einsum("nopl,nol->npl", c, rs / _stab(c.sum(2) + bs[:, None], eps))
        elif rule == "zplus":
            zp = cp.sum(2) + bs.clamp(min=0)[:, None]
            rp = torch.einsum("nopl,nol->npl", cp, rs / _stab(zp, eps))
        elif rule == "alphabeta":
            zp = cp.sum(2) + bs.clamp(min=0)[:, None]
            zn = cn.sum(2) + bs.clamp(max=0)[:, None]
            rp = alpha * torch.einsum("nopl,nol->npl", cp, rs / _stab(zp, eps)) - beta * torch.einsum(
                "nopl,nol->npl", cn, rs / _stab(zn, eps)
            )
        else:  # gamma; gamma+ keeps the positive half only
            ca, cb = c + gamma * cp, c + gamma * cn
            zp = ca.sum(2) + (bs + gamma * bs.clamp(min=0))[:, None]
            zn = cb.sum(2) + (bs + gamma * bs.clamp(max=0))[:, None]
            rp = torch.einsum("nopl,nol->npl", ca, (zs > 0) * rs / _stab(zp, eps))
            if rule == "gamma":
                rp = rp + torch.einsum("nopl,nol->npl", cb, (zs < 0) * rs / _stab(zn, eps))
        out[:, gi * cg : (gi + 1) * cg] = F.fold(rp, output_size=(H, W), **uargs)
    return out


@pytest.mark.parametrize("geom", GEOMS[:3])
@pytest.mark.parametrize("rule", ["epsilon", *RULES])
def test_reference_matches_dense_formula(rule, geom):
    x, w, b, z, r, conv = make_conv(geom, torch.float64)
    dense = dense_conv(x, w, b, z, r, rule, conv, alpha=1.5, beta=0.5, gamma=0.3, eps=1e-3)
    if rule == "epsilon":
        ref = epsilon_conv2d_ref(x, w, z, r, 1e-3, **conv)
    else:
        ref = signsplit_conv2d_ref(x, w, b, z, r, rule, alpha=1.5, beta=0.5, gamma=0.3, eps=1e-3, **conv)
    torch.testing.assert_close(ref, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("geom", GEOMS)
def test_epsilon_conv2d_triton(device, geom, dtype):
    x, w, b, z, r, conv = make_conv(geom, dtype, device)
    out = epsilon_conv2d_triton(x, w, z, r, EPS[dtype], **conv)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close_rel(out, epsilon_conv2d_ref(x, w, z, r, EPS[dtype], **conv), TOL[dtype])


@pytest.mark.parametrize("folded", [False, True], ids=["stacked", "folded"])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("geom", GEOMS[:3])
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_conv2d_triton(device, rule, geom, dtype, nonneg, folded):
    """Both pipelines; the depthwise geometry (four contributions at the corners) is where folding AlphaBeta's
    relevance would fail (kernels/signsplit_folded.py)."""
    x, w, b, z, r, conv = make_conv(geom, dtype, device, nonneg=nonneg, seed=1)
    kw = dict(alpha=2.0, beta=1.0, gamma=0.25, eps=EPS[dtype], x_nonneg=nonneg, **conv)
    out = signsplit_conv2d_triton(x, w, b, z, r, rule, folded=folded, **kw)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close_rel(out, signsplit_conv2d_ref(x, w, b, z, r, rule, **kw), TOL[dtype])


@pytest.mark.parametrize("folded", [False, True], ids=["stacked", "folded"])
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_conv2d_triton_no_bias(device, rule, folded):
    x, w, _, z, r, conv = make_conv(GEOMS[1], torch.float32, device, bias=False, seed=2)
    out = signsplit_conv2d_triton(x, w, None, z, r, rule, folded=folded, **conv)
    assert_close_rel(out, signsplit_conv2d_ref(x, w, None, z, r, rule, **conv), TOL[torch.float32])


def test_stacked_weight_blocks():
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    ws = stacked_weight(w, "alphabeta", 0.0, groups=3, x_nonneg=False)
    assert ws.shape == (12, 4, 3, 3)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    # group 1: output rows 4..7 = [z+ (2 rows), z- (2 rows)], input cols [x+ (2), x- (2)]
    blk = ws[4:8]
    torch.testing.assert_close(blk[0:2, 0:2], wp[2:4])
    torch.testing.assert_close(blk[0:2, 2:4], wn[2:4])
    torch.testing.assert_close(blk[2:4, 0:2], wn[2:4])
    torch.testing.assert_close(blk[2:4, 2:4], wp[2:4])


def test_stacked_weight_of_gamma_plus_has_one_output_block():
    """gamma+ needs no z-: half the output channels of gamma's stacked convolution, so half its multiply-adds."""
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    one, two = (stacked_weight(w, rule, 0.25, groups=3, x_nonneg=True) for rule in ("gamma+", "gamma"))
    assert one.shape == (6, 2, 3, 3) and two.shape == (12, 2, 3, 3)
    torch.testing.assert_close(one, two.reshape(3, 2, 2, 2, 3, 3)[:, 0].reshape(6, 2, 3, 3))  # the z+ blocks


@pytest.mark.parametrize("nonneg", [False, True])
def test_gamma_plus_is_gamma_where_no_relevance_meets_a_negative_output(device, nonneg):
    x, w, b, z, r, conv = make_conv(GEOMS[1], torch.float32, device, nonneg=nonneg, seed=4)
    r = torch.where(z < 0, torch.zeros_like(r), r)  # what a ReLU after the layer leaves
    kw = dict(gamma=0.25, eps=1e-6, x_nonneg=nonneg, **conv)
    plus = signsplit_conv2d_triton(x, w, b, z, r, "gamma+", **kw)
    assert_close_rel(plus, signsplit_conv2d_triton(x, w, b, z, r, "gamma", **kw), TOL[torch.float32])


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "alphabeta"])
def test_conservation_triton(device, rule):
    x, w, _, z, r, conv = make_conv(GEOMS[0], torch.float32, device, bias=False, nonneg=True, seed=3)
    x = x + 0.01
    z = F.conv2d(x, w, None, **conv)
    if rule == "epsilon":
        out = epsilon_conv2d_triton(x, w, z, r, 1e-9, **conv)
    else:
        out = signsplit_conv2d_triton(x, w, None, z, r, rule, eps=1e-9, **conv)
    torch.testing.assert_close(out.sum((1, 2, 3)), r.sum((1, 2, 3)), rtol=1e-4, atol=1e-4)


def test_ops_dispatch_cpu_to_reference():
    x, w, b, z, r, conv = make_conv(GEOMS[1], torch.float64)
    torch.testing.assert_close(epsilon_conv2d(x, w, z, r, 1e-5, **conv), epsilon_conv2d_ref(x, w, z, r, 1e-5, **conv))
    for rule in RULES:
        torch.testing.assert_close(
            signsplit_conv2d(x, w, b, z, r, rule, **conv), signsplit_conv2d_ref(x, w, b, z, r, rule, **conv)
        )
    # tuple arguments
    conv2 = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=1)
    x, w, b, z, r, _ = make_conv((3, 4, 9, 9, 3, 1, 0, 1, 1), torch.float64)
    z = F.conv2d(x, w, b, **conv2)
    r = torch.randn_like(z)
    torch.testing.assert_close(
        signsplit_conv2d(x, w, b, z, r, "gamma", **conv2), signsplit_conv2d_ref(x, w, b, z, r, "gamma", **conv2)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("rule", RULES)
def test_signsplit_conv2d_cuda(rule):
    x, w, b, z, r, conv = make_conv((16, 32, 28, 28, 3, 1, 1, 1, 1), torch.bfloat16, "cuda", batch=4)
    out = signsplit_conv2d(x, w, b, z, r, rule, eps=1e-2, **conv)
    assert_close_rel(out, signsplit_conv2d_ref(x, w, b, z, r, rule, eps=1e-2, **conv), TOL[torch.bfloat16])
