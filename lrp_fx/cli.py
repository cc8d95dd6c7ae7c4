"""``lrp-fx`` command line.

Subcommands are registered in :data:`COMMANDS` (name -> :class:`Command`): each has a help line, a function adding
its arguments to its sub-parser and a function running it (``args -> exit code``). All of them share ``--debug``.
``main`` turns every error into one line on stderr and exit code 2 (usage errors included); ``--debug`` prints the
traceback before that line, with the same exit code. Heavy imports (the model, matplotlib) happen inside the run
functions.

Commands: ``demo`` (the bundled model on a bundled photo), ``explain`` (any model on image files or texts),
``coverage`` (which aten ops of a model have rules; exit code 1 if a live node has none).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .composites import PRESETS

if TYPE_CHECKING:  # pragma: no cover
    from lrp_fx.loaders import LoadedModel

__all__ = ["main", "build_parser", "COMMANDS", "Command", "CLIError", "PRESETS"]

PROG = "lrp-fx"

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
    from lrp_fx.loaders import LoadError

    if isinstance(exc, (CLIError, LoadError)):
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
    if type(exc).__name__ == "MissingRuleError" and " To fix:" in text:
        # the library's fix-it is a code sample, unreadable on one line: point to the command and the docs instead
        text = text.split(" To fix:")[0] + " (lrp-fx coverage MODEL lists every op without a rule; docs/rules.md)"
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


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def _bytes(text: str) -> int:
    return _int_at_least(text, 0, "a number of bytes >= 0")


def _check_preset(name: str) -> str:
    if name not in PRESETS:
        raise CLIError(f"unknown composite preset {name!r}; choose one of: {', '.join(PRESETS)}")
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


# --------------------------------------------------------------------------------------------- shared by commands
def _floats3(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}")
    return values


def _target(text: str) -> int | None:
    if text == "predicted":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'predicted' or a class index, got {text!r}") from None


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict to load: .safetensors, or .pt/.pth/.bin saved with torch.save (default: random weights "
        "for torchvision models; nothing is downloaded)",
    )
    p.add_argument(
        "--model-arg",
        type=_parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the model factory, repeatable (e.g. num_classes=10)",
    )


def _add_preset_arguments(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--preset",
        "--composite",
        dest="preset",
        default=None,
        metavar="PRESET",
        help=f"LRP composite preset: {', '.join(PRESETS)} (default: {default_help})",
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
        "--memory-budget",
        type=_bytes,
        default=None,
        metavar="BYTES",
        help="bytes of forward values the relevance pass may keep alive: 0 rebuilds all that cheap ops can (about a "
        "gradient's memory, the same relevance); default: keep everything (fastest)",
    )


def _model_spec(args: argparse.Namespace) -> str:
    spec = getattr(args, "model", None)
    hf = getattr(args, "hf_model", None)
    if spec and hf:
        raise CLIError("give the model either as MODEL or as --hf-model, not both")
    spec = spec or hf
    if not spec:
        raise CLIError("a model is required: a torchvision name, MODULE:FACTORY, or a Hugging Face model folder")
    if hf:
        from lrp_fx.loaders import is_hf_folder

        if not Path(hf).expanduser().is_dir():
            raise FileNotFoundError(2, "No such file or directory", hf)
        if not is_hf_folder(hf):
            raise CLIError(f"--hf-model {hf!r} is not a Hugging Face model folder (no config.json)")
    return spec


def _class_names(loaded: LoadedModel, classes: int, labels_file: str | None) -> list[str]:
    """Class names from --labels, the model (Hugging Face id2label), ImageNet for 1000 classes, else numbers."""
    if labels_file:
        names = [line.strip() for line in Path(labels_file).expanduser().read_text().splitlines() if line.strip()]
        if len(names) != classes:
            raise CLIError(f"--labels {labels_file!r} has {len(names)} names but the model has {classes} outputs")
        return names
    if loaded.labels and len(loaded.labels) == classes:
        return list(loaded.labels)
    if classes == 1000:
        try:
            from lrp_fx import assets

            return assets.imagenet_categories()
        except ImportError:
            pass
    return [f"class {i}" for i in range(classes)]


def _print_predictions(logits: Any, names: list[str], target: int, topk: int, indent: str = "  ") -> None:
    """Top-k classes of one logit vector, marking the explained one (listed below them if it is not in the top k)."""
    probs = logits.float().softmax(dim=-1)
    top = probs.topk(min(topk, probs.numel()))
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        mark = "  <- explained" if i == target else ""
        print(f"{indent}{rank}. {names[i]:<28} {100 * p:6.2f}%  (class {i:4d}, logit {float(logits[i]):8.3f}){mark}")
    if target not in top.indices.tolist():
        print(f"{indent}explained: {names[target]} (class {target}, {100 * float(probs[target]):.2f}%)")


def _check_target(target: int | None, classes: int) -> None:
    if target is not None and not 0 <= target < classes:
        raise CLIError(f"--target must be 'predicted' or a class index in [0, {classes}), got {target}")


def _unique_path(folder: Path, stem: str, suffix: str, used: set[Path]) -> Path:
    """``folder/stem.suffix``, or ``stem-2``, ``stem-3``... if an input file or earlier output has that name."""
    path, n = folder / f"{stem}{suffix}", 2
    while path.resolve() in used:
        path, n = folder / f"{stem}-{n}{suffix}", n + 1
    used.add(path.resolve())
    return path


# --------------------------------------------------------------------------------------------------------- explain
def _add_explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="torchvision model name (random weights unless --weights), 'efficientnet_lite0' (bundled, pretrained), "
        "MODULE:FACTORY or FILE.py:FACTORY, or a Hugging Face model folder (for --text)",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="IMAGE",
        help="image files (any format Pillow reads) or bundled photo names (chelsea, coffee, astronaut...)",
    )
    p.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text to explain, repeatable")
    p.add_argument("--hf-model", metavar="DIR", help="Hugging Face model folder (sequence classifier + tokenizer)")
    _add_model_arguments(p)
    p.add_argument(
        "--target",
        type=_target,
        default=None,
        metavar="predicted|CLASS",
        help="class to explain: 'predicted' (each input's top class, default) or a class index",
    )
    _add_preset_arguments(p, "epsilon_plus_flat for images, attnlrp for text")
    p.add_argument("--out", default="lrp_explain", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--topk", type=_positive_int, default=5, metavar="K", help="predictions to list (default: 5)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the model's, or ImageNet's)")
    image = p.add_argument_group("images")
    image.add_argument("--size", type=_positive_int, default=224, help="input side after the centre crop (224)")
    image.add_argument(
        "--resize", type=_positive_int, default=None, help="shorter side before the crop (default: size / 0.875)"
    )
    image.add_argument(
        "--scaling",
        choices=("auto", "imagenet", "efficientnet", "unit"),
        default="auto",
        help="pixel scaling: (x/255 - mean) / std (imagenet), (x - 127) / 128 (efficientnet), x/255 (unit); "
        "auto: efficientnet for efficientnet_lite0, else imagenet",
    )
    image.add_argument("--mean", type=_floats3, default=None, metavar="R,G,B", help="mean for imagenet scaling")
    image.add_argument("--std", type=_floats3, default=None, metavar="R,G,B", help="std for imagenet scaling")
    image.add_argument("--layout", choices=_LAYOUTS, default="side_by_side", help="PNG layout (default: %(default)s)")
    image.add_argument("--scale", type=_positive_int, default=1, help="integer upscaling of the PNG (default: 1)")
    text = p.add_argument_group("text")
    text.add_argument(
        "--no-merge-subwords",
        dest="merge_subwords",
        action="store_false",
        help="colour sub-word tokens separately (default: merged into words, relevance summed)",
    )
    text.add_argument("--max-length", type=_positive_int, default=512, help="truncate texts to this many tokens")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def _run_explain(args: argparse.Namespace) -> int:
    spec = _model_spec(args)
    from lrp_fx.loaders import is_hf_folder

    text_mode = is_hf_folder(spec)
    if text_mode and args.inputs:
        raise CLIError(f"{spec!r} is a Hugging Face model folder: give texts with --text, not IMAGE arguments")
    if text_mode and not args.text:
        raise CLIError("nothing to explain: give one or more --text for a Hugging Face model")
    if not text_mode and args.text:
        raise CLIError("--text needs a Hugging Face model folder (MODEL or --hf-model DIR with config.json)")
    if not text_mode and not args.inputs:
        raise CLIError("nothing to explain: give one or more image files after MODEL")
    preset = _check_preset(args.preset or ("attnlrp" if text_mode else DEFAULT_PRESET))
    params = dict(args.param)
    if args.memory_budget is not None:
        params["memory_budget"] = args.memory_budget
    images = []
    if not text_mode:
        from lrp_fx import assets

        images = [(name, assets.load_image(name)) for name in args.inputs]  # fail fast on a missing file
    attribute = _get_attribute()
    device = _device(args.device)

    from lrp_fx.loaders import load_model

    loaded = load_model(spec, args.weights, dict(args.model_arg), device, quiet=True)
    out_dir = Path(args.out).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = _explain_texts if text_mode else _explain_images
    records = runner(args, loaded, images, attribute, preset, params, device, out_dir)
    summary = out_dir / "explain.json"
    summary.write_text(
        json.dumps({"model": spec, "preset": preset, "params": repr(params), "inputs": records}, indent=1)
    )
    print(f"wrote {len(records)} heatmap(s) and {summary}")
    return 0


def _explain_images(
    args: argparse.Namespace,
    loaded: LoadedModel,
    images: list[tuple[str, Any]],
    attribute: Callable[..., Any],
    preset: str,
    params: dict[str, Any],
    device: Any,
    out_dir: Path,
) -> list[dict[str, Any]]:
    """One heatmap PNG per image; returns the explain.json records."""
    import torch

    from lrp_fx import viz
    from lrp_fx.loaders import IMAGENET_MEAN, IMAGENET_STD, preprocess_image

    scaling = args.scaling if args.scaling != "auto" else ("imagenet" if args.mean or args.std else loaded.preprocess)
    if (args.mean or args.std) and scaling != "imagenet":
        raise CLIError("--mean/--std apply to --scaling imagenet only")
    if preset == "epsilon_gamma_box":  # the box rule's bounds: the range a preprocessed pixel can take
        mean, std = torch.tensor(args.mean or IMAGENET_MEAN), torch.tensor(args.std or IMAGENET_STD)
        low, high = {
            "imagenet": (float(((0 - mean) / std).min()), float(((1 - mean) / std).max())),
            "efficientnet": (-127 / 128, 1.0),
            "unit": (0.0, 1.0),
        }[scaling]
        params.setdefault("low", low)
        params.setdefault("high", high)
    model, records = loaded.model, []
    # never write over an input image, even when --out is the images' own folder
    used = {Path(name).expanduser().resolve() for name, _ in images}
    print(f"{loaded.name}: {len(images)} image(s), {args.size}x{args.size} px, {scaling} scaling, preset {preset!r}")
    for name, image in images:
        x, crop = preprocess_image(
            image, size=args.size, resize=args.resize, scaling=scaling, mean=args.mean, std=args.std
        )
        x = x.to(device)
        with torch.no_grad():
            logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise CLIError(
                f"explain needs a classifier with [batch, classes] logits; {loaded.name} returned "
                f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
            )
        classes = logits.shape[-1]
        _check_target(args.target, classes)
        names = _class_names(loaded, classes, args.labels)
        target = args.target if args.target is not None else int(logits[0].argmax())
        print(f"{name}:")
        _print_predictions(logits[0], names, target, args.topk)
        t0 = time.perf_counter()
        res = attribute(model, x, target=args.target, composite=preset, **params)
        elapsed = time.perf_counter() - t0
        relevance = res.relevance.detach()[0].float().cpu()
        stem = Path(name).stem if Path(name).expanduser().is_file() else name
        path = viz.save_heatmap(
            _unique_path(out_dir, f"{stem}_lrp", ".png", used),
            relevance,
            image=None if args.layout == "heatmap" else crop,
            layout=args.layout,
            scale=args.scale,
        )
        total = float(relevance.sum())
        print(f"  relevance sum {total:.4g} vs logit {float(logits[0, target]):.4f}, {elapsed:.2f} s -> {path}")
        records.append(
            {"input": name, "file": path.name, "target": target, "label": names[target], "relevance_sum": total}
        )
    return records


def _explain_texts(
    args: argparse.Namespace,
    loaded: LoadedModel,
    images: list[tuple[str, Any]],
    attribute: Callable[..., Any],
    preset: str,
    params: dict[str, Any],
    device: Any,
    out_dir: Path,
) -> list[dict[str, Any]]:
    """One HTML page per ``--text`` (``images`` is unused: the runners share a signature)."""
    import torch

    from lrp_fx import viz

    model, tokenizer, used, records = loaded.model, loaded.tokenizer, set(), []
    print(f"{loaded.name}: {len(args.text)} text(s), preset {preset!r}")
    for i, text in enumerate(args.text, start=1):
        enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=args.max_length)
        inputs = {k: enc[k].to(device) for k in ("input_ids", "attention_mask") if k in enc}
        with torch.no_grad():
            logits = model(**inputs).logits
        classes = logits.shape[-1]
        _check_target(args.target, classes)
        names = _class_names(loaded, classes, args.labels)
        target = args.target if args.target is not None else int(logits[0].argmax())
        print(f"text {i}: {text if len(text) <= 70 else text[:67] + '...'!r}")
        _print_predictions(logits[0], names, target, args.topk)
        res = attribute(model, inputs, target=args.target, composite=preset, **params)
        relevance = res.relevance["input_ids"].detach()[0].float().cpu()
        tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
        words, scores = (
            viz.merge_subword_relevance(tokens, relevance) if args.merge_subwords else (tokens, relevance.tolist())
        )
        ranked = sorted(zip(words, scores), key=lambda ws: -ws[1])[:5]
        print("  most relevant: " + ", ".join(f"{w!r} {s:+.3g}" for w, s in ranked))
        path = viz.save_text_heatmap(
            _unique_path(out_dir, f"text-{i}", ".html", used),
            tokens,
            relevance,
            merge_subwords=args.merge_subwords,
            title=f"LRP ({preset}) for {names[target]!r}",
            caption=f"{loaded.name}: explained class {target} ({names[target]}), logit {float(logits[0, target]):.4f}",
        )
        print(f"  -> {path}")
        records.append(
            {
                "input": text,
                "file": path.name,
                "target": target,
                "label": names[target],
                "words": words,
                "relevance": [float(s) for s in scores],
            }
        )
    return records


# -------------------------------------------------------------------------------------------------------- coverage
def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 1x3x224x224, got {text!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise argparse.ArgumentTypeError(f"expected a shape like 1x3x224x224, got {text!r}")
    return shape


def _add_coverage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        metavar="MODEL",
        help="torchvision model name, 'efficientnet_lite0', MODULE:FACTORY or FILE.py:FACTORY, or a Hugging Face "
        "model folder",
    )
    _add_model_arguments(p)
    p.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        metavar="SHAPE",
        help="example input shape, e.g. 1x3x224x224 (default; for Hugging Face models 1x16 token ids)",
    )
    p.add_argument(
        "--input-dtype",
        choices=("float32", "float64", "int64"),
        default=None,
        help="example input dtype: random normal floats, or token ids (int64) below the smallest embedding size "
        "(default: float32; int64 for Hugging Face models)",
    )
    _add_preset_arguments(p, "epsilon_plus_flat; attnlrp for Hugging Face models")
    p.add_argument("--no-ops", dest="ops", action="store_false", help="leave out the per-op table")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def _run_coverage(args: argparse.Namespace) -> int:
    from lrp_fx.loaders import is_hf_folder, load_model

    preset = _check_preset(args.preset or ("attnlrp" if is_hf_folder(args.model) else DEFAULT_PRESET))
    device = _device(args.device)
    import torch

    from lrp_fx.coverage import coverage

    loaded = load_model(args.model, args.weights, dict(args.model_arg), device, quiet=True)
    model = loaded.model
    dtype = args.input_dtype or ("int64" if loaded.kind == "text" else "float32")
    shape = args.input_shape or ((1, 16) if dtype == "int64" else (1, 3, 224, 224))
    gen = torch.Generator().manual_seed(0)
    if dtype == "int64":
        sizes = [m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        ids = torch.randint(0, min(sizes, default=2), shape, generator=gen).to(device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if loaded.kind == "text" else ids
    else:
        inputs = torch.randn(shape, generator=gen, dtype=getattr(torch, dtype)).to(device)
        if dtype == "float64":
            model = model.double()
    report = coverage(model, inputs, preset, name=loaded.name, memory_budget=args.memory_budget, **dict(args.param))
    print(report.render(ops=args.ops))
    if args.json:
        path = Path(args.json).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.as_dict(), indent=1))
        print(f"wrote {path}")
    return 0 if report.ok else 1


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
    "explain": Command(
        help="explain any image classifier on image files, or a Hugging Face text classifier on texts",
        description=(
            "Explain MODEL (a torchvision name, efficientnet_lite0, MODULE:FACTORY, or a Hugging Face model folder) "
            "on image files (one heatmap PNG each) or on --text inputs (one HTML page each, tokens coloured by "
            "relevance), for the predicted class or --target. Prints the top predictions and writes the heatmaps "
            "and explain.json into --out."
        ),
        add_arguments=_add_explain_arguments,
        run=_run_explain,
    ),
    "coverage": Command(
        help="report which aten ops of a model have relevance rules (exit code 1 if any live node has none)",
        description=(
            "Capture MODEL on a random example input, build its attribution program and report the aten ops, the "
            "rule each live node got, the ops without a rule (with the source lines that produced them) and the "
            "promise planner's statistics. Exit code 0 if every live node has a rule, 1 if not, 2 on errors."
        ),
        add_arguments=_add_coverage_arguments,
        run=_run_coverage,
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
    """Run the CLI; returns the exit code (0 ok, 1 a check failed (``coverage``), 2 error) instead of exiting."""
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
            # the traceback, but the same exit code: `coverage` uses 1 for "a rule is missing", so a failed run must
            # stay distinguishable from it with --debug too
            traceback.print_exc()
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
