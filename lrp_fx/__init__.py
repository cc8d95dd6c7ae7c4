"""lrp_fx: Layer-wise Relevance Propagation for any PyTorch model, compiled from its ``torch.export`` graph.

Pipeline: capture -> canonicalize -> rules (composite) -> promise planning -> emit -> run.
"""

from . import rules
from .api import CACHE, Attribution, attribute
from .backend import backend
from .composites import PRESETS, Composite, UnmatchedOverrideWarning, preset
from .dataset import DatasetAttribution, attribute_dataset, load_relevance
from .errors import CaptureError, InputError, LRPError, MissingRuleError, RuleError, TargetError
from .export import export
from .promises import PromiseStats
from .rules import register_rule

__all__ = [
    "CACHE",
    "PRESETS",
    "Attribution",
    "CaptureError",
    "Composite",
    "DatasetAttribution",
    "InputError",
    "LRPError",
    "MissingRuleError",
    "PromiseStats",
    "RuleError",
    "TargetError",
    "UnmatchedOverrideWarning",
    "attribute",
    "attribute_dataset",
    "backend",
    "export",
    "load_relevance",
    "preset",
    "register_rule",
    "rules",
]

__version__ = "0.1.0"
