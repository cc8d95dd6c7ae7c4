"""Rule objects: the parameters a composite chooses for a node.

A rule object says *which* LRP rule to apply (Epsilon, ZPlus, ...) and with which parameters. *How* it applies to a
given aten op is the op's rule function in this package (see ``registry.py``). This is the split Zennit makes between
rules and the modules they hook, moved from modules to aten ops.

``support`` describes how the rule relates the relevance of an input to that input's value, which the support
analysis in ``lrp_fx.analysis`` uses:

* ``"proportional"``: the relevance of an input vanishes wherever the input value is 0 (the rule has the form
  ``x * something``), whatever the relevance above.
* ``"follows"``: the input relevance vanishes where the input is 0 *provided* the relevance above vanishes where the
  output is 0 (exact routing, identity through ReLU-like functions).
* ``"none"``: no such guarantee (Flat, WSquare, ZBox, uniform product splits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class Rule:
    """Base class of every rule object."""

    support: ClassVar[str] = "none"

    def __post_init__(self) -> None:
        for field in ("epsilon", "stabilizer", "gamma"):  # a negative one flips signs it exists to keep
            v = getattr(self, field, None)
            if isinstance(v, (int, float)) and not v >= 0:
                raise ValueError(f"{type(self).__name__} needs {field} >= 0, got {v}")

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon: ``R_x = x * J^T (R / stab(z))`` with ``z`` the layer's own output (bias included)."""

    epsilon: float = 1e-6
    support: ClassVar[str] = "proportional"


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z+ (alpha=1, beta=0), negative inputs allowed as in Zennit: positive contributions only."""

    stabilizer: float = 1e-6
    support: ClassVar[str] = "proportional"


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta: ``alpha`` times the positive minus ``beta`` times the negative contributions."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    support: ClassVar[str] = "proportional"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {self.alpha}, {self.beta}")


@dataclass(frozen=True)
class Gamma(Rule):
    """Generalised LRP-gamma (Zennit 0.5 / Andeol et al.): weights ``W + gamma * W^+`` for the sign of the output."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    support: ClassVar[str] = "proportional"


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat: inputs and weights set to one, no bias: relevance spread uniformly over the receptive field."""

    stabilizer: float = 1e-6


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w^2: inputs set to one, weights (and bias) squared."""

    stabilizer: float = 1e-6


class KeyedByValue:
    """Equality and hash over ``_value_key`` of the fields named in ``value_fields``, for rule objects holding values
    that are baked into the program (bounds, references): the program cache then keys them by value, so equal values
    computed anew in every call, ``(0 - mean) / std``, reuse one program, and a tensor changed in place after a build
    makes a new one. Tensors beyond ``_BY_VALUE`` elements go by identity. Subclasses are ``eq=False`` dataclasses
    (a generated ``__eq__`` would replace this one) listing the mixin before ``Rule``."""

    value_fields: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple:
        return tuple(_value_key(getattr(self, f)) for f in self.value_fields)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class ZBox(KeyedByValue, Rule):
    """LRP-z^B for inputs bounded by ``low`` and ``high`` (floats or tensors broadcastable to one sample)."""

    low: Any = 0.0
    high: Any = 1.0
    stabilizer: float = 1e-6
    value_fields: ClassVar[tuple[str, ...]] = ("low", "high", "stabilizer")  # the bounds are baked into the program

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = (torch.as_tensor(v, dtype=torch.float64) for v in (self.low, self.high))
        if not bool((low <= high).all()):  # z = x W - l W+ - h W- then mixes the signs the rule separates
            raise ValueError("ZBox needs low <= high everywhere (the input's lower and upper bounds)")


_BY_VALUE = 1 << 20


def _value_key(v: Any) -> Any:
    """A float, or a tensor by dtype, shape and bytes (by identity beyond ``_BY_VALUE`` elements)."""
    if not isinstance(v, torch.Tensor):
        try:
            hash(v)
        except TypeError:
            return ("id", id(v))
        return ("value", v)
    if v.numel() > _BY_VALUE:
        return ("id", id(v))  # held by the rule object, so the id cannot be reused while it lives
    flat = v.detach().cpu().contiguous().reshape(-1)
    return ("tensor", v.dtype, tuple(v.shape), bytes(flat.view(torch.uint8).numpy()))


@dataclass(frozen=True)
class Norm(Rule):
    """Proportional rule for sums and averages: each summand gets relevance in proportion to its value."""

    stabilizer: float = 1e-6
    support: ClassVar[str] = "proportional"


@dataclass(frozen=True)
class Pass(Rule):
    """Identity: relevance passes through unchanged (element-wise activations, normalisers treated as constants)."""

    support: ClassVar[str] = "follows"


@dataclass(frozen=True)
class Route(Rule):
    """Exact routing of a linear selection op (view, permute, slice, cat, index, ...): its vector-Jacobian product."""

    support: ClassVar[str] = "follows"


@dataclass(frozen=True)
class WinnerTakesAll(Rule):
    """Max pooling: all relevance of an output goes to the input that won the max."""

    support: ClassVar[str] = "follows"


@dataclass(frozen=True)
class UniformProduct(Rule):
    """Product of two activations ``a * b``: each factor receives half of the relevance (AttnLRP's uniform rule)."""


@dataclass(frozen=True)
class ConstantGate(Rule):
    """Product of two activations where exactly one is a gate, the output of an element-wise activation function
    (SwiGLU's ``silu(x W_g) * (x W_u)``, GeGLU, a sigmoid gate): the gate is a constant and the other factor
    receives all of the relevance (LXT's CP-LRP treatment of gated MLPs). Any other product: ``UniformProduct``."""


@dataclass(frozen=True)
class Gradient(Rule):
    """The op's vector-Jacobian product. Used only as the declared fallback of permissive mode."""
