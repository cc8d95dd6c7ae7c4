"""Whole torchvision classifiers: strict attribution works and LRP-epsilon conserves relevance without biases.

The default suite runs six small models picked for op variety (residual adds, unfolded batch norm and
concatenation, depthwise convolutions with squeeze-excitation gates, channel shuffle, ceil-mode max pooling): resnet18
and squeezenet1_1 as they are, and shortened variants of mobilenet_v3_small, efficientnet_b0, densenet and
shufflenet_v2 built from the same torchvision block classes, and a small video classifier (r3d_18 at 8 frames of
64 px). Every full-size convolutional torchvision classifier runs under ``-m slow``. Models, inputs, bias zeroing and
the conservation
measure are those of ``benchmarks/coverage.py``, so the tests check what the coverage table reports.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import densenet, efficientnet, mobilenetv3, shufflenetv2

import lrp_fx


def _load_coverage():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "coverage.py"
    spec = importlib.util.spec_from_file_location("lrp_fx_benchmarks_coverage", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


cov = _load_coverage()


def _mobilenet_v3_small_mini() -> nn.Module:
    """The first four blocks of mobilenet_v3_small: hardswish, squeeze-excitation with hardsigmoid gates."""
    setting, _ = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small")
    return mobilenetv3.MobileNetV3(setting[:4], last_channel=128, num_classes=10)


def _efficientnet_b0_mini() -> nn.Module:
    """The first two stages of efficientnet_b0: silu, sigmoid-gated squeeze-excitation, stochastic depth."""
    setting, _ = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)
    return efficientnet.EfficientNet(setting[:2], dropout=0.2, last_channel=128, num_classes=10)


def _densenet_mini() -> nn.Module:
    """Two dense blocks: pre-activation batch norms that cannot be folded, concatenation, transition avg-pool."""
    return densenet.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10)


def _shufflenet_v2_mini() -> nn.Module:
    """Shufflenet v2 with one or two units per stage: split, channel shuffle, concatenation."""
    return shufflenetv2.ShuffleNetV2([2, 1, 1], [24, 24, 48, 96, 128], num_classes=10)


# The default suite: two real models and four shortened variants of torchvision architectures (the same block
# classes, hence the same ops, in a fraction of the graph: capture and tracing time grows with the node count).
# The full-size models run in ``test_model_all`` under ``-m slow``.
FAST = {
    "resnet18": lambda: cov.build("resnet18"),
    "squeezenet1_1": lambda: cov.build("squeezenet1_1"),
    "mobilenet_v3_small_mini": _mobilenet_v3_small_mini,
    "efficientnet_b0_mini": _efficientnet_b0_mini,
    "densenet_mini": _densenet_mini,
    "shufflenet_v2_mini": _shufflenet_v2_mini,
}
FAST_SIZE = 32

# Bound on the plain conservation error |sum R_in - sum R_out| / |sum R_out|, i.e. on the share the epsilon
# stabilisers absorb (nothing else can: the biases are zero). 1e-4 for every model, squeeze-excitation models
# included (their gates are constants, ``lrp_fx.prepare``) and convnext (up to 2.3e-4 while layer norm had the
# element-wise ``Pass`` rule; docs/coverage.md, notes). Exceptions by name prefix go here.
PLAIN_BOUND: dict[str, float] = {}


def _plain_bound(name: str) -> float:
    return next((bound for prefix, bound in PLAIN_BOUND.items() if name.startswith(prefix)), 1e-4)


def _check(name: str, model: nn.Module, x: torch.Tensor) -> None:
    res = lrp_fx.attribute(model, x, composite="epsilon_plus_flat")  # strict: raises on a missing rule
    assert not res.fallback_nodes
    assert res.relevance.shape == x.shape
    assert torch.isfinite(res.relevance).all()
    assert all(not a.fallback for a in res.program.assignments)

    # conservation: no biases, unit-scale activations, float64 (see benchmarks/coverage.py)
    cov.zero_biases(model)
    model.double()
    x = x.double()
    cov.unit_scale(model, x)
    res = lrp_fx.attribute(model, x, composite="epsilon", track_absorbed=True)
    assert torch.isfinite(res.relevance).all()
    err_absorbed, err_plain = cov.conservation(res)
    assert err_absorbed < 1e-4, f"{name}: sum R_in + absorbed differs from sum R_out by {err_absorbed:.2e}"
    assert err_plain < _plain_bound(name), f"{name}: sum R_in differs from sum R_out by {err_plain:.2e}"


@pytest.fixture(autouse=True)
def _fresh_cache():
    yield
    lrp_fx.CACHE.clear()


@pytest.mark.parametrize("name", list(FAST))
def test_model(name):
    torch.manual_seed(0)
    model = FAST[name]().eval()
    x = torch.randn(2, 3, FAST_SIZE, FAST_SIZE, generator=torch.Generator().manual_seed(0))
    _check(name, model, x)


@pytest.mark.slow
@pytest.mark.parametrize("name", cov.conv_models())
def test_model_all(name):
    _check(name, cov.build(name), cov.example(name, 64))


def test_video_model():
    """torchvision's r3d_18 video classifier (3-D convolutions and batch norms, adaptive 3-D average pooling; the
    ``tasks`` family of ``benchmarks/coverage.py``) at 8 frames of 64 px: strict, and conservative without biases."""
    from torchvision.models import video

    torch.manual_seed(0)
    model = video.r3d_18(weights=None).eval()
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    _check("r3d_18", model, x)


def test_segmentation_model_explains_a_class_over_all_pixels():
    """torchvision LR-ASPP: bilinear upsampling of the class map to the input size (``upsample_bilinear2d``), a
    sigmoid-gated branch, dict output. A callable target explains one class summed over every pixel; the books close."""
    from torchvision.models import segmentation

    torch.manual_seed(0)
    model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4).eval().double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def class_1(out):
        seed = torch.zeros_like(out)
        seed[:, 1] = out[:, 1]
        return seed

    res = lrp_fx.attribute(model, x, target=class_1, output="out", composite="epsilon_plus_flat", track_absorbed=True)
    assert res.output.shape == (1, 4, 64, 64) and not res.fallback_nodes
    assert any("upsample_bilinear2d" in a.op for a in res.program.assignments)
    total = res.relevance.sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, res.seed.sum(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.seed.sum(), model(x)["out"][:, 1].sum())
