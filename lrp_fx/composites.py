"""Composites: which rule each node gets.

A composite maps op groups (``"conv"``, ``"linear"``, ``"pool"``, ``"add"``, ...; see ``rules.registry``) to rule
objects, optionally gives the first linear layer (convolution or dense, in graph order) a special rule, and lets the
user override by module qualified name (glob patterns) or module type, read from the graph's ``nn_module_stack``.
First match wins: overrides, then the first-layer rule, then the group map, then the op's registered default.

Presets carry Zennit's names and defaults so results can be compared with Zennit composites.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from .capture import module_stack
from .rules.attention import ConstantAttention, Stop, Taylor
from .rules.base import AlphaBeta, ConstantGate, Epsilon, Flat, Gamma, Norm, Pass, Rule, UniformProduct, ZBox, ZPlus
from .rules.reference import Reference
from .rules.registry import OpRule

FIRST_LAYER_GROUPS = ("conv", "linear")


@dataclass(frozen=True)
class Composite:
    """A rule assignment: group map, optional first-layer rule, and user overrides."""

    name: str
    groups: Mapping[str, Rule]
    first_layer: Rule | None = None
    overrides: tuple[tuple[Any, Rule], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for pattern, rule in self.overrides:
            _check_override(pattern, rule)

    def with_overrides(self, overrides: Mapping[Any, Rule]) -> Composite:
        """A copy where ``{module name glob or module type: rule}`` take precedence (first match wins)."""
        return Composite(self.name, self.groups, self.first_layer, tuple(overrides.items()) + self.overrides)

    def key(self) -> tuple:
        return (self.name, tuple(sorted(self.groups.items())), self.first_layer, self.overrides)

    def rule_for(self, node: fx.Node, op_rule: OpRule, is_first: bool) -> Rule:
        stack = module_stack(node)
        for pattern, rule in self.overrides:
            if isinstance(rule, op_rule.accepts) and _matches(pattern, stack):
                return rule
        if is_first and self.first_layer is not None and isinstance(self.first_layer, op_rule.accepts):
            return self.first_layer
        rule = self.groups.get(op_rule.group)
        if rule is not None and isinstance(rule, op_rule.accepts):
            return rule
        return op_rule.default


def _check_override(pattern: Any, rule: Any) -> None:
    """An override that could never apply is a mistake to report, not to skip node by node."""
    if not isinstance(pattern, (str, type)):
        raise TypeError(
            f"override key {pattern!r}: a module's qualified name (a glob pattern, e.g. 'features.0' or 'layer*') "
            f"or a module type (e.g. torch.nn.Linear), not a {type(pattern).__name__}"
        )
    if not isinstance(rule, Rule):
        hint = f" (did you mean {rule.__name__}()?)" if isinstance(rule, type) and issubclass(rule, Rule) else ""
        raise TypeError(
            f"override {pattern!r}: {rule!r} is not a rule object{hint}; use one from lrp_fx.rules, "
            "e.g. lrp_fx.rules.Epsilon(0.25)"
        )


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _type_names(cls: type) -> set[str]:
    """The qualified names of ``cls`` and of every subclass defined so far: the graph's module stacks name types by
    string, and an override by type matches as ``isinstance`` does (a LoRA or weight-normed ``nn.Linear`` subclass,
    timm's ``Conv2dSame``)."""
    found, todo = set(), [cls]
    while todo:
        c = todo.pop()
        name = _type_name(c)
        if name not in found:
            found.add(name)
            todo.extend(c.__subclasses__())
    return found


def _is_of_type(t: Any, names: set[str], pattern: type) -> bool:
    return issubclass(t, pattern) if isinstance(t, type) else t in names


def _matches(pattern: Any, stack: list[tuple[str, str]]) -> bool:
    """A module type matches any module of that type (or a subclass) around the node; a name glob any enclosing
    module's name."""
    if isinstance(pattern, type):
        names = _type_names(pattern)
        return any(_is_of_type(t, names, pattern) for _, t in stack)
    return any(fnmatch.fnmatchcase(name, pattern) for name, _ in stack)


class UnmatchedOverrideWarning(UserWarning):
    """An override names no module of the model (a typo, or a composite written for another model)."""


def unmatched_overrides(composite: Composite, model: nn.Module) -> list[Any]:
    """The override patterns of ``composite`` that match no module of ``model`` (by qualified name or type)."""
    return _unmatched(composite, [name for name, _ in model.named_modules()], {type(m) for m in model.modules()})


def _unmatched(composite: Composite, names: list[str], types: set[Any]) -> list[Any]:
    """``types``: module classes or their qualified names (``nn_module_stack`` keeps either, by torch version)."""
    unmatched = []
    for pattern, _ in composite.overrides:
        if isinstance(pattern, type):
            subtypes = _type_names(pattern)
            found = any(_is_of_type(t, subtypes, pattern) for t in types)
        else:
            found = isinstance(pattern, str) and any(fnmatch.fnmatchcase(name, pattern) for name in names)
        if not found and pattern not in unmatched:
            unmatched.append(pattern)
    return unmatched


def warn_unmatched_overrides(
    composite: Composite,
    model: nn.Module | None = None,
    *,
    modules: tuple[list[str], set[Any]] | None = None,
    what: str | None = None,
) -> None:
    """Warn (``UnmatchedOverrideWarning``) about each override that matches no module of ``model``: an override is
    ignored where it matches nothing, as ``modules=[...]`` with an unknown name is not. A warning and not an error,
    since a composite may be shared by models that have different modules. ``modules=(names, types)`` and ``what``
    describe the model instead of ``model`` (the compile backend knows the modules of a graph, not the model)."""
    if not composite.overrides:
        return
    if model is not None:
        names = [name for name, _ in model.named_modules()]
        types: set[Any] = {type(m) for m in model.modules()}
        what = what or type(model).__name__
    elif modules is not None:
        names, types = modules
    else:
        raise TypeError("warn_unmatched_overrides needs a model or modules=(names, types)")
    unmatched = _unmatched(composite, names, types)
    if not unmatched:
        return
    names = [n for n in names if n]
    sample = ", ".join(repr(n) for n in names[:: max(1, len(names) // 5)][:5]) or "(none)"
    for pattern in unmatched:
        close = [] if isinstance(pattern, type) else difflib.get_close_matches(str(pattern), names, n=3)
        label = f"type {pattern.__qualname__}" if isinstance(pattern, type) else repr(pattern)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        warnings.warn(
            f"override {label} matches no module of {what} and is ignored; {hint}overrides take a "
            f"module's qualified name (a glob pattern) or its type; module names look like {sample}",
            UnmatchedOverrideWarning,
            stacklevel=3,
        )


def _base(stabilizer: float) -> dict[str, Rule]:
    # Zennit's layer_map_base: activations Pass, sums and average pools Norm, (unfolded) batch norm Pass. Norms with
    # their own statistics (layer, group, instance norm; not in Zennit's map) take the epsilon rule with the
    # normaliser constant, as in the transformer presets and as a hand-written norm gets.
    return {
        "activation": Pass(),
        "add": Norm(stabilizer),
        "pool": Norm(stabilizer),
        "batchnorm": Pass(),
        "layernorm": Epsilon(stabilizer),
    }


def preset(name: str, **params: Any) -> Composite:
    """A named preset. Parameters (Zennit's names): ``epsilon`` (dense layers and products of two matrices: ``bmm``,
    ``einsum``, attention; default 1e-6), ``stabilizer`` (other rules, 1e-6), ``gamma`` (``epsilon_gamma_box``: 0.25;
    ``attnlrp``/``cplrp``: given, the gamma rule replaces epsilon on linear layers and convolutions, the AttnLRP
    paper's choice for vision transformers),
    ``low``/``high`` (for ``epsilon_gamma_box``; required unless
    ``reference`` is given), ``reference`` (any CNN preset: the first layer gets the reference-point rule
    ``Reference(reference, stabilizer)`` instead of its own; a float, a tensor or a callable ``input -> reference``,
    e.g. the perturbation baseline; see ``rules/reference.py``), ``gate`` (``attnlrp``/``cplrp``: ``"uniform"``, the
    default, splits a gated MLP's product ``act(x W_g) * (x W_u)`` evenly; ``"constant"`` treats the gate as a
    constant, all relevance to ``x W_u``, as LXT's CP-LRP does)."""
    unknown = set(params) - {"epsilon", "stabilizer", "gamma", "low", "high", "reference", "gate"}
    if unknown:
        raise TypeError(f"unknown rule parameter(s) {sorted(unknown)} for composite {name!r}")
    if "gamma" in params and name not in ("epsilon_gamma_box", "attnlrp", "cplrp"):
        raise TypeError(f"gamma=...: for the presets epsilon_gamma_box, attnlrp and cplrp, not {name!r}")
    eps = params.get("epsilon", 1e-6)
    stab = params.get("stabilizer", 1e-6)
    dense = Epsilon(eps)
    groups = _base(stab)
    # products of two matrices (bmm, einsum, attention) are dense layers where one factor is constant, and the
    # epsilon rule split evenly where both are activations: they take the dense layers' epsilon in every preset
    groups.update(matmul=Epsilon(eps), attention=Epsilon(eps))
    first = None
    if name == "epsilon":
        groups.update(conv=Epsilon(eps), linear=dense)
    elif name in ("epsilon_plus", "epsilon_plus_flat"):
        groups.update(conv=ZPlus(stab), linear=dense)
        first = Flat(stab) if name.endswith("_flat") else None
    elif name in ("epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat"):
        groups.update(conv=AlphaBeta(2.0, 1.0, stab), linear=dense)
        first = Flat(stab) if name.endswith("_flat") else None
    elif name == "epsilon_gamma_box":
        if ("low" not in params or "high" not in params) and "reference" not in params:
            raise TypeError(
                "composite 'epsilon_gamma_box' needs low=... and high=... (the input's value bounds, "
                "floats or tensors broadcastable to one sample, e.g. shape [3, 1, 1])"
            )
        groups.update(conv=Gamma(params.get("gamma", 0.25), stab), linear=dense)
        first = ZBox(params["low"], params["high"], stab) if "low" in params and "high" in params else None
    elif name in ("attnlrp", "cplrp") and "gamma" in params:
        # the AttnLRP paper's option for vision transformers: the gamma rule on linear layers and convolutions
        dense = Gamma(params["gamma"], stab)
    if name == "attnlrp":  # AttnLRP (Achtibat et al. 2024); see docs/transformers.md
        groups.update(conv=dense, linear=dense)
        groups.update(softmax=Taylor(), mul=UniformProduct(), layernorm=Epsilon(eps))
    elif name == "cplrp":  # CP-LRP (Ali et al. 2022): attention probabilities are constants
        groups.update(conv=dense, linear=dense, matmul=ConstantAttention(eps), attention=ConstantAttention(eps))
        groups.update(softmax=Stop(), mul=UniformProduct(), layernorm=Epsilon(eps))
    elif name not in PRESETS:
        raise ValueError(f"unknown composite {name!r}; presets: {', '.join(PRESETS)}")
    gate = params.get("gate", "uniform")
    if gate not in ("uniform", "constant") or ("gate" in params and name not in ("attnlrp", "cplrp")):
        raise TypeError(f"gate={gate!r}: 'uniform' or 'constant', for the presets attnlrp and cplrp")
    if gate == "constant":
        groups["mul"] = ConstantGate()
    if "reference" in params:
        first = Reference(params["reference"], stab)
    return Composite(name, groups, first)


PRESETS = (
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "attnlrp",
    "cplrp",
)


# The default stabilisers (1e-6) are below half precision's resolution: in bfloat16 (8 bits of mantissa) or float16 a
# sum whose terms nearly cancel (a transformer's word + position + token-type embeddings) is off by more than 1e-6,
# and R / stab(z) there amplifies rounding into whole-attribution errors (12-18 % against float64 on a 2-layer BERT,
# against 0.03-0.1 % for gradient x input; 2.4 % / 0.1 % with 1e-2). Presets therefore default to 1e-2 for models or
# inputs in these dtypes; an explicit epsilon= or stabilizer= wins.
HALF_PRECISION_STABILIZER = 1e-2
HALF_PRECISION = (torch.bfloat16, torch.float16)


def precision_defaults(composite: str | Composite, params: dict[str, Any], dtypes: set[torch.dtype]) -> dict[str, Any]:
    """``params`` with ``epsilon``/``stabilizer`` defaulting to ``HALF_PRECISION_STABILIZER`` for a preset applied to
    a half-precision model or input (``dtypes``); unchanged otherwise (a ``Composite`` object sets its own rules)."""
    if not isinstance(composite, str) or not dtypes & set(HALF_PRECISION):
        return params
    return {"epsilon": HALF_PRECISION_STABILIZER, "stabilizer": HALF_PRECISION_STABILIZER, **params}


def resolve(composite: str | Composite, overrides: Mapping[Any, Rule] | None, params: dict[str, Any]) -> Composite:
    comp = preset(composite, **params) if isinstance(composite, str) else composite
    if not isinstance(comp, Composite):
        raise TypeError(f"composite must be a preset name or a Composite, got {type(comp).__name__}")
    if isinstance(composite, Composite) and params:
        raise TypeError("rule parameters go into the preset; with a Composite object, set them in its rules")
    return comp.with_overrides(overrides) if overrides else comp
