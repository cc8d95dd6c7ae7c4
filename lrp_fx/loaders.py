"""Models and inputs named on the command line: model specs, weights files, image preprocessing, Hugging Face
model folders. Used by ``lrp-fx explain`` and ``lrp-fx coverage``; importable for scripts too.

A model spec is one of

* a torchvision classification model name (``resnet18``, ``vit_b_16``...), built with ``weights=None``: random
  weights unless a weights file is given (nothing is downloaded);
* ``efficientnet_lite0``: the bundled pretrained EfficientNet-Lite0 of :mod:`lrp_fx.assets`;
* ``package.module:factory`` or ``path/to/file.py:factory``: a callable returning an ``nn.Module``;
* a Hugging Face model folder (with ``config.json``): loaded with ``AutoModelForSequenceClassification`` and its
  tokenizer, offline.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = [
    "BUNDLED",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadError",
    "LoadedModel",
    "is_hf_folder",
    "load_model",
    "load_state_dict",
    "load_hf_classifier",
    "preprocess_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Model names that are not torchvision's: the bundled pretrained models.
BUNDLED = ("efficientnet_lite0",)


class LoadError(ValueError):
    """A model, weights file or input that cannot be loaded, with a message meant for the user."""


@dataclass
class LoadedModel:
    """A model in eval mode and how its inputs are made: ``kind`` is ``"image"`` or ``"text"``; ``preprocess`` the
    image scaling that fits it (``"imagenet"``, ``"efficientnet"``); ``tokenizer`` for text models."""

    model: torch.nn.Module
    kind: str
    name: str
    preprocess: str = "imagenet"
    tokenizer: Any = None
    labels: list[str] | None = None


def is_hf_folder(spec: str | Path) -> bool:
    return (Path(spec).expanduser() / "config.json").is_file()


def _import_module(module_name: str, spec: str) -> Any:
    """Import ``module_name``, also from the current folder as ``python -m`` would.

    The ``lrp-fx`` console script, unlike ``python -m lrp_fx``, does not put the current folder on ``sys.path``, so a
    package next to the user (``mypkg/models.py``) would not import; the folder is appended (installed packages of the
    same name still win) only when the plain import fails for the spec's own top-level package."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        cwd = os.getcwd()
        if exc.name != top or cwd in sys.path or "" in sys.path or not _importable_from(cwd, top):
            raise LoadError(f"cannot import {module_name!r} from model spec {spec!r}: {exc}") from exc
    sys.path.append(cwd)  # kept: the user's package may import its own submodules later
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LoadError(f"cannot import {module_name!r} from model spec {spec!r}: {exc}") from exc


def _importable_from(folder: str, top: str) -> bool:
    return (Path(folder) / top).is_dir() or (Path(folder) / f"{top}.py").is_file()


def _factory(spec: str) -> Any:
    """The callable named by ``module:attr`` or ``file.py:attr`` (``attr`` may be dotted)."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise LoadError(f"expected MODULE:FACTORY, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(2, "No such file or directory", str(path))
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = _import_module(module_name, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LoadError(f"{module_name!r} has no attribute {attr!r} (model spec {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise LoadError(f"{spec!r} is not callable")
    return obj


def _torchvision_model(name: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    try:
        import torchvision
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LoadError(f"torchvision is needed for model {name!r}: pip install 'lrp-fx[demo]'") from exc
    names = torchvision.models.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, [*names, *BUNDLED], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LoadError(
            f"unknown model {name!r}: not a torchvision model, a bundled one ({', '.join(BUNDLED)}), "
            f"MODULE:FACTORY or a Hugging Face model folder{hint}"
        )
    kw = {"weights": None, **kwargs}
    builder = torchvision.models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:  # FCN, DeepLab, detection: no download either
        kw.setdefault("weights_backbone", None)
    if name in ("inception_v3", "googlenet"):  # their auxiliary heads only exist in training
        kw.setdefault("aux_logits", False)
        kw.setdefault("init_weights", True)
    return torchvision.models.get_model(name, **kw)


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``.pt``/``.pth``/``.bin``), loaded safely
    (``weights_only``); a checkpoint dict with a ``state_dict``/``model``/``model_state_dict`` entry is unwrapped and
    a ``module.`` prefix (DistributedDataParallel) dropped."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise LoadError(f"cannot read weights {str(path)!r}: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LoadError(f"cannot read weights {str(path)!r} (a state dict saved with torch.save?): {exc}") from exc
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise LoadError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _load_weights(model: torch.nn.Module, path: str | Path) -> None:
    state = load_state_dict(path)
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if wrong:  # the commonest case: a fine-tuned classifier head with another number of classes
        key = wrong[0]
        got, want = tuple(state[key].shape), tuple(own[key].shape)
        hint = ""
        if len(got) >= 1 and len(want) >= 1 and got[1:] == want[1:] and got[0] != want[0]:
            hint = f"; if that is the classifier head, pass --model-arg num_classes={got[0]}"
        raise LoadError(
            f"weights {str(path)!r} do not fit the model: {len(wrong)} tensor(s) of another shape, e.g. {key!r} "
            f"is {list(got)} in the file and {list(want)} in the model{hint}"
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]!r})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]!r})")
        raise LoadError(f"weights {str(path)!r} do not fit the model: {', '.join(parts)} keys")


def load_hf_classifier(folder: str | Path, quiet: bool = False) -> LoadedModel:
    """A Hugging Face sequence classifier and its tokenizer from a local folder (``local_files_only``); ``quiet``
    hides transformers' progress bars while loading."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LoadError("text models need transformers: pip install transformers") from exc
    folder = Path(folder).expanduser()
    hf_logging = transformers.utils.logging
    bars = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise LoadError(f"cannot load a sequence classifier and tokenizer from {str(folder)!r}: {exc}") from exc
    finally:
        if quiet and bars:
            hf_logging.enable_progress_bar()
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]
    return LoadedModel(model.eval(), "text", folder.name, tokenizer=tokenizer, labels=labels)


def load_model(
    spec: str,
    weights: str | Path | None = None,
    kwargs: Mapping[str, Any] | None = None,
    device: Any = "cpu",
    quiet: bool = False,
) -> LoadedModel:
    """The model named by ``spec`` (see the module docstring), weights loaded, in eval mode, on ``device``;
    ``quiet`` hides loading progress bars."""
    import torch

    kwargs = dict(kwargs or {})
    if is_hf_folder(spec):
        if weights is not None or kwargs:
            raise LoadError("--weights and --model-arg do not apply to a Hugging Face model folder")
        loaded = load_hf_classifier(spec, quiet=quiet)
        loaded.model.to(device)
        return loaded
    preprocess = "imagenet"
    if spec in BUNDLED:
        from . import assets

        if kwargs:
            raise LoadError(f"{spec} takes no --model-arg")
        model = assets.load_efficientnet_lite0()
        preprocess = "efficientnet"
    elif ":" in spec:
        model = _factory(spec)(**kwargs)
    elif Path(spec).expanduser().exists():
        raise LoadError(f"{spec!r} is a path but not a Hugging Face model folder (no config.json)")
    else:
        model = _torchvision_model(spec, kwargs)
    if not isinstance(model, torch.nn.Module):
        raise LoadError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(model, weights)
    return LoadedModel(model.eval().to(device), "image", spec, preprocess=preprocess)


def preprocess_image(
    image: Image.Image,
    *,
    size: int = 224,
    resize: int | None = None,
    scaling: str = "imagenet",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> tuple[torch.Tensor, Image.Image]:
    """``([1, 3, size, size] float32 input, the RGB crop the model sees)``.

    The shorter side is resized to ``resize`` (default ``size / 0.875``, 256 for 224; bicubic), then the centre
    ``size`` crop is taken and scaled: ``"imagenet"`` ``(x / 255 - mean) / std`` (ImageNet statistics unless given),
    ``"efficientnet"`` ``(x - 127) / 128``, ``"unit"`` ``x / 255``.
    """
    import numpy as np
    import torch

    from .assets import EFFICIENTNET_OFFSET, EFFICIENTNET_SCALE, resize_center_crop

    resize = resize if resize is not None else round(size / 0.875)
    if resize < size:
        raise LoadError(f"--resize ({resize}) must be at least --size ({size})")
    crop = resize_center_crop(image, size=size, resize=resize)
    x = torch.from_numpy(np.asarray(crop, dtype=np.float32).copy()).permute(2, 0, 1).unsqueeze(0)
    if scaling == "efficientnet":
        x = (x - EFFICIENTNET_OFFSET) / EFFICIENTNET_SCALE
    elif scaling == "unit":
        x = x / 255.0
    elif scaling == "imagenet":
        m = torch.tensor(mean or IMAGENET_MEAN).view(1, -1, 1, 1)
        s = torch.tensor(std or IMAGENET_STD).view(1, -1, 1, 1)
        if m.numel() != 3 or s.numel() != 3:
            raise LoadError("--mean and --std take three values (R,G,B)")
        x = (x / 255.0 - m) / s
    else:
        raise LoadError(f"unknown scaling {scaling!r}; choose imagenet, efficientnet or unit")
    return x, crop
