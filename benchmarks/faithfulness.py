"""Faithfulness of attributions on real trained models: pixel / region / token flipping (MoRF, LeRF, ABPC,
comprehensiveness, sufficiency) for lrp_fx presets, Zennit, Captum's gradient methods and random, with throughput and
peak memory per method.

    python benchmarks/faithfulness.py --fetch                       # photos, Fashion-MNIST, VADER into the cache
    python benchmarks/faithfulness.py --quick --model fashion_vgg   # smoke test: 4 inputs, 5 steps, prints only
    python benchmarks/faithfulness.py --model all                   # the full run -> docs/faithfulness.md + PNGs
    python benchmarks/faithfulness.py --model efficientnet_lite0 --offset 38 --n 36 --baseline blur --patch 16
    python benchmarks/faithfulness.py --render                      # re-render the doc from the saved JSON results

Models (see ``_models.py`` and ``_data.py``):

* ``efficientnet_lite0``: EfficientNet-Lite0 with its ImageNet weights (``lrp_fx.assets``), 74 photos from packages
  (``_data.photo_paths``; ``--offset``/``--n`` select a range), 224 px, inputs ``(x_uint8 - 127) / 128``;
  16-px patches (196 features) toward a Gaussian-blurred copy (kernel 51, sigma 20) by default;
* ``fashion_vgg``: the VGG-style CNN trained by ``train_fashion_mnist.py``, the first ``n`` Fashion-MNIST test images,
  inputs in ``[0, 1]``; 2-px patches (196 features), baselines ``blur`` and ``zero`` (black) by default;
* ``minilm_sentiment``: the frozen all-MiniLM-L6-v2 encoder with the sentiment head of ``train_sentiment_head.py``,
  the first ``n`` test-split VADER sentences of at most ``--max-tokens`` tokens (and more than ``--min-tokens``;
  ``--split val``: the validation split, whose first 200 short sentences are held out for choosing rule variants, the
  rest reported with ``--reported``); every token except ``[CLS]``,
  ``[SEP]`` and padding is a feature, replaced by ``[UNK]`` (default), ``[MASK]`` or deleted (``delete``: attention
  mask 0 for it);
* ``minilm_sentiment_ft``: the same architecture with every weight fine-tuned on the same training sentences
  (``train_sentiment_finetune.py``; weights in the cache), on the same sentences and baselines.

Each input is explained for the class the model predicts for it; every curve reads the softmax probability of that
class (and its logit). Metric definitions: ``_flipping.py``. Methods:

* ``lrp_fx <preset>``: ``lrp_fx.attribute(model, x, target=predicted classes, composite=preset)``, every preset that
  applies (the CNN presets on the CNNs, ``epsilon_gamma_box`` with the input domain as its box; ``attnlrp``,
  ``cplrp`` and ``epsilon`` on the transformer), plus the rule-parameter variants listed in ``VARIANTS`` (among them
  the reference-point rule with the flipping baseline as its reference, ``lrp_fx.rules.Reference``). Variants are
  chosen on held-out inputs (``--offset``/``--held-out``, ``--split val``); the summary compares the one in
  ``CHOSEN``, not the best on the reported inputs;
* ``zennit <preset>``: Zennit 0.5.1 with the equivalent composite and canonizers (``_zennit.py``), one-hot output
  relevance, CNNs only (Zennit has no transformer rules);
* ``saliency``, ``gradient x input``, ``integrated gradients``, ``smoothgrad``: Captum's ``Saliency`` (absolute
  gradient), ``InputXGradient``, ``IntegratedGradients`` (the flipping baseline as its baseline, 50 steps,
  Gauss-Legendre; 32 steps on EfficientNet-Lite0, 50 elsewhere) and ``NoiseTunnel(Saliency)`` (16 samples on
  EfficientNet-Lite0, 25 elsewhere; noise sigma 15 % of the input range). On the text model
  they act on the word embeddings (``SentimentMiniLM.forward_embeds``) and a token's score is the sum over the hidden
  size;
* ``random``: uniform random scores (seeded per input).

Throughput is inputs per second of wall-clock time for the attribution alone (batched, after one warm-up batch that
builds lrp_fx's program; its time is reported as "first call"). Peak memory is the peak resident set size during the
attribution calls of a method above the RSS before them (``_measure.PeakRSS``: the kernel's ``VmHWM`` after a reset
through ``/proc/self/clear_refs``); the script re-executes itself with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed so that
freed memory goes back to the kernel between methods (see ``_measure.py``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
import _flipping as fl  # noqa: E402
import _measure  # noqa: E402
import _models  # noqa: E402
import _zennit  # noqa: E402

import lrp_fx  # noqa: E402
from lrp_fx.rules import Epsilon, Gamma, Pass, Reference  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "faithfulness.md"
IMAGES = ROOT / "docs" / "images"
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("efficientnet_lite0", "fashion_vgg", "minilm_sentiment", "minilm_sentiment_ft")
#: The text models, each with its ``(tokenizer, model)`` loader: same architecture, sentences and baselines.
TEXT_MODELS = {
    "minilm_sentiment": _models.load_sentiment_minilm,
    "minilm_sentiment_ft": _models.load_sentiment_minilm_finetuned,
}
CNN_PRESETS = _zennit.ZENNIT_PRESETS  # the CNN presets: Zennit has a composite of the same name for each
TEXT_PRESETS = ("attnlrp", "cplrp", "epsilon")
#: Extra lrp_fx rule-parameter variants per model (label suffix, preset, params), reported next to the presets.
#: Besides the preset parameters, ``params`` may hold ``reference="baseline"`` (the first layer gets the
#: reference-point rule with the flipping baseline as its reference, ``lrp_fx.rules.Reference``: the information
#: integrated gradients is given) and ``overrides`` (``{module glob or type: rule}``, see ``lrp_fx.attribute``).
#: Every variant was chosen on held-out inputs (``--held-out``: Fashion-MNIST test images 100-199 and 5000-5499, the
#: VADER validation split), never on the reported ones; see docs/faithfulness.md.


def _by_depth(low: float, mid: float, top: float) -> dict[str, Gamma]:
    """Fashion VGG's convolutions after the first: gamma ``low`` in block 1-2 (features.3, .7), ``mid`` in block 2-3
    (features.10, .14), ``top`` in the last (features.17)."""
    return {
        **{f"features.{i}": Gamma(low) for i in (3, 7)},
        **{f"features.{i}": Gamma(mid) for i in (10, 14)},
        "features.17": Gamma(top),
    }


EMBEDDING_SUM = {"encoder.embeddings": Reference()}  # a token gets its whole embedding vector's relevance
VARIANTS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    # the photos have no held-out part: their variants are carried over from held-out Fashion-MNIST images (gamma =
    # 0.1 from test[100:200] in the first run, gamma = 0.05 from test[5000:5500]), not tuned on the photos
    "efficientnet_lite0": [
        ("gamma=0.1", "epsilon_gamma_box", {"gamma": 0.1}),
        ("gamma=0.05", "epsilon_gamma_box", {"gamma": 0.05}),  # the choice on held-out Fashion-MNIST (blur)
    ],
    "fashion_vgg": [
        *[(f"gamma={g}", "epsilon_gamma_box", {"gamma": g}) for g in (0.1, 0.5, 1.0)],
        *[
            (f"gamma={g} reference", "epsilon_gamma_box", {"gamma": g, "reference": "baseline"})
            for g in (0.1, 0.25, 0.5)
        ],
        ("reference", "epsilon_plus", {"reference": "baseline"}),
        ("reference", "epsilon", {"reference": "baseline"}),
        *[(f"gamma={g}", "epsilon_gamma_box", {"gamma": g}) for g in (0.0, 0.02, 0.05, 0.15)],
        ("gamma=0.1 epsilon=0.1", "epsilon_gamma_box", {"gamma": 0.1, "epsilon": 0.1}),
        ("gamma=0.25/0.1/0 by depth", "epsilon_gamma_box", {"overrides": _by_depth(0.25, 0.1, 0.0)}),
        ("gamma=0/0.1/0.25 by depth", "epsilon_gamma_box", {"overrides": _by_depth(0.0, 0.1, 0.25)}),
        # session 4: explain log p_c (linearised) instead of the logit, as the curves measure a probability
        ("gamma=0.05 log-probability", "epsilon_gamma_box", {"gamma": 0.05, "explain": "log-probability"}),
    ],
    "minilm_sentiment": [
        ("embedding sum", "cplrp", {"overrides": EMBEDDING_SUM}),
        ("embedding sum", "attnlrp", {"overrides": EMBEDDING_SUM}),
        ("gamma=0.25", "cplrp", {"overrides": {"encoder.encoder.*": Gamma(0.25)}}),
        ("embedding sum gamma=0.25", "cplrp", {"overrides": {**EMBEDDING_SUM, "encoder.encoder.*": Gamma(0.25)}}),
        ("epsilon=0.01", "cplrp", {"epsilon": 0.01}),
        # session 4, on the validation split: the epsilon scale around 0.01, and the two variants that helped, combined
        *[(f"epsilon={e}", "cplrp", {"epsilon": e}) for e in (0.003, 0.03, 0.1)],
        ("epsilon=0.01", "attnlrp", {"epsilon": 0.01}),
        ("embedding sum epsilon=0.01", "cplrp", {"overrides": EMBEDDING_SUM, "epsilon": 0.01}),
        ("epsilon=0.01 log-probability", "cplrp", {"epsilon": 0.01, "explain": "log-probability"}),
        # layer norm's centring as element-wise (Pass) instead of CP-LRP's epsilon rule through the centring
        ("epsilon=0.01 layernorm pass", "cplrp", {"epsilon": 0.01, "overrides": {torch.nn.LayerNorm: Pass()}}),
        (
            "embedding sum epsilon=0.01 layernorm pass",
            "cplrp",
            {"epsilon": 0.01, "overrides": {**EMBEDDING_SUM, torch.nn.LayerNorm: Pass()}},
        ),
        # session 6, on the same validation sentences: the epsilons of layer norms, linear layers and the residual
        # sums apart; a small gamma; and the [UNK] embedding as a reference at the input (``unk_delta``, see
        # ``_unk_delta_scores``): the information integrated gradients is given
        *[
            (
                f"embedding sum epsilon=0.01 {kind} epsilon={e}",
                "cplrp",
                {"epsilon": 0.01, "overrides": {**EMBEDDING_SUM, t: Epsilon(e)}},
            )
            for kind, t in (("layernorm", torch.nn.LayerNorm), ("linear", torch.nn.Linear))
            for e in (0.001, 0.1)
        ],
        *[
            (
                f"embedding sum epsilon=0.01 stabilizer={e}",
                "cplrp",
                {"epsilon": 0.01, "stabilizer": e, "overrides": EMBEDDING_SUM},
            )
            for e in (0.01, 0.1)
        ],
        *[
            (
                f"embedding sum epsilon=0.01 gamma={g}",
                "cplrp",
                {"epsilon": 0.01, "overrides": {**EMBEDDING_SUM, "encoder.encoder.*": Gamma(g)}},
            )
            for g in (0.02, 0.05)
        ],
        ("embedding sum epsilon=0.01", "attnlrp", {"epsilon": 0.01, "overrides": EMBEDDING_SUM}),
        (
            "embedding sum epsilon=0.01 unk delta",
            "cplrp",
            {"epsilon": 0.01, "overrides": EMBEDDING_SUM, "unk_delta": True},
        ),
        # session 8, on the fine-tuned model's validation sentences 0-199 under [MASK] (where the carried-over choice
        # trails IG): the epsilon scale around AttnLRP's 0.01, and AttnLRP with the flipping token as the reference
        # ("unk delta" names the variant; it uses whichever token the flipping inserts, [MASK] under `mask`)
        *[(f"embedding sum epsilon={e}", "attnlrp", {"epsilon": e, "overrides": EMBEDDING_SUM}) for e in (0.003, 0.03)],
        (
            "embedding sum epsilon=0.01 unk delta",
            "attnlrp",
            {"epsilon": 0.01, "overrides": EMBEDDING_SUM, "unk_delta": True},
        ),
    ],
}
# the fine-tuned text model (session 7) is offered the same lrp_fx methods (26, then 29 from session 8), chosen among
# on the same held-out validation sentences 0-199
VARIANTS["minilm_sentiment_ft"] = VARIANTS["minilm_sentiment"]
#: The lrp_fx method each summary row and paired table compares, per (model, baseline): chosen on held-out inputs
#: (see VARIANTS), so the comparison does not pick the best of many methods on the reported inputs. Runs without an
#: entry (or without that method) fall back to the best lrp_fx method on the reported inputs, marked as such.
#: A key ``(model, baseline, offset)`` takes precedence over ``(model, baseline)`` for the run starting at ``offset``,
#: and a run's name (``run_key``) over both.
CHOSEN: dict[tuple | str, str] = {
    # the best of 16 lrp_fx methods on held-out Fashion-MNIST test images 5000-5499 (blur); carried over to the photos
    ("fashion_vgg", "blur"): "lrp_fx epsilon_gamma_box gamma=0.05",
    ("efficientnet_lite0", "blur"): "lrp_fx epsilon_gamma_box gamma=0.05",
    # the 36 photos added in session 4 (photos 38-73): the best of the 8 lrp_fx methods on photos 0-37, which serve
    # as their held-out set (fixed before any lrp_fx variant was run on photos 38-73)
    ("efficientnet_lite0", "blur", 38): "lrp_fx epsilon_gamma_box gamma=0.1",
    # the `mean` baseline (session 4): the `blur` choices carried over (no rule sees the baseline), fixed before runs
    ("fashion_vgg", "mean"): "lrp_fx epsilon_gamma_box gamma=0.05",
    ("efficientnet_lite0", "mean", 38): "lrp_fx epsilon_gamma_box gamma=0.1",
    # session 5, fixed in a commit before the runs: the 185 photos added then (74-258), with the best of the 8 lrp_fx
    # methods on all earlier photos 0-73 (gamma 0.1: 0.204 +- 0.023; default gamma 0.25: 0.192, epsilon_plus_flat
    # 0.190, gamma 0.05: 0.169)
    ("efficientnet_lite0", "blur", 74): "lrp_fx epsilon_gamma_box gamma=0.1",
    ("efficientnet_lite0", "mean", 74): "lrp_fx epsilon_gamma_box gamma=0.1",
    # session 5, fixed before the runs: every Fashion-MNIST test image not yet used (2700-4999 and 5500-9999, 6800
    # images; 5000-5499 stay held out), with the session-3 choice unchanged; the last Fashion `blur` run
    ("fashion_vgg", "blur", 2700): "lrp_fx epsilon_gamma_box gamma=0.05",
    ("fashion_vgg", "blur", 5500): "lrp_fx epsilon_gamma_box gamma=0.05",
    # the best preset on held-out Fashion-MNIST test images 100-199 (zero)
    ("fashion_vgg", "zero"): "lrp_fx epsilon_plus",
    # the best of 8 lrp_fx methods on 200 sentences of the VADER validation split
    ("minilm_sentiment", "unk"): "lrp_fx cplrp epsilon=0.01",
    # test sentences 400-1199 (session 4): the best of 13 lrp_fx methods on the same 200 validation sentences, fixed
    # before running any method on them
    ("minilm_sentiment", "unk", 400): "lrp_fx cplrp embedding sum epsilon=0.01",
    # session 5, fixed before the run: the last test sentences of at most 40 tokens (1200-1738), the choice unchanged
    ("minilm_sentiment", "unk", 1200): "lrp_fx cplrp embedding sum epsilon=0.01",
    # `[MASK]` replacement (session 4): the `[UNK]` choice for sentences 400-1199 carried over, fixed before the run
    ("minilm_sentiment", "mask"): "lrp_fx cplrp embedding sum epsilon=0.01",
    # session 6, fixed in a commit before the runs (keyed by run name): the validation sentences of at most 40 tokens
    # no method had seen (200-1775) and every test sentence of more than 40 tokens (208), with `[UNK]` and, carried
    # over, `delete`; the best of the 26 lrp_fx methods on validation sentences 0-199 (0.5250; the session-4 choice
    # 0.5240, IG with [UNK] 0.5288: no lrp_fx method is ahead of IG there)
    **{
        f"minilm_sentiment_{baseline}_{run}": "lrp_fx cplrp embedding sum epsilon=0.01 layernorm epsilon=0.001"
        for baseline in ("unk", "delete")
        for run in ("offset200_val", "long")
    },
    # session 7, the fine-tuned text model, fixed in a commit before the runs: the best of the 26 lrp_fx methods on
    # validation sentences 0-199 (0.572 +- 0.019; IG with [UNK] 0.522, IG with [PAD] 0.550), for the test sentences
    # of at most 40 tokens (0-999, then 1000-1738), `[UNK]`; carried over to `[MASK]`
    ("minilm_sentiment_ft", "unk"): "lrp_fx attnlrp embedding sum epsilon=0.01",
    ("minilm_sentiment_ft", "mask"): "lrp_fx attnlrp embedding sum epsilon=0.01",
    # session 8, fixed in a commit before the run: the test sentences of at most 40 tokens not yet flipped with
    # [MASK] (800-1738). Chosen this time on the validation sentences 0-199 flipped with [MASK] itself: the best of
    # the 29 lrp_fx methods (the 26 and three new AttnLRP variants) is the same method (0.539 +- 0.014; IG with
    # [MASK] 0.547, -1.4 s.e.; IG with [PAD] 0.505)
    ("minilm_sentiment_ft", "mask", 800): "lrp_fx attnlrp embedding sum epsilon=0.01",
    # session 8, fixed in a commit before the runs: the frozen model's test sentences of at most 40 tokens not yet
    # flipped with [MASK] (0-399 and 800-1738), with the best of the 29 lrp_fx methods on validation sentences 0-199
    # flipped with [MASK] (0.448 +- 0.010; the session-4 choice 0.446; IG with [MASK] 0.419, IG with [PAD] 0.372).
    # The same method also runs on 400-799 so that the 1739 sentences pool; that run's own row keeps its choice.
    **{
        ("minilm_sentiment", "mask", offset): "lrp_fx cplrp embedding sum epsilon=0.01 layernorm epsilon=0.001"
        for offset in (0, 800)
    },
    # session 8, each fixed in a commit before its run: the fine-tuned model's test sentences of more than 40 tokens
    # (208), flipped with [MASK] (the cell where IG led) and then with [UNK]; the choice carried over (no long
    # validation sentences tried)
    **{
        f"minilm_sentiment_ft_{baseline}_long": "lrp_fx attnlrp embedding sum epsilon=0.01"
        for baseline in ("mask", "unk")
    },
    # session 9, fixed in a commit before the run: the frozen model's test sentences of more than 40 tokens (208)
    # flipped with [MASK], the last model x token cell without long sentences; the frozen [MASK] choice of session 8
    # carried over (it is also the frozen model's long-sentence [UNK] choice; no long validation sentences tried)
    "minilm_sentiment_mask_long": "lrp_fx cplrp embedding sum epsilon=0.01 layernorm epsilon=0.001",
}
DEFAULTS = {
    "efficientnet_lite0": {"n": None, "batch": 8, "patch": 16, "baselines": ["blur"], "ig_steps": 32, "sg_samples": 16},
    "fashion_vgg": {"n": 100, "batch": 50, "patch": 2, "baselines": ["blur", "zero"], "ig_steps": 50, "sg_samples": 25},
    "minilm_sentiment": {"n": 100, "batch": 20, "patch": 0, "baselines": ["unk"], "ig_steps": 50, "sg_samples": 25},
}
DEFAULTS["minilm_sentiment_ft"] = DEFAULTS["minilm_sentiment"]
ANALYSIS_BEGIN, ANALYSIS_END = "<!-- analysis:begin -->", "<!-- analysis:end -->"


# -- data of one model ----------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """One model on its inputs, ready to attribute and perturb.

    ``inputs``: the model input of all ``n`` samples (a tensor, or a dict of tensors for text), ``batch(idx)`` selects
    samples; ``targets``: the predicted class per sample; ``task(i, baseline)``: the ``FlipTask`` of sample ``i``;
    ``scores(attribution, i)``: its feature scores.
    """

    name: str
    model: torch.nn.Module
    labels: list[str]
    inputs: Any
    targets: Tensor
    config: dict[str, Any]
    batch: Callable[[Tensor], Any]
    task: Callable[[int], fl.FlipTask]
    scores: Callable[[Tensor, int], Tensor]
    baseline_input: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _measures(model: torch.nn.Module, targets: Tensor, i: int) -> Callable[[Any], Tensor]:
    """``score(batch) -> [S, 2]``: probability and logit of sample ``i``'s explained class."""
    cls = int(targets[i])

    def score(batch: Any) -> Tensor:
        with torch.no_grad():
            logits = model(**batch) if isinstance(batch, dict) else model(batch)
        return torch.stack([logits.softmax(-1)[:, cls], logits[:, cls]], dim=1)

    return score


def image_baseline(x: Tensor, kind: str, low: float, high: float, seed: int = 0) -> Tensor:
    """The replacement values: ``blur`` (kernel 51, sigma 20), ``mean`` (per image and channel), ``zero`` or
    ``noise`` (uniform in the input range, seeded)."""
    if kind == "blur":
        return fl.blur_baseline(x, 51, 20.0)
    if kind == "mean":
        return fl.mean_baseline(x)
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(x.shape, generator=gen, dtype=x.dtype) * (high - low) + low
    raise ValueError(f"unknown image baseline {kind!r} (blur, mean, zero, noise)")


def image_bench(
    name: str, model: torch.nn.Module, x: Tensor, labels: list[str], patch: int, baseline: str, box: tuple[float, float]
) -> Bench:
    """A ``Bench`` for images ``x`` ``[N, C, H, W]`` with ``patch x patch`` features toward ``baseline``."""
    with torch.no_grad():
        targets = torch.cat([model(x[i : i + 16]).argmax(1) for i in range(0, len(x), 16)])
    base = image_baseline(x, baseline, *box)
    h, w = x.shape[-2:]
    # the perturbed copies are scored by a channels-last copy of the model (the same function, ~40 % less CPU time
    # for EfficientNet-Lite's depthwise convolutions); the attribution methods get the model as it is
    scorer = copy.deepcopy(model).to(memory_format=torch.channels_last)

    @functools.cache  # one task per input, shared by the methods (its measures are memoised per removal mask)
    def task(i: int) -> fl.FlipTask:
        return fl.FlipTask(
            n_features=(h // patch) * (w // patch),
            perturb=lambda masks: torch.where(fl.expand_patches(masks, h, w, patch), base[i], x[i]).contiguous(
                memory_format=torch.channels_last
            ),
            score=_measures(scorer, targets, i),
        )

    config = {"patch": patch, "baseline": baseline, "features": (h // patch) * (w // patch), "box": list(box)}
    return Bench(
        name,
        model,
        labels,
        x,
        targets,
        config,
        batch=lambda idx: x[idx],
        task=task,
        scores=lambda attribution, i: fl.patch_scores(attribution, patch),
        baseline_input=base,
        extra={"box": box},
    )


def load_efficientnet(n: int | None, patch: int, baseline: str, offset: int = 0) -> Bench:
    """Photos ``offset .. offset + n - 1`` (to the last photo when ``n`` is None) of ``_data.photo_paths()``."""
    from lrp_fx import assets

    model = assets.load_efficientnet_lite0()
    for p in model.parameters():
        p.requires_grad_(False)
    photos = _data.load_photos(None if n is None else offset + n)[offset:]
    x = torch.cat([assets.preprocess_efficientnet(img) for _, img in photos])
    bench = image_bench(
        "efficientnet_lite0", model, x, [lbl for lbl, _ in photos], patch, baseline, assets.EFFICIENTNET_INPUT_RANGE
    )
    categories = assets.imagenet_categories()
    bench.extra["predicted"] = [categories[int(c)] for c in bench.targets]
    bench.config["offset"] = offset
    return bench


def load_fashion(n: int, patch: int, baseline: str, offset: int = 0) -> Bench:
    """Fashion-MNIST test images ``offset .. offset + n - 1``."""
    images, labels = _data.load_fashion_mnist("test")
    images, labels = images[offset : offset + n], labels[offset : offset + n]
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    model = _models.load_fashion_vgg()
    names = [f"test[{offset + i}] {_data.FASHION_CLASSES[int(labels[i])]}" for i in range(len(x))]
    bench = image_bench("fashion_vgg", model, x, names, patch, baseline, (0.0, 1.0))
    bench.extra["predicted"] = [_data.FASHION_CLASSES[int(c)] for c in bench.targets]
    bench.extra["correct"] = int((bench.targets == torch.from_numpy(labels.copy())).sum())
    bench.config["offset"] = offset
    return bench


def load_minilm(
    n: int,
    baseline: str,
    max_tokens: int,
    offset: int = 0,
    split: str = "test",
    min_tokens: int = 0,
    model_name: str = "minilm_sentiment",
) -> Bench:
    """VADER sentences of ``split`` (``test``; ``val``, the validation split, whose first 200 short sentences are a
    held-out set for choosing rule variants) with more than ``min_tokens`` and at most ``max_tokens`` tokens (with
    [CLS]/[SEP]), ``offset .. offset + n - 1`` of them, padded to the longest (one lrp_fx program for all), on the
    text model ``model_name`` (a key of ``TEXT_MODELS``)."""
    tokenizer, model = TEXT_MODELS[model_name]()
    test = _data.split_sentences(_data.load_vader_sentences())[split]
    fits = [s for s in test if min_tokens < len(tokenizer(s.text)["input_ids"]) <= max_tokens]
    chosen = fits[offset : offset + n]
    enc = tokenizer([s.text for s in chosen], padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    positions = [torch.nonzero((mask[i] == 1) & ~special[i]).flatten() for i in range(len(ids))]
    replacement = {"unk": tokenizer.unk_token_id, "mask": tokenizer.mask_token_id, "delete": tokenizer.pad_token_id}
    if baseline not in replacement:
        raise ValueError(f"unknown text baseline {baseline!r} (unk, mask, delete)")
    rep = replacement[baseline]
    with torch.no_grad():
        targets = torch.cat([model(ids[i : i + 32], mask[i : i + 32]).argmax(1) for i in range(0, len(ids), 32)])
    base_ids = ids.clone()
    for i, pos in enumerate(positions):
        base_ids[i, pos] = rep

    @functools.cache  # one task per input, shared by the methods
    def task(i: int) -> fl.FlipTask:
        pos = positions[i]

        def perturb(masks: Tensor) -> dict[str, Tensor]:
            s = masks.shape[0]
            new_ids, new_mask = ids[i].repeat(s, 1), mask[i].repeat(s, 1)
            new_ids[:, pos] = torch.where(masks, torch.full_like(masks, rep, dtype=ids.dtype), ids[i, pos])
            if baseline == "delete":
                new_mask[:, pos] = torch.where(masks, torch.zeros_like(new_mask[:, pos]), new_mask[:, pos])
            return {"input_ids": new_ids, "attention_mask": new_mask}

        return fl.FlipTask(len(pos), perturb, _measures(model, targets, i))

    config = {
        "baseline": baseline,
        "max_tokens": max_tokens,
        **({"min_tokens": min_tokens} if min_tokens else {}),
        "padded_length": int(ids.shape[1]),
        "mean_features": sum(len(p) for p in positions) / len(positions),
        "offset": offset,
    }
    if split != "test":
        config["split"] = split
    bench = Bench(
        model_name,
        model,
        [s.text for s in chosen],
        {"input_ids": ids, "attention_mask": mask},
        targets,
        config,
        batch=lambda idx: {"input_ids": ids[idx], "attention_mask": mask[idx]},
        task=task,
        scores=lambda attribution, i: attribution[positions[i]],
        baseline_input={"input_ids": base_ids, "attention_mask": mask},
    )
    bench.extra["correct"] = int((targets == torch.tensor([s.label for s in chosen])).sum())
    bench.extra["pad_id"] = tokenizer.pad_token_id
    return bench


def load_bench(
    model: str,
    n: int | None,
    patch: int,
    baseline: str,
    max_tokens: int,
    offset: int = 0,
    split: str = "test",
    min_tokens: int = 0,
) -> Bench:
    if model == "efficientnet_lite0":
        return load_efficientnet(n, patch, baseline, offset)
    if model == "fashion_vgg":
        return load_fashion(n, patch, baseline, offset)
    if model in TEXT_MODELS:
        return load_minilm(n, baseline, max_tokens, offset, split, min_tokens, model)
    raise ValueError(f"unknown model {model!r}")


# -- methods -------------------------------------------------------------------------------------------------------
@dataclass
class Method:
    """``attribute(idx) -> attribution`` of the inputs ``idx`` (the input's shape; ``[B, T]`` per token for text),
    each explained for its target class."""

    name: str
    family: str
    attribute: Callable[[Tensor], Tensor]


def _reference_fn(bench: Bench) -> Any:
    """The flipping baseline as a function of the model input, for the reference-point rule (traced into lrp_fx's
    program, so it follows every batch)."""
    kind = bench.config["baseline"]
    if kind == "blur":
        return lambda x: fl.blur_baseline(x, 51, 20.0)
    if kind == "mean":
        return fl.mean_baseline
    if kind == "zero":
        return 0.0
    raise ValueError(f"no reference for baseline {kind!r}")


def log_probability_seed(logits: Tensor) -> Tensor:
    """Output relevance for explaining ``log p_c`` of the predicted class ``c`` instead of its logit ``z_c``: the
    linearisation around the logits, ``R_k = z_k (δ_kc - p_k)`` (weights summing to zero, so a shift shared by all
    logits explains nothing). A function of the output alone, as lrp_fx traces a callable target into its program
    (every input here is explained for its predicted class)."""
    p = logits.detach().softmax(-1)
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return logits * (onehot - p)


def _unk_delta_scores(bench: Bench, idx: Tensor, relevance: Tensor) -> Tensor:
    """Per-token scores ``sum_d c_td (w_td - u_td)`` from the relevance ``R = e * c`` of the embedding sum ``e = w +
    position + token type`` (word embedding ``w``, its flipping-baseline embedding ``u``): CP-LRP's backward is the
    gradient of the network with its attention weights and layer-norm scales frozen at the input, a network linear in
    ``e``, so this is that linearised network's exact change when a token is replaced by the baseline token; the
    scores sum to its change when every token is (the [UNK] information integrated gradients is given). Under
    AttnLRP, ``c`` is its modified backward signal instead (softmax not frozen), and the score is the same first-order
    reading of it."""
    emb = bench.model.encoder.embeddings
    ids = bench.inputs["input_ids"][idx]
    base = bench.baseline_input["input_ids"][idx]
    with torch.no_grad():
        w, u = emb.word_embeddings(ids), emb.word_embeddings(base)
        e = w + emb.position_embeddings.weight[: ids.shape[1]] + emb.token_type_embeddings.weight[0]
    return (relevance / e * (w - u)).sum(-1)


def _lrp_method(bench: Bench, label: str, preset: str, params: dict[str, Any]) -> Method:
    params = dict(params)
    overrides = params.pop("overrides", None)
    explain = params.pop("explain", "logit")
    unk_delta = params.pop("unk_delta", False)
    if params.get("reference") == "baseline":
        params["reference"] = _reference_fn(bench)  # one object per method: lrp_fx caches the program by it
    word = "encoder.embeddings.word_embeddings"

    def attribute(idx: Tensor) -> Tensor:
        target = bench.targets[idx] if explain == "logit" else log_probability_seed
        res = lrp_fx.attribute(
            bench.model,
            bench.batch(idx),
            target=target,
            composite=preset,
            overrides=overrides,
            modules=[word] if unk_delta else (),
            **params,
        )
        if unk_delta:
            return _unk_delta_scores(bench, idx, res.modules[word].detach())
        rel = res.relevance
        return (rel["input_ids"] if isinstance(rel, dict) else rel).detach()

    return Method(f"lrp_fx {label}", "lrp_fx", attribute)


def _zennit_method(
    bench: Bench, preset: str, label: str | None = None, params: dict[str, float] | None = None
) -> Method:
    low, high = bench.extra["box"]
    model = copy.deepcopy(bench.model)
    if bench.name == "efficientnet_lite0":
        canonizers = _zennit.efficientnet_lite_canonizers(model)
    else:
        canonizers = [_zennit.ExactSequentialMergeBatchNorm()]
    composite = _zennit.zennit_composite(preset, canonizers, low, high, **(params or {}))

    def attribute(idx: Tensor) -> Tensor:
        batch = bench.batch(idx)
        with torch.no_grad():
            classes = model(batch).shape[1]
        seed = torch.nn.functional.one_hot(bench.targets[idx], classes).to(batch.dtype)
        return _zennit.zennit_relevance(model, composite, batch, seed)

    return Method(f"zennit {label or preset}", "zennit", attribute)


def _image_captum_methods(bench: Bench, ig_steps: int, sg_samples: int) -> list[Method]:
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    model = bench.model
    low, high = bench.extra["box"]
    x, base, targets = bench.inputs, bench.baseline_input, bench.targets

    def saliency(idx: Tensor) -> Tensor:
        return Saliency(model).attribute(x[idx].requires_grad_(True), target=targets[idx], abs=True).detach()

    def input_x_gradient(idx: Tensor) -> Tensor:
        return InputXGradient(model).attribute(x[idx].requires_grad_(True), target=targets[idx]).detach()

    def integrated_gradients(reference: Tensor, output: str = "logit") -> Callable[[Tensor], Tensor]:
        forward = {
            "logit": model,
            "log-probability": lambda inp: model(inp).log_softmax(-1),
            "probability": lambda inp: model(inp).softmax(-1),
        }[output]

        def attribute(idx: Tensor) -> Tensor:
            ig = IntegratedGradients(forward)
            out = ig.attribute(
                x[idx], baselines=reference[idx], target=targets[idx], n_steps=ig_steps, internal_batch_size=32
            )
            return out.detach()

        return attribute

    def smoothgrad(idx: Tensor) -> Tensor:
        nt = NoiseTunnel(Saliency(model))
        out = nt.attribute(
            x[idx].requires_grad_(True),
            nt_type="smoothgrad",
            nt_samples=sg_samples,
            nt_samples_batch_size=32,
            stdevs=0.15 * (high - low),
            target=targets[idx],
            abs=True,
        )
        return out.detach()

    methods = [
        Method("saliency", "captum", saliency),
        Method("gradient x input", "captum", input_x_gradient),
        Method(f"integrated gradients ({bench.config['baseline']} baseline)", "captum", integrated_gradients(base)),
    ]
    if bench.name == "fashion_vgg":  # does explaining the measured quantity itself help IG? (held-out check)
        for output in ("log-probability", "probability"):
            name = f"integrated gradients ({bench.config['baseline']} baseline, {output})"
            methods.append(Method(name, "captum", integrated_gradients(base, output)))
    black = torch.full_like(x, low)  # the darkest image of the input domain (pixel value 0)
    if not torch.equal(black, base):
        methods.append(Method("integrated gradients (black baseline)", "captum", integrated_gradients(black)))
    return [*methods, Method("smoothgrad", "captum", smoothgrad)]


def _text_captum_methods(bench: Bench, ig_steps: int, sg_samples: int) -> list[Method]:
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    model: _models.SentimentMiniLM = bench.model
    emb = model.word_embeddings
    ids, mask = bench.inputs["input_ids"], bench.inputs["attention_mask"]
    base_ids, targets = bench.baseline_input["input_ids"], bench.targets

    def forward(embeds: Tensor, attention_mask: Tensor) -> Tensor:
        return model.forward_embeds(embeds, attention_mask)

    def embeds(idx: Tensor) -> Tensor:
        with torch.no_grad():
            return emb(ids[idx]).requires_grad_(True)

    def saliency(idx: Tensor) -> Tensor:
        out = Saliency(forward).attribute(
            embeds(idx), target=targets[idx], abs=True, additional_forward_args=(mask[idx],)
        )
        return out.sum(-1).detach()

    def input_x_gradient(idx: Tensor) -> Tensor:
        out = InputXGradient(forward).attribute(embeds(idx), target=targets[idx], additional_forward_args=(mask[idx],))
        return out.sum(-1).detach()

    def integrated_gradients(reference_ids: Tensor) -> Callable[[Tensor], Tensor]:
        def attribute(idx: Tensor) -> Tensor:
            with torch.no_grad():
                b = emb(reference_ids[idx])
            out = IntegratedGradients(forward).attribute(
                embeds(idx).detach(),
                baselines=b,
                target=targets[idx],
                additional_forward_args=(mask[idx],),
                n_steps=ig_steps,
                internal_batch_size=200,
            )
            return out.sum(-1).detach()

        return attribute

    sigma = 0.15 * float(emb.weight.max() - emb.weight.min())

    def smoothgrad(idx: Tensor) -> Tensor:
        out = NoiseTunnel(Saliency(forward)).attribute(
            embeds(idx),
            nt_type="smoothgrad",
            nt_samples=sg_samples,
            nt_samples_batch_size=200,
            stdevs=sigma,
            target=targets[idx],
            abs=True,
            additional_forward_args=(mask[idx],),
        )
        return out.sum(-1).detach()

    flip = bench.config["baseline"]
    methods = [
        Method("saliency", "captum", saliency),
        Method("gradient x input", "captum", input_x_gradient),
        Method(f"integrated gradients ({flip} baseline)", "captum", integrated_gradients(base_ids)),
    ]
    if flip != "delete":  # [PAD] at every feature position (the special tokens kept), a common IG reference
        pad_ids = torch.where(base_ids != ids, torch.full_like(ids, bench.extra["pad_id"]), ids)
        methods.append(Method("integrated gradients (pad baseline)", "captum", integrated_gradients(pad_ids)))
    return [*methods, Method("smoothgrad", "captum", smoothgrad)]


def _random_method(bench: Bench) -> Method:
    gen = torch.Generator().manual_seed(1234)
    x = bench.inputs["input_ids"] if isinstance(bench.inputs, dict) else bench.inputs

    def attribute(idx: Tensor) -> Tensor:
        return torch.rand(x[idx].shape, generator=gen)

    return Method("random", "random", attribute)


def make_methods(bench: Bench, ig_steps: int, sg_samples: int, quick: bool) -> list[Method]:
    """Every method that applies to ``bench``'s model."""
    text = bench.name in TEXT_MODELS
    methods: list[Method] = []
    for preset in TEXT_PRESETS if text else CNN_PRESETS:
        params = {}
        if preset == "epsilon_gamma_box":
            params = dict(zip(("low", "high"), bench.extra["box"]))
        methods.append(_lrp_method(bench, preset, preset, params))
    for suffix, preset, params in VARIANTS.get(bench.name, []):
        full = dict(params)
        if preset == "epsilon_gamma_box" and "reference" not in params:
            full.update(zip(("low", "high"), bench.extra["box"]))
        methods.append(_lrp_method(bench, f"{preset} {suffix}", preset, full))
    if not text:
        methods += [_zennit_method(bench, preset) for preset in CNN_PRESETS]
        for suffix, preset, params in VARIANTS.get(bench.name, []):
            if set(params) <= {"gamma", "epsilon", "stabilizer"}:  # Zennit has no reference-point rule
                methods.append(_zennit_method(bench, preset, f"{preset} {suffix}", params))
        methods += _image_captum_methods(bench, ig_steps, sg_samples)
    else:
        methods += _text_captum_methods(bench, ig_steps, sg_samples)
    methods.append(_random_method(bench))
    return methods


# -- running -------------------------------------------------------------------------------------------------------
@dataclass
class MethodResult:
    name: str
    family: str
    abpc: list[float]
    abpc_logit: list[float]
    auc_morf: list[float]
    auc_lerf: list[float]
    comprehensiveness: list[float]
    sufficiency: list[float]
    morf: list[list[float]]  # mean curve of probabilities, and its standard error
    lerf: list[list[float]]
    throughput: float
    cpu_s_per_input: float
    first_call_s: float
    peak_mib: float
    attribution_s: float
    flipping_s: float
    error: str | None = None


def _batches(n: int, size: int) -> list[Tensor]:
    """Index batches of ``size``; the last one is padded by repeating its first index, so every batch has the same
    shape (lrp_fx builds one program per input shape)."""
    out = []
    for start in range(0, n, size):
        idx = torch.arange(start, min(start + size, n))
        if len(idx) < size and n >= size:
            idx = torch.cat([idx, idx[:1].repeat(size - len(idx))])
        out.append(idx)
    return out


def attribute_all(bench: Bench, method: Method, batch_size: int) -> tuple[list[Tensor], float, float, float, float]:
    """The attribution of every input: ``(per-input attributions, throughput in inputs per wall-clock second,
    process CPU seconds per input, first-call seconds, peak MiB)``."""
    n = len(bench.targets)
    batches = _batches(n, batch_size)
    start = time.perf_counter()
    method.attribute(batches[0])  # warm-up (lrp_fx: capture and build)
    first = time.perf_counter() - start
    _measure.trim()
    before = _measure.rss()
    results: dict[int, Tensor] = {}
    with _measure.PeakRSS() as peak:
        start, cpu = time.perf_counter(), time.process_time()
        for idx in batches:
            out = method.attribute(idx)
            for j, i in enumerate(idx.tolist()):
                results.setdefault(i, out[j].detach().clone())
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return [results[i] for i in range(n)], n / elapsed, cpu / n, first, max(0, peak.peak - before) / 2**20


def run_method(bench: Bench, method: Method, steps: int, batch_size: int) -> MethodResult:
    """Attribute every input with ``method``, then perturb along its MoRF and LeRF orderings."""
    t0 = time.perf_counter()
    attributions, throughput, cpu_per_input, first, peak = attribute_all(bench, method, batch_size)
    t1 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)  # the same tie-breaking permutations for every method
    curves = []
    for i, attribution in enumerate(attributions):
        scores = bench.scores(attribution, i)
        if not torch.isfinite(scores).all():
            raise FloatingPointError(f"{method.name}: non-finite attribution on input {i} ({bench.labels[i]!r})")
        curves.append(fl.evaluate(bench.task(i), scores, steps, generator=gen))
    morf = torch.stack([c.morf[:, 0] for c in curves])
    lerf = torch.stack([c.lerf[:, 0] for c in curves])
    sem = lambda v: (v.std(0, unbiased=True) / math.sqrt(len(v))).tolist() if len(v) > 1 else [0.0] * v.shape[1]
    return MethodResult(
        name=method.name,
        family=method.family,
        abpc=[float(c.abpc[0]) for c in curves],
        abpc_logit=[float(c.abpc[1]) for c in curves],
        auc_morf=fl.auc(morf).tolist(),
        auc_lerf=fl.auc(lerf).tolist(),
        comprehensiveness=[float(c.comprehensiveness[0]) for c in curves],
        sufficiency=[float(c.sufficiency[0]) for c in curves],
        morf=[morf.mean(0).tolist(), sem(morf)],
        lerf=[lerf.mean(0).tolist(), sem(lerf)],
        throughput=throughput,
        cpu_s_per_input=cpu_per_input,
        first_call_s=first,
        peak_mib=peak,
        attribution_s=t1 - t0,
        flipping_s=time.perf_counter() - t1,
    )


def run_bench(
    bench: Bench,
    methods: list[Method],
    steps: int,
    batch_size: int,
    config: dict[str, Any],
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every method on ``bench``; ``save(run)`` (if given) is called with the results so far after each method."""
    results: list[dict[str, Any]] = []
    run = {
        "model": bench.name,
        "config": {**bench.config, "n": len(bench.targets), "steps": steps, "batch": batch_size, **config},
        "labels": bench.labels,
        "targets": bench.targets.tolist(),
        "extra": {k: v for k, v in bench.extra.items() if k != "box"},
        "methods": results,
        "machine": machine_info(),
    }
    for method in methods:
        print(f"  {method.name} ...", end=" ", flush=True)
        try:
            r = run_method(bench, method, steps, batch_size)
        except Exception as exc:  # noqa: BLE001 - a failing method is reported, not fatal
            print(f"FAILED: {type(exc).__name__}: {exc}")
            results.append({"name": method.name, "family": method.family, "error": f"{type(exc).__name__}: {exc}"})
        else:
            mean, sem = fl.mean_sem(r.abpc)
            print(
                f"ABPC {mean:.3f} +- {sem:.3f}  ({r.throughput:.2f} inputs/s, {r.cpu_s_per_input:.3f} CPU s/input, "
                f"{r.peak_mib:.0f} MiB, attribution {r.attribution_s:.0f} s, flipping {r.flipping_s:.0f} s)",
                flush=True,
            )
            results.append(r.__dict__)
        run["machine"] = machine_info()
        if save is not None:
            save(run)
    return run


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_at_end": [round(v, 2) for v in load],
        "git": _git_head(),
        "versions": _versions(),
    }


def _git_head() -> str:
    """The commit of the working tree (``+dirty`` with uncommitted changes under lrp_fx/), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "lrp_fx"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("captum", "zennit", "transformers"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:
            out[mod] = "absent"
    return out


# -- reporting -------------------------------------------------------------------------------------------------------
def _ok(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in run["methods"] if not m.get("error")]


def _fmt(values: list[float], digits: int = 3) -> str:
    mean, sem = fl.mean_sem(values)
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


def table(run: dict[str, Any]) -> str:
    """The markdown table of one run, best ABPC first."""
    rows = sorted(_ok(run), key=lambda m: -fl.mean_sem(m["abpc"])[0])
    head = (
        "| method | ABPC (prob) ↑ | AUC MoRF ↓ | AUC LeRF ↑ | comprehensiveness ↑ | sufficiency ↓ | ABPC (logit) ↑ "
        "| inputs/s | CPU s / input | peak MiB | first call s |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for m in rows:
        name = f"**{m['name']}**" if m is rows[0] else m["name"]
        lines.append(
            f"| {name} | {_fmt(m['abpc'])} | {_fmt(m['auc_morf'])} | {_fmt(m['auc_lerf'])} "
            f"| {_fmt(m['comprehensiveness'])} | {_fmt(m['sufficiency'])} | {_fmt(m['abpc_logit'], 2)} "
            f"| {m['throughput']:.2f} | {m.get('cpu_s_per_input', float('nan')):.3f} | {m['peak_mib']:.0f} "
            f"| {m['first_call_s']:.1f} |"
        )
    for m in run["methods"]:
        if m.get("error"):
            lines.append(f"| {m['name']} | failed: {m['error'][:120]} | | | | | | | | | |")
    return "\n".join(lines)


def comparisons(run: dict[str, Any]) -> str:
    """Paired differences (per input) between the best lrp_fx method and every other family's best/each method."""
    ok = _ok(run)
    lrp = [m for m in ok if m["family"] == "lrp_fx"]
    if not lrp:
        return ""
    best, how = chosen_method(run, lrp)
    lines = [
        f"Paired over inputs, the lrp_fx method {how} (**{best['name']}**) minus each other method, ABPC (prob); "
        "a difference is resolved when it exceeds about twice its standard error:",
        "",
        "| other method | Δ ABPC (mean ± s.e.) | Δ / s.e. | lrp_fx better on |",
        "|---|---|---|---|",
    ]
    for m in sorted(ok, key=lambda m: -fl.mean_sem(m["abpc"])[0]):
        if m is best or m["family"] == "lrp_fx":
            continue
        diff = [a - b for a, b in zip(best["abpc"], m["abpc"])]
        mean, sem = fl.mean_sem(diff)
        wins = sum(d > 0 for d in diff)
        if sem == 0 and mean == 0:
            lines.append(f"| {m['name']} | 0 (the same ABPC on every input) | | |")
            continue
        z = mean / sem if sem > 0 else float("inf")
        lines.append(f"| {m['name']} | {mean:+.3f} ± {sem:.3f} | {z:+.1f} | {wins}/{len(diff)} inputs |")
    return "\n".join(lines)


def _variant(name: str) -> str:
    """The method without its library prefix: lrp_fx and Zennit rows of one preset share a colour."""
    return name.split(" ", 1)[1] if name.startswith(("lrp_fx ", "zennit ")) else name


def plot(run: dict[str, Any], path: Path) -> None:
    """MoRF and LeRF mean curves (probability of the explained class) and the ABPC bars: one colour per rule set or
    gradient method, line style by library (lrp_fx solid, Zennit dashed, Captum dotted, random dash-dot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ok = sorted(_ok(run), key=lambda m: -fl.mean_sem(m["abpc"])[0])
    styles = {"lrp_fx": "-", "zennit": "--", "captum": ":", "random": "-."}
    variants = list(dict.fromkeys(_variant(m["name"]) for m in ok))
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # no grey: random is grey
    palette += [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i not in (15,)]
    colors = {v: ("0.45" if v == "random" else palette[k % len(palette)]) for k, v in enumerate(variants)}
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4), gridspec_kw={"width_ratios": [1, 1, 1.15]})
    for k, m in enumerate(ok):
        steps = len(m["morf"][0]) - 1
        xs = [s / steps for s in range(steps + 1)]
        color = colors[_variant(m["name"])]
        width = 2.4 if k == 0 else 1.3
        for ax, key in ((axes[0], "morf"), (axes[1], "lerf")):
            ax.plot(xs, m[key][0], styles[m["family"]], color=color, lw=width)
        mean, sem = fl.mean_sem(m["abpc"])
        axes[2].barh(k, mean, xerr=sem, color=color, hatch=None if m["family"] == "lrp_fx" else "//", ecolor="0.2")
    axes[0].set_title("MoRF (most relevant removed first) ↓")
    axes[1].set_title("LeRF (least relevant removed first) ↑")
    for ax in axes[:2]:
        ax.set_xlabel("fraction of features removed")
        ax.set_ylabel("probability of the explained class")
        ax.grid(alpha=0.3)
    families = [f for f in styles if any(m["family"] == f for m in ok)]
    handles = [Line2D([], [], color="0.2", ls=styles[f], label=f) for f in families]
    axes[0].legend(handles=handles, fontsize=8, loc="upper right")
    axes[2].set_yticks(range(len(ok)), [m["name"] for m in ok], fontsize=7)
    for label, m in zip(axes[2].get_yticklabels(), ok):
        label.set_color(colors[_variant(m["name"])] if m["family"] != "random" else "0.3")
    axes[2].invert_yaxis()
    axes[2].set_xlabel("ABPC, mean ± s.e. (hatched: not lrp_fx)")
    axes[2].grid(axis="x", alpha=0.3)
    cfg = run["config"]
    title = f"{run['model']}: n = {cfg['n']}, {cfg['steps']} steps, baseline {cfg['baseline']}"
    if cfg.get("offset") or cfg.get("split"):
        title += f" (inputs from {cfg.get('offset', 0)}{', ' + cfg['split'] + ' split' if cfg.get('split') else ''})"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_key(run: dict[str, Any]) -> str:
    cfg = run["config"]
    return _key(run["model"], cfg["baseline"], cfg.get("offset", 0), cfg.get("split", "test"), cfg.get("tag"))


def _key(model: str, baseline: str, offset: int, split: str, tag: str | None) -> str:
    """``<model>_<baseline>[_offset<o>][_<split>][_<tag>]``: the name of a run's JSON file and plot."""
    key = f"{model}_{baseline}" + (f"_offset{offset}" if offset else "")
    return key + (f"_{split}" if split != "test" else "") + (f"_{tag}" if tag else "")


def is_held_out(run: dict[str, Any]) -> bool:
    """Held-out runs choose rule variants; the others are reported. Runs without the flag: held out if offset."""
    cfg = run["config"]
    return bool(cfg.get("held_out", cfg.get("offset") or cfg.get("split")))


def _token_range(cfg: dict[str, Any]) -> str:
    """The sentence lengths of a text run, with [CLS] and [SEP]: ``"41-128 tokens"``."""
    return f"{cfg.get('min_tokens', 0) + 1}-{cfg['max_tokens']} tokens"


def describe(run: dict[str, Any]) -> str:
    cfg, extra, mach = run["config"], run["extra"], run["machine"]
    parts = [f"n = {cfg['n']} inputs, {cfg['steps']} steps, baseline `{cfg['baseline']}`"]
    if cfg.get("split"):
        parts.append(f"VADER {cfg['split']} split")
    if cfg.get("offset"):
        parts.append(f"inputs {cfg['offset']} to {cfg['offset'] + cfg['n'] - 1}")
    if "patch" in cfg:
        parts.append(f"{cfg['patch']}-px patches ({cfg['features']} features)")
    else:
        parts.append(
            f"sentences of {_token_range(cfg)} (mean {cfg['mean_features']:.1f} features per sentence, padded to "
            f"{cfg['padded_length']})"
        )
    parts.append(f"attribution batch {cfg['batch']}")
    if "ig_steps" in cfg:
        parts.append(f"integrated gradients {cfg['ig_steps']} steps, SmoothGrad {cfg['sg_samples']} samples")
    if "correct" in extra:
        parts.append(f"model correct on {extra['correct']}/{cfg['n']}")
    parts.append(f"{mach['date']}, {mach['threads']} threads, load average at the end {mach['load_avg_at_end'][0]}")
    return "; ".join(parts) + "."


def chosen_method(run: dict[str, Any], lrp: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The lrp_fx method to compare (``CHOSEN``, picked on held-out inputs) and how it was picked."""
    key = (run["model"], run["config"]["baseline"])
    name = CHOSEN.get(run_key(run), CHOSEN.get((*key, run["config"].get("offset", 0)), CHOSEN.get(key)))
    for m in lrp:
        if m["name"] == name:
            return m, "chosen on held-out inputs"
    return max(lrp, key=lambda m: fl.mean_sem(m["abpc"])[0]), "best on these inputs"


PER_INPUT = ("abpc", "abpc_logit", "auc_morf", "auc_lerf", "comprehensiveness", "sufficiency")


def pooled_groups(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The reported runs of one model and baseline on disjoint inputs, per model and baseline with several (e.g. the
    first 38 photos and the 36 added later), ordered by offset. Overlapping runs are skipped (the larger one is
    kept); runs with different perturbation settings (steps, patch, tokens) are never grouped."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        if is_held_out(run):
            continue
        cfg = run["config"]
        same = (run["model"], cfg["baseline"], cfg.get("split", "test"), cfg["steps"], cfg.get("patch"))
        groups.setdefault(same + (cfg.get("min_tokens"), cfg.get("max_tokens")), []).append(run)
    out = []
    for group in groups.values():
        chosen: list[dict[str, Any]] = []
        for run in sorted(group, key=lambda r: -r["config"]["n"]):
            lo = run["config"].get("offset", 0)
            hi = lo + run["config"]["n"]
            if all(
                hi <= c["config"].get("offset", 0) or lo >= c["config"].get("offset", 0) + c["config"]["n"]
                for c in chosen
            ):
                chosen.append(run)
        if len(chosen) >= 2:
            out.append(sorted(chosen, key=lambda r: r["config"].get("offset", 0)))
    return out


def _common_methods(group: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Per method that ran on every run of ``group`` (in the first run's order): its result in each run."""
    by_name = [{m["name"]: m for m in _ok(r)} for r in group]
    return [[b[n] for b in by_name] for n in by_name[0] if all(n in b for b in by_name[1:])]


def pool(group: list[dict[str, Any]]) -> dict[str, Any]:
    """One pooled run of a group of :func:`pooled_groups`: the per-input values of the methods that ran on all of its
    runs, concatenated, so the paired comparisons use every reported input."""
    methods = [
        {"name": ms[0]["name"], "family": ms[0]["family"], **{k: [v for m in ms for v in m[k]] for k in PER_INPUT}}
        for ms in _common_methods(group)
    ]
    config = {**group[0]["config"], "n": sum(r["config"]["n"] for r in group)}
    config["pooled"] = [[r["config"].get("offset", 0), r["config"]["n"]] for r in group]
    return {"model": group[0]["model"], "config": config, "methods": methods}


def pool_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`pool` of every group of :func:`pooled_groups` of ``runs``."""
    return [pool(group) for group in pooled_groups(runs)]


def cross_fitted(group: list[dict[str, Any]]) -> str:
    """A cross-fitted comparison over a group of disjoint reported runs: for each run, the lrp_fx method (of those
    that ran on every run) with the highest mean ABPC on the *other* runs' inputs, so no input's method was chosen on
    that input; their per-input ABPC concatenated and paired with every other method. Empty if the group has no
    lrp_fx method in common."""
    common = _common_methods(group)
    lrp = [ms for ms in common if ms[0]["family"] == "lrp_fx"]
    if not lrp:
        return ""
    picks, values = [], []
    for i in range(len(group)):
        others = [[v for j, m in enumerate(ms) if j != i for v in m["abpc"]] for ms in lrp]
        best = lrp[max(range(len(lrp)), key=lambda k: fl.mean_sem(others[k])[0])]
        picks.append(best[i]["name"])
        values += best[i]["abpc"]
    mean, sem = fl.mean_sem(values)
    ranges = ", ".join(f"{_inputs(r)[2:]}: {_variant(p)}" for r, p in zip(group, picks))
    lines = [
        f"Cross-fitted: each run's lrp_fx method chosen on the other runs' inputs ({ranges}); ABPC {mean:.3f} ± "
        f"{sem:.3f} over n = {len(values)}, minus each other method (paired):",
        "",
        "| other method | Δ ABPC (mean ± s.e.) | Δ / s.e. | lrp_fx better on |",
        "|---|---|---|---|",
    ]
    for ms in common:
        if ms[0]["family"] == "lrp_fx":
            continue
        diff = [a - b for a, b in zip(values, [v for m in ms for v in m["abpc"]])]
        d, dse = fl.mean_sem(diff)
        z = f"{d / dse:+.1f}" if dse > 0 else "—"
        lines.append(f"| {ms[0]['name']} | {d:+.3f} ± {dse:.3f} | {z} | {sum(x > 0 for x in diff)}/{len(diff)} |")
    return "\n".join(lines)


def _inputs(run: dict[str, Any]) -> str:
    cfg = run["config"]
    # photos in the order of _data.photo_paths(); Fashion-MNIST test images, VADER sentences (of the split) in order
    kind = "photos" if run["model"] == "efficientnet_lite0" else "inputs"
    if cfg.get("split", "test") != "test":
        kind = f"{cfg['split']} {kind}"
    # text runs of longer sentences count them from 0 among those of their token range
    tokens = f" of {_token_range(cfg)}" if cfg.get("min_tokens") else ""
    if "pooled" in cfg:
        return f", {kind} " + " + ".join(f"{o}-{o + n - 1}" for o, n in cfg["pooled"]) + tokens + " (pooled)"
    offset = cfg.get("offset", 0)
    return f", {kind} {offset}-{offset + cfg['n'] - 1}{tokens}"


def _paired(best: dict[str, Any], other: dict[str, Any]) -> tuple[float, float]:
    """Mean and standard error of the per-input ABPC differences ``best - other``."""
    return fl.mean_sem([a - b for a, b in zip(best["abpc"], other["abpc"])])


def summary(runs: list[dict[str, Any]]) -> str:
    """One row per run: the best lrp_fx method, and per competitor its ABPC with the paired difference to it."""
    groups = {
        "Zennit (same rules)": lambda m: m["family"] == "zennit",
        "integrated gradients (best)": lambda m: m["name"].startswith("integrated gradients"),
        "SmoothGrad": lambda m: m["name"] == "smoothgrad",
        "saliency": lambda m: m["name"] == "saliency",
        "gradient x input": lambda m: m["name"] == "gradient x input",
        "random": lambda m: m["family"] == "random",
    }
    lines = [
        "| model, baseline | n | lrp_fx method (how chosen): ABPC | " + " | ".join(groups) + " |",
        "|---|---|---|" + "---|" * len(groups),
    ]
    for run in runs:
        ok = _ok(run)
        lrp = [m for m in ok if m["family"] == "lrp_fx"]
        if not lrp:
            continue
        best, how = chosen_method(run, lrp)
        cells = []
        for pick in groups.values():
            candidates = [m for m in ok if pick(m)]
            if not candidates:
                cells.append("—")
                continue
            same = [m for m in candidates if m["family"] == "zennit" and _variant(m["name"]) == _variant(best["name"])]
            other = same[0] if same else max(candidates, key=lambda m: fl.mean_sem(m["abpc"])[0])
            mean, sem = fl.mean_sem(other["abpc"])
            d, dse = _paired(best, other)
            z = "same" if d == 0 and dse == 0 else f"Δ {d:+.3f}, {d / dse:+.1f} s.e." if dse > 0 else f"Δ {d:+.3f}"
            note = "" if same or other["family"] != "zennit" else f"best Zennit, {_variant(other['name'])}: "
            cells.append(f"{note}{mean:.3f} ± {sem:.3f} ({z})")
        bm, bs = fl.mean_sem(best["abpc"])
        name = f"{run['model']}, `{run['config']['baseline']}`"
        label = f"{_variant(best['name'])} ({how}): {bm:.3f} ± {bs:.3f}"
        lines.append(f"| {name}{_inputs(run)} | {run['config']['n']} | {label} | ")
        lines[-1] += " | ".join(cells) + " |"
    return "\n".join(lines)


def render_doc(runs: list[dict[str, Any]]) -> str:
    """docs/faithfulness.md from the saved runs (keeps the hand-written analysis between the markers)."""
    analysis = f"{ANALYSIS_BEGIN}\n(analysis to be written)\n{ANALYSIS_END}"
    if DOC.exists():
        text = DOC.read_text()
        if ANALYSIS_BEGIN in text and ANALYSIS_END in text:
            analysis = text[text.index(ANALYSIS_BEGIN) : text.index(ANALYSIS_END) + len(ANALYSIS_END)]
    order = {m: i for i, m in enumerate(MODELS)}
    position = lambda r: (order.get(r["model"], 9), r["config"]["baseline"])  # noqa: E731
    runs = sorted(runs, key=lambda r: (*position(r), r["config"].get("offset", 0)))
    main = [r for r in runs if not is_held_out(r)]
    groups = pooled_groups(main)
    pooled = [pool(group) for group in groups]
    held_out = [r for r in runs if is_held_out(r)]
    out = [
        "# Faithfulness on real trained models",
        "",
        "Generated by `benchmarks/faithfulness.py` (tables, plots); the analysis section is written by hand. "
        "Reproduce with `python benchmarks/faithfulness.py --fetch` then `python benchmarks/faithfulness.py "
        "--model all` (see the analysis for the exact commands of this run).",
        "",
        analysis,
        "",
        "## Summary",
        "",
        "ABPC (probability of the explained class), mean ± standard error over inputs; in parentheses the paired "
        "difference lrp_fx method minus that method, and the difference in units of its standard error "
        "(positive: lrp_fx higher; beyond about ±2 the difference is resolved). The lrp_fx method is the one chosen "
        "on held-out inputs (`CHOSEN`), Zennit the same rules where run (else Zennit's best row), the other columns "
        "the best row of that kind.",
        "",
        summary(sorted(main + pooled, key=lambda r: (*position(r), "pooled" in r["config"]))),
        "",
        METHOD_TEXT,
    ]
    for run in main:
        key = run_key(run)
        out += [
            f"## {run['model']}, baseline `{run['config']['baseline']}`{_inputs(run)}",
            "",
            describe(run),
            "",
            table(run),
            "",
            comparisons(run),
            "",
            f"![{key}](images/faithfulness_{key}.png)",
            "",
        ]
    for run, group in zip(pooled, groups):
        out += [
            f"## {run['model']}, baseline `{run['config']['baseline']}`{_inputs(run)}",
            "",
            f"The reported runs above on disjoint inputs of this model and baseline, pooled: n = {run['config']['n']}, "
            "the methods that ran on all of them.",
            "",
            comparisons(run),
            "",
            cross_fitted(group),
            "",
        ]
    if held_out:
        out += [
            "## Held-out inputs for choosing rule variants",
            "",
            "Runs on inputs that the tables above do not use (`--offset`), to choose rule parameters without tuning "
            "on the reported inputs.",
            "",
        ]
        for run in held_out:
            head = f"### {run['model']}, baseline `{run['config']['baseline']}`{_inputs(run)}"
            if run["config"].get("split"):
                head += f", {run['config']['split']} split"
            out += [head, "", describe(run), "", table(run)]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


METHOD_TEXT = """## How it is measured

* **Features and removal.** Images: `p x p` patches (EfficientNet-Lite0: 16 px, 196 patches; Fashion-MNIST: 2 px,
  196 patches), a patch's score is the sum of its pixels' relevance over the channels; removing it copies the
  baseline's pixels into it. Baselines: `blur` (the image convolved with a Gaussian, kernel 51, sigma 20, reflect
  padding; as in the DynamicLRP paper), `zero` (black for Fashion-MNIST), `mean` (per-channel image mean), `noise`
  (uniform). Text: every token except `[CLS]`, `[SEP]` and padding; removing it replaces its id by `[UNK]` (`unk`),
  `[MASK]` (`mask`) or drops it from the attention mask (`delete`), so the attention mask always matches the tokens.
* **Curves.** After removing `round(k F / steps)` features, `k = 0..steps`, in the order of the attribution (MoRF:
  highest score first; LeRF: lowest first; ties broken by a seeded random permutation, the same for every method),
  the softmax probability of the explained class (the class the model predicts for the unperturbed input) is read.
* **AUC** is the trapezoidal area over the fraction removed in `[0, 1]`: the mean of the `steps + 1` values with both
  end points weighted 1/2. **ABPC = AUC(LeRF) − AUC(MoRF)**, in units of probability; about 0 for a random order.
  The logit column is the same on the explained logit.
* **Comprehensiveness / sufficiency** (ERASER): mean over `q` in 1, 5, 10, 20, 50 % of `p(x) − p(x without its top
  q)` and `p(x) − p(x with only its top q)`, `max(1, round(q F))` features each.
* **Mean ± standard error** over inputs (`std / sqrt(n)`). The paired table below each result subtracts per input.
* **Throughput**: inputs/s of wall time for the attribution alone, and process CPU seconds per input (steadier on a
  shared machine: it does not count the time other processes held the cores), batched, after a warm-up batch
  (lrp_fx's first call captures and builds the program: "first call s"); Captum's integrated gradients
  (Gauss-Legendre, the flipping baseline as its baseline) and SmoothGrad (noise sigma 15 % of the input range,
  absolute gradients averaged) cost one forward/backward pass per step or sample (counts in each run's description).
  **Peak MiB**: the peak resident set size during a method's attribution calls above the RSS before them (Linux
  `VmHWM` after a reset through `/proc/self/clear_refs`, glibc's mmap threshold fixed so freed memory is returned;
  `_measure.py`).
* **Zennit** gets the equivalent composites (`_zennit.py`) and the canonizers that make its module hooks see what
  lrp_fx's graph rules see: every batch norm merged exactly into its convolution (EfficientNet-Lite: by name, its
  blocks are not `nn.Sequential`; Fashion VGG: `SequentialMergeBatchNorm`), and EfficientNet-Lite's residual
  `x + inputs` routed through a `zennit.layer.Sum` module (Norm rule) instead of the plain gradient. Zennit has no
  transformer rules, so the text model has no Zennit rows.
"""


# -- main ------------------------------------------------------------------------------------------------------------
def _reexec_with_malloc_env() -> None:
    """Re-run this script with glibc's mmap threshold fixed (``_measure.MALLOC_ENV``) unless already set."""
    if all(os.environ.get(k) == v for k, v in _measure.MALLOC_ENV.items()):
        return
    env = {**os.environ, **_measure.MALLOC_ENV}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def merge_runs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the methods of ``new`` added (replacing those of the same name); the configurations and the
    explained classes must match."""
    if {"offset": 0, **old["config"]} != {"offset": 0, **new["config"]} or old["targets"] != new["targets"]:
        raise ValueError(f"cannot merge runs with different configurations: {old['config']} vs {new['config']}")
    names = {m["name"] for m in new["methods"]}
    merged = dict(old)
    merged["methods"] = [m for m in old["methods"] if m["name"] not in names] + new["methods"]
    merged["machine"] = new["machine"]
    merged["wall_s"] = old.get("wall_s", 0.0) + new.get("wall_s", 0.0)
    return merged


def load_runs() -> list[dict[str, Any]]:
    """The saved runs, one per model and baseline: ``faithfulness_<key>.json`` merged with its parts
    ``faithfulness_<key>@<part>.json`` (methods run by other processes, ``--part``)."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(RESULTS.glob("faithfulness_*.json")):
        groups.setdefault(p.stem.split("@")[0], []).append(p)
    runs = []
    for paths in groups.values():
        paths.sort(key=lambda p: "@" in p.stem)  # the main file first
        run = json.loads(paths[0].read_text())
        for p in paths[1:]:
            run = merge_runs(run, json.loads(p.read_text()))
        runs.append(run)
    return runs


def write_outputs(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        plot(run, IMAGES / f"faithfulness_{run_key(run)}.png")
    DOC.write_text(render_doc(runs))
    print(f"wrote {DOC.relative_to(ROOT)} and {len(runs)} plots")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--n", type=int, help="inputs per model (default: all 74 photos, 100 Fashion-MNIST, 100 sentences)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--baseline", nargs="+", help="blur, mean, zero, noise (images); unk, mask, delete (text)")
    ap.add_argument("--patch", type=int, help="patch size in px (default 16 EfficientNet, 2 Fashion-MNIST)")
    ap.add_argument("--batch", type=int, help="attribution batch size")
    ap.add_argument("--max-tokens", type=int, default=40, help="longest sentence, with [CLS] and [SEP]")
    ap.add_argument("--min-tokens", type=int, default=0, help="only sentences longer than this (with [CLS], [SEP])")
    ap.add_argument(
        "--offset", type=int, default=0, help="skip this many inputs (a held-out set for choosing rule variants)"
    )
    ap.add_argument("--split", default="test", choices=["test", "val"], help="VADER split (minilm_sentiment)")
    ap.add_argument("--held-out", action="store_true", help="mark the run as held out (for choosing rule variants)")
    ap.add_argument(
        "--reported", action="store_true", help="mark the run as reported (e.g. validation sentences never used)"
    )
    ap.add_argument("--tag", help="suffix of the run's name (a second run of the same model and baseline)")
    ap.add_argument("--ig-steps", type=int, help="integrated-gradients steps (default 32 EfficientNet, else 50)")
    ap.add_argument("--sg-samples", type=int, help="SmoothGrad samples (default 16 EfficientNet, else 25)")
    ap.add_argument("--methods", nargs="+", help="only methods whose name matches one of these regular expressions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 inputs, 5 steps, 8 IG steps, 4 SmoothGrad samples; no doc")
    ap.add_argument("--no-doc", action="store_true", help="print and save JSON, but do not rewrite the doc")
    ap.add_argument(
        "--merge", action="store_true", help="add these methods to the saved run of the same model and configuration"
    )
    ap.add_argument("--part", help="save as a part of the run (<key>@<part>.json), merged with it when rendering")
    ap.add_argument("--render", action="store_true", help="only re-render the doc and plots from saved results")
    ap.add_argument("--fetch", action="store_true", help="fetch photos, Fashion-MNIST and VADER into the cache")
    args = ap.parse_args(argv)
    if args.fetch:
        _data.fetch_all()
        return
    if args.render:
        write_outputs(load_runs())
        return
    _reexec_with_malloc_env()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.steps, args.ig_steps, args.sg_samples = args.n or 4, 5, 8, 4
    models = MODELS if args.model == "all" else (args.model,)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in models:
        d = DEFAULTS[name]
        for baseline in args.baseline or d["baselines"]:
            start = time.perf_counter()
            bench = load_bench(
                name,
                args.n or d["n"],
                args.patch or d["patch"],
                baseline,
                args.max_tokens,
                args.offset,
                args.split,
                args.min_tokens,
            )
            if args.reported:
                bench.config["held_out"] = False
            elif args.held_out or args.split != "test":
                bench.config["held_out"] = True
            elif args.offset:
                bench.config["held_out"] = False
            if args.tag:
                bench.config["tag"] = args.tag
            batch = min(args.batch or d["batch"], len(bench.targets))
            ig_steps, sg_samples = args.ig_steps or d["ig_steps"], args.sg_samples or d["sg_samples"]
            methods = make_methods(bench, ig_steps, sg_samples, args.quick)
            if args.methods:
                methods = [m for m in methods if any(re.search(pattern, m.name) for pattern in args.methods)]
            print(f"{name}, baseline {baseline}: {len(bench.targets)} inputs, {len(methods)} methods")
            key = _key(name, baseline, args.offset, args.split, args.tag)
            path = RESULTS / (f"faithfulness_{key}@{args.part}.json" if args.part else f"faithfulness_{key}.json")
            previous = json.loads(path.read_text()) if args.merge and path.exists() else None

            def save(
                run: dict[str, Any], path: Path = path, previous: dict | None = previous, t0: float = start
            ) -> None:
                run["wall_s"] = time.perf_counter() - t0
                path.write_text(json.dumps(merge_runs(previous, run) if previous else run, indent=1))

            config = {"ig_steps": ig_steps, "sg_samples": sg_samples}
            run = run_bench(bench, methods, args.steps, batch, config, None if args.quick else save)
            print(table(run))
            print(comparisons(run))
            print(f"{name}/{baseline} took {time.perf_counter() - start:.0f} s")
    if not args.quick and not args.no_doc:
        write_outputs(load_runs())


if __name__ == "__main__":
    main()
