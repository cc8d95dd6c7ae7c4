"""Parity with Zennit (a test reference only) on torchvision CNNs, in float64.

Zennit's MergeBatchNorm leaves each batch norm as ``x / sqrt(1 + eps)`` rather than an exact identity; the models
here use ``eps = 1e-12`` so that both libraries compute the same function (our fold is exact for any eps) and the
comparison measures the rules, not that artifact. Running statistics and affine parameters are random.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision

import lrp_fx

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402

LOW, HIGH = -2.5, 2.5


def _load_zennit_helpers():
    """``benchmarks/_zennit.py``: the Zennit composite equivalent to each preset (shared with the benchmarks)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "_zennit.py"
    spec = importlib.util.spec_from_file_location("lrp_fx_benchmarks_zennit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ZENNIT = _load_zennit_helpers()


def _zennit_composite(name: str, canonizers):
    return _ZENNIT.zennit_composite(name, canonizers, low=LOW, high=HIGH)


def _randomize_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen, dtype=m.running_mean.dtype) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=gen, dtype=m.running_var.dtype) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen, dtype=m.weight.dtype) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen, dtype=m.bias.dtype) * 0.1)
            m.eps = 1e-12


MODELS = {
    "vgg16": (lambda: torchvision.models.vgg16(), VGGCanonizer, 32),
    "vgg16_bn": (lambda: torchvision.models.vgg16_bn(), VGGCanonizer, 32),
    "resnet18": (lambda: torchvision.models.resnet18(), ResNetCanonizer, 48),
    "resnet50": (lambda: torchvision.models.resnet50(), ResNetCanonizer, 48),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_input(request):
    ctor, canon, size = MODELS[request.param]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = ctor().double().eval()
    with torch.no_grad():
        _randomize_bn(model, gen)
    x = torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64).clamp(LOW, HIGH)
    return request.param, model, canon, x


@pytest.mark.parametrize("preset", [p for p in lrp_fx.PRESETS if p not in ("attnlrp", "cplrp")])  # on CNNs: epsilon
def test_matches_zennit(model_and_input, preset):
    name, model, canon, x = model_and_input
    seed = torch.zeros(2, 1000, dtype=torch.float64)
    seed[0, 3] = 1.0
    seed[1, 7] = 1.0
    params = {"low": LOW, "high": HIGH} if preset == "epsilon_gamma_box" else {}
    ours = lrp_fx.attribute(model, x, target=seed, composite=preset, **params)

    reference = copy.deepcopy(model)
    with Gradient(reference, _zennit_composite(preset, [canon()])) as attributor:
        out, rel = attributor(x.clone(), seed)
    rel_err = ((ours.relevance - rel).norm() / rel.norm()).item()
    assert torch.allclose(ours.output, out, rtol=1e-9, atol=1e-9)
    assert rel_err < 1e-6, f"{name}/{preset}: relative error {rel_err:.3e}"
