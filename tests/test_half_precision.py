"""Half-precision models: presets default to stabilisers suited to bfloat16/float16 (``precision_defaults``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.composites import HALF_PRECISION_STABILIZER

transformers = pytest.importorskip("transformers")


def tiny_bert(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    return transformers.BertForSequenceClassification(cfg).to(dtype).eval()


IDS = torch.randint(3, 60, (2, 8), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_presets_default_to_larger_stabilisers(dtype):
    model = tiny_bert(dtype)
    default = lrp_fx.attribute(model, {"input_ids": IDS}, target=1, composite="cplrp").relevance["input_ids"]
    eps = HALF_PRECISION_STABILIZER
    given = lrp_fx.attribute(model, {"input_ids": IDS}, target=1, composite="cplrp", epsilon=eps, stabilizer=eps)
    torch.testing.assert_close(default, given.relevance["input_ids"], rtol=0, atol=0)
    # the float64 model with the same (rounded) weights and stabilisers: a few per cent, where the float32 defaults
    # (1e-6) gave 12-18 %
    ref = lrp_fx.attribute(
        tiny_bert(dtype).double(), {"input_ids": IDS}, target=1, composite="cplrp", epsilon=eps, stabilizer=eps
    ).relevance["input_ids"]
    err = float((default.double() - ref).norm() / ref.norm())
    assert err < 0.05, err
    # an explicit value wins
    tiny = lrp_fx.attribute(model, {"input_ids": IDS}, target=1, composite="cplrp", epsilon=1e-6, stabilizer=1e-6)
    assert not torch.equal(tiny.relevance["input_ids"], default)


def test_float32_keeps_the_default_stabilisers():
    model = tiny_bert(torch.float32)
    default = lrp_fx.attribute(model, {"input_ids": IDS}, target=1, composite="cplrp").relevance["input_ids"]
    given = lrp_fx.attribute(model, {"input_ids": IDS}, target=1, composite="cplrp", epsilon=1e-6, stabilizer=1e-6)
    torch.testing.assert_close(default, given.relevance["input_ids"], rtol=0, atol=0)


def test_compile_backend_uses_the_half_precision_defaults_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(torch.bfloat16).eval()
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    seed = torch.zeros(4, 3, dtype=torch.bfloat16)
    seed[:, 1] = 1
    compiled = torch.compile(model, backend=lrp_fx.backend("epsilon", inductor=False))
    xg = x.clone().requires_grad_(True)
    (rel,) = torch.autograd.grad(compiled(xg), xg, grad_outputs=seed)
    eager = lrp_fx.attribute(model, x, target=seed, composite="epsilon")
    torch.testing.assert_close(rel, eager.relevance)
    other = lrp_fx.attribute(model, x, target=seed, composite="epsilon", epsilon=1e-6, stabilizer=1e-6)
    assert not torch.equal(other.relevance, eager.relevance)


class _CastsItsInput(nn.Module):
    """A half-precision model that casts its float32 input to its own dtype (as Hugging Face ViT casts pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x.to(self.a.weight.dtype))))


@pytest.mark.parametrize("target", [None, 1, "indices", "tensor"])
def test_the_seed_takes_the_outputs_dtype_not_the_inputs(target):
    torch.manual_seed(0)
    model = _CastsItsInput().to(torch.bfloat16).eval()
    x = torch.randn(4, 8)
    target = {"indices": torch.tensor([0, 2, 1, 1]), "tensor": torch.ones(4, 3, dtype=torch.bfloat16)}.get(
        target, target
    )
    res = lrp_fx.attribute(model, x, target=target, composite="epsilon")
    assert res.seed.dtype == torch.bfloat16 and res.relevance.dtype == torch.float32
    assert res.relevance.abs().sum() > 0


def test_a_half_precision_model_with_float32_input_gets_the_half_precision_stabilisers_when_compiled_too():
    """The backend decides as ``attribute`` does, from the inputs and the model: a bfloat16 model casting float32
    inputs gets epsilon = stabiliser = 1e-2 in both (before, the backend looked at the inputs only: 1e-6)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _CastsItsInput().to(torch.bfloat16).eval()
    x = torch.randn(4, 8)
    seed = torch.randn(4, 3, dtype=torch.bfloat16)
    xg = x.clone().requires_grad_(True)
    compiled = torch.compile(model, backend=lrp_fx.backend("epsilon", inductor=False))
    (rel,) = torch.autograd.grad(compiled(xg), xg, grad_outputs=seed)
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon")
    torch.testing.assert_close(rel, ref.relevance, rtol=0, atol=0)
    tiny = lrp_fx.attribute(model, x, target=seed, composite="epsilon", epsilon=1e-6, stabilizer=1e-6)
    assert not torch.equal(rel, tiny.relevance)
