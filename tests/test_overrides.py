"""Overrides by module name or type: what they match, and the mistakes they report."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.rules import Epsilon


class LoRALinear(nn.Linear):
    """A subclass of ``nn.Linear``, as LoRA, weight-norm or timm's padded convolutions are."""


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), LoRALinear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()


def test_a_type_override_matches_subclasses_as_isinstance_does():
    """``{nn.Linear: rule}`` reaches the ``nn.Linear`` subclass too: the same relevance as naming every layer."""
    model, x = _model(), torch.randn(4, 5, dtype=torch.float64)
    by_type = lrp_fx.attribute(model, x, target=0, composite="epsilon", overrides={nn.Linear: Epsilon(0.5)})
    by_name = lrp_fx.attribute(model, x, target=0, composite="epsilon", overrides={"*": Epsilon(0.5)})
    torch.testing.assert_close(by_type.relevance, by_name.relevance, rtol=0, atol=0)
    not_sub = lrp_fx.attribute(
        model, x, target=0, composite="epsilon", overrides={"0": Epsilon(0.5), "4": Epsilon(0.5)}
    )
    assert not torch.allclose(by_type.relevance, not_sub.relevance)  # the subclass's rule changes the result


def test_a_type_override_of_a_base_class_present_only_as_a_subclass_does_not_warn():
    model = nn.Sequential(LoRALinear(5, 3)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error", lrp_fx.UnmatchedOverrideWarning)
        lrp_fx.attribute(model, torch.randn(2, 5, dtype=torch.float64), target=0, overrides={nn.Linear: Epsilon(0.5)})
    with pytest.warns(lrp_fx.UnmatchedOverrideWarning, match="LoRALinear"):  # the other way round: no match
        lrp_fx.attribute(
            nn.Sequential(nn.Linear(5, 3)).double(),
            torch.randn(2, 5, dtype=torch.float64),
            target=0,
            overrides={LoRALinear: Epsilon(0.5)},
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"0": 0.25}, "not a rule object"),
        ({"0": Epsilon}, r"did you mean Epsilon\(\)\?"),
        ({"0": "flat"}, "not a rule object"),
        ({nn.Linear: None}, "not a rule object"),
        ({0: Epsilon(0.25)}, "qualified name"),
    ],
)
def test_overrides_that_could_never_apply_are_errors(overrides, message):
    """Values that are not rule objects, and keys that are neither names nor types, were skipped without a word."""
    with pytest.raises(TypeError, match=message):
        lrp_fx.attribute(_model(), torch.randn(2, 5, dtype=torch.float64), target=0, overrides=overrides)
