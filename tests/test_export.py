"""``lrp_fx.export``: ahead-of-time attribution graphs that load and run without lrp_fx."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.export.graph_signature import InputKind

import lrp_fx


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} * {scale:.3g}"


def _cnn() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3),
        nn.ReLU(),
        nn.Flatten(),  # reads the batch size from the activation: a dynamic-shape capture must not give it relevance
        nn.Linear(8 * 4 * 4, 5),
    ).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    model = _cnn()
    prog = lrp_fx.export(model, torch.randn(2, 3, 12, 12), composite="epsilon_plus_flat")
    return model, prog


def test_signature_and_baked_parameters(exported):
    model, prog = exported
    sig = prog.graph_signature
    user = [s for s in sig.input_specs if s.kind == InputKind.USER_INPUT]
    assert len(user) == 2  # x, seed
    assert len(sig.user_outputs) == 2  # output, relevance of x
    params = {s.target for s in sig.input_specs if s.kind == InputKind.PARAMETER}
    assert params == {f"model.{name}" for name, _ in model.named_parameters()}
    torch.testing.assert_close(prog.state_dict["model.0.weight"], model[0].weight)
    ops = {str(n.target) for n in prog.graph.nodes if n.op == "call_function"}
    assert not any("lrp_fx" in op for op in ops), ops


def test_training_the_model_after_export_does_not_change_the_program():
    """The program's parameters were the model's own tensors, its hoisted weights copies: after one more optimizer
    step its output followed the new model and its relevance neither model."""
    torch.manual_seed(1)
    model = _cnn()
    x, seed = torch.randn(3, 3, 12, 12), torch.randn(3, 5)
    before = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
    prog = lrp_fx.export(model, torch.randn(2, 3, 12, 12), composite="epsilon_plus_flat")
    assert not any(t is model[0].weight for t in prog.state_dict.values())
    with torch.no_grad():
        model[4].weight.add_(0.3 * torch.randn_like(model[4].weight))
    out, rel = prog.module()(x, seed)
    torch.testing.assert_close(out, before.output)
    _close(rel, before.relevance)


@pytest.mark.parametrize("option", ["param_relevance", "modules", "track_absorbed", "target"])
def test_attribute_only_options_are_named_as_such(option):
    with pytest.raises(lrp_fx.InputError, match=f"{option}: not available in an exported program"):
        lrp_fx.export(_cnn(), torch.randn(2, 3, 12, 12), **{option: True})


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_dynamic_batch_matches_attribute(exported, batch):
    model, prog = exported
    x = torch.randn(batch, 3, 12, 12)
    seed = torch.randn(batch, 5)
    out, rel = prog.module()(x, seed)
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
    torch.testing.assert_close(out, ref.output)
    _close(rel, ref.relevance)


def test_transformer_like_export():
    from tests.test_backend import Block

    torch.manual_seed(0)
    model = Block(attention=True).eval()
    try:
        prog = lrp_fx.export(model, torch.randn(2, 5, 16), composite="epsilon")
    except lrp_fx.MissingRuleError as err:
        pytest.skip(f"lrp_fx has no rule yet for an op of this model: {str(err).splitlines()[1].strip()}")
    x, seed = torch.randn(4, 5, 16), torch.randn(4, 4)
    out, rel = prog.module()(x, seed)
    _close(rel, lrp_fx.attribute(model, x, target=seed, composite="epsilon").relevance)


def test_saved_program_loads_and_runs_without_lrp_fx(exported, tmp_path):
    model, prog = exported
    path = tmp_path / "attr.pt2"
    torch.export.save(prog, str(path))
    x = torch.randn(4, 3, 12, 12)
    seed = torch.randn(4, 5)
    torch.save({"x": x, "seed": seed}, tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import sys
        import torch

        prog = torch.export.load({str(path)!r})
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        out, rel = prog.module()(inputs["x"], inputs["seed"])
        assert "lrp_fx" not in sys.modules, "the exported program imported lrp_fx"
        torch.save({{"out": out, "rel": rel}}, {str(tmp_path / "result.pt")!r})
        print("OK")
        """
    )
    (tmp_path / "load.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "load.py")], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt")
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
    torch.testing.assert_close(result["out"], ref.output)
    _close(result["rel"], ref.relevance)


def test_export_rejects_inputs_without_floats():
    # integer inputs that feed no embedding (token ids would be attributed per token, as in attribute)
    with pytest.raises(lrp_fx.InputError):
        lrp_fx.export(nn.Flatten(), torch.tensor([[1, 2]]))


@pytest.mark.slow
def test_aot_inductor_package_matches_attribute(exported, tmp_path):
    model, prog = exported
    path = torch._inductor.aoti_compile_and_package(
        prog, package_path=str(tmp_path / "attr_aoti.pt2"), inductor_configs={"layout_optimization": False}
    )
    runner = torch._inductor.aoti_load_package(path)
    for batch in (2, 5):
        x = torch.randn(batch, 3, 12, 12)
        seed = torch.randn(batch, 5)
        out, rel = runner(x, seed)
        ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
        torch.testing.assert_close(out, ref.output, rtol=1e-5, atol=1e-6)
        _close(rel, ref.relevance)


def test_compile_and_export_doc_examples_run(tmp_path, monkeypatch):
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "compile_and_export.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "aoti_compile_and_package" not in b]
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    torch._dynamo.reset()
    scope: dict = {}
    with torch._inductor.config.patch(compile_threads=1):
        for i, block in enumerate(blocks):
            exec(compile(block, f"docs/compile_and_export.md[{i}]", "exec"), scope)
    torch._dynamo.reset()


def test_hoisted_weights_are_constants_of_the_program():
    torch.manual_seed(0)
    model = _cnn()
    example = torch.randn(2, 3, 12, 12)
    hoisted = lrp_fx.export(model, example, composite="epsilon_plus_flat")
    plain = lrp_fx.export(model, example, composite="epsilon_plus_flat", reuse_weights=False)
    assert not plain.constants and hoisted.constants  # computed at export time, stored in the program

    def n_ops(prog):
        return sum(1 for n in prog.graph.nodes if n.op == "call_function")

    assert n_ops(hoisted) < n_ops(plain)
    x, seed = torch.randn(3, 3, 12, 12), torch.randn(3, 5)
    ref = lrp_fx.attribute(model, x, target=seed, composite="epsilon_plus_flat")
    for prog in (hoisted, plain):
        out, rel = prog.module()(x, seed)
        torch.testing.assert_close(out, ref.output)
        _close(rel, ref.relevance)


class _MHA(nn.Module):
    """Batch-first multi-head attention: its sequence-first projections make matmul broadcast the weight (bmm)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.head((x + y).mean(1))


def test_broadcast_bmm_becomes_one_matrix_product():
    from lrp_fx.export import fold_broadcast_bmm
    from lrp_fx.inplace import copy_graph_module

    torch.manual_seed(0)
    model = _MHA().eval()
    x, seed = torch.randn(3, 7, 16), torch.randn(3, 3)
    params = {"epsilon": 1e-2}
    try:
        res = lrp_fx.attribute(model, x, target=seed, composite="epsilon", **params)
    except lrp_fx.MissingRuleError as err:
        pytest.skip(f"lrp_fx has no rule yet for an op of this model: {str(err).splitlines()[1].strip()}")
    gm = copy_graph_module(res.program.graph_module)

    def bmm_count(g):
        return sum(1 for n in g.graph.nodes if n.target is torch.ops.aten.bmm.default)

    before = bmm_count(gm)
    folded = fold_broadcast_bmm(gm)
    assert folded > 0 and bmm_count(gm) == before - folded
    values = res.program.placeholder_values(model, [x])
    with torch.no_grad():
        out = gm(*values, seed)
    torch.testing.assert_close(out[0], res.output)
    _close(out[1], res.relevance)
    prog = lrp_fx.export(model, x, composite="epsilon", **params)  # the export folds them too
    assert bmm_count(prog.graph_module) < before
    _close(prog.module()(x, seed)[1], res.relevance)
