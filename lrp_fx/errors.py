"""Exceptions raised by lrp_fx. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class LRPError(Exception):
    """Base class of every error lrp_fx raises on purpose."""


class CaptureError(LRPError):
    """``torch.export`` could not capture the model."""


class MissingRuleError(LRPError):
    """An aten op in the captured graph has no relevance rule."""


class TargetError(LRPError, ValueError):
    """The ``target`` argument does not fit the model output."""


class InputError(LRPError, ValueError):
    """The inputs do not fit what the model (or the cached program) expects."""


class RuleError(LRPError):
    """A rule was assigned to an op it cannot handle, or returned the wrong number of relevances."""
