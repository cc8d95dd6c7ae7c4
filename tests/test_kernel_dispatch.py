"""The rules dispatch to the kernels/ ops (Triton on CUDA). On CPU, LRP_FX_KERNELS=all routes through the same
torch.library ops, which then run their torch references: the program must equal the plain torch rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_fx

pytest.importorskip("triton")


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
        nn.ReLU(),
        nn.Linear(10, 4),
    ).double()


@pytest.mark.parametrize("preset", ["epsilon", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_kernel_ops_match_torch_rules(preset, monkeypatch):
    m = model()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    kw = {"low": -3.0, "high": 3.0} if preset == "epsilon_gamma_box" else {}
    overrides = {
        "epsilon_plus": {nn.Linear: lrp_fx.rules.ZPlus()},
        "epsilon_gamma_box": {nn.Linear: lrp_fx.rules.Gamma()},
    }
    overrides = overrides.get(preset)
    monkeypatch.setenv("LRP_FX_KERNELS", "off")
    plain = lrp_fx.attribute(m, x, target=1, composite=preset, overrides=overrides, **kw)
    monkeypatch.setenv("LRP_FX_KERNELS", "all")
    fast = lrp_fx.attribute(m, x, target=1, composite=preset, overrides=overrides, **kw)
    ops = {str(n.target) for n in fast.program.graph_module.graph.nodes if n.op == "call_function"}
    assert any(op.startswith("lrp_kernels.") for op in ops), ops
    if preset == "epsilon_gamma_box":  # gamma's positive half before a ReLU, both halves for the output layer
        rules = [n.args[5] for n in fast.program.graph_module.graph.nodes if "signsplit" in str(n.target)]
        assert sorted(rules) == ["gamma", "gamma+", "gamma+"], rules
    torch.testing.assert_close(fast.relevance, plain.relevance, rtol=1e-9, atol=1e-12)


class _Attention(torch.nn.Module):
    """Projections and ``scaled_dot_product_attention`` with grouped-query heads (4 query heads, 2 kv heads)."""

    def __init__(self, causal: bool, padded: bool):
        super().__init__()
        torch.manual_seed(1)
        self.q, self.kv, self.o = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 3)
        self.causal, self.padded = causal, padded

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, 4, 4).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, 8).transpose(1, 2).chunk(2, dim=-1)
        mask = None
        if self.padded:  # sample 1 pads its last two tokens
            keep = torch.ones(b, n, dtype=torch.bool, device=x.device)
            keep[1, -2:] = False
            mask = keep[:, None, None, :]
        y = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal, enable_gqa=True
        )
        return self.o(y.transpose(1, 2).reshape(b, n, 16)).mean(1)


@pytest.mark.parametrize("preset", ["attnlrp", "cplrp"])
@pytest.mark.parametrize(("causal", "padded"), [(True, False), (False, True)])
def test_attention_dispatches_to_the_kernel_op_and_matches_the_torch_rule(preset, causal, padded, monkeypatch):
    """On CUDA the relevance of ``scaled_dot_product_attention`` runs in ``kernels.attention_relevance`` (memory
    linear in the sequence length); here the op runs its torch reference, which must equal the library's rule."""
    model = _Attention(causal, padded).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    monkeypatch.setenv("LRP_FX_KERNELS", "off")
    plain = lrp_fx.attribute(model, x, target=1, composite=preset)
    monkeypatch.setenv("LRP_FX_KERNELS", "all")
    fast = lrp_fx.attribute(model, x, target=1, composite=preset)
    ops = {str(n.target) for n in fast.program.graph_module.graph.nodes if n.op == "call_function"}
    assert "lrp_kernels.attention_relevance.default" in ops, ops
    torch.testing.assert_close(fast.relevance, plain.relevance, rtol=1e-9, atol=1e-12)
