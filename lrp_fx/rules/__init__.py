"""Relevance rules, registered per aten op. Importing this package registers every built-in rule."""

from . import (  # noqa: F401  (registration)
    attention,
    elementwise,
    embedding,
    linear,
    misc,
    norm,
    pointwise,
    reductions,
    reference,
    routing,
)
from .base import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Norm,
    Pass,
    Route,
    Rule,
    UniformProduct,
    WinnerTakesAll,
    WSquare,
    ZBox,
    ZPlus,
)
from .call import RuleCall
from .reference import Reference
from .registry import OpRule, get_rule, register_rule, registered_ops
from .stabilize import stabilize

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "Norm",
    "OpRule",
    "Pass",
    "Reference",
    "Route",
    "Rule",
    "RuleCall",
    "UniformProduct",
    "WSquare",
    "WinnerTakesAll",
    "ZBox",
    "ZPlus",
    "get_rule",
    "register_rule",
    "registered_ops",
    "stabilize",
]
