"""The promise planner: what it keeps is what the relevance pass reads, counted per storage, and
``memory_budget=0`` keeps no more forward memory than autograd saves for an input gradient."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.backend import split_program


class Block(nn.Module):
    """A pre-norm transformer block (layer norms, fused-projection attention, GELU MLP, two residual sums)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))).mean(1))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


CASES = {
    "transformer": (TinyViT, (3, 10, 12), "cplrp"),
    "cnn": (SmallCNN, (2, 3, 12, 12), "epsilon_plus_flat"),
}


def _case(name: str) -> tuple[nn.Module, torch.Tensor, str]:
    build, shape, preset = CASES[name]
    torch.manual_seed(0)
    model = build().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, torch.randn(*shape), preset


def _storage_bytes(tensors, exclude: set[int]) -> int:
    storages = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in exclude:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def _saved_by_program(model: nn.Module, x: torch.Tensor, res: lrp_fx.Attribution) -> int:
    """Bytes of the forward values the relevance part of the program reads, measured by running its forward part."""
    values = res.program.placeholder_values(model, [x])
    _, *saved = split_program(res.program.graph_module).forward(*values)
    exclude = {v.untyped_storage().data_ptr() for v in values if isinstance(v, torch.Tensor)}
    return _storage_bytes(saved, exclude)


def _saved_by_autograd(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for forward + input gradient (parameters frozen), each storage once."""
    saved: list[torch.Tensor] = []
    x = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        model(x)
    exclude = {p.untyped_storage().data_ptr() for p in [*model.parameters(), *model.buffers(), x]}
    return _storage_bytes(saved, exclude)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("budget", [None, 0])
def test_bytes_kept_is_what_the_relevance_part_reads(name, budget):
    model, x, preset = _case(name)
    res = lrp_fx.attribute(model, x, target=0, composite=preset, memory_budget=budget)
    # a view and the tensor it views are one storage, and requests no rule result depends on hold nothing
    assert res.stats.bytes_kept == _saved_by_program(model, x, res)


def test_routing_rules_trace_dead_requests_that_are_not_counted():
    model, x, preset = _case("transformer")
    res = lrp_fx.attribute(model, x, target=0, composite=preset)
    assert res.stats.dead > 0 and res.stats.as_dict()["dead"] == res.stats.dead
    assert res.stats.kept <= res.stats.values <= res.stats.promises


@pytest.mark.parametrize("name", sorted(CASES))
def test_budget_zero_keeps_at_most_what_autograd_saves(name):
    model, x, preset = _case(name)
    kept = lrp_fx.attribute(model, x, target=0, composite=preset)
    low = lrp_fx.attribute(model, x, target=0, composite=preset, memory_budget=0)
    torch.testing.assert_close(low.relevance, kept.relevance, rtol=0, atol=0)
    assert low.stats.recomputed > 0
    assert _saved_by_program(model, x, low) < _saved_by_program(model, x, kept)
    # autograd keeps the residual sums, the planner the linear layers' outputs the sums are rebuilt from (their
    # stabilisers need them); the last norm's output stays, its input being rebuilt itself
    assert _saved_by_program(model, x, low) <= 1.1 * _saved_by_autograd(model, x)


def _saved_nodes(res: lrp_fx.Attribution) -> list:
    return split_program(res.program.graph_module).forward.graph.find_nodes(op="output")[0].all_input_nodes


def _normalised(nodes: list) -> list:
    """The layer-norm outputs among ``nodes`` (not their statistics)."""
    return [
        n
        for n in nodes
        if n.target is operator.getitem
        and n.args[0].target is torch.ops.aten.native_layer_norm.default
        and n.args[1] == 0
    ]


def test_budget_zero_rebuilds_layer_norm_outputs_and_attention_copies():
    model, x, preset = _case("transformer")
    kept = _saved_nodes(lrp_fx.attribute(model, x, target=0, composite=preset))
    low = _saved_nodes(lrp_fx.attribute(model, x, target=0, composite=preset, memory_budget=0))

    def clones(nodes: list) -> list:  # q, k, v's contiguous copy of the fused projection, which is kept as well
        bases = set()
        for n in nodes:
            while getattr(n.target, "is_view", False):  # the saved q, k, v are views of the copy
                n = n.args[0]
            bases.add(n)
        return [n for n in bases if n.target is torch.ops.aten.clone.default]

    assert len(clones(kept)) == 2 and clones(low) == []
    assert len(_normalised(kept)) == 5
    assert len(_normalised(low)) <= 1  # only the last norm, whose input is rebuilt itself


def test_a_positive_budget_is_met_when_cheap_values_allow_it():
    model, x, preset = _case("transformer")
    full = lrp_fx.attribute(model, x, target=0, composite=preset)
    floor = lrp_fx.attribute(model, x, target=0, composite=preset, memory_budget=0).stats.bytes_kept
    budget = (full.stats.bytes_kept + floor) // 2
    res = lrp_fx.attribute(model, x, target=0, composite=preset, memory_budget=budget)
    assert floor <= res.stats.bytes_kept <= budget < full.stats.bytes_kept
    torch.testing.assert_close(res.relevance, full.relevance, rtol=0, atol=0)


def test_compile_backend_and_export_plan_the_same_recomputations():
    """The backend's forward/relevance split and the exported program run the planner's recomputations in the
    relevance part and give the eager relevance."""
    model, x, preset = _case("transformer")
    seed = torch.randn(x.shape[0], 5)
    eager = lrp_fx.attribute(model, x, target=seed, composite=preset, memory_budget=0)
    backend = lrp_fx.backend(preset, memory_budget=0, inductor=False)
    xc = x.clone().requires_grad_(True)
    (rel,) = torch.autograd.grad(torch.compile(model, backend=backend)(xc), xc, grad_outputs=seed)
    torch.testing.assert_close(rel, eager.relevance, rtol=1e-5, atol=1e-7)
    exported = lrp_fx.export(model, x, composite=preset, memory_budget=0)
    out = exported.module()(x, seed)
    torch.testing.assert_close(out[1], eager.relevance, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rule", [lrp_fx.rules.Epsilon(), lrp_fx.rules.Gamma(0.25)])
def test_hardtanh_that_moves_zero_does_not_let_a_relu_stand_for_the_layer_output(rule):
    """A rule that reads its layer's output only where relevance flows may be served the following ReLU's output
    (equal there) when relevance provably vanishes where that ReLU is 0. ``hardtanh(x, 0.5, 1)`` maps 0 to 0.5, so
    relevance does reach the zeros: the result must equal the same model written with ``clamp`` (no such proof)."""

    class Model(nn.Module):
        def __init__(self, clamp: bool):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.head, self.clamp = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(75, 2), clamp

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = h.clamp(0.5, 1.0) if self.clamp else nn.functional.hardtanh(h, 0.5, 1.0)
            return self.head(h.flatten(1))

    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    kw = dict(target=0, composite="epsilon", overrides={nn.Conv2d: rule})
    res = lrp_fx.attribute(Model(False).double(), x, **kw)
    ref = lrp_fx.attribute(Model(True).double(), x, **kw)
    torch.testing.assert_close(res.relevance, ref.relevance, rtol=1e-10, atol=1e-12)
