"""Rules for ops linear in their activation input: linear layers, convolutions, average pooling, sums and means,
linear interpolation.

One mechanism serves them all (Zennit's BasicHook idea, written as a pure function). A rule is a list of *groups*;
group ``g`` has a weight ``w_g`` (alpha or -beta), an optional mask, and *terms* ``(x_t, W_t, b_t, sign_t)`` of
modified inputs and parameters. With ``f(x; W, b)`` the op itself:

    z_g = sum_t sign_t f(x_t; W_t, b_t)            (or the op's own output for Epsilon/Norm)
    s_g = mask_g * R / stab(z_g)
    R_x = sum_g w_g sum_t sign_t x_t * (J_f(W_t)^T s_g)

``J_f(W)^T s`` is the op's input VJP: a transposed matmul or convolution, the same kernel a gradient uses. Terms whose
``x_t`` is identically zero (``x^-`` when ``x`` is provably non-negative, e.g. after ReLU) are skipped exactly.

The relevance absorbed by biases and stabilisers is ``sum R - sum_g w_g sum s_g (z_g - sum_t sign_t b_t)``, computed
from the formula rather than from ``R_x``, so conservation tests check something.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx

from .autodiff import vjp
from .base import AlphaBeta, Epsilon, Flat, Gamma, Norm, WSquare, ZBox, ZPlus
from .call import RuleCall
from .registry import aten, register_rule
from .stabilize import stabilize

ONES = None  # an x_t of ONES means "all ones": the reducer then skips the product with x


@dataclass
class Term:
    x: Tensor | None  # modified input; None means all ones
    w: Tensor
    b: Tensor | None
    sign: float = 1.0


@dataclass
class Group:
    terms: list[Term]
    weight: float = 1.0
    mask: Tensor | None = None
    z: Tensor | None = None  # given denominator (the op's own output); computed from the terms otherwise
    eps: float = 1e-6
    nonneg: bool = False  # the denominator is >= 0 by construction: stab(z) = z + eps
    # the relevance's terms, where they differ from the denominator's (the same sum, in fewer or better-conditioned
    # products: ZBox); ``terms`` otherwise
    numerator: list[Term] | None = None


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


def _affine(call: RuleCall):
    """``f(x, W, b)`` for this node: the node's own op with the other arguments unchanged."""
    node = call.node
    rest = tuple(call.arg(i) for i in range(3, len(node.args)))

    def f(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return node.target(x, w, b, *rest)

    return f


def _bias_like(call: RuleCall, b: Tensor | None, z: Tensor) -> Tensor | float:
    if b is None:
        return 0.0
    if call.node.target is aten.linear.default:
        return b
    return b.view(1, -1, *([1] * (z.dim() - 2)))  # convolution: channel dimension 1


def _groups(call: RuleCall, x: Tensor, w: Tensor, b: Tensor | None) -> list[Group]:
    rule = call.rule
    nonneg = call.nonneg(call.node.args[0])
    xp = x if nonneg else _pos(x)
    xn = None if nonneg else _neg(x)

    def split(wa: Tensor, ba: Tensor | None, wb: Tensor) -> list[Term]:
        terms = [Term(xp, wa, ba)]
        if xn is not None:
            terms.append(Term(xn, wb, None))
        return terms

    if isinstance(rule, Epsilon):
        z = call.out(support_only=True)
        return [Group([Term(x, w, b)], z=z, eps=rule.epsilon, nonneg=call.out_nonneg(support_only=True))]
    if isinstance(rule, ZPlus):  # x+ W+ + x- W- + b+ >= 0
        return [Group(split(_pos(w), _pos(b), _neg(w)), eps=rule.stabilizer, nonneg=True)]
    if isinstance(rule, AlphaBeta):
        return [
            Group(split(_pos(w), _pos(b), _neg(w)), weight=rule.alpha, eps=rule.stabilizer, nonneg=True),
            Group(split(_neg(w), _neg(b), _pos(w)), weight=-rule.beta, eps=rule.stabilizer),
        ]
    if isinstance(rule, Gamma):
        g = rule.gamma
        wa, wb = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        ba = None if b is None else b + g * b.clamp(min=0)
        bb = None if b is None else b + g * b.clamp(max=0)
        o = call.out(support_only=True)
        positive = Group(split(wa, ba, wb), mask=o > 0, eps=rule.stabilizer)
        if call.out_nonneg(support_only=True):  # o < 0 nowhere on the relevance support (e.g. before a ReLU)
            return [positive]
        return [positive, Group(split(wb, bb, wa), mask=o < 0, eps=rule.stabilizer)]
    fill = _pad_fill_mask(call, x)  # Flat, WSquare and ZBox modify the input: a pad's fill values stay constants
    if isinstance(rule, Flat):
        return [
            Group([Term(ONES if fill is None else fill, torch.ones_like(w), None)], eps=rule.stabilizer, nonneg=True)
        ]
    if isinstance(rule, WSquare):
        ones = ONES if fill is None else fill
        return [Group([Term(ones, w * w, None if b is None else b * b)], eps=rule.stabilizer, nonneg=True)]
    if isinstance(rule, ZBox):
        low, high = _sample_constant(call, rule.low, x), _sample_constant(call, rule.high, x)
        if fill is not None:  # bounds = the fill value itself: the fill positions contribute 0 to z and get nothing
            low, high = torch.where(fill > 0, low, x), torch.where(fill > 0, high, x)
        terms = [Term(x, w, b), Term(low, _pos(w), _pos(b), -1.0), Term(high, _neg(w), _neg(b), -1.0)]
        z = None
        if fill is None:  # the bounds are constants: z = o - (their products, hoisted), no product of x per call
            f = _affine(call)
            z = call.out(support_only=True) - (f(low, _pos(w), _pos(b)) + f(high, _neg(w), _neg(b)))
        # x J(W)^T s - l J(W+)^T s - h J(W-)^T s, written as (x - l) J(W+)^T s + (x - h) J(W-)^T s: the same sum in
        # two transposed products, not three, and exact where x sits at its bounds (a black or white patch), where
        # z ~ 0, s ~ R / eps and the three terms' rounding (0.1 R in float32) would reach the input
        numerator = [Term(x - low, _pos(w), None), Term(x - high, _neg(w), None)]
        return [Group(terms, z=z, eps=rule.stabilizer, numerator=numerator)]
    raise TypeError(f"no linear-family formulation for {rule!r}")


def _constant(v: Tensor | float, like: Tensor) -> Tensor:
    """A rule parameter (float or tensor) as a constant of the program: a real tensor cannot enter the fake-tensor
    trace the program is built by, its values can. Created without reading ``like``'s data (``torch.full``, not
    ``like.new_full``), so what is computed from it and the weights alone is hoisted out of the per-call program."""
    if isinstance(v, Tensor):
        return torch.tensor(v.tolist(), dtype=like.dtype, device=like.device)
    return torch.full((), float(v), dtype=like.dtype, device=like.device)


def _sample_shape(call: RuleCall, x: Tensor) -> tuple[int, ...]:
    """Shape of one sample of the layer's input, broadcastable against ``x``: the layer treats samples alike, so a
    constant input (Flat's ones, ZBox's bounds) needs one sample, not a batch of copies."""
    return tuple(x.shape[-1:]) if call.node.target is aten.linear.default else (1, *x.shape[1:])


# padding between the model's input and a first layer (``F.pad``; ``padding_mode`` "reflect" and "replicate"
# capture as ``index`` with constant index tensors): bounds shaped like the unpadded input are padded the same way,
# as the layer pads the input itself (what Zennit, whose hook sees the unpadded input, does)
_PADDING = {
    aten.constant_pad_nd.default,
    aten.index.Tensor,
    aten.reflection_pad1d.default,
    aten.reflection_pad2d.default,
    aten.reflection_pad3d.default,
    aten.replication_pad1d.default,
    aten.replication_pad2d.default,
    aten.replication_pad3d.default,
}


def _sample_constant(call: RuleCall, v: Tensor | float, x: Tensor) -> Tensor:
    """``v`` broadcast to one sample of ``x`` (to the whole batch if ``v`` has one): a constant input image. Bounds
    shaped like a model input that padding ops (``_PADDING``) turned into ``x`` are padded by the same ops."""
    c = _constant(v, x)
    try:
        return c.expand(torch.broadcast_shapes(c.shape, _sample_shape(call, x)))
    except RuntimeError:
        chain, n = [], call.node.args[0]
        while isinstance(n, fx.Node) and n.target in _PADDING and isinstance(n.args[0], fx.Node):
            chain.append(n)
            n = n.args[0]
        if not chain or n.op != "placeholder" or c.dim() < x.dim() - 1:
            raise ValueError(
                f"bounds of shape {tuple(c.shape)} do not broadcast against the layer's input {tuple(x.shape)}: pass "
                "scalars, per-channel bounds ([C, 1, 1]) or bounds shaped like one sample of the model's input"
            ) from None
        c = c.reshape(1, *c.shape[-(x.dim() - 1) :]) if c.dim() == x.dim() - 1 else c
        for pad in reversed(chain):  # the index tensors of a decomposed pad are constants of the graph
            c = pad.target(c, *fx.node.map_arg(pad.args[1:], call.value), **pad.kwargs)
        return c


def _pad_fill_mask(call: RuleCall, x: Tensor) -> Tensor | None:
    """1 where ``x`` comes from the activation, 0 on the fill of a ``constant_pad_nd`` that produced ``x``; ``None``
    when ``x`` is not a pad's output.

    The fill values are constants of the graph, not inputs: a rule that modifies the input (Flat, WSquare: ones;
    ZBox: bounds) must leave them unmodified, exactly as it does for a convolution's own zero padding. Without this,
    ``conv(pad(x))`` (TF-"SAME" padding, EfficientNet's stem) would hand the fill positions a share of the relevance
    that ``conv(x, padding=p)`` keeps on ``x``; Zennit, whose hook re-runs the padding module's forward on the
    modified input, agrees with this reading.
    """
    src = call.node.args[0]
    if not (isinstance(src, fx.Node) and src.target is aten.constant_pad_nd.default and call.is_activation(src)):
        return None
    pad = list(src.args[1])
    shape = list(x.shape)
    for k in range(len(pad) // 2):  # pad lists (left, right) pairs from the last dimension backwards
        shape[x.dim() - 1 - k] -= pad[2 * k] + pad[2 * k + 1]
    return aten.constant_pad_nd(torch.ones(shape, dtype=x.dtype, device=x.device), pad, 0.0)


def _denominator(call: RuleCall, f, x: Tensor, terms: list[Term]) -> Tensor:
    """``sum_t sign_t f(x_t; W_t, b_t)``, without multiplications by 1 or additions of 0 (each a full pass). A term
    of constant input (Flat's and WSquare's ones) is one sample's worth, broadcast over the batch, and does not
    depend on ``x``: the weight hoisting computes it once, not on every call."""
    z = None
    for t in terms:
        xt = torch.ones(_sample_shape(call, x), dtype=x.dtype, device=x.device) if t.x is ONES else t.x
        zt = f(xt, t.w, t.b)
        if z is None:
            z = zt if t.sign == 1.0 else -zt
        else:
            z = z + zt if t.sign == 1.0 else z - zt
    return z


def _propagate(call: RuleCall, f, x: Tensor, groups: list[Group], relevance: Tensor) -> Tensor:
    """Evaluate the groups: the shared body of every linear-family rule."""
    r_x = None
    kept = 0.0  # sum_g w_g sum s_g (z_g - bias_g), for the absorbed-relevance record
    r_w = None
    for g in groups:
        z = g.z
        if z is None:
            z = _denominator(call, f, x, g.terms)
        s = relevance / stabilize(z, g.eps, nonneg=g.nonneg)
        if g.mask is not None:
            s = s * g.mask
        for t in g.numerator or g.terms:
            back = vjp(lambda xx, w=t.w: f(xx, w, None), (x,), s, wrt=(0,))[0]
            part = back if t.x is ONES else t.x * back
            part = part * (g.weight * t.sign) if g.weight * t.sign != 1.0 else part
            r_x = part if r_x is None else r_x + part
            if call.want_params():
                xin = torch.ones_like(x) if t.x is ONES else t.x.expand(x.shape)  # ZBox's bounds: one sample
                gw = vjp(lambda ww, xi=xin: f(xi, ww, None), (t.w,), s, wrt=(0,))[0]
                pw = t.w * gw * (g.weight * t.sign)
                r_w = pw if r_w is None else r_w + pw
        if call.track:
            bias = sum(t.sign * _bias_like(call, t.b, z) for t in g.terms)
            kept = kept + g.weight * (s * (z - bias)).sum()
    if call.track:
        call.absorb(relevance.sum() - kept)
    if r_w is not None:
        call.param_relevance(1, r_w)
    return r_x


def _signsplit_folded(call: RuleCall, f, x: Tensor, w: Tensor, b: Tensor | None, relevance: Tensor) -> Tensor:
    """ZPlus, AlphaBeta and Gamma with fewer products of the op than ``_groups``' term-by-term formula.

    All three use a weight pair ``W1 = a W + c W+``, ``W2 = a W + c W-`` ((a, c) = (0, 1) for ZPlus/AlphaBeta,
    (1, gamma) for Gamma; biases likewise) and the denominators ``z1 = x+ W1 + x- W2 + b1``,
    ``z2 = x+ W2 + x- W1 + b2``.
    Both are sums of ``z' = f(x; W)`` (the forward output less its bias) and of ``P = sum (x w)+``, the positive
    contributions: ``z1 = a z' + c P + b1``, ``z2 = a z' + c (z' - P) + b2``. ``P`` is one product, ``f(x; W+)``
    after a ReLU, else ``(z' + f(|x|; |W|)) / 2``; it is clamped to ``P >= 0`` and ``z' - P`` to ``<= 0`` so
    rounding cannot flip a stabiliser's sign. The relevance ``x+ (s1 W1 + s2 W2) + x- (s1 W2 + s2 W1)`` takes one
    transposed product per (factor, weight) pair it names. Gamma on a mixed-sign input folds its four into two,
    ``x ((a + c/2) S W) + |x| ((c/2) D |W|)`` with ``S = s1 + s2``, ``D = s1 - s2``; ZPlus and AlphaBeta do not
    (see the comment below). Products of the op: at most 3 (ZPlus, Gamma) or 5 (AlphaBeta, mixed-sign input),
    against 4 and 8 term by term; after a ReLU 2, 3 and 3, against 2, 4 and 4 (docs/rules.md).
    """
    rule = call.rule
    nonneg = call.nonneg(call.node.args[0])
    gamma = isinstance(rule, Gamma)
    a, c = (1.0, rule.gamma) if gamma else (0.0, 1.0)
    two_sided = isinstance(rule, AlphaBeta) or (gamma and not call.out_nonneg(support_only=True))

    def combo(first: Tensor | None, second: Tensor) -> Tensor:  # a first + c second, without products by 0 and 1
        if a == 0.0:
            return second if c == 1.0 else c * second
        return torch.add(first, second, alpha=c)  # one pass

    wp, wn = w.clamp(min=0), w.clamp(max=0)
    w1, w2 = combo(w, wp), combo(w, wn)  # weights only: hoisted out of the per-call program
    bp = None if b is None else b.clamp(min=0)
    b1 = None if b is None else combo(b, bp)  # z1's bias
    o = None
    if gamma or two_sided or not nonneg:  # the output (Epsilon asks for the same promise)
        o = call.out(support_only=True)
    # with pb = P + b+ (P = sum (x w)+) and o = z' + b: z1 = a o + c pb and z2 = a o + c nb, nb = o - pb = N + b-
    if nonneg and not two_sided:  # one product, as many as the term-by-term formula takes
        z1 = f(x, w1, b1)
    else:
        if nonneg:
            pb = f(x, wp, bp)
        else:
            zb = o if b is None else o - _bias_like(call, b, o)
            # halved before the sum: in float16 z' + f(|x|; |W|) overflows at half the range its parts reach
            pb = (zb * 0.5 + f(x.abs(), w.abs(), None) * 0.5).clamp(min=0)
            pb = pb if b is None else pb + _bias_like(call, bp, pb)
        z1 = combo(o, pb)
    if gamma:
        s1 = relevance / stabilize(z1, rule.stabilizer) * (o > 0)
    else:
        s1 = relevance / stabilize(z1, rule.stabilizer, nonneg=True)
        s1 = s1 * rule.alpha if isinstance(rule, AlphaBeta) else s1
    s2 = z2 = None
    if two_sided:
        z2 = combo(o, (o - pb).clamp(max=0))
        if gamma:
            s2 = relevance / stabilize(z2, rule.stabilizer) * (o < 0)
        else:  # z2 <= 0: stab(z2) = z2 - eps
            s2 = relevance * rule.beta / (rule.stabilizer - z2)
    if call.track:  # relevance the products keep (z less its bias share); the rest went to biases and stabilisers
        kept = (s1 * (z1 if b is None else z1 - _bias_like(call, b1, z1))).sum()
        if s2 is not None:
            kept = kept + (s2 * (z2 if b is None else z2 - _bias_like(call, combo(b, b.clamp(max=0)), z2))).sum()
        call.absorb(relevance.sum() - kept)

    def back(s: Tensor, weight: Tensor) -> Tensor:
        return vjp(lambda xx: f(xx, weight, None), (x,), s, wrt=(0,))[0]

    if s2 is None:
        return x * back(s1, w1) if nonneg else x.clamp(min=0) * back(s1, w1) + x.clamp(max=0) * back(s1, w2)
    if nonneg:
        return x * (back(s1, w1) + back(s2, w2))
    if gamma:  # the fold: numerators x w + c (x w)+- lose only c/2 |x w| to cancellation, never a whole term
        g_w, g_abs = back(s1 + s2, w) * (a + c / 2), back(s1 - s2, w.abs()) * (c / 2)
        return x * g_w + x.abs() * g_abs
    # AlphaBeta: each numerator is a sum of contributions of one sign, exactly 0 where the contributions are, while
    # its factor can be ~R / eps; a fold would cancel such terms with rounding noise instead of skipping them
    return x.clamp(min=0) * (back(s1, w1) + back(s2, w2)) + x.clamp(max=0) * (back(s1, w2) + back(s2, w1))


LINEAR_RULES = (Epsilon, ZPlus, AlphaBeta, Gamma, Flat, WSquare, ZBox)


@register_rule(aten.linear.default, group="linear", accepts=LINEAR_RULES, default=Epsilon())
def linear_family(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``aten.linear(x, W, b)`` and ``aten.convolution(x, W, b, ...)``: any of the linear-family rules."""
    x, w, b = call.arg(0), call.arg(1), call.arg(2)
    fast = _kernel_relevance(call, x, w, b, relevance)
    if fast is not None:
        return call.first(fast)
    f = _affine(call)
    if isinstance(call.rule, (ZPlus, AlphaBeta, Gamma)) and not call.want_params():
        return call.first(_signsplit_folded(call, f, x, w, b, relevance))
    return call.first(_propagate(call, f, x, _groups(call, x, w, b), relevance))


register_rule(aten.convolution.default, group="conv", accepts=LINEAR_RULES, default=Epsilon())(linear_family)


POOL_OPS = [
    aten.avg_pool1d.default,
    aten.avg_pool2d.default,
    aten.avg_pool3d.default,
    aten._adaptive_avg_pool2d.default,
    aten._adaptive_avg_pool3d.default,
    aten.adaptive_avg_pool1d.default,
    aten.mean.dim,
    aten.mean.default,
    aten.sum.dim_IntList,
    aten.sum.default,
]


@register_rule(POOL_OPS, group="pool", accepts=(Norm, Epsilon, Flat), default=Norm())
def average_pool(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """Sums and averages, ``z = f(x)`` linear without parameters: ``R_x = x * J_f^T (R / stab(z))``.

    Norm and Epsilon coincide here (no bias); Flat spreads relevance uniformly over each window.
    """
    node = call.node
    x = call.arg(0)
    rest = tuple(call.arg(i) for i in range(1, len(node.args)))
    kwargs = dict(node.kwargs)

    def f(xx: Tensor) -> Tensor:
        return node.target(xx, *rest, **kwargs)

    rule = call.rule
    eps = call.eps
    if isinstance(rule, Flat):
        ones = torch.ones_like(x)
        s = relevance / stabilize(f(ones), eps)
        r = vjp(f, (x,), s, wrt=(0,))[0]
    else:
        z = call.out(support_only=True)
        s = relevance / stabilize(z, eps, nonneg=call.out_nonneg(support_only=True))
        r = x * vjp(f, (x,), s, wrt=(0,))[0]
        if call.track:
            call.absorb(relevance - s * z)
    return call.first(r)


# Linear interpolation (bilinear, with or without antialiasing; 1-d and 3-d where capture keeps them whole): each
# output is a convex combination of input values (non-negative weights summing to one, for either ``align_corners``),
# so these are sums with fixed weights and take the same rules as average pooling. ``nearest`` upsampling is exact
# routing (``routing.py``), ``area`` captures as adaptive average pooling (above), ``bicubic`` (negative weights) and
# ``nearest-exact`` decompose into index, multiply and add ops with their own rules. Bicubic with antialiasing stays
# whole: a fixed linear map too (some weights negative, each output's summing to one), it takes the same rules, and
# ``Norm``'s ``x * J^T (R / stab(z))`` is the epsilon rule of that map.
UPSAMPLE_OPS = [
    aten.upsample_bilinear2d.vec,
    aten.upsample_bilinear2d.default,
    aten._upsample_bilinear2d_aa.vec,
    aten._upsample_bilinear2d_aa.default,
    aten._upsample_bicubic2d_aa.vec,
    aten._upsample_bicubic2d_aa.default,
    aten.upsample_linear1d.vec,
    aten.upsample_linear1d.default,
    aten.upsample_trilinear3d.vec,
    aten.upsample_trilinear3d.default,
]

# ``R_x = x * J^T (R / stab(z))`` with ``z`` the interpolated output (``Norm``/``Epsilon``); ``Flat``: ``J^T (R /
# stab(J 1))``, which is ``J^T R`` (the weights of each output sum to one). Conservative up to the stabiliser.
register_rule(UPSAMPLE_OPS, group="pool", accepts=(Norm, Epsilon, Flat), default=Norm())(average_pool)

# Sampling at given grid positions (``F.grid_sample``: spatial transformers, deformable sampling, optical-flow
# warping) is linear in the sampled image for a fixed grid: each output is a weighted sum of the input pixels around
# its grid point (bilinear or bicubic weights, or a single pixel for nearest; out-of-bounds reads of ``zeros`` padding
# contribute nothing). So it takes the same rules, conservative up to the stabiliser. The grid says *where* to read,
# like an index, and receives no relevance even when it is computed from the input (a spatial transformer's
# localisation network): the relevance of every output goes to the pixels it was read from.
GRID_SAMPLERS = [aten.grid_sampler_2d.default, aten.grid_sampler_3d.default]
register_rule(GRID_SAMPLERS, group="pool", accepts=(Norm, Epsilon, Flat), default=Norm())(average_pool)


def _kernel_relevance(call: RuleCall, x: Tensor, w: Tensor, b: Tensor | None, relevance: Tensor) -> Tensor | None:
    """The same rule through the Triton kernels of ``kernels/`` (CUDA), or ``None`` where they do not apply.

    The kernels are ``torch.library`` ops, so the traced program records them as single nodes. Bookkeeping
    (absorbed relevance, parameter relevance) stays on the torch path.
    """
    kernels = call.kernels(x)
    if kernels is None:
        return None
    rule, node = call.rule, call.node
    if node.target is aten.convolution.default:
        stride, padding, dilation, transposed, _, groups = node.args[3:9]
        if transposed or x.dim() != 4 or len(stride) != 2:
            return None
        conv = {"stride": tuple(stride), "padding": tuple(padding), "dilation": tuple(dilation), "groups": groups}
    elif node.target is aten.linear.default:
        if call.options.kernels == "auto":  # measured slower than cuBLAS on an H200 (docs/gpu.md): the torch rule
            return None
        conv = None
    else:
        return None
    if isinstance(rule, Epsilon):
        z = call.out(support_only=True)
        if conv is None:
            return kernels.epsilon_linear(x, w, z, relevance, eps=rule.epsilon)
        return kernels.epsilon_conv2d(x, w, z, relevance, eps=rule.epsilon, **conv)
    names = {ZPlus: "zplus", AlphaBeta: "alphabeta", Gamma: "gamma"}
    name = names.get(type(rule))
    if name is None:
        return None
    kw = {"eps": rule.stabilizer, "x_nonneg": call.nonneg(node.args[0])}
    if isinstance(rule, AlphaBeta):
        kw.update(alpha=rule.alpha, beta=rule.beta)
    z = None
    if isinstance(rule, Gamma):
        kw["gamma"] = rule.gamma
        if call.out_nonneg(support_only=True):  # no relevance where o < 0 (before a ReLU): the positive half alone
            name = "gamma+"
    if not isinstance(rule, ZPlus):  # Gamma's masks; the folded pipelines share a product with it (AlphaBeta)
        z = call.out(support_only=True)
    if conv is None:
        return kernels.signsplit_linear(x, w, b, z, relevance, name, **kw)
    return kernels.signsplit_conv2d(x, w, b, z, relevance, name, **kw, **conv)
