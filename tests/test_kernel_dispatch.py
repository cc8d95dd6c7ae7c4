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
