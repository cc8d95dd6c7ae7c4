"""The rule registry: one rule function per aten op overload.

``register_rule(ops, group=..., accepts=...)`` registers a function ``fn(call, relevance) -> relevances`` for each
overload. ``group`` names the family composites refer to ("conv", "linear", "pool", "activation", ...); ``accepts``
lists the rule objects the function knows how to apply. The emitter, not the rule, checks that a rule returns exactly
one relevance (or ``None``) per tensor input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch._ops import OpOverload, OpOverloadPacket

from ..capture import is_higher_order
from .base import Rule

RuleFn = Callable[[Any, Any], Sequence[torch.Tensor | None]]


@dataclass(frozen=True)
class OpRule:
    """A registered rule function and what it accepts."""

    op: Any
    fn: RuleFn
    group: str
    accepts: tuple[type[Rule], ...]
    default: Rule

    def check(self, rule: Rule) -> None:
        if not isinstance(rule, self.accepts):
            names = ", ".join(a.__name__ for a in self.accepts)
            raise TypeError(f"{self.op} (group {self.group!r}) cannot apply {rule!r}; it accepts {names}")


class _Registry(dict):
    """The op -> ``OpRule`` table. ``version`` counts its changes, whichever way they are made (``register_rule``,
    ``replace=True``, or editing the table directly, as tests do): ``lrp_fx.attribute`` keys its program cache on it,
    so a program built before a rule changed is not served after."""

    version = 0

    def _changed(self) -> None:
        self.version += 1

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def pop(self, *args: Any) -> Any:
        try:
            return super().pop(*args)
        finally:
            self._changed()

    def popitem(self) -> Any:
        try:
            return super().popitem()
        finally:
            self._changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        try:
            return super().setdefault(key, default)
        finally:
            self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __ior__(self, other: Any) -> _Registry:
        self.update(other)
        return self


_RULES: _Registry = _Registry()


def registry_version() -> int:
    """How many times the rule table has changed: part of the program cache key (``lrp_fx.api``)."""
    return _RULES.version


def _overloads(op: Any) -> Iterable[Any]:
    if isinstance(op, OpOverloadPacket):
        for name in op.overloads():
            yield getattr(op, name)
    else:
        yield op


def _check_op(op: Any) -> None:
    if isinstance(op, (OpOverload, OpOverloadPacket)) or (callable(op) and type(op).__name__ != "_OpNamespace"):
        if is_higher_order(op):
            raise TypeError(f"{op} runs subgraphs (a higher-order operator): it cannot have a rule of its own")
        return
    raise TypeError(
        f"{op!r} is not an op: name an overload or a packet, e.g. torch.ops.aten.col2im.default or torch.ops.aten.add"
    )


def register_rule(
    ops: Any | Iterable[Any],
    *,
    group: str,
    accepts: tuple[type[Rule], ...],
    default: Rule,
    replace: bool = False,
) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the rule function of ``ops`` (an overload, a packet meaning all its overloads, or a list).

    A second registration for the same overload is an error unless ``replace=True``: nothing is overwritten by
    accident.
    """
    ops = list(ops) if isinstance(ops, (list, tuple, set, frozenset)) else [ops]
    for op in ops:
        _check_op(op)
    if not isinstance(accepts, tuple) or not all(isinstance(a, type) and issubclass(a, Rule) for a in accepts):
        raise TypeError(f"accepts must be a tuple of Rule classes, e.g. (Epsilon, Pass), got {accepts!r}")
    if not isinstance(default, accepts):  # it would only fail at the first attribution otherwise
        names = ", ".join(a.__name__ for a in accepts)
        raise TypeError(f"default={default!r} is not one of the accepted rule classes ({names})")

    def wrap(fn: RuleFn) -> RuleFn:
        for packet in ops:
            for op in _overloads(packet):
                if op in _RULES and not replace:
                    raise ValueError(f"a rule for {op} is already registered ({_RULES[op].fn.__qualname__})")
                _RULES[op] = OpRule(op=op, fn=fn, group=group, accepts=accepts, default=default)
        return fn

    return wrap


def get_rule(op: Any) -> OpRule | None:
    """The registered rule of an op overload, or ``None``."""
    return _RULES.get(op)


def registered_ops() -> list[Any]:
    """Every op overload that has a rule, sorted by name."""
    return sorted(_RULES, key=str)


def is_registered(op: Any) -> bool:
    return op in _RULES


def _all_overloads(packets: Iterable[OpOverloadPacket | OpOverload]) -> list[OpOverload]:
    return [op for packet in packets for op in _overloads(packet)]


aten = torch.ops.aten
