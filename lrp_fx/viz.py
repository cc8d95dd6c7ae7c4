"""Relevance heatmaps for images and text.

Colour convention: a diverging map, symmetric around zero relevance. Zero is the map's centre colour, positive
relevance (evidence *for* the explained output) is red, negative relevance (evidence *against*) is blue. The colour
range is ``[-vmax, vmax]`` with ``vmax`` a robust maximum, the 99.5th percentile of ``|R|`` by default, so a few
extreme pixels do not wash the rest of the map out; values beyond are clipped to the end colours.

The default map is ColorBrewer's ``"RdBu_r"``: a near-white centre, so the (typically many) pixels with almost no
relevance read as background and the red/blue structure stands out, the way LRP heatmaps are usually shown
(``"bwr"``/``"seismic"``); unlike ``"bwr"`` its lightness falls off evenly and symmetrically on both sides, so equal
``|R|`` looks equally strong in red and in blue, and red/blue stays distinguishable under the common colour-vision
deficiencies. Any matplotlib colormap name or ``Colormap`` object can be passed instead (``"coolwarm"`` has a grey
centre, ``"seismic"`` is more saturated).

Only matplotlib's colormaps are used (no pyplot, no figure, no GUI backend); PNGs are written with Pillow.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.colors import Colormap

__all__ = [
    "DEFAULT_CMAP",
    "DEFAULT_PERCENTILE",
    "heatmap",
    "normalize_relevance",
    "relevance_map",
    "save_heatmap",
    "compose_panels",
    "merge_subword_relevance",
    "text_heatmap_html",
    "save_text_heatmap",
]

DEFAULT_CMAP = "RdBu_r"
DEFAULT_PERCENTILE = 99.5

_LAYOUTS = ("heatmap", "overlay", "side_by_side", "triptych")


# ----------------------------------------------------------------------------------------------------------- helpers
def _to_numpy(x: Any) -> np.ndarray:
    """Tensor / array / sequence to a float64 numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().double().numpy()  # float64: float32 would flush tiny maps to zero, overflow huge ones
    return np.asarray(x, dtype=np.float64)


def _finite(r: np.ndarray) -> np.ndarray:
    """NaN as 0 (no evidence either way); +-inf (an overflowed pixel) as the largest finite magnitude of the map with
    its sign: drawn saturated, not blank, while the finite pixels keep their scale."""
    finite = np.abs(r[np.isfinite(r)])
    big = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return np.nan_to_num(r, nan=0.0, posinf=big, neginf=-big)


def _get_cmap(cmap: str | Colormap) -> Colormap:
    import matplotlib

    if isinstance(cmap, str):
        try:
            return matplotlib.colormaps[cmap]
        except KeyError:
            raise ValueError(f"unknown matplotlib colormap {cmap!r}") from None
    return cmap


def relevance_map(relevance: Any) -> np.ndarray:
    """A 2-D ``[H, W]`` relevance map from ``[H, W]``, ``[C, H, W]`` (summed over channels) or ``[1, C, H, W]``.

    Channel summation keeps LRP's conservation: the map still sums to the total input relevance.
    """
    r = _to_numpy(relevance)
    while r.ndim > 3 and r.shape[0] == 1:
        r = r[0]
    if r.ndim == 3:
        r = r.sum(axis=0)
    if r.ndim != 2:
        raise ValueError(
            f"relevance must be [H, W], [C, H, W] or [1, C, H, W], got shape {tuple(_to_numpy(relevance).shape)}"
        )
    return _finite(r)


def normalize_relevance(
    relevance: Any, *, vmax: float | None = None, percentile: float = DEFAULT_PERCENTILE
) -> np.ndarray:
    """Scale to ``[-1, 1]`` symmetrically around zero: ``clip(R / vmax, -1, 1)``, zero stays zero.

    ``vmax`` defaults to the ``percentile``-th percentile of ``|R|`` (robust maximum); if that is zero the true
    maximum of ``|R|`` is used, and an all-zero input stays all zero.
    """
    r = _to_numpy(relevance)
    r = _finite(r)
    if vmax is None:
        a = np.abs(r)
        vmax = float(np.percentile(a, percentile)) if a.size else 0.0
        if vmax <= 0.0:
            vmax = float(a.max()) if a.size else 0.0
    elif vmax <= 0:
        raise ValueError(f"vmax must be positive, got {vmax}")
    if vmax <= 0.0:
        return np.zeros_like(r)
    return np.clip(r / vmax, -1.0, 1.0)


def _image_array(image: Any, shape: tuple[int, int]) -> np.ndarray:
    """An image as float ``[H, W, 3]`` in ``[0, 1]``, resized to ``shape`` if needed.

    Accepts a PIL image, a ``[3, H, W]``/``[1, 3, H, W]``/``[H, W]`` tensor or array in ``[0, 1]``, or an
    ``[H, W, 3]`` array (uint8 0..255 or float in ``[0, 1]``).
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    else:
        is_uint8 = str(getattr(image, "dtype", "")) in ("uint8", "torch.uint8")
        arr = _to_numpy(image)
        while arr.ndim > 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and not (arr.shape[-1] in (1, 3) and arr.shape[0] == 1):
            arr = arr.transpose(1, 2, 0)  # CHW (torch layout, preferred when ambiguous) -> HWC
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
            raise ValueError(f"image must be [3, H, W], [H, W, 3], [H, W] or a PIL image, got shape {arr.shape}")
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        if is_uint8 or arr.max(initial=0.0) > 1.0 + 1e-6:
            arr = arr / 255.0
        arr = np.clip(arr, 0.0, 1.0)
    if arr.shape[:2] != tuple(shape):
        pil = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8))
        pil = pil.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(pil, dtype=np.float64) / 255.0
    return arr


# ------------------------------------------------------------------------------------------------------ image maps
def heatmap(
    relevance: Any,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    vmax: float | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    image: Any = None,
    alpha: float = 0.7,
    alpha_by_relevance: bool = True,
    desaturate: bool = True,
) -> np.ndarray:
    """Colour a relevance map: ``uint8 [H, W, 3]``.

    Args:
        relevance: ``[H, W]``, ``[C, H, W]`` or ``[1, C, H, W]`` (tensor or array); channels are summed.
        cmap: diverging matplotlib colormap (name or object); zero relevance maps to its centre, ``cmap(0.5)``.
        vmax: colour range ``[-vmax, vmax]``; default the ``percentile``-th percentile of ``|R|``.
        percentile: robust-maximum percentile used when ``vmax`` is None.
        image: optional photo to overlay on: PIL image, ``[3, H, W]`` in ``[0, 1]`` or ``[H, W, 3]``; resized to
            the relevance map's size if it differs.
        alpha: heatmap opacity in the overlay (``0`` = photo only, ``1`` = heatmap only).
        alpha_by_relevance: scale the opacity per pixel by ``|R| / vmax``, so the photo shows where relevance is ~0
            and colour appears where it is strong; False blends with a constant ``alpha``.
        desaturate: turn the photo grey under the overlay, so its own reds and blues are not read as relevance.
    """
    r = normalize_relevance(relevance_map(relevance), vmax=vmax, percentile=percentile)
    rgb = _get_cmap(cmap)((r + 1.0) / 2.0)[..., :3]  # floats in [0, 1]
    if image is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        photo = _image_array(image, r.shape)
        if desaturate:
            grey = photo @ np.array([0.299, 0.587, 0.114])
            photo = np.repeat(grey[..., None], 3, axis=-1)
        a = alpha * np.abs(r)[..., None] if alpha_by_relevance else alpha
        rgb = (1.0 - a) * photo + a * rgb
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def compose_panels(panels: Sequence[np.ndarray], *, gap: int = 4, background: int = 255) -> np.ndarray:
    """Place ``uint8 [H, W, 3]`` panels left to right (bottom-padded to the tallest) with ``gap`` pixels between."""
    if not panels:
        raise ValueError("no panels")
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((height, width, 3), background, dtype=np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def save_heatmap(
    path: str | Path,
    relevance: Any,
    image: Any = None,
    *,
    layout: str | None = None,
    scale: int = 1,
    **kw: Any,
) -> Path:
    """Write a relevance heatmap PNG (via Pillow) and return its path.

    ``layout``: ``"heatmap"`` (the map alone; default without ``image``), ``"overlay"`` (map over the photo; default
    with ``image``), ``"side_by_side"`` (photo | map) or ``"triptych"`` (photo | map | overlay). ``scale`` enlarges
    the result by an integer factor (nearest neighbour, keeps pixels crisp). Other keywords go to :func:`heatmap`.
    """
    from PIL import Image

    if layout is None:
        layout = "heatmap" if image is None else "overlay"
    if layout not in _LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(_LAYOUTS)}")
    if layout != "heatmap" and image is None:
        raise ValueError(f"layout {layout!r} needs an image")
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")

    heat = heatmap(relevance, **kw)
    if layout == "heatmap":
        out = heat
    else:
        overlay = heatmap(relevance, image=image, **kw)
        if layout == "overlay":
            out = overlay
        else:
            photo = (_image_array(image, heat.shape[:2]) * 255.0 + 0.5).astype(np.uint8)
            panels = [photo, heat] if layout == "side_by_side" else [photo, heat, overlay]
            out = compose_panels(panels)
    pil = Image.fromarray(out)
    if scale != 1:
        pil = pil.resize((pil.width * int(scale), pil.height * int(scale)), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------------------------------------- text
_PREFIX_MARKERS = ("\u0120", "\u2581")  # 'Ġ' (GPT-2 / RoBERTa byte-level BPE), '▁' (SentencePiece)
_CONTINUATION_MARKER = "##"  # WordPiece (BERT)


def _is_special(token: str) -> bool:
    """``[CLS]``, ``[SEP]``, ``<s>``, ``</s>``, ``<pad>``, ``<|endoftext|>``...: never merged with neighbours."""
    return len(token) >= 3 and ((token[0] == "[" and token[-1] == "]") or (token[0] == "<" and token[-1] == ">"))


def merge_subword_relevance(tokens: Sequence[str], relevance: Any) -> tuple[list[str], list[float]]:
    """Merge sub-word pieces into words, summing their relevance.

    * WordPiece: a piece starting with ``##`` continues the previous word (``"play", "##ing"`` -> ``"playing"``).
    * Byte-level BPE / SentencePiece: when any token carries a ``Ġ`` or ``▁`` word-start prefix, pieces *without*
      it continue the previous word (``"Ġplay", "ing"`` -> ``"playing"``); the prefix itself is dropped.
    * Special tokens (``[CLS]``, ``<s>``, ``<|endoftext|>``...) always stay on their own.
    """
    scores = _to_numpy(relevance).reshape(-1)
    if len(tokens) != scores.size:
        raise ValueError(f"{len(tokens)} tokens but {scores.size} relevance values")
    prefix_scheme = any(t.startswith(_PREFIX_MARKERS) for t in tokens)
    words: list[str] = []
    sums: list[float] = []
    prev_special = True  # nothing to continue at the start
    for tok, score in zip(tokens, scores.tolist()):
        special = _is_special(tok)
        if special:
            cont, text = False, tok
        elif tok.startswith(_CONTINUATION_MARKER) and len(tok) > len(_CONTINUATION_MARKER):
            cont, text = True, tok[len(_CONTINUATION_MARKER) :]
        elif tok.startswith(_PREFIX_MARKERS):
            cont, text = False, tok[1:]
        else:
            cont, text = prefix_scheme, tok
        if cont and words and not prev_special:
            words[-1] += text
            sums[-1] += score
        else:
            words.append(text)
            sums.append(score)
        prev_special = special
    return words, sums


def _display_token(tok: str) -> str:
    for marker in _PREFIX_MARKERS:
        if tok.startswith(marker):
            return tok[len(marker) :] or marker
    return tok


def text_heatmap_html(
    tokens: Sequence[str],
    relevance: Any,
    merge_subwords: bool = False,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    vmax: float | None = None,
    full_document: bool = False,
    title: str | None = None,
    caption: str | None = None,
) -> str:
    """HTML with one ``<span>`` per token (or per word with ``merge_subwords``) coloured by its relevance.

    Colours follow :func:`heatmap` (zero = the map's centre, red positive, blue negative) with ``vmax`` defaulting
    to the largest ``|R|`` (there are few tokens, so no percentile). Each span has the exact value as a tooltip and
    ``data-relevance``. Returns an HTML fragment (e.g. for ``IPython.display.HTML``), or a whole page with
    ``full_document=True``, headed by ``title`` and ``caption`` (plain text, escaped) when given.
    """
    scores = _to_numpy(relevance).reshape(-1)
    if len(tokens) != scores.size:
        raise ValueError(f"{len(tokens)} tokens but {scores.size} relevance values")
    if merge_subwords:
        words, values = merge_subword_relevance(tokens, scores)
    else:
        words, values = [_display_token(t) for t in tokens], scores.tolist()
    vals = np.asarray(values, dtype=np.float64)
    norm = normalize_relevance(vals, vmax=vmax, percentile=100.0)
    colors = _get_cmap(cmap)((norm + 1.0) / 2.0)[..., :3] if vals.size else np.zeros((0, 3))

    spans = []
    for word, value, rgb in zip(words, vals.tolist(), colors):
        r, g, b = (int(round(c * 255)) for c in rgb)
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        fg = "#000" if luminance > 0.5 else "#fff"
        spans.append(
            f'<span class="lrp-token" title="{value:+.4g}" data-relevance="{value:.6g}" '
            f'style="background-color:rgb({r},{g},{b});color:{fg};padding:0.1em 0.2em;border-radius:0.2em">'
            f"{html.escape(word)}</span>"
        )
    body = '<div class="lrp-text" style="font-family:sans-serif;line-height:1.9">' + " ".join(spans) + "</div>"
    if full_document:
        head = f"<h1>{html.escape(title)}</h1>" if title else ""
        head += f"<p>{html.escape(caption)}</p>" if caption else ""
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title or "LRP relevance")}'
            f'</title></head><body style="font-family:sans-serif">{head}{body}</body></html>\n'
        )
    return body


def save_text_heatmap(
    path: str | Path,
    tokens: Sequence[str],
    relevance: Any,
    merge_subwords: bool = False,
    *,
    title: str | None = None,
    caption: str | None = None,
    **kw: Any,
) -> Path:
    """Write :func:`text_heatmap_html` as a whole UTF-8 HTML page and return its path (other keywords go there)."""
    page = text_heatmap_html(tokens, relevance, merge_subwords, full_document=True, title=title, caption=caption, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
