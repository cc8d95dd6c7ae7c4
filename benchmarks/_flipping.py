"""Perturbation-based faithfulness metrics (pixel / region / token flipping), free of any attribution library.

An input is split into ``F`` *features* (pixels, ``p x p`` patches, tokens). An attribution gives each feature a score
(the sum of its elements' relevance); features are removed, i.e. replaced by a baseline (a blurred copy, a mean value,
``[UNK]``), in the order of their scores, and after each step the model's probability of the explained class is read:

* **MoRF** (most relevant first): remove the highest-scoring features first; a faithful attribution makes the
  probability drop fast, so the area under the curve is small;
* **LeRF** (least relevant first): remove the lowest-scoring features first; the probability should stay high;
* **ABPC** (area between perturbation curves, Blücher et al.): ``AUC(LeRF) - AUC(MoRF)``; higher is better, 0 for a
  random ordering in expectation, negative for an ordering worse than random.

The curves are sampled at ``steps + 1`` points: after removing ``round(k * F / steps)`` features, ``k = 0..steps``
(step 0 is the unperturbed input, the last step the fully removed one, the same for MoRF and LeRF). The x axis is the
fraction of features removed, ``k / steps`` in ``[0, 1]``, and the AUC is the trapezoidal area over it, i.e. the mean of
the ``steps + 1`` values with the two end points weighted one half. ABPC is thus in units of probability.

**Comprehensiveness** and **sufficiency** (DeYoung et al., ERASER) at retained-fraction bins ``q`` (default 1, 5, 10,
20, 50 %; ``k_q = max(1, round(q * F))`` features): comprehensiveness is the mean over bins of
``p(x) - p(x without its top-k_q features)`` (higher is better), sufficiency the mean of
``p(x) - p(x with only its top-k_q features kept)`` (lower is better).

Ties between scores are broken by a random permutation drawn from the given generator (never by position, which would
favour features near the top-left corner of an image when an attribution is zero on the background).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ERASER_FRACTIONS",
    "CurveResult",
    "FlipTask",
    "abpc",
    "auc",
    "blur_baseline",
    "comprehensiveness_sufficiency",
    "evaluate",
    "expand_patches",
    "gaussian_kernel",
    "mean_baseline",
    "mean_sem",
    "patch_scores",
    "perturbation_curve",
    "ranking",
    "removal_masks",
    "step_counts",
]

#: Fractions of the features kept (sufficiency) or removed (comprehensiveness), as in ERASER.
ERASER_FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)


# -- orderings and curves --------------------------------------------------------------------------------------------
def step_counts(n_features: int, steps: int) -> list[int]:
    """How many features are removed at each of the ``steps + 1`` curve points: ``round(k * F / steps)``."""
    if n_features < 1 or steps < 1:
        raise ValueError(f"need at least one feature and one step, got {n_features} features, {steps} steps")
    return [round(k * n_features / steps) for k in range(steps + 1)]


def ranking(scores: Tensor, most_relevant_first: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Feature indices in removal order (``scores``: ``[F]``). Ties are broken by a random permutation."""
    scores = scores.detach().flatten().double().cpu()
    perm = torch.randperm(scores.numel(), generator=generator)
    key = -scores[perm] if most_relevant_first else scores[perm]
    order = torch.sort(key, stable=True).indices
    return perm[order]


def removal_masks(order: Tensor, counts: Sequence[int]) -> Tensor:
    """``[len(counts), F]`` booleans, row ``i`` True for the first ``counts[i]`` features of ``order`` (removed)."""
    n = order.numel()
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    return rank.unsqueeze(0) < torch.as_tensor(list(counts), dtype=torch.long).unsqueeze(1)


def auc(curve: Tensor) -> Tensor:
    """Trapezoidal area under curves sampled at equal steps over ``[0, 1]`` (last dimension: the ``steps + 1``
    points)."""
    steps = curve.shape[-1] - 1
    if steps < 1:
        raise ValueError("a curve needs at least two points")
    inner = curve[..., 1:-1].sum(-1)
    return (inner + 0.5 * (curve[..., 0] + curve[..., -1])) / steps


def abpc(lerf: Tensor, morf: Tensor) -> Tensor:
    """Area between perturbation curves, ``AUC(LeRF) - AUC(MoRF)`` (higher is better)."""
    return auc(lerf) - auc(morf)


@dataclass
class FlipTask:
    """One input to perturb.

    ``n_features``: how many features it has. ``perturb(mask)``: the model input for a ``[S, F]`` boolean mask
    (True = removed, replaced by the baseline), a batch of ``S`` perturbed copies. ``score(batch)``: ``[S, M]``
    measures of the explained class for such a batch (e.g. column 0 its probability, column 1 its logit).

    Measures are memoised per removal mask (``cache``), so a task shared by several methods evaluates each distinct
    perturbed input once: the unperturbed and the fully removed input, and every curve point where two orderings
    remove the same set of features (e.g. two libraries computing the same attribution). ``evaluated`` counts the
    model evaluations, ``requested`` the measures asked for.
    """

    n_features: int
    perturb: Callable[[Tensor], object]
    score: Callable[[object], Tensor]
    cache: dict[bytes, Tensor] = field(default_factory=dict)
    evaluated: int = 0
    requested: int = 0


def _scores_of_masks(task: FlipTask, masks: Tensor, batch_size: int) -> Tensor:
    keys = [bytes(row.numpy().tobytes()) for row in masks.cpu()]
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        if k not in task.cache and k not in first:
            first[k] = i
    missing = list(first.values())
    for start in range(0, len(missing), batch_size):
        rows = missing[start : start + batch_size]
        out = task.score(task.perturb(masks[rows])).detach().double().cpu()
        out = out.unsqueeze(-1) if out.dim() == 1 else out
        for r, value in zip(rows, out):
            task.cache[keys[r]] = value
    task.evaluated += len(missing)
    task.requested += len(keys)
    return torch.stack([task.cache[k] for k in keys])


def perturbation_curve(task: FlipTask, order: Tensor, steps: int, batch_size: int = 32) -> Tensor:
    """``[steps + 1, M]`` measures after removing the first ``round(k * F / steps)`` features of ``order``."""
    masks = removal_masks(order, step_counts(task.n_features, steps))
    return _scores_of_masks(task, masks, batch_size)


def comprehensiveness_sufficiency(
    task: FlipTask, order: Tensor, base: Tensor, fractions: Sequence[float] = ERASER_FRACTIONS, batch_size: int = 32
) -> tuple[Tensor, Tensor]:
    """ERASER comprehensiveness and sufficiency (``[M]`` each) for the MoRF ``order``; ``base``: ``[M]`` measures of
    the unperturbed input."""
    n = task.n_features
    ks = [min(n, max(1, round(q * n))) for q in fractions]
    removed = removal_masks(order, ks)  # the top-k removed
    kept = ~removed  # only the top-k kept: everything else removed
    measures = _scores_of_masks(task, torch.cat([removed, kept]), batch_size)
    comp = (base - measures[: len(ks)]).mean(0)
    suff = (base - measures[len(ks) :]).mean(0)
    return comp, suff


@dataclass
class CurveResult:
    """Curves and metrics of one (input, method): ``morf``/``lerf`` are ``[steps + 1, M]``; the rest ``[M]``."""

    morf: Tensor
    lerf: Tensor
    abpc: Tensor
    comprehensiveness: Tensor
    sufficiency: Tensor


def evaluate(
    task: FlipTask,
    scores: Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    fractions: Sequence[float] = ERASER_FRACTIONS,
    batch_size: int = 32,
) -> CurveResult:
    """All metrics of one attribution (``scores``: ``[F]`` feature scores) on one input."""
    if scores.numel() != task.n_features:
        raise ValueError(f"{scores.numel()} scores for {task.n_features} features")
    morf_order = ranking(scores, True, generator)
    lerf_order = ranking(scores, False, generator)
    morf = perturbation_curve(task, morf_order, steps, batch_size)
    lerf = perturbation_curve(task, lerf_order, steps, batch_size)
    comp, suff = comprehensiveness_sufficiency(task, morf_order, morf[0], fractions, batch_size)
    return CurveResult(morf, lerf, abpc(lerf.T, morf.T), comp, suff)


def mean_sem(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n); 0 for a single value)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        return float("nan"), float("nan")
    sem = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else 0.0
    return float(v.mean()), sem


# -- images: patches and baselines -----------------------------------------------------------------------------------
def patch_scores(attribution: Tensor, patch: int) -> Tensor:
    """Feature scores of a ``[C, H, W]`` attribution: the sum over channels and over each ``patch x patch`` cell,
    row-major, ``[(H // patch) * (W // patch)]`` (``H`` and ``W`` must be multiples of ``patch``)."""
    c, h, w = attribution.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    summed = attribution.detach().double().sum(0).reshape(h // patch, patch, w // patch, patch)
    return summed.sum((1, 3)).flatten()


def expand_patches(masks: Tensor, height: int, width: int, patch: int) -> Tensor:
    """``[S, F]`` patch masks -> ``[S, 1, H, W]`` pixel masks (each patch's value on its ``patch x patch`` cell)."""
    s = masks.shape[0]
    grid = masks.reshape(s, 1, height // patch, width // patch)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """A normalised 1-D Gaussian kernel of odd length ``size``."""
    if size % 2 != 1:
        raise ValueError(f"the kernel size must be odd, got {size}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur_baseline(x: Tensor, size: int = 51, sigma: float = 20.0) -> Tensor:
    """Gaussian-blurred copy of ``[N, C, H, W]`` images (separable kernel, reflect padding; the padding falls back to
    replicate where the image is smaller than the kernel's half width). Default: kernel 51, sigma 20 (the DynamicLRP
    paper's baseline)."""
    k = gaussian_kernel(size, sigma).to(x.dtype)
    c = x.shape[1]
    pad = size // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    y = F.pad(x, (pad, pad, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    y = F.pad(y, (0, 0, pad, pad), mode=mode)
    return F.conv2d(y, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def mean_baseline(x: Tensor) -> Tensor:
    """Each image's per-channel mean value, broadcast to its shape."""
    return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
