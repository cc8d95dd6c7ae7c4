"""``lrp-fx`` command line.

Subcommands are registered in :data:`COMMANDS` (name -> :class:`Command`): each has a help line, a function adding
its arguments to its sub-parser and a function running it (``args -> exit code``). All of them share ``--debug``.
``main`` turns every error into one line on stderr and exit code 2 (usage errors included), unless ``--debug``
asks for the traceback. Heavy imports (torch, the model, matplotlib) happen inside the run functions, so ``--help``
stays fast.

Implemented: ``demo``. Planned: ``explain`` (any model/input), ``coverage`` (which aten ops have rules).
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["main", "build_parser", "COMMANDS", "Command", "CLIError", "PRESETS"]

PROG = "lrp-fx"

#: Composite presets of ``lrp_fx.attribute`` listed in ``--help``; validation uses ``lrp_fx.PRESETS`` when available.
PRESETS = (
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "attnlrp",
    "cplrp",
)
DEFAULT_PRESET = "epsilon_plus_flat"

_LAYOUTS = ("side_by_side", "overlay", "triptych", "heatmap")
_MAX_MESSAGE = 600


class CLIError(Exception):
    """A user-facing error: its message is printed as is (one line), exit code 2."""


class _UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit so that ``main`` returns 2 with a single line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse API
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


# --------------------------------------------------------------------------------------------------------- helpers
def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CLIError):
        text, hint = str(exc), ""
    elif isinstance(exc, FileNotFoundError):
        text = f"{exc.strerror}: {exc.filename!r}" if exc.filename else str(exc)
        hint = ""
    else:
        text = f"{type(exc).__name__}: {exc}"
        # lrp_fx's own errors (lrp_fx.errors.LRPError) explain themselves; anything else is unexpected
        expected = any(cls.__name__ == "LRPError" for cls in type(exc).__mro__)
        hint = "" if expected else " (rerun with --debug for the traceback)"
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text + hint


def _parse_param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: object = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return key, parsed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _presets() -> tuple[str, ...]:
    try:
        import lrp_fx

        return tuple(lrp_fx.PRESETS)
    except (ImportError, AttributeError, TypeError):
        return PRESETS


def _check_preset(name: str) -> str:
    presets = _presets()
    if name not in presets:
        raise CLIError(f"unknown composite preset {name!r}; choose one of: {', '.join(presets)}")
    return name


def _get_attribute():
    """``lrp_fx.attribute``, looked up at call time (so tests can monkeypatch it)."""
    try:
        import lrp_fx

        return lrp_fx.attribute
    except (ImportError, AttributeError) as exc:
        raise CLIError(f"lrp_fx.attribute is not available ({type(exc).__name__}: {exc})") from exc


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CLIError(f"invalid device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"device {name!r} requested but CUDA is not available")
    return device


# ------------------------------------------------------------------------------------------------------------ demo
def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from lrp_fx.assets import PHOTOS  # light module: no torch import at module level

    p.add_argument(
        "--image",
        default="chelsea",
        metavar="NAME_OR_PATH",
        help=f"image file, or a photo bundled with scikit-image: {', '.join(PHOTOS)} (default: %(default)s)",
    )
    p.add_argument(
        "--composite",
        default=DEFAULT_PRESET,
        metavar="PRESET",
        help=f"LRP composite preset: {', '.join(PRESETS)} (default: %(default)s)",
    )
    p.add_argument("--out", default="lrp_demo.png", metavar="PNG", help="heatmap PNG to write (default: %(default)s)")
    p.add_argument("--topk", type=_positive_int, default=5, metavar="K", help="predictions to list (default: 5)")
    p.add_argument(
        "--target",
        type=int,
        default=None,
        metavar="CLASS",
        help="ImageNet class index to explain (default: the predicted class)",
    )
    p.add_argument(
        "--param",
        type=_parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra rule parameter for lrp_fx.attribute, repeatable (e.g. epsilon=1e-6, gamma=0.25)",
    )
    p.add_argument(
        "--layout",
        choices=_LAYOUTS,
        default="side_by_side",
        help="photo | heatmap (side_by_side), heatmap over the photo (overlay), photo | heatmap | overlay "
        "(triptych), or the heatmap alone (default: %(default)s)",
    )
    p.add_argument("--scale", type=_positive_int, default=1, help="integer upscaling of the PNG (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def _run_demo(args: argparse.Namespace) -> int:
    composite = _check_preset(args.composite)
    params = dict(args.param)

    from lrp_fx import assets

    image = assets.load_image(args.image)  # fails fast on a missing file, before loading anything heavy
    attribute = _get_attribute()

    import torch

    from lrp_fx import viz

    device = _device(args.device)
    categories = assets.imagenet_categories()
    if args.target is not None and not 0 <= args.target < len(categories):
        raise CLIError(f"--target must be a class index in [0, {len(categories)}), got {args.target}")

    model = assets.load_efficientnet_lite0().to(device)
    x = assets.preprocess_efficientnet(image).to(device)
    if composite == "epsilon_gamma_box":  # the box rule's input bounds: the preprocessed pixel range
        low, high = assets.EFFICIENTNET_INPUT_RANGE
        params.setdefault("low", low)
        params.setdefault("high", high)

    with torch.no_grad():
        logits = model(x)
    probs = logits.softmax(dim=-1)[0]
    k = min(args.topk, probs.numel())
    top = probs.topk(k)
    label = Path(args.image).name if Path(args.image).expanduser().is_file() else args.image
    print(f"EfficientNet-Lite0 on {label!r} ({x.shape[-1]}x{x.shape[-2]} px, (x - 127) / 128):")
    target_index = args.target if args.target is not None else int(logits[0].argmax())
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        mark = "  <- explained" if i == target_index else ""
        print(f"  {rank}. {categories[i]:<28} {100 * p:6.2f}%  (class {i:4d}, logit {float(logits[0, i]):7.3f}){mark}")
    if target_index not in top.indices.tolist():
        print(
            f"  explained: {categories[target_index]} (class {target_index}, {100 * float(probs[target_index]):.2f}%)"
        )

    t0 = time.perf_counter()
    res = attribute(model, x, target=args.target, composite=composite, **params)
    elapsed = time.perf_counter() - t0

    output = res.output.detach()
    relevance = res.relevance.detach()
    if tuple(relevance.shape) != tuple(x.shape):
        raise CLIError(f"relevance shape {tuple(relevance.shape)} does not match the input shape {tuple(x.shape)}")
    if tuple(output.shape) == tuple(logits.shape):
        diff = float((output.float() - logits.float()).abs().max())
        if diff > 1e-3 * max(1.0, float(logits.abs().max())):
            print(f"warning: lrp_fx output differs from model(x) by up to {diff:.3g}", file=sys.stderr)
        explained_logit = float(output[0, target_index])
    else:
        explained_logit = float(logits[0, target_index])

    out = viz.save_heatmap(
        args.out,
        relevance[0].float().cpu(),
        image=None if args.layout == "heatmap" else assets.denormalize_efficientnet(x)[0].cpu(),
        layout=args.layout,
        scale=args.scale,
    )
    total = float(relevance.sum())
    positive = float(relevance.clamp(min=0).sum())
    negative = float(relevance.clamp(max=0).sum())
    ratio = f"{total / explained_logit:.4g}" if explained_logit != 0 else "n/a"
    print(f"LRP composite {composite!r}: {elapsed:.2f} s")
    print(
        f"relevance sum {total:.4g} (positive {positive:.4g}, negative {negative:.4g}) vs explained logit "
        f"{explained_logit:.4f} [{categories[target_index]}], ratio {ratio}"
    )
    print(f"wrote {out}")
    return 0


# -------------------------------------------------------------------------------------------------------- registry
COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="explain EfficientNet-Lite0 on a bundled photo and write a heatmap PNG",
        description=(
            "Load the bundled EfficientNet-Lite0 (ImageNet) and a photo (Chelsea the cat by default), print the "
            "top-k predictions, explain the predicted class (or --target) with lrp_fx.attribute and write the "
            "relevance heatmap as a PNG. Runs offline."
        ),
        add_arguments=_add_demo_arguments,
        run=_run_demo,
    ),
}


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("lrp-fx")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Layer-wise Relevance Propagation compiled from torch.export graphs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help, parents=[common])
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 error) instead of exiting."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command is None:
        print(f"{PROG}: error: a command is required: {', '.join(COMMANDS)} (see '{PROG} --help')", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
