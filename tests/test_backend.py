"""``torch.compile(model, backend="lrp")``: relevance as the gradient of the compiled model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.backend import GraphBreakWarning, LRPBackend, split_program

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with torch._inductor.config.patch(compile_threads=1):  # no compile worker pool: faster on a small CPU box
        yield
    torch._dynamo.reset()


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} * {scale:.3g}"


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class Block(nn.Module):
    """Transformer-like: layer norms, a token-mixing linear layer or attention (matmul + softmax), GELU MLP."""

    def __init__(self, d: int = 16, tokens: int = 5, attention: bool = False) -> None:
        super().__init__()
        self.attention = attention
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.mix = nn.Linear(tokens, tokens)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        if self.attention:
            y = torch.softmax(self.q(h) @ self.k(h).transpose(-1, -2) / 4.0, dim=-1) @ self.v(h)
        else:
            y = self.mix(self.v(h).transpose(1, 2)).transpose(1, 2)
        x = x + y
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))
        return self.head(x.mean(1))


class TwoLinear(nn.Module):
    """A deliberate graph break between two linear layers; two tensors cross it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        g = self.b(h)
        torch._dynamo.graph_break()
        return self.c(torch.relu(g) + h)


@torch._dynamo.disable
def _eager_scale(h: torch.Tensor) -> torch.Tensor:
    return h * 2


class EagerBetween(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.c = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(_eager_scale(torch.relu(self.a(x))))


def _relevance(cmodel, x: torch.Tensor, seed_fn=torch.randn_like, mark_batch: bool = False):
    x = x.clone().requires_grad_(True)
    if mark_batch:
        torch._dynamo.mark_dynamic(x, 0)
    out = cmodel(x)
    seed = seed_fn(out)
    (rel,) = torch.autograd.grad(out, x, grad_outputs=seed)
    return out, seed, rel


def test_cnn_matches_attribute_without_rebuilding_across_batch_sizes():
    model = CNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    be = lrp_fx.backend("epsilon_plus_flat")
    cmodel = torch.compile(model, backend=be)
    for batch in (2, 3, 5):
        x = torch.randn(batch, 3, 12, 12)
        out, seed, rel = _relevance(cmodel, x)
        ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
        _close(rel, ref.relevance)
    # Dynamo re-traces once (the first new batch size); the backend recognises the graph: one program built
    assert be.builds == 1
    assert be.graphs <= 2


def test_no_retrace_with_dynamic_batch_marked():
    model = CNN().eval()
    be = lrp_fx.backend("epsilon", inductor=False)
    cmodel = torch.compile(model, backend=be)
    for batch in (2, 3, 5):
        x = torch.randn(batch, 3, 12, 12)
        out, seed, rel = _relevance(cmodel, x, mark_batch=True)
        _close(rel, lrp_fx.attribute(model, x, target=seed, composite="epsilon").relevance)
    assert (be.graphs, be.builds) == (1, 1)


@pytest.mark.parametrize("attention", [False, True], ids=["mixer", "attention"])
def test_transformer_like_matches_attribute(attention):
    model = Block(attention=attention).eval()
    try:
        lrp_fx.attribute(model, torch.randn(2, 5, 16), composite="epsilon")
    except lrp_fx.MissingRuleError as err:
        pytest.skip(f"lrp_fx has no rule yet for an op of this model: {str(err).splitlines()[1].strip()}")
    # Stabilisers of 1e-2 rather than 1e-6: with 1e-6 a pre-activation or residual sum near zero amplifies float32
    # rounding up to a million-fold, and eager float32 relevance itself then misses the float64 one by more than 1e-5
    # (Inductor's fused reductions round differently, not worse in kind).
    params = {"epsilon": 1e-2, "stabilizer": 1e-2}
    be = lrp_fx.backend("epsilon", **params)
    cmodel = torch.compile(model, backend=be, fullgraph=True)
    for batch in (2, 3):
        x = torch.randn(batch, 5, 16)
        out, seed, rel = _relevance(cmodel, x)
        _close(rel, lrp_fx.attribute(model, x, target=seed, composite="epsilon", **params).relevance)
    assert be.builds == 1


def test_graph_break_warns_once_and_matches_attribute():
    model = TwoLinear().eval()
    be = lrp_fx.backend("epsilon_plus_flat", inductor=False)  # Inductor is covered above; this tests the regions
    cmodel = torch.compile(model, backend=be)
    x = torch.randn(4, 6)
    with pytest.warns(GraphBreakWarning, match="graph_break") as record:
        out, seed, rel = _relevance(cmodel, x)
    assert sum(issubclass(w.category, GraphBreakWarning) for w in record) == 1
    assert "No tensor op ran between regions" in str(record[0].message)
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")  # first-layer rule only once
    torch.testing.assert_close(out, ref.output)
    _close(rel, ref.relevance)
    assert be.graphs == 2
    with warnings.catch_warnings():  # the same compiled model again: nothing new to report
        warnings.simplefilter("error", GraphBreakWarning)
        _relevance(cmodel, x)


def test_graph_break_names_the_ops_that_ran_eagerly():
    model = EagerBetween().eval()
    cmodel = torch.compile(model, backend=lrp_fx.backend("epsilon", inductor=False))
    x = torch.randn(3, 6)
    with pytest.warns(GraphBreakWarning, match=r"got their gradient, not an LRP rule: mul x1"):
        _, seed, rel = _relevance(cmodel, x)
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon")  # exports h * 2 and applies its rule
    _close(rel, 2 * ref.relevance)  # the eager multiply scaled the gradient instead


def test_outputs_no_grad_and_parameters():
    model = CNN().eval()
    cmodel = torch.compile(model, backend=lrp_fx.backend("epsilon", inductor=False))
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(cmodel(x), model(x))
    out = cmodel(x)  # parameters require grad, the input does not: they get no relevance and no gradient
    out.sum().backward()
    assert all(p.grad is None for p in model.parameters())


def test_split_program_forward_and_backward_compose():
    model = CNN().eval()
    x = torch.randn(2, 3, 12, 12)
    seed = torch.randn(2, 5)
    res = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus")
    program = res.program
    values = program.placeholder_values(model, [x])
    split = split_program(program.graph_module)
    out, *saved = split.forward(*values)
    rel = split.backward(*saved, *(values[i] for i in split.saved_inputs), seed)
    torch.testing.assert_close(out, res.output)
    torch.testing.assert_close(rel[0], res.relevance)
    torch.testing.assert_close(split.inference(*values)[0], res.output)


@pytest.mark.parametrize("key", ["head", nn.Linear], ids=["name", "type"])
def test_overrides_match_module_names_and_types(key):
    model = CNN().eval()
    overrides = {key: lrp_fx.rules.Flat()}
    be = lrp_fx.backend("epsilon_plus", overrides=overrides, inductor=False)
    x = torch.randn(2, 3, 12, 12)
    out, seed, rel = _relevance(torch.compile(model, backend=be), x)
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus", overrides=overrides)
    plain = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus")
    _close(rel, ref.relevance)
    assert (rel - plain.relevance).abs().max() > 1e-3  # the override changed something


def test_overrides_matching_no_module_warn_on_a_whole_graph_only():
    from lrp_fx.composites import UnmatchedOverrideWarning

    x = torch.randn(2, 3, 12, 12)
    be = lrp_fx.backend(
        "epsilon", overrides={"haed": lrp_fx.rules.Flat(), nn.GELU: lrp_fx.rules.Pass()}, inductor=False
    )
    with pytest.warns(UnmatchedOverrideWarning) as record:
        _relevance(torch.compile(CNN().eval(), backend=be), x)
    messages = [str(w.message) for w in record if issubclass(w.category, UnmatchedOverrideWarning)]
    assert len(messages) == 2
    assert "'haed' matches no module of the compiled model" in messages[0] and "did you mean 'head'" in messages[0]
    assert "type GELU" in messages[1]
    with warnings.catch_warnings():  # matching overrides: silent
        warnings.simplefilter("error", UnmatchedOverrideWarning)
        good = lrp_fx.backend("epsilon", overrides={"head": lrp_fx.rules.Flat(), nn.ReLU: lrp_fx.rules.Pass()})
        _relevance(torch.compile(CNN().eval(), backend=good, fullgraph=True), x)
    # across a graph break each graph holds part of the model: an override of the other part is not reported
    split = lrp_fx.backend("epsilon", overrides={"c": lrp_fx.rules.Flat()}, inductor=False)
    with warnings.catch_warnings(), pytest.warns(GraphBreakWarning):
        warnings.simplefilter("error", UnmatchedOverrideWarning)
        _relevance(torch.compile(TwoLinear().eval(), backend=split), torch.randn(4, 6))


def test_memory_budget_recomputations_stay_in_the_relevance_part():
    model = CNN().eval()
    x = torch.randn(2, 3, 12, 12)
    seed = torch.randn(2, 5)
    res = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus", memory_budget=0)
    assert res.stats.recomputed > 0
    split = split_program(res.program.graph_module)
    values = res.program.placeholder_values(model, [x])
    out, *saved = split.forward(*values)
    rel = split.backward(*saved, *(values[i] for i in split.saved_inputs), seed)
    torch.testing.assert_close(rel[0], res.relevance)
    full = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus")
    assert len(saved) < len(split_program(full.program.graph_module).forward(*values)) - 1
    be = lrp_fx.backend("epsilon_plus", memory_budget=0, inductor=False)
    _, seed2, rel2 = _relevance(torch.compile(model, backend=be), x)
    _close(rel2, lrp_fx.attribute(model, x, target=seed2, composite="epsilon_plus").relevance)


def test_configured_backend_is_a_backend():
    be = lrp_fx.backend("epsilon_gamma_box", low=-3.0, high=3.0, inductor=False)
    assert isinstance(be, LRPBackend) and be.composite.name == "epsilon_gamma_box"
    with pytest.raises(TypeError):
        lrp_fx.backend("epsilon", gamma_typo=1.0)


def test_entry_point_registration_without_importing_lrp_fx(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        import torch
        from torch import nn

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        assert "lrp_fx" not in sys.modules
        cmodel = torch.compile(model, backend="lrp")
        assert "lrp_fx" in sys.modules  # loaded by Dynamo through the torch_dynamo_backends entry point
        x = torch.randn(4, 6, requires_grad=True)
        out = cmodel(x)
        seed = torch.randn_like(out)
        (rel,) = torch.autograd.grad(out, x, grad_outputs=seed)

        import lrp_fx

        ref = lrp_fx.attribute(model, x.detach(), target=seed)
        err = (rel - ref.relevance).abs().max().item()
        assert err <= 1e-5 * ref.relevance.abs().max().item(), err
        print("OK")
        """
    )
    path = tmp_path / "entry.py"
    path.write_text(script)
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1")
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def _bn_cnn() -> CNN:
    model = CNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics: the folded weights differ from the raw ones
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


def test_dynamic_true_matches_attribute_without_rebuilding():
    # dynamic=True passes the batch norm's float attributes as 0-d tensors read back with .item(), and makes the
    # spatial sizes symbolic too
    model = _bn_cnn()
    be = lrp_fx.backend("epsilon_plus_flat", inductor=False)
    cmodel = torch.compile(model, backend=be, dynamic=True)
    for batch, side in ((2, 12), (3, 12), (5, 12), (3, 16)):
        x = torch.randn(batch, 3, side, side)
        out, seed, rel = _relevance(cmodel, x)
        ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
        torch.testing.assert_close(out, ref.output)
        _close(rel, ref.relevance)
    assert (be.graphs, be.builds) == (1, 1)


def test_dynamic_true_transformer_with_inductor():
    model = Block(attention=True).eval()
    params = {"epsilon": 1e-2, "stabilizer": 1e-2}  # see test_transformer_like_matches_attribute
    be = lrp_fx.backend("epsilon", **params)
    cmodel = torch.compile(model, backend=be, dynamic=True, fullgraph=True)
    for batch in (2, 3, 4):
        x = torch.randn(batch, 5, 16)
        out, seed, rel = _relevance(cmodel, x)
        _close(rel, lrp_fx.attribute(model, x, target=seed, composite="epsilon", **params).relevance)
    assert be.builds == 1


def _part_ops(be: LRPBackend) -> int:
    """call_function nodes in the forward and relevance parts of the backend's one program."""
    (entry,) = [e for entries in be._programs.values() for e in entries]
    parts = (entry.split.forward, entry.split.backward)
    return sum(1 for gm in parts for n in gm.graph.nodes if n.op == "call_function")


def test_weights_are_hoisted_out_of_the_compiled_parts():
    model = _bn_cnn()
    x = torch.randn(3, 3, 12, 12)
    rels, ops = {}, {}
    for reuse in (True, False):
        be = lrp_fx.backend("epsilon_plus_flat", inductor=False, reuse_weights=reuse)
        _, seed, rels[reuse] = _relevance(torch.compile(model, backend=be), x, seed_fn=lambda o: torch.ones_like(o))
        ops[reuse] = _part_ops(be)
        assert be.prologue_runs == (1 if reuse else 0)
        torch._dynamo.reset()
    _close(rels[True], rels[False])
    assert ops[True] < ops[False]  # the folded batch norm and the z+ weights left the per-call parts


def test_weight_updates_are_seen():
    model = _bn_cnn()
    be = lrp_fx.backend("epsilon_plus_flat")  # Inductor: hoisted weights are inputs of the compiled parts
    cmodel = torch.compile(model, backend=be)
    x = torch.randn(2, 3, 12, 12)

    def check() -> None:
        out, seed, rel = _relevance(cmodel, x)
        ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat", reuse_weights=False)
        torch.testing.assert_close(out, ref.output, rtol=1e-5, atol=1e-6)
        _close(rel, ref.relevance)

    check()
    check()
    assert be.prologue_runs == 1  # unchanged weights: computed once
    with torch.no_grad():  # in place (an optimizer step)
        model.features[0].weight.add_(0.3 * torch.randn_like(model.features[0].weight))
        model.features[1].running_var.mul_(3.0)
    check()
    assert be.prologue_runs == 2
    state = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    check()
    assert be.prologue_runs == 3
    model.features[4].weight = nn.Parameter(torch.randn_like(model.features[4].weight))  # replaced
    check()
    assert be.prologue_runs >= 4


def _broadcast_bmms(be: LRPBackend) -> int:
    """Batched products in the backend's program parts whose second operand is one broadcast matrix."""
    (entry,) = [e for entries in be._programs.values() for e in entries]
    parts = (entry.split.forward, entry.split.backward)
    return sum(
        1
        for gm in parts
        for n in gm.graph.nodes
        if n.target is torch.ops.aten.bmm.default and n.args[1].meta["val"].stride(0) == 0
    )


def _tiny_vit() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    nn.init.normal_(model.heads.head.weight, std=0.2)  # zero-initialised: no relevance at all
    return model


def test_dynamic_true_vision_transformer():
    model = _tiny_vit()
    be = lrp_fx.backend("attnlrp", inductor=False)
    cmodel = torch.compile(model, backend=be, dynamic=True)
    for batch in (2, 3, 5):
        x = torch.randn(batch, 3, 32, 32)
        out, seed, rel = _relevance(cmodel, x)
        _close(rel, lrp_fx.attribute(model, x, target=seed, composite="attnlrp").relevance)
    assert (be.graphs, be.builds) == (1, 1)  # one program for every batch size


def test_broadcast_weight_products_are_folded():
    model = _tiny_vit().requires_grad_(False)  # matmul folds by itself where the weight requires grad
    x = torch.randn(3, 3, 32, 32)
    counts = {}
    for fold in (True, False):
        torch._dynamo.reset()
        be = lrp_fx.backend("attnlrp", inductor=False, fold_bmm=fold)
        out, seed, rel = _relevance(torch.compile(model, backend=be), x)
        _close(rel, lrp_fx.attribute(model, x, target=seed, composite="attnlrp").relevance)
        counts[fold] = _broadcast_bmms(be)
    # nn.MultiheadAttention's (tokens, batch, features) projections: the weight broadcast to every token, in the
    # forward and in the relevance pass; folded into one matrix product each
    assert counts[False] > 0 and counts[True] == 0


def test_training_mode_is_an_error_that_says_call_eval():
    """Batch norm with batch statistics and dropout only appear in training mode: the fix is model.eval(), not a
    rule for those ops."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    compiled = torch.compile(model, backend="lrp")
    x = torch.randn(4, 4, requires_grad=True)
    with pytest.raises(Exception, match=r"training mode.*model\.eval\(\)"):
        compiled(x)
    torch._dynamo.reset()
    model.eval()
    out = torch.compile(model, backend="lrp")(x)
    torch.testing.assert_close(out, model(x))


def test_a_recompile_after_backward_on_the_same_input():
    """The protocol's own result (``x.grad``) must not break the next capture: a second preset on the same ``x``
    and a ``no_grad`` call (a recompile) capture with symbolic sizes, whose guards read ``x.grad`` (torch.export)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6, requires_grad=True)
    for preset in ("epsilon", "epsilon_plus"):
        out = torch.compile(model, backend=lrp_fx.backend(preset, inductor=False), dynamic=True)(x)
        out[:, 1].sum().backward()
        assert x.grad is not None
    with torch.no_grad():
        cmodel = torch.compile(model, backend=lrp_fx.backend("epsilon", inductor=False), dynamic=True)
        torch.testing.assert_close(cmodel(x), model(x))
    program = lrp_fx.export(model, x, composite="epsilon")  # lrp_fx.export captures with a symbolic batch too
    assert program is not None


def test_options_that_only_attribute_has_are_refused_with_a_pointer_to_it():
    with pytest.raises(TypeError, match="use lrp_fx.attribute"):
        lrp_fx.backend("epsilon", param_relevance=True)


@pytest.mark.slow
def test_several_outputs_with_inductors_graph_cache_across_processes(tmp_path):
    """Two outputs: the relevance part's seed is their concatenation, of an expression size (``5*s0``). Inductor's
    on-disk graph cache stored a guard naming the capture's inputs, and the second process failed in ``backward``
    with ``KeyError: 'args'``; such parts now skip that cache."""
    script = textwrap.dedent(
        """
        import torch
        from torch import nn
        import lrp_fx

        class Two(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.h, self.h2 = nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(6, 3)

            def forward(self, x):
                z = torch.relu(self.a(x))
                return self.h(z), self.h2(z)

        torch.manual_seed(0)
        model = Two().eval()
        x = torch.randn(3, 4, requires_grad=True)
        o1, o2 = torch.compile(model, backend=lrp_fx.backend("epsilon"))(x)
        o1.backward(torch.ones_like(o1))
        ref = lrp_fx.attribute(model, x.detach(), target=torch.ones(3, 2), output=0, composite="epsilon")
        assert torch.allclose(x.grad, ref.relevance, rtol=1e-5, atol=1e-6)
        print("OK")
        """
    )
    path = tmp_path / "two.py"
    path.write_text(script)
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    for _ in range(2):
        proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
