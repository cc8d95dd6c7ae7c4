"""Rules of ``lrp_fx/rules/misc.py`` against their formulas, written densely in float64 on small random inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.rules import Route, get_rule

aten = torch.ops.aten


class AsStrided(nn.Module):
    def __init__(self, size, stride, offset=0):
        super().__init__()
        self.size, self.stride, self.offset = size, stride, offset

    def forward(self, x):
        return torch.as_strided(x, self.size, self.stride, self.offset)


def _dense_as_strided_jacobian(n_in: int, in_shape, size, stride, offset) -> torch.Tensor:
    """``J[i, j] = 1`` where output element ``i`` (flat) is read from input element ``j`` (flat)."""
    idx = torch.arange(n_in).view(in_shape).as_strided(size, stride, offset)
    return torch.nn.functional.one_hot(idx.reshape(-1), n_in).to(torch.float64)


def test_as_strided_is_registered_as_routing():
    op_rule = get_rule(aten.as_strided.default)
    assert op_rule is not None
    assert op_rule.group == "routing"
    assert isinstance(op_rule.default, Route)


@pytest.mark.parametrize(
    "in_shape, size, stride, offset",
    [
        ((2, 12), (2, 3, 4), (12, 2, 1), 1),  # overlapping windows: some inputs read twice, some never
        ((2, 6, 1, 1), (2, 6, 1, 1), (6, 1, 6, 6), 0),  # the channels-last restride seen in convnext
        ((3, 5), (5, 3), (1, 5), 0),  # a transpose
        ((10,), (4, 3), (2, 1), 0),  # sliding windows with stride 2
    ],
)
def test_as_strided_routes_exactly(in_shape, size, stride, offset):
    """``R_x = J^T R``, and ``sum R_x = sum R`` (exact routing is conservative, copies included)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(in_shape, generator=gen, dtype=torch.float64)
    r = torch.randn(size, generator=gen, dtype=torch.float64)
    res = lrp_fx.attribute(AsStrided(size, stride, offset), x, target=r)
    ops = [n.target for n in res.program.captured.graph.nodes if n.op == "call_function"]
    assert aten.as_strided.default in ops
    jac = _dense_as_strided_jacobian(x.numel(), in_shape, size, stride, offset)
    expected = (jac.T @ r.reshape(-1)).view(in_shape)
    torch.testing.assert_close(res.relevance, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.relevance.sum(), r.sum(), rtol=1e-12, atol=1e-12)


def test_as_strided_behind_channels_last_pooling_is_conservative():
    """``adaptive_avg_pool2d`` on a channels-last tensor decomposes to ``mean`` + ``as_strided`` (convnext's head):
    Norm on the mean and routing on the restride hand each input ``x * R / (HW * stab(mean))``."""

    class Head(nn.Module):
        def forward(self, x):
            x = x.contiguous(memory_format=torch.channels_last)
            return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64) + 0.5  # positive: no stabiliser sign issue
    r = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    res = lrp_fx.attribute(Head(), x, target=r, track_absorbed=True)
    ops = [n.target for n in res.program.captured.graph.nodes if n.op == "call_function"]
    assert aten.as_strided.default in ops
    mean = x.mean(dim=(2, 3), keepdim=True)
    expected = x * r.view(2, 3, 1, 1) / (16 * (mean + 1e-6))
    torch.testing.assert_close(res.relevance, expected, rtol=1e-12, atol=1e-12)
    total = res.relevance.sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, r.sum(), rtol=1e-10, atol=1e-12)
