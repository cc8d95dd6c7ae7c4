"""Element-wise ops: activations (identity), sums and differences (proportional), products and quotients.

Broadcasting is undone with ``sum_to`` (the VJP of broadcasting), so a bias-like operand of shape ``[C, 1, 1]``
receives the relevance of every position it was added to.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx

from .attention import from_stopped_softmax
from .autodiff import vjp
from .base import ConstantGate, Epsilon, Norm, Pass, UniformProduct
from .call import RuleCall, sum_to, times_finite
from .registry import aten, register_rule
from .stabilize import stabilize

# Element-wise functions whose relevance passes through unchanged (Zennit's Pass for activations). Only unary in
# their activation input; extra arguments are constants (slopes, bounds).
ACTIVATIONS = [
    aten.relu.default,
    aten.gelu.default,
    aten.silu.default,
    aten.sigmoid.default,
    aten.tanh.default,
    aten.hardtanh.default,
    aten.hardswish.default,
    aten.hardsigmoid.default,
    aten.leaky_relu.default,
    aten.elu.default,
    aten.softplus.default,
    aten.mish.default,
    aten.clamp.default,
    aten.clamp_min.default,
    aten.clamp_max.default,
    # tensor bounds are thresholds (like a ReLU's zero), not summands: they receive no relevance
    aten.clamp.Tensor,
    aten.clamp_min.Tensor,
    aten.clamp_max.Tensor,
    aten.relu6.default,
    aten.log_sigmoid_forward.default,
    # rounding (fake quantisation ``round(x / s) * s``, straight-through estimators): monotone, following the
    # identity up to the rounding step, so relevance passes through like any activation
    aten.round.default,
    aten.round.decimals,
    aten.floor.default,
    aten.ceil.default,
    aten.trunc.default,
]

# Activations with f(0) = 0: an input of zero gives an output of zero, so "relevance vanishes where the value does"
# passes through them (used by the support analysis).
ZERO_PRESERVING = {
    aten.relu.default,
    aten.gelu.default,
    aten.silu.default,
    aten.tanh.default,
    aten.hardtanh.default,
    aten.hardswish.default,
    aten.leaky_relu.default,
    aten.elu.default,
    aten.mish.default,
    aten.relu6.default,
}


@register_rule(ACTIVATIONS, group="activation", accepts=(Pass,), default=Pass())
def pass_activation(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """Identity: ``R_x = R_y``. Exact for ReLU networks under the usual LRP reading (the layer above already
    weighted its inputs by their activations)."""
    return call.first(relevance)


@register_rule([aten.add.Tensor, aten.sub.Tensor], group="add", accepts=(Norm, Epsilon), default=Norm())
def proportional_sum(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = a + alpha*b`` (or ``a - alpha*b``): ``R_a = a * R / stab(y)``, ``R_b = +-alpha*b * R / stab(y)``.

    Conservative: the shares sum to ``R * y / stab(y)``. A constant operand (bias-like) keeps its share, which is
    recorded as absorbed rather than silently dropped.
    """
    node = call.node
    alpha = node.kwargs.get("alpha", 1)
    sign = -1.0 if node.target is aten.sub.Tensor else 1.0
    eps = call.eps
    y = call.out(support_only=True)
    s = relevance / stabilize(y, eps, nonneg=call.out_nonneg(support_only=True))
    shares = {}
    absorbed = relevance - times_finite(s, y) if call.track else None
    for i, coef in ((0, 1.0), (1, sign * alpha)):
        a = node.args[i]
        if not call.is_activation(a):
            if absorbed is not None:  # a constant operand keeps its share, like a bias
                absorbed = absorbed + coef * times_finite(s, call.value(a))
            continue
        v = call.value(a)
        shares[i] = sum_to(v * s if coef == 1 else coef * v * s, v.shape)
    if absorbed is not None:
        call.absorb(absorbed)
    return call.assign(shares)


# Scattered sums (graph message passing: ``out.index_add_(0, dst, msg)``, ``scatter_add``, ``scatter_reduce(...,
# "sum")``, ``x[idx] += v``): the output is linear in the base and the scattered values together, so the sum's rule
# applies per output position: ``q = R / stab(y)``, each input gets ``input * J^T q`` (the base its own positions, a
# scattered value ``s_i * q[idx_i]``). Shares sum to ``q * y``. Overwrites (``index_put`` without ``accumulate``) are
# routing instead (``_index_overwrite``); non-linear reductions (prod, amax, amin) are refused.
SCATTER_SUMS = {
    aten.index_put.default: (0, 2),  # (self, indices, values, accumulate)
    aten.index_add.default: (0, 3),  # (self, dim, index, source, alpha)
    aten.scatter_add.default: (0, 3),  # (self, dim, index, src)
    aten.scatter_reduce.two: (0, 3),  # (self, dim, index, src, reduce, include_self)
}


@register_rule(list(SCATTER_SUMS), group="add", accepts=(Norm, Epsilon), default=Norm())
def scatter_sum(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = base + scatter(values)``: ``R_in = in * J_in^T (R / stab(y))`` for the base and the scattered values (the
    proportional sum per output position). A constant operand keeps its share, recorded as absorbed."""
    node = call.node
    args = list(node.args)
    if node.target is aten.index_put.default and not (args[3] if len(args) > 3 else node.kwargs.get("accumulate")):
        return _index_overwrite(call, relevance)
    if node.target is aten.scatter_reduce.two and args[4] in ("amax", "amin"):
        return _scatter_extreme(call, relevance)
    if node.target is aten.scatter_reduce.two and args[4] not in ("sum", "mean"):
        raise ValueError(
            f"scatter_reduce with reduce={args[4]!r} is not a sum or a max: no relevance rule (sum, mean, amax, amin "
            "have one)"
        )
    eps = call.eps
    y = call.out(support_only=True)
    q = relevance / stabilize(y, eps, nonneg=call.out_nonneg(support_only=True))
    operands = SCATTER_SUMS[node.target]
    values = [[call.value(e) for e in a] if isinstance(a, (list, tuple)) else call.value(a) for a in args]
    grads = vjp(lambda *xs: node.target(*xs, **node.kwargs), values, q, wrt=operands)
    shares = {}
    absorbed = (relevance - q * y).sum() if call.track else None
    for i, g in zip(operands, grads):
        if call.is_activation(args[i]):
            shares[i] = values[i] * g
        elif absorbed is not None:  # a constant base (the zeros that messages are summed into) or constant values
            absorbed = absorbed + (values[i] * g).sum()
    if absorbed is not None:
        call.absorb(absorbed)
    return call.assign(shares)


def _scatter_extreme(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = base.scatter_reduce(dim, index, src, "amax" | "amin", include_self)`` (max aggregation of graph messages,
    ``nn.EmbeddingBag`` in ``max`` mode): winner takes all, as ``amax``. Each output position's relevance goes to the
    candidates equal to it (the scattered values, and the base where it is included or nothing was scattered),
    split equally between ties. Exactly conservative; a constant candidate keeps (absorbs) what it wins."""
    node = call.node
    dim, include_self = node.args[1], node.args[5] if len(node.args) > 5 else node.kwargs.get("include_self", True)
    base, index, src = call.value(node.args[0]), call.value(node.args[2]), call.value(node.args[3])
    y, r = call.out(), relevance
    src_used = src[tuple(slice(0, n) for n in index.shape)]  # scatter reads src only over index's shape
    src_wins = (src_used == y.gather(dim, index)).to(r.dtype)
    scattered = torch.zeros_like(r).scatter_add(dim, index, torch.ones_like(src_wins)) > 0
    # without include_self the base is a candidate only where nothing was scattered (and there it is the output)
    base_wins = (base == y if include_self else scattered.logical_not()).to(r.dtype)
    ties = (base_wins + torch.zeros_like(r).scatter_add(dim, index, src_wins)).clamp(min=1)
    share = r / ties
    shares: dict[int, Tensor] = {}
    kept: Tensor | float = 0.0
    if call.is_activation(node.args[0]):
        shares[0] = base_wins * share
        kept = shares[0].sum()
    if call.is_activation(node.args[3]):
        r_src = torch.zeros(src.shape, dtype=r.dtype, device=r.device)
        r_src[tuple(slice(0, n) for n in index.shape)] = src_wins * share.gather(dim, index)
        shares[3] = r_src
        kept = kept + r_src.sum()
    if call.track:
        call.absorb(r.sum() - kept)
    return call.assign(shares)


def _index_overwrite(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = x.index_put(idx, v)`` (``x[idx] = v``): routing. A written position's relevance goes to the value written
    there, every other position's to ``x``. Where an index repeats, which write wins is unspecified (and differs
    between devices), so the writes to one position share its relevance equally; a broadcast value collects the
    relevance of every position it was written to. Exactly conservative; a constant value keeps (absorbs) its share.
    """
    node = call.node
    indices, values = call.value(node.args[1]), call.value(node.args[2])
    # how many writes land on each position (index_put broadcasts the values over the indexed shape)
    writes = aten.index_put.default(torch.zeros_like(relevance), indices, torch.ones_like(values).to(relevance), True)
    # the gradient of an overwrite with respect to the values gathers the cotangent at the written positions
    (grad_values,) = vjp(
        lambda v: aten.index_put.default(torch.zeros_like(relevance), indices, v, False),
        (values.to(relevance),),
        relevance / writes.clamp(min=1),
        wrt=(0,),
    )
    shares: dict[int, Tensor] = {}
    kept: Tensor | float = 0.0
    if call.is_activation(node.args[0]):
        shares[0] = torch.where(writes > 0, torch.zeros_like(relevance), relevance)
        kept = shares[0].sum()
    if call.is_activation(node.args[2]):
        shares[2] = grad_values.to(values.dtype)
        kept = kept + grad_values.sum()
    if call.track:
        call.absorb(relevance.sum() - kept)
    return call.assign(shares)


# ops that may sit between a gate function's output and the product it scales (they move or cast, never mix)
_GATE_PATH = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.expand.default,
    aten.unsqueeze.default,
    aten.permute.default,
    aten.transpose.int,
    aten.slice.Tensor,
    aten.select.int,
    aten.clone.default,
    aten._to_copy.default,
    aten.alias.default,
    operator.getitem,
}


def is_gate(node: object) -> bool:
    """Whether ``node`` is an element-wise activation function's output (``ACTIVATIONS``, or one written out, e.g.
    GPT-2's and T5's ``gelu_new``, which ``lrp_fx.prepare`` tags), possibly reshaped."""
    for _ in range(16):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return False
        if node.target in ACTIVATIONS and node.target is not aten.relu.default:
            return True
        if node.meta.get("lrp_fx_activation"):  # prepare.ACTIVATION_KEY (prepare imports the rules)
            return True
        if node.target not in _GATE_PATH:
            return False
        node = node.args[0]
    return False


@register_rule(aten.mul.Tensor, group="mul", accepts=(UniformProduct, ConstantGate), default=UniformProduct())
def product(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = a * b``.

    * One factor constant (a parameter, buffer or number): ``y`` is linear in the other, which receives all of ``R``
      (the epsilon rule of a diagonal linear map, ``x * (c * R / (c * x)) = R``).
    * Both factors activations (gates, attention): each receives ``R / 2`` (AttnLRP's uniform rule), reduced to its
      shape if it was broadcast.
    * A factor computed by a softmax whose rule is ``Stop`` (``cplrp``: attention weights are constants) is
      constant: the other factor receives all of ``R`` (RAFT's convex upsampling, ``softmax(mask) * patches``).
    * ``ConstantGate``: where exactly one of two activation factors is a gate (``is_gate``: ``silu``, ``gelu``,
      ``sigmoid``, ... output), the gate is constant and the other factor receives all of ``R``.
    """
    a, b = call.node.args[0], call.node.args[1]
    act = [call.is_activation(a), call.is_activation(b)]
    if act[0] and act[1]:  # a softmax the composite stops (CP-LRP) is a constant here too, as in matrix products
        stopped = [from_stopped_softmax(call, a), from_stopped_softmax(call, b)]
        if stopped[0] != stopped[1]:
            act = [not stopped[0], not stopped[1]]
    if act[0] and act[1] and isinstance(call.rule, ConstantGate):
        gate = [is_gate(a), is_gate(b)]
        if gate[0] != gate[1]:
            act = [not gate[0], not gate[1]]
    if act[0] and act[1]:
        va, vb = call.value(a), call.value(b)
        half = relevance * 0.5
        return call.assign({0: sum_to(half, va.shape), 1: sum_to(half, vb.shape)})
    i = 0 if act[0] else 1
    v = call.value(call.node.args[i])
    return call.assign({i: sum_to(relevance, v.shape)})


@register_rule(
    [aten.pow.Tensor_Tensor, aten.atan2.default], group="mul", accepts=(UniformProduct,), default=UniformProduct()
)
def uniform_binary(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = a ** b`` with a tensor exponent, ``y = atan2(a, b)``: non-linear in both operands, with no sum to split
    proportionally. Both activations: each gets ``R / 2`` (the uniform rule of ``mul``, reduced to its shape if
    broadcast). One operand constant: the other gets all of ``R``, as an activation function passes it (``x ** c``,
    ``c ** x``). Exactly conservative; independent of the values, so nothing blows up near a singularity."""
    a, b = call.node.args[0], call.node.args[1]
    act = [call.is_activation(a), call.is_activation(b)]
    share = relevance * 0.5 if act[0] and act[1] else relevance
    return call.assign({i: sum_to(share, call.value(n).shape) for i, n in enumerate((a, b)) if act[i]})


@register_rule(aten.div.Tensor, group="div", accepts=(Pass,), default=Pass())
def quotient(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = a / b``: all relevance to the numerator; the denominator is a normaliser treated as constant (as for
    the standard deviation in layer norm). Exact when ``b`` is a constant."""
    a = call.node.args[0]
    if not call.is_activation(a):
        return call.assign({})
    v = call.value(a)
    return call.assign({0: sum_to(relevance, v.shape)})


@register_rule(aten.neg.default, group="activation", accepts=(Pass,), default=Pass())
def negation(call: RuleCall, relevance: Tensor) -> list[Tensor | None]:
    """``y = -x``: ``R_x = R_y`` (a linear map with weight -1 under the epsilon rule)."""
    return call.first(relevance)


@register_rule(
    aten._native_batch_norm_legit_no_training.default, group="batchnorm", accepts=(Pass, Epsilon), default=Pass()
)
def batch_norm(call: RuleCall, relevance: list) -> list[Tensor | None]:
    """Eval-mode batch norm that could not be folded into a preceding linear layer (e.g. pre-activation
    DenseNet blocks). Pass (Zennit's choice) or Epsilon on the per-channel affine map ``y = a x + c``."""
    r = relevance[0]
    if r is None:
        return call.assign({})
    if isinstance(call.rule, Pass):
        return call.first(r)
    x = call.arg(0)
    y = call.out(support_only=True)[0]
    s = r / stabilize(y, call.rule.epsilon)
    var, eps = call.arg(4), call.node.args[6]  # the mean belongs to the bias, which absorbs its share
    w = call.arg(1)
    scale = torch.rsqrt(var + eps)
    if w is not None:
        scale = scale * w
    shape = (1, -1) + (1,) * (x.dim() - 2)
    r_x = x * scale.view(shape) * s
    if call.track:
        call.absorb(r - r_x)
    return call.first(r_x)


@register_rule(aten.native_layer_norm.default, group="layernorm", accepts=(Pass, Epsilon), default=Epsilon())
def layer_norm(call: RuleCall, relevance: list) -> list[Tensor | None]:
    """``y = (x - mean) * rstd * gamma + beta`` with the normaliser ``rstd`` constant.

    * ``Epsilon(eps)`` (the default, every preset; CP-LRP's and AttnLRP's rule): the epsilon rule on the map made
      linear, centring included: ``v = gamma * rstd * R / stab(y)``, ``R_x = x * (v - mean(v))`` over the normalised
      dims (what a hand-written layer norm with a constant normaliser gets). Proportional to ``x``, as the layer
      before expects: its own rule divides by ``x``.
    * ``Pass``: the centring counts as element-wise, ``R_x = (y - beta) * R / stab(y)`` (eps 1e-6). Not
      proportional to ``x``: a layer before it divides relevance that does not vanish where ``x`` does by ``x``,
      and in a stack of normalised convolutions (RAFT's encoders) the relevance grows by orders of magnitude per
      layer.

    Both give ``sum R_x = sum (y - beta) * R / stab(y)``; ``beta`` absorbs the rest."""
    r = relevance[0]
    if r is None:
        return call.assign({})
    y = call.out(support_only=True)[0]
    beta = call.arg(3)
    if isinstance(call.rule, Epsilon):
        x, gamma = call.arg(0), call.arg(2)
        v = r / stabilize(y, call.rule.epsilon) * call.out(index=2)
        v = v if gamma is None else v * gamma
        dims = tuple(range(-len(call.node.args[1]), 0))
        r_x = x * (v - v.mean(dims, keepdim=True))
        if call.track:
            call.absorb(r - r_x)
        return call.first(r_x)
    s = r / stabilize(y, 1e-6)
    centred = y if beta is None else y - beta
    r_x = centred * s
    if call.track:
        call.absorb(r - r_x)
    return call.first(r_x)
