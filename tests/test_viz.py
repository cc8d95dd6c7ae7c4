"""lrp_fx.viz: symmetric colour mapping, PNG output, text heatmaps."""

from __future__ import annotations

import re

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
torch = pytest.importorskip("torch")

from lrp_fx import viz  # noqa: E402


def _cmap_rgb(value: float, cmap: str = viz.DEFAULT_CMAP) -> np.ndarray:
    rgb = np.asarray(matplotlib.colormaps[cmap](value)[:3])
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _ramp() -> np.ndarray:
    """[8, 8] map: left half negative, a zero column block, right half positive, magnitudes up to 1."""
    r = np.zeros((8, 8))
    r[:, :3] = -1.0
    r[:, 5:] = 1.0
    return r


# ------------------------------------------------------------------------------------------------------ colour map
@pytest.mark.parametrize("cmap", [viz.DEFAULT_CMAP, "coolwarm", "seismic"])
def test_zero_maps_to_centre_colour(cmap):
    out = viz.heatmap(_ramp(), cmap=cmap)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[:, 3:5], np.broadcast_to(_cmap_rgb(0.5, cmap), (8, 2, 3)))


def test_positive_and_negative_get_different_hues():
    out = viz.heatmap(_ramp()).astype(int)
    neg, zero, pos = out[0, 0], out[0, 4], out[0, 7]
    assert pos[0] > pos[2] + 50, "positive relevance should be red"
    assert neg[2] > neg[0] + 50, "negative relevance should be blue"
    # the ends of the symmetric range are the ends of the colormap
    np.testing.assert_array_equal(pos, _cmap_rgb(1.0))
    np.testing.assert_array_equal(neg, _cmap_rgb(0.0))
    assert not np.array_equal(zero, pos) and not np.array_equal(zero, neg)


def test_range_is_symmetric_around_zero():
    # +1 and -1 must sit at equal distances from the centre even though the positive side is larger
    r = np.array([[-1.0, 0.0, 1.0, 4.0]])
    norm = viz.normalize_relevance(r, vmax=4.0)
    np.testing.assert_allclose(norm, [[-0.25, 0.0, 0.25, 1.0]])
    out = viz.heatmap(r, vmax=4.0)
    np.testing.assert_array_equal(out[0, 0], _cmap_rgb(0.375))
    np.testing.assert_array_equal(out[0, 2], _cmap_rgb(0.625))


def test_robust_max_clips_outliers():
    rng = np.random.default_rng(0)
    r = rng.uniform(-1.0, 1.0, size=(100, 100))
    r[0, 0] = 1e6  # one huge outlier must not wash the map out
    norm = viz.normalize_relevance(r)
    expected_vmax = np.percentile(np.abs(r), viz.DEFAULT_PERCENTILE)
    assert expected_vmax < 1.01
    np.testing.assert_allclose(norm[1:, 1:], np.clip(r[1:, 1:] / expected_vmax, -1, 1))
    assert norm[0, 0] == 1.0
    assert np.abs(norm).max() <= 1.0


def test_all_zero_and_non_finite_relevance():
    out = viz.heatmap(np.zeros((4, 5)))
    np.testing.assert_array_equal(out, np.broadcast_to(_cmap_rgb(0.5), (4, 5, 3)))
    r = np.array([[np.nan, np.inf], [-np.inf, 1.0]])
    out = viz.heatmap(r)
    np.testing.assert_array_equal(out[0, 0], _cmap_rgb(0.5))  # NaN: no evidence either way
    np.testing.assert_array_equal(out[0, 1], _cmap_rgb(1.0))  # +-inf: saturated with its sign, not blank
    np.testing.assert_array_equal(out[1, 0], _cmap_rgb(0.0))
    np.testing.assert_array_equal(out[1, 1], _cmap_rgb(1.0))  # the finite pixels keep their scale


def test_channels_are_summed_and_batch_dim_dropped():
    r = torch.randn(1, 3, 6, 7)
    np.testing.assert_array_equal(viz.heatmap(r), viz.heatmap(r[0].sum(0)))
    np.testing.assert_allclose(viz.relevance_map(r), r[0].sum(0).numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="relevance must be"):
        viz.heatmap(torch.randn(2, 3, 4, 5))


def test_overlay_shows_photo_where_relevance_is_zero():
    photo = torch.rand(3, 8, 8)
    r = torch.from_numpy(_ramp())
    out = viz.heatmap(r, image=photo, desaturate=False)
    expected_photo = (photo.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[:, 3:5], expected_photo[:, 3:5])
    # full-magnitude pixels are blended with alpha = 0.7
    blend = 0.3 * photo.permute(1, 2, 0).numpy()[0, 7] + 0.7 * _cmap_rgb(1.0) / 255.0
    np.testing.assert_allclose(out[0, 7] / 255.0, blend, atol=1.5 / 255)
    # a constant-alpha overlay, a PIL photo of another size (resized), a desaturated photo
    pil = Image.fromarray((np.random.default_rng(1).uniform(0, 255, (16, 12, 3))).astype(np.uint8))
    out2 = viz.heatmap(r, image=pil, alpha=0.5, alpha_by_relevance=False)
    assert out2.shape == (8, 8, 3) and out2.dtype == np.uint8
    with pytest.raises(ValueError, match="alpha"):
        viz.heatmap(r, image=photo, alpha=1.5)


# ------------------------------------------------------------------------------------------------------------ PNGs
@pytest.mark.parametrize(
    ("layout", "scale", "size"),
    [
        ("heatmap", 1, (20, 10)),
        ("overlay", 1, (20, 10)),
        ("side_by_side", 1, (2 * 20 + 4, 10)),
        ("triptych", 2, (2 * (3 * 20 + 2 * 4), 20)),
    ],
)
def test_save_heatmap_writes_png(tmp_path, layout, scale, size):
    r = torch.randn(3, 10, 20)
    image = None if layout == "heatmap" else torch.rand(3, 10, 20)
    path = viz.save_heatmap(tmp_path / "sub" / f"{layout}.png", r, image=image, layout=layout, scale=scale)
    assert path.exists()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == size  # (width, height)
        assert img.mode == "RGB"
        pixels = np.asarray(img)
    if layout == "heatmap":
        np.testing.assert_array_equal(pixels, viz.heatmap(r))


def test_save_heatmap_default_layouts_and_errors(tmp_path):
    r = np.random.default_rng(0).normal(size=(5, 6))
    with Image.open(viz.save_heatmap(tmp_path / "a.png", r)) as img:
        assert img.size == (6, 5)
    with Image.open(viz.save_heatmap(tmp_path / "b.png", r, image=np.zeros((5, 6, 3), np.uint8))) as img:
        assert img.size == (6, 5)  # overlay by default
    with pytest.raises(ValueError, match="needs an image"):
        viz.save_heatmap(tmp_path / "c.png", r, layout="side_by_side")
    with pytest.raises(ValueError, match="unknown layout"):
        viz.save_heatmap(tmp_path / "d.png", r, layout="mosaic")
    with pytest.raises(ValueError, match="colormap"):
        viz.heatmap(r, cmap="no-such-map")


# ------------------------------------------------------------------------------------------------------------ text
def _spans(html_text: str) -> list[tuple[str, float]]:
    return [
        (word, float(value)) for value, word in re.findall(r'data-relevance="([^"]+)"[^>]*>([^<]*)</span>', html_text)
    ]


def test_wordpiece_subwords_are_merged_and_summed():
    tokens = ["[CLS]", "the", "play", "##ing", "##ful", "cat", "[SEP]"]
    rel = [0.5, 0.1, 0.25, 0.5, -0.125, -1.0, 0.0]
    words, sums = viz.merge_subword_relevance(tokens, rel)
    assert words == ["[CLS]", "the", "playingful", "cat", "[SEP]"]
    np.testing.assert_allclose(sums, [0.5, 0.1, 0.625, -1.0, 0.0])

    merged = viz.text_heatmap_html(tokens, torch.tensor(rel), merge_subwords=True)
    spans = _spans(merged)
    assert [w for w, _ in spans] == words
    np.testing.assert_allclose([v for _, v in spans], sums)
    assert "##" not in merged

    unmerged = viz.text_heatmap_html(tokens, rel)
    assert [w for w, _ in _spans(unmerged)] == tokens


@pytest.mark.parametrize(
    ("tokens", "words"),
    [
        (["\u0120The", "\u0120play", "ing", "\u0120cat", "."], ["The", "playing", "cat."]),  # GPT-2 byte-level BPE
        (["<s>", "\u2581un", "believ", "able", "\u2581cat", "</s>"], ["<s>", "unbelievable", "cat", "</s>"]),
        (["Hello", "\u0120world"], ["Hello", "world"]),  # first word without the marker
    ],
)
def test_prefix_marker_subwords_are_merged(tokens, words):
    rel = np.arange(1, len(tokens) + 1, dtype=float)
    got_words, sums = viz.merge_subword_relevance(tokens, rel)
    assert got_words == words
    assert sum(sums) == pytest.approx(rel.sum())  # merging conserves the total


def test_text_colours_and_escaping():
    html_text = viz.text_heatmap_html(["<b>", "good", "bad", "meh"], [0.0, 2.0, -2.0, 0.0], full_document=True)
    assert html_text.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;" in html_text and "<b>" not in html_text
    colours = re.findall(r"background-color:rgb\((\d+),(\d+),(\d+)\)", html_text)
    assert len(colours) == 4
    zero, pos, neg, zero2 = (tuple(int(c) for c in rgb) for rgb in colours)
    assert zero == zero2 == tuple(_cmap_rgb(0.5))
    assert pos[0] > pos[2] and neg[2] > neg[0]
    with pytest.raises(ValueError, match="tokens"):
        viz.text_heatmap_html(["a", "b"], [1.0])


def test_save_text_heatmap_writes_a_page_with_title(tmp_path):
    path = viz.save_text_heatmap(
        tmp_path / "sub" / "t.html",
        ["[CLS]", "play", "##ing", "<&>", "[SEP]"],
        torch.tensor([0.0, 1.0, 0.5, -1.0, 0.0]),
        merge_subwords=True,
        title="LRP for <positive>",
        caption="class 1 & more",
    )
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>LRP for &lt;positive&gt;</title>" in page and "<p>class 1 &amp; more</p>" in page
    assert page.count('class="lrp-token"') == 4 and ">playing<" in page and 'data-relevance="1.5"' in page
    assert ">&lt;&amp;&gt;<" in page


def test_float64_tensors_keep_their_range_and_inf_saturates():
    """float64 relevance of tiny or huge magnitude maps like the same numpy array (no float32 flush or overflow);
    an overflowed (+-inf) pixel is drawn saturated with its sign, a NaN as zero."""
    import torch

    from lrp_fx.viz import normalize_relevance

    for values in ([1e-46, -2e-46, 0.0], [1e39, -1e39, 1.0]):
        as_tensor = normalize_relevance(torch.tensor(values, dtype=torch.float64), percentile=100)
        np.testing.assert_array_equal(as_tensor, normalize_relevance(np.array(values), percentile=100))
        assert as_tensor[0] > 0 > as_tensor[1]
    out = normalize_relevance(np.array([np.inf, -np.inf, np.nan, 0.5]), percentile=100)
    np.testing.assert_array_equal(out, [1.0, -1.0, 0.0, 1.0])


@pytest.mark.parametrize(("dtype", "top"), [(np.uint16, 65535), (np.int32, 65535), (np.float32, 1.0)])
def test_high_bit_depth_greyscale_images_are_scaled_not_clipped(tmp_path, dtype, top):
    """A 16-bit PNG (microscopy, X-ray) went through ``convert("RGB")``, which clips at 255: a white image."""
    from PIL import Image

    from lrp_fx import assets

    ramp = np.tile(np.linspace(0, top, 64), (8, 1)).astype(dtype)
    path = tmp_path / ("ramp.png" if dtype is np.uint16 else "ramp.tiff")
    Image.fromarray(ramp).save(path)
    rgb = np.asarray(assets.load_image(path))
    assert rgb.shape == (8, 64, 3)
    expected = np.round(ramp.astype(np.float64) * 255.0 / top)
    assert np.abs(rgb[..., 0].astype(np.float64) - expected).max() <= 1
