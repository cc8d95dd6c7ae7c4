"""Normalisers: RMS norm and friends, decomposed, with the normaliser treated as a constant.

Layer norm stays whole (``aten.native_layer_norm``, rule in ``elementwise.py``). RMS norm and hand-written
normalisations decompose to core aten, e.g. ``torch.nn.RMSNorm`` / Llama's ``LlamaRMSNorm``::

    pow(x, 2) -> mean(-1, keepdim) -> add(eps) -> rsqrt -> mul(x, .) -> mul(weight, .)

and ``F.normalize`` to ``x / clamp(pow(sum(pow(x, 2)), 0.5), eps)``. AttnLRP (like CP-LRP and the layer-norm rule)
treats the normaliser ``r = rsqrt(mean(x^2) + eps)`` as a constant. ``lrp_fx.prepare.mark_constants`` recognises it
with ``is_normaliser`` and marks it, so it is not an activation: ``x * r`` is then a product with a constant, whose
rule hands all relevance to ``x`` (``R_x = R``: the epsilon rule of a diagonal linear map), the weight multiplication
likewise, and ``x / ||x||`` hands all to the numerator. RMS norm is thus the identity for relevance, exactly
conservative; the statistic's subgraph (``pow``, ``mean``, ``rsqrt``) carries no relevance and needs no rule.

A node is a normaliser when

* it is ``rsqrt``, ``sqrt`` or ``pow(., +-0.5)`` of an expression that reaches a reduction (``mean``, ``sum``,
  ``var``, ``var_mean``, a vector norm) through ``+``, ``*``, ``/`` by constants, casts and clamps, or it is a vector
  norm (``linalg_vector_norm``); and
* it scales an activation: through broadcasts, ``+ eps``, clamps and reciprocals it reaches a ``mul`` with another
  input-dependent factor or the denominator of a ``div``. (A norm that *is* a feature, e.g. the output, keeps its
  relevance.)

Centring (``x - mean(x)`` in a hand-written layer norm) is not a normaliser: the mean is linear in ``x`` and its share
flows back to ``x`` through the ``sub`` and ``mean`` rules, conservatively.

Group norm stays whole (``aten.native_group_norm``, met in the convolutional feature encoders of wav2vec 2.0 and
HuBERT) and gets the layer-norm rules: statistics constant, then either epsilon on the per-channel affine part
(``Pass``) or epsilon on the whole map made linear, centring included (``Epsilon``, the default in every preset).
Instance norm without running statistics (``aten._native_batch_norm_legit.no_stats`` on the input viewed as
``[1, N * C, ...]``) gets the same two rules, with statistics per sample and channel: what ``GroupNorm(C, C)`` gets.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx

from .base import Epsilon, Pass
from .call import RuleCall
from .registry import register_rule
from .stabilize import stabilize

aten = torch.ops.aten

# reductions whose (root of a) value is a normaliser
REDUCTIONS = {
    aten.mean.dim,
    aten.mean.default,
    aten.sum.dim_IntList,
    aten.sum.default,
    aten.var.correction,
    aten.var.dim,
    aten.var.default,
}
VECTOR_NORMS = {aten.linalg_vector_norm.default}

# ops between a statistic and its root: "+ eps", "* c", casts, clamps
_TO_STATISTIC = {
    aten.add.Tensor,
    aten.add.Scalar,
    aten.mul.Tensor,
    aten.mul.Scalar,
    aten.div.Tensor,
    aten.div.Scalar,
    aten._to_copy.default,
    aten.clamp.default,
    aten.clamp_min.default,
}


def _root_of_statistic(node: fx.Node, dependent: set[fx.Node]) -> bool:
    """``rsqrt``/``sqrt``/``pow(., +-0.5)`` of an expression built on a reduction, or a vector norm."""
    if node.target in VECTOR_NORMS:
        return True
    if node.target in (aten.rsqrt.default, aten.sqrt.default):
        pass
    elif node.target is aten.pow.Tensor_Scalar and node.args[1] in (0.5, -0.5):
        pass
    else:
        return False
    n = node.args[0]
    for _ in range(8):  # through "+ eps", "* c", casts and clamps to the statistic
        if not isinstance(n, fx.Node) or n.op != "call_function":
            return False
        if n.target in REDUCTIONS or n.target in VECTOR_NORMS:
            return True
        if n.target is operator.getitem and getattr(n.args[0], "target", None) is aten.var_mean.correction:
            return True
        ins = [a for a in n.all_input_nodes if a in dependent]
        if n.target not in _TO_STATISTIC or len(ins) != 1:
            return False
        n = ins[0]
    return False


_TO_SCALING = {
    aten.expand.default,
    aten.view.default,
    aten.unsqueeze.default,
    aten._to_copy.default,
    aten.add.Tensor,
    aten.add.Scalar,
    aten.clamp.default,
    aten.clamp_min.default,
    aten.reciprocal.default,
    aten.mul.Scalar,
}


def _scales_an_activation(node: fx.Node, dependent: set[fx.Node]) -> bool:
    """Whether ``node`` (through broadcasts, ``+ eps`` and clamps) multiplies or divides another input-dependent
    value: it is a normaliser rather than a feature the output is made of."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        for u in n.users:
            if u in seen or u.op != "call_function":
                continue
            seen.add(u)
            if u.target is aten.mul.Tensor:
                other = u.args[1] if u.args[0] is n else u.args[0]
                if other in dependent and other is not n:
                    return True
            elif u.target is aten.div.Tensor and u.args[1] is n and u.args[0] in dependent:
                return True
            elif u.target in _TO_SCALING:
                others = [a for a in u.all_input_nodes if a is not n]
                if not any(a in dependent for a in others):
                    todo.append(u)
    return False


def is_normaliser(node: fx.Node, dependent: set[fx.Node]) -> bool:
    """Whether ``node`` computes a normaliser of an activation (see module docstring); ``dependent`` holds the nodes
    computed from model inputs."""
    return _root_of_statistic(node, dependent) and _scales_an_activation(node, dependent)


def _own_statistics_norm(call: RuleCall, relevance: list, epsilon_rule) -> list[Tensor | None]:
    """Group and instance norm: ``y = (x - mean) * rstd * gamma_c + beta_c`` with statistics of the input itself,
    ``rstd`` constant. ``Pass``: the centring counts as element-wise, ``R_x = (y - beta) * R / stab(y)`` (eps 1e-6);
    ``Epsilon``: ``R_x = epsilon_rule(call, R / stab(y), channels)``. ``beta`` absorbs the rest."""
    r = relevance[0]
    if r is None:
        return call.assign({})
    y = call.out(support_only=True)[0]
    beta = call.arg(2)
    channels = (1, -1) + (1,) * (y.dim() - 2)
    if isinstance(call.rule, Epsilon):
        r_x = epsilon_rule(call, r / stabilize(y, call.rule.epsilon), channels)
    else:
        r_x = (y if beta is None else y - beta.view(channels)) * (r / stabilize(y, 1e-6))
    if call.track:
        call.absorb(r - r_x)
    return call.first(r_x)


@register_rule(aten.native_group_norm.default, group="layernorm", accepts=(Pass, Epsilon), default=Epsilon())
def group_norm(call: RuleCall, relevance: list) -> list[Tensor | None]:
    """``y = (x - mean_g) * rstd_g * gamma_c + beta_c`` (statistics per sample and group of channels), the statistics'
    normaliser ``rstd_g`` constant, as for layer norm:

    * ``Epsilon(eps)`` (the default, every preset; as for layer norm): the epsilon rule on the map made linear,
      centring included: ``v = gamma_c * rstd_g * R / stab(y)``, ``R_x = x * (v - mean_g(v))`` with the mean over
      each group's channels and positions;
    * ``Pass``: the centring counts as element-wise, ``R_x = (y - beta) * R / stab(y)`` (eps 1e-6).

    Both give ``sum R_x = sum (y - beta) * R / stab(y)``; ``beta`` absorbs the rest. Exact without ``beta``."""
    return _own_statistics_norm(call, relevance, _group_norm_epsilon)


def _group_norm_epsilon(call: RuleCall, v: Tensor, channels: tuple[int, ...]) -> Tensor:
    x, gamma, groups = call.arg(0), call.arg(1), call.node.args[6]
    v = v if gamma is None else v * gamma.view(channels)
    n = x.shape[0]
    v = v.reshape(n, groups, -1) * call.out(index=2).reshape(n, groups, 1)
    return x * (v - v.mean(-1, keepdim=True)).view(x.shape)


@register_rule(aten._native_batch_norm_legit.no_stats, group="layernorm", accepts=(Pass, Epsilon), default=Epsilon())
def instance_norm(call: RuleCall, relevance: list) -> list[Tensor | None]:
    """Normalisation with statistics of the input itself, per channel ``c`` (dimension 1) over every other dimension:
    ``y = (x - mean_c) * rstd_c * gamma_c + beta_c``. ``nn.InstanceNorm1d/2d/3d`` without running statistics captures
    as this on the input viewed as ``[1, N * C, ...]`` (so the statistics are per sample and channel, and ``gamma``,
    ``beta`` are repeated ``N`` times); a batch norm without running statistics as this on ``x`` itself. The
    normaliser ``rstd_c`` is constant, as for layer and group norm (instance norm *is* group norm with one channel
    per group, and gets the same relevance):

    * ``Epsilon(eps)`` (the default, every preset): ``v = gamma_c * rstd_c * R / stab(y)``,
      ``R_x = x * (v - mean_c(v))``, the mean over the dimensions the statistics were taken over;
    * ``Pass``: ``R_x = (y - beta) * R / stab(y)`` (eps 1e-6).

    Both give ``sum R_x = sum (y - beta) * R / stab(y)``; ``beta`` absorbs the rest. Exact without ``beta``.
    (With running statistics, eval mode captures ``_native_batch_norm_legit_no_training``: the batch-norm rule.)"""
    return _own_statistics_norm(call, relevance, _instance_norm_epsilon)


def _instance_norm_epsilon(call: RuleCall, v: Tensor, channels: tuple[int, ...]) -> Tensor:
    x, gamma = call.arg(0), call.arg(1)
    scale = call.out(index=2)  # rstd per channel
    scale = scale if gamma is None else scale * gamma
    v = v * scale.view(channels)
    return x * (v - v.mean((0, *range(2, x.dim())), keepdim=True))
