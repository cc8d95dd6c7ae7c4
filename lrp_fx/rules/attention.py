"""Attention: softmax, products of two matrices, and scaled-dot-product attention kept whole.

Rule objects (choose them per node through a composite; the ``attnlrp`` and ``cplrp`` presets set them):

* ``Taylor()`` (softmax, AttnLRP, Achtibat et al. 2024): the first-order Taylor decomposition at the input with its
  bias term absorbed, ``R_x = x * (R - s * sum(R))`` along the softmax dimension, ``s`` the softmax output.
* ``Stop()``: the node is treated as a constant: no relevance reaches its inputs.
* ``UniformProduct()`` / ``Epsilon(eps)`` (products ``Y = A @ B``): the epsilon rule on the bilinear map with the
  relevance split evenly between two activation factors (AttnLRP's uniform rule); one factor constant: plain epsilon
  on the other, as for a linear layer. ``UniformProduct`` uses ``eps = 1e-6``.
* ``ConstantAttention()`` (products and attention, CP-LRP, Ali et al. 2022): attention probabilities are constants,
  so relevance flows only through the values: ``R_V = V * (P^T (R / stab(Y)))``, nothing to queries and keys.

Conservation: the product rules are conservative up to the stabiliser (``sum R_A + sum R_B = sum R * Y / stab(Y)``);
the softmax rule is not (``sum R_x = sum x*R - sum(s*x) * sum R``); what it loses is recorded as absorbed.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, fx

from .autodiff import vjp
from .base import Epsilon, Pass, Rule, UniformProduct
from .call import RuleCall, sum_to, times_finite
from .registry import aten, register_rule
from .stabilize import stabilize


@dataclass(frozen=True)
class Taylor(Rule):
    """AttnLRP's softmax rule: ``R_x = x * (R - s * sum(R))`` (first-order Taylor at ``x``, bias absorbed)."""

    support: ClassVar[str] = "proportional"


@dataclass(frozen=True)
class Stop(Rule):
    """The node is a constant for relevance: its inputs receive none."""


@dataclass(frozen=True)
class ConstantAttention(Rule):
    """CP-LRP: attention probabilities (a softmax output, possibly reshaped) are constants in products."""

    epsilon: float = 1e-6


# ops between a softmax and the product that consumes its output (reshapes, casts, dropout, masking)
_ATTENTION_PATH = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.expand.default,
    aten.clone.default,
    aten.contiguous.default,
    aten.alias.default,
    aten.permute.default,
    aten.transpose.int,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.slice.Tensor,
    aten.select.int,
    aten._to_copy.default,
    aten.dropout.default,
    aten.where.self,
    aten.masked_fill.Scalar,
    aten.masked_fill.Tensor,
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.div.Tensor,
    aten.div.Scalar,
    operator.getitem,
}


def softmax_source(call: RuleCall, node: Any) -> fx.Node | None:
    """The softmax whose output ``node`` is, reached through reshapes, casts, masking or constant scaling; else
    ``None``."""
    for _ in range(32):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        if node.target is aten._softmax.default:
            return node
        if node.target not in _ATTENTION_PATH:
            return None
        acts = [a for a in node.all_input_nodes if call.is_activation(a)]
        if len(acts) != 1:
            return None
        node = acts[0]
    return None


def weights_a_product(softmax: fx.Node, is_activation: Any) -> bool:
    """Whether the output of ``softmax`` (through reshapes, casts, masking or constant scaling) multiplies another
    activation: a matrix product (attention weights) or an element-wise one (RAFT's softmax-weighted upsampling mask),
    what CP-LRP treats as constants; not a classifier's output probabilities."""
    todo, seen = [softmax], set()
    while todo:
        node = todo.pop()
        for user in node.users:
            if user in seen or user.op != "call_function":
                continue
            seen.add(user)
            if user.target in MATMUL_OPS or user.target is aten.scaled_dot_product_attention.default:
                return True
            if user.target is aten.mul.Tensor and any(a is not node and is_activation(a) for a in user.args[:2]):
                return True
            if user.target in _ATTENTION_PATH and len(seen) < 64:
                todo.append(user)
    return False


def from_softmax(call: RuleCall, node: Any) -> bool:
    """Whether ``node`` is a softmax output reached through reshapes, casts, masking or constant scaling."""
    return softmax_source(call, node) is not None


def from_stopped_softmax(call: RuleCall, node: Any) -> bool:
    """Whether ``node`` is the output of a softmax whose rule is ``Stop`` (CP-LRP: attention weights are constants):
    a constant factor in any product."""
    source = softmax_source(call, node)
    return source is not None and isinstance(call.rule_of(source), Stop)


def _dense(t: Tensor) -> bool:
    """Whether ``t``'s elements tile its storage without overlaps or gaps (strides of a permuted contiguous tensor)."""
    try:
        expected = 1
        for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
            if stride != expected:
                return False
            expected *= size
        return True
    except Exception:  # symbolic sizes that cannot be compared: copy to be safe
        return False


def dense_value(call: RuleCall, n: Any) -> Any:
    """Forward value of ``n``, copied to a contiguous tensor if the captured value is not dense (an ``expand``ed view,
    e.g. grouped-query attention's repeated heads). A promise is traced with ``empty_like`` strides, so ops that pick
    ``view`` over ``reshape`` from the strides (``matmul``) must not see such a value as-is."""
    v = call.value(n)
    val = n.meta.get("val") if isinstance(n, fx.Node) else None
    if isinstance(val, Tensor) and isinstance(v, Tensor) and not _dense(val):
        v = v.clone(memory_format=torch.contiguous_format)
    return v


def _eps(rule: Rule) -> float:
    return getattr(rule, "epsilon", 1e-6)


def _mt(t: Tensor) -> Tensor:
    return t.transpose(-2, -1)


def product_shares(a: Tensor, b: Tensor, s: Tensor, wa: float, wb: float) -> tuple[Tensor | None, Tensor | None]:
    """``R_A = wa * A * (s B^T)`` and ``R_B = wb * B * (A^T s)`` for ``Y = A @ B`` and ``s = R / stab(Y)``
    (``None`` where the weight is 0). Batch dimensions of ``A`` and ``B`` broadcast; each share is reduced to its
    factor's shape."""
    ra = rb = None
    if wa:
        ra = sum_to(a * torch.matmul(s, _mt(b)), a.shape)
        ra = ra * wa if wa != 1 else ra
    if wb:
        rb = sum_to(b * torch.matmul(_mt(a), s), b.shape)
        rb = rb * wb if wb != 1 else rb
    return ra, rb


def _weights(act_a: bool, act_b: bool) -> tuple[float, float]:
    if act_a and act_b:
        return 0.5, 0.5
    return (1.0 if act_a else 0.0), (1.0 if act_b else 0.0)


MATMUL_OPS = [aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default, aten.addbmm.default]
_WITH_C = (aten.addmm.default, aten.baddbmm.default, aten.addbmm.default)


@register_rule(
    MATMUL_OPS, group="matmul", accepts=(UniformProduct, Epsilon, ConstantAttention), default=UniformProduct()
)
def matmul(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``Y = A @ B`` (``mm``, ``bmm``), or ``Y = beta * C + alpha * A @ B`` (``addmm``, ``baddbmm``; ``addbmm``, whose
    ``A @ B`` is summed over the batch: ``s`` broadcasts over it).

    ``s = R / stab(Y)``; ``R_A = w_A * alpha * A * (s B^T)``, ``R_B = w_B * alpha * B * (A^T s)``,
    ``R_C = beta * C * s``, with ``w = 1/2`` for each of two activation factors (AttnLRP's uniform epsilon split),
    ``w = 1`` for the only activation factor (plain epsilon) and ``w = 0`` for a constant one. Under
    ``ConstantAttention`` a factor computed by a softmax counts as constant (CP-LRP). Conservative up to the
    stabiliser and constant ``C``'s share, both recorded as absorbed.
    """
    node = call.node
    has_c = node.target in _WITH_C
    ia, ib = (1, 2) if has_c else (0, 1)
    an, bn = node.args[ia], node.args[ib]
    act_a, act_b = call.is_activation(an), call.is_activation(bn)
    if isinstance(call.rule, ConstantAttention):
        act_a = act_a and not from_softmax(call, an)
        act_b = act_b and not from_softmax(call, bn)
    wa, wb = _weights(act_a, act_b)
    beta = node.kwargs.get("beta", 1) if has_c else 0
    alpha = node.kwargs.get("alpha", 1) if has_c else 1
    act_c = has_c and beta != 0 and call.is_activation(node.args[0])
    if not (wa or wb or act_c):  # every factor constant (CP-LRP on attention weights): nothing flows
        if call.track:
            call.absorb(relevance)
        return call.assign({})
    a, b = dense_value(call, an), dense_value(call, bn)
    z = call.out(support_only=True)
    s = relevance / stabilize(z, _eps(call.rule))
    ra, rb = product_shares(a, b, s * alpha if alpha != 1 else s, wa, wb)
    shares: dict[int, Tensor | None] = {ia: ra, ib: rb}
    if act_c:
        c = call.value(node.args[0])
        shares[0] = sum_to(c * s * beta, c.shape)
    if call.track:
        kept = (wa + wb) * (s * (z - (beta * call.value(node.args[0]) if has_c else 0))).sum()
        if act_c:
            kept = kept + shares[0].sum()
        call.absorb(relevance.sum() - kept)
    return call.assign(shares)


@register_rule(aten._trilinear.default, group="matmul", accepts=(UniformProduct, Epsilon), default=UniformProduct())
def trilinear(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``Y = sum over sumdim of x1 * x2 * x3`` (``nn.Bilinear``: ``Y_o = x1_i W_oij x2_j``, plus a bias added after).

    The uniform epsilon rule of a product, as for ``A @ B``: ``s = R / stab(Y)``, each of the ``n`` activation factors
    gets ``R_i = x_i * dot(s, dY/dx_i) / n``. ``Y`` is linear in each factor, so each share sums to ``sum(s Y) / n``:
    conservative up to the stabiliser (a factor that is one tensor given twice, ``bilinear(x, x)``, gets two shares).
    """
    node = call.node
    positions = [i for i in range(3) if call.is_activation(node.args[i])]
    values = [call.value(node.args[i]) for i in range(3)]
    z = call.out(support_only=True)
    s = relevance / stabilize(z, _eps(call.rule))
    grads = vjp(lambda *t: node.target(*t, *node.args[3:]), values, s, wrt=positions)
    if call.track:
        call.absorb(relevance - s * z)
    return call.assign({i: values[i] * g / len(positions) for i, g in zip(positions, grads)})


def softmax_taylor(x: Tensor, s: Tensor, relevance: Tensor, dim: int) -> Tensor:
    """``x * (R - s * sum(R))`` along ``dim``; zero where ``s == 0`` (masked with -inf or finfo.min, or underflowed)
    and where ``x`` is itself a mask value (``<= finfo.min / 2``), so masked logits give 0, never NaN."""
    total = relevance.sum(dim, keepdim=True)
    r = x * (relevance - s * total)
    valid = (s != 0) & (x > torch.finfo(x.dtype).min / 2)
    return torch.where(valid, r, torch.zeros((), dtype=r.dtype, device=r.device))


@register_rule(aten._softmax.default, group="softmax", accepts=(Taylor, Pass, Stop), default=Taylor())
def softmax(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``s = softmax(x, dim)``.

    * ``Taylor`` (AttnLRP): ``R_x = x * (R - s * sum_dim(R))``, 0 for masked logits. Not conservative: the Taylor
      bias ``sum(R) - sum(R_x)`` is recorded as absorbed.
    * ``Pass``: ``R_x = R`` (conservative, ignores the logits' values).
    * ``Stop``: nothing flows (attention treated as constant).
    """
    rule = call.rule
    if isinstance(rule, Stop):
        if call.track:  # whatever reaches a constant stays there: recorded, never lost silently
            call.absorb(relevance)
        return call.assign({})
    if isinstance(rule, Pass):
        return call.first(relevance)
    x = call.arg(0)
    s = call.out()
    r = softmax_taylor(x, s.to(x.dtype), relevance.to(x.dtype), call.node.args[1])
    if call.track:
        call.absorb(relevance - r)
    return call.first(r)


@register_rule(aten._log_softmax.default, group="log_softmax", accepts=(Taylor, Pass), default=Taylor())
def log_softmax(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = log_softmax(x, dim) = x - logsumexp(x)``, most often a classifier's last op.

    * ``Taylor`` (the softmax rule's derivation, gradient times input with each output's relevance normalised by its
      value): ``R_x = x * (q - s * sum_dim(q))`` with ``q = R / stab(y)`` and ``s = exp(y)``. Explaining class ``c``
      (``R = onehot(c) * y``) gives ``q = onehot(c)`` and ``R_x = x * (onehot(c) - s)``: the logit of ``c`` for, every
      logit against in proportion to its probability, whatever the sign of ``log p_c``. Not conservative; the
      difference is recorded as absorbed. Its own group (not ``softmax``), so CP-LRP's constant attention leaves it.
    * ``Pass``: ``R_x = R`` (explain the log-probability as if it were the logit; conservative).
    """
    if isinstance(call.rule, Pass):
        return call.first(relevance)
    x = call.arg(0)
    y = call.out().to(x.dtype)
    q = relevance.to(x.dtype) / stabilize(y)
    # softmax_taylor's zeros where exp(y) underflows would drop the explained class's own term when its probability
    # underflows (log p < -103 in float32, < -17 in float16): only masked logits get nothing here
    r = x * (q - y.exp() * q.sum(call.node.args[1], keepdim=True))
    masked = x <= torch.finfo(x.dtype).min / 2
    r = torch.where(masked, torch.zeros((), dtype=r.dtype, device=r.device), r)
    if call.track:
        call.absorb(relevance - r)
    return call.first(r)


# ``LRP_FX_KERNELS=auto`` sends attention to the kernel from this many keys on: there the dense rule's [N, N] scores
# dominate memory, and the kernel was measured 3.1x faster than the dense rule at 4k tokens (H200, docs/gpu.md);
# shorter sequences (a ViT's 197 tokens) keep the dense rule, whose batched products have not been measured against
# the kernel's recomputation
ATTENTION_KERNEL_MIN_KEYS = 1024


def _key_padding(mask: Any, batch: int, n_k: int) -> Tensor | None | bool:
    """A boolean ``attn_mask`` that only masks keys (``[B or 1, 1, 1, Nk]``) as the kernels' ``[B, Nk]``; ``None``
    without a mask, ``False`` for any other mask (per query, per head or additive: the torch rule serves)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1:3] != (1, 1):
        return False
    return mask[:, 0, 0, :].expand(batch, n_k).contiguous()


def _kernel_attention(
    call: RuleCall, a: dict[str, Any], q: Tensor, k: Tensor, v: Tensor, mask: Any, relevance: Tensor, eps: float
) -> dict[int, Tensor | None] | None:
    """The rule through ``kernels.attention_relevance`` (Triton on CUDA: memory linear in the sequence length), or
    ``None`` where that kernel does not compute this call's rule: bookkeeping (``track_absorbed``), dropout, batch
    broadcasting, masks other than key padding, and AttnLRP unless ``q``, ``k`` and ``v`` all carry relevance (the
    kernel splits every product evenly). The kernel computes the same formulas as below (``kernels/attention.py``)."""
    kernels = call.kernels(q)
    if kernels is None or a["dropout_p"]:
        return None
    if call.options.kernels == "auto" and k.shape[-2] < ATTENTION_KERNEL_MIN_KEYS:
        return None
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        return None  # batch broadcasting, a value size unlike the key size
    if q.shape[1] % k.shape[1] or not (q.dtype == k.dtype == v.dtype == relevance.dtype):
        return None
    act_q, act_k, act_v = (call.is_activation(a[n]) for n in ("query", "key", "value"))
    if isinstance(call.rule, ConstantAttention):
        rule, wanted = "cp", act_v
    else:
        rule, wanted = "attnlrp", act_q and act_k and act_v
    padding = _key_padding(mask, q.shape[0], k.shape[-2])
    if not wanted or padding is False:
        return None
    r_q, r_k, r_v = kernels.attention_relevance(
        q, k, v, relevance, rule, bool(a["is_causal"]), padding, a["scale"], eps
    )
    return {0: r_q, 1: r_k, 2: r_v} if rule == "attnlrp" else {2: r_v}


def _sdpa_args(call: RuleCall) -> dict[str, Any]:
    names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal"]
    node = call.node
    out = {k: None for k in names}
    out.update(dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)
    for k, a in zip(names, node.args):
        out[k] = a
    out.update(node.kwargs)
    return out


def _repeat_heads(t: Tensor, groups: int) -> Tensor:
    return t if groups == 1 else t.repeat_interleave(groups, dim=-3)


def _times(t: Tensor, c: float) -> Tensor:
    return t if c == 1 else t.mul_(c)


def _fold_heads(r: Tensor | None, groups: int, shape: torch.Size) -> Tensor | None:
    if r is None or groups == 1:
        return r
    return r.unflatten(-3, (shape[-3], groups)).sum(-3)


@register_rule(
    aten.scaled_dot_product_attention.default,
    group="attention",
    accepts=(UniformProduct, Epsilon, ConstantAttention),
    default=UniformProduct(),
)
def attention(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``Y = softmax(scale * Q K^T + M) V`` (``M``: additive float mask, boolean mask, or causal), kept whole.

    The rule is the composition of the rules of its pieces, written out:

    1. ``P V``: ``s = R / stab(Y)``, ``R_P = w_P * P * (s V^T)``, ``R_V = w_V * V * (P^T s)``;
    2. softmax (Taylor): ``R_L = L * (R_P - P * sum_k R_P)``, 0 at masked positions;
    3. the mask: ``L = S + M`` with ``S = scale * Q K^T``: ``R_S = S * R_L / stab(L)``, the constant mask keeps the
       rest (0 where ``M = 0``; boolean and causal masks give ``R_S = R_L``);
    4. ``Q K^T``: ``t = R_S / stab(S)``, ``R_Q = w_Q * scale * Q * (t K)``, ``R_K = w_K * scale * K * (t^T Q)``.

    ``w = 1/2`` each for two activation factors, ``1`` for the only one (``UniformProduct``/``Epsilon``, AttnLRP).
    ``ConstantAttention`` (CP-LRP): ``P`` is constant, ``R_V = V * (P^T s)``, nothing to ``Q`` and ``K``. Grouped-query
    attention (``enable_gqa``) repeats K and V heads and sums their relevance back. Steps 1, 3 and 4 are conservative
    up to stabilisers; step 2 loses the softmax's Taylor bias (recorded as absorbed).
    """
    a = _sdpa_args(call)
    qn, kn, vn, mn = a["query"], a["key"], a["value"], a["attn_mask"]
    q, k, v = dense_value(call, qn), dense_value(call, kn), dense_value(call, vn)
    mask = call.value(mn) if isinstance(mn, fx.Node) else mn
    eps = _eps(call.rule)
    fast = _kernel_attention(call, a, q, k, v, mask, relevance, eps)
    if fast is not None:
        return call.assign(fast)
    groups = q.shape[-3] // k.shape[-3] if a["enable_gqa"] and q.dim() >= 3 else 1
    # contiguous once: matmul folds batch and head dimensions, and heads split off a projection
    # ([B, N, H, d].transpose(1, 2)) do not fold, so every product would copy them again
    q0, k0, v0 = q, _repeat_heads(k, groups), _repeat_heads(v, groups)
    q, kr, vr = q0.contiguous(), k0.contiguous(), v0.contiguous()
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    # every pass over the [.., Nq, Nk] scores costs as much as a small matmul: the scale goes on q, masks are
    # applied in place, and only a masked call looks for fully masked rows
    S = torch.matmul(q * scale, _mt(kr))
    L = S.clone() if call.track and (a["is_causal"] or mask is not None) else S
    if a["is_causal"]:
        n_q, n_k = q.shape[-2], k.shape[-2]
        causal = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril()
        L = L.masked_fill_(~causal, float("-inf"))
    if mask is not None:
        L = L.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else L.add_(mask)
    P = torch.softmax(L, dim=-1)
    if a["is_causal"] or mask is not None:  # fully masked rows: softmax gives NaN, torch's math attention 0
        P = P.nan_to_num_(0.0)
    Y = call.out(support_only=True)

    act_q, act_k, act_v = (call.is_activation(n) for n in (qn, kn, vn))
    constant_p = isinstance(call.rule, ConstantAttention)
    act_p = (act_q or act_k) and not constant_p
    w_p, w_v = _weights(act_p, act_v)
    s = relevance / stabilize(Y, eps)
    out: dict[int, Tensor | None] = {}
    absorbed = relevance.sum() - (w_p + w_v) * (s * Y).sum() if call.track else None
    if w_v:
        # the relevances take the layout of the original q, k, v (first operand), so that the views that made the
        # heads (transpose, reshape) route them back without a copy
        out[2] = _fold_heads(_times(v0 * torch.matmul(_mt(P), s), w_v), groups, v.shape)
        out[2] = sum_to(out[2], v.shape)  # k and v broadcast over heads or samples (multi-query, a shared memory)
    if w_p:
        # R_P = w_P * P * (s V^T); softmax (Taylor): R_L = L * g with g = R_P - P * sum_k R_P (g = 0 where P = 0);
        # the mask's share: R_S = S * g; the epsilon rule on S = scale * Q K^T divides R_S by S again, so its
        # product is formed from t = g directly (the eps -> 0 limit: exact, and no division by a score near 0)
        t = torch.matmul(s, _mt(vr)).mul_(P)
        r_p_sum = t.sum() * w_p if call.track else None
        t = t.addcmul_(P, t.sum(-1, keepdim=True), value=-1.0)
        w_q, w_k = _weights(act_q, act_k)
        c = w_p * scale  # the weights and the scale go on the [.., N, d] products, not on t
        if w_q:
            out[0] = sum_to(_times(q0 * torch.matmul(t, kr), c * w_q), q.shape)
        if w_k:
            out[1] = sum_to(_fold_heads(_times(k0 * torch.matmul(_mt(t), q), c * w_k), groups, k.shape), k.shape)
        mask_share = None
        if isinstance(mn, fx.Node) and call.is_activation(mn) and mask.is_floating_point():
            # an input-dependent additive mask (a learned bias) takes its share of L = S + M, as add's rule gives it
            if len(call.node.args) <= 3 or call.node.args[3] is not mn:
                raise ValueError("an input-dependent attn_mask must be passed positionally to get its relevance")
            mask_share = times_finite(t, mask) * w_p
            out[3] = sum_to(mask_share, mask.shape)
        if absorbed is not None:
            absorbed = absorbed + r_p_sum - (w_q + w_k) * w_p * (t * S).sum()
            absorbed = absorbed if mask_share is None else absorbed - mask_share.sum()
    if absorbed is not None:
        call.absorb(absorbed)
    return call.assign(out)
