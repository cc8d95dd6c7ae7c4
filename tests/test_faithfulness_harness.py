"""The perturbation harness of ``benchmarks/faithfulness.py`` (``benchmarks/_flipping.py``) on cases with a known
answer, so that the benchmark cannot silently report nonsense.

The main case is a linear model ``f(x) = w . x`` with a zero baseline: removing feature ``i`` lowers the output by
exactly ``w_i x_i``, so gradient x input is the exact contribution of each feature, its MoRF/LeRF curves can be
written down by hand, and no ordering of the features has a larger ABPC.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_flipping.py"
_spec = importlib.util.spec_from_file_location("lrp_fx_benchmarks_flipping", _PATH)
fl = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fl  # dataclasses look the module up
_spec.loader.exec_module(fl)

W = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
X = torch.ones(4, dtype=torch.float64)


def _linear_task(w: torch.Tensor = W, x: torch.Tensor = X) -> fl.FlipTask:
    """Features are the entries of ``x``; removing one sets it to 0; the measure is the output ``w . x``."""
    return fl.FlipTask(
        n_features=x.numel(),
        perturb=lambda masks: torch.where(masks, torch.zeros_like(x), x),
        score=lambda batch: batch @ w,
    )


def test_step_counts():
    assert fl.step_counts(4, 4) == [0, 1, 2, 3, 4]
    assert fl.step_counts(196, 15)[0] == 0 and fl.step_counts(196, 15)[-1] == 196
    assert fl.step_counts(10, 4) == [0, 2, 5, 8, 10]  # round half to even: 2.5 -> 2, 7.5 -> 8


def test_linear_model_curves_by_hand():
    """Contributions 4, 3, 2, 1 (sum 10). MoRF: 10, 6, 3, 1, 0; LeRF: 10, 9, 7, 4, 0.
    AUC (trapezoid over [0, 1], 4 intervals of 1/4): MoRF (8 + 4.5 + 2 + 0.5) / 4 = 3.75, LeRF (9.5 + 8 + 5.5 + 2) / 4
    = 6.25; ABPC = 2.5."""
    task = _linear_task()
    res = fl.evaluate(task, W * X, steps=4, generator=torch.Generator().manual_seed(0))
    assert res.morf[:, 0].tolist() == [10.0, 6.0, 3.0, 1.0, 0.0]
    assert res.lerf[:, 0].tolist() == [10.0, 9.0, 7.0, 4.0, 0.0]
    assert fl.auc(res.morf[:, 0]).item() == pytest.approx(3.75)
    assert fl.auc(res.lerf[:, 0]).item() == pytest.approx(6.25)
    assert res.abpc.item() == pytest.approx(2.5)


def test_linear_model_comprehensiveness_sufficiency_by_hand():
    """Fractions 25 % and 50 % of 4 features: k = 1, 2. Comprehensiveness: mean(10 - 6, 10 - 3) = 5.5;
    sufficiency (keep only the top k): mean(10 - 4, 10 - 7) = 4.5."""
    task = _linear_task()
    order = fl.ranking(W * X, most_relevant_first=True)
    comp, suff = fl.comprehensiveness_sufficiency(task, order, torch.tensor([10.0]), fractions=(0.25, 0.5))
    assert comp.item() == pytest.approx(5.5)
    assert suff.item() == pytest.approx(4.5)


def test_exact_attribution_has_the_largest_abpc():
    """Over all 120 orderings of five features with mixed-sign contributions, the exact contributions (gradient x
    input of the linear model) reach the largest ABPC, the reversed ordering the smallest, and a random ordering
    averages about zero."""
    w = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.25], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -2.0, 0.5, 4.0], dtype=torch.float64)
    task = _linear_task(w, x)
    exact = fl.evaluate(task, w * x, steps=5).abpc.item()
    reverse = fl.evaluate(task, -(w * x), steps=5).abpc.item()
    best = worst = None
    for perm in itertools.permutations(range(5)):
        scores = torch.empty(5, dtype=torch.float64)
        scores[list(perm)] = torch.arange(5, 0, -1, dtype=torch.float64)  # perm[0] is removed first
        value = fl.evaluate(task, scores, steps=5).abpc.item()
        best = value if best is None else max(best, value)
        worst = value if worst is None else min(worst, value)
    assert exact == pytest.approx(best)
    assert reverse == pytest.approx(worst) == pytest.approx(-exact)
    gen = torch.Generator().manual_seed(0)
    random = [fl.evaluate(task, torch.rand(5, generator=gen), steps=5).abpc.item() for _ in range(200)]
    assert abs(sum(random) / len(random)) < 0.1 * exact


def test_measures_are_memoised_per_removal_mask():
    """A second method with the same ordering costs no model evaluation; step 0 and the last step are shared."""
    task = _linear_task()
    fl.evaluate(task, W * X, steps=4)
    first = task.evaluated
    # MoRF: 5 points; LeRF adds 3 (the first and last are shared); the ERASER bins (k = 1, 2 of 4 features) remove
    # the top 1 or 2 (MoRF points) or keep only them (LeRF points): nothing new
    assert first == 5 + 3
    again = fl.evaluate(task, 2 * W * X, steps=4)
    assert task.evaluated == first and again.abpc.item() == pytest.approx(2.5)


def test_ties_are_broken_randomly_not_by_position():
    gen = torch.Generator().manual_seed(0)
    firsts = {fl.ranking(torch.zeros(6), generator=gen)[0].item() for _ in range(50)}
    assert len(firsts) > 3


def test_patches_and_baselines():
    attribution = torch.arange(2 * 4 * 4, dtype=torch.float64).reshape(2, 4, 4)
    scores = fl.patch_scores(attribution, 2)
    both = attribution.sum(0)
    assert scores.tolist() == [both[:2, :2].sum(), both[:2, 2:].sum(), both[2:, :2].sum(), both[2:, 2:].sum()]
    mask = fl.expand_patches(torch.tensor([[False, True, False, False]]), 4, 4, 2)
    assert mask.shape == (1, 1, 4, 4) and mask[0, 0, :2, 2:].all() and mask.sum() == 4
    x = torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(fl.blur_baseline(torch.full_like(x, 0.3)), torch.full_like(x, 0.3))
    assert fl.gaussian_kernel(51, 20.0).sum().item() == pytest.approx(1.0)
    blurred = fl.blur_baseline(x)
    assert blurred.shape == x.shape and blurred.std() < 0.2 * x.std()  # sigma 20 on 28 px: nearly flat
    assert fl.mean_baseline(x)[0, :, 0, 0].tolist() == pytest.approx(x.mean((2, 3))[0].tolist())


def test_image_task_end_to_end():
    """A linear "image model" whose evidence sits in one 2x2 patch: the exact attribution removes it first (MoRF
    drops to the baseline output at once), the reversed attribution last."""
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 2:, 2:] = 1.0
    w = torch.ones(16, dtype=torch.float64)
    task = fl.FlipTask(
        n_features=4,
        perturb=lambda masks: torch.where(fl.expand_patches(masks, 4, 4, 2), torch.zeros_like(x), x),
        score=lambda batch: batch.flatten(1) @ w,
    )
    scores = fl.patch_scores((x * w.view(1, 1, 4, 4))[0], 2)
    res = fl.evaluate(task, scores, steps=4, generator=torch.Generator().manual_seed(0))
    assert res.morf[:, 0].tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]
    assert res.lerf[:, 0].tolist() == [4.0, 4.0, 4.0, 4.0, 0.0]
    assert res.abpc.item() == pytest.approx(3.5 - 0.5)  # AUC: (4 + 4 + 4 + 4 / 2) / 4 and (4 / 2) / 4


def test_mean_sem():
    mean, sem = fl.mean_sem([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert sem == pytest.approx(torch.tensor([1.0, 2.0, 3.0, 4.0]).std().item() / 2)


def test_reference_rule_is_exact_toward_its_baseline():
    """A linear model ``f(x) = w . x + b`` flipped toward a baseline ``x~``: removing feature ``i`` changes the output
    by exactly ``w_i (x_i - x~_i)``. lrp_fx's reference-point rule with ``x~`` as its reference returns those
    contributions (scaled by ``R / (f(x) - f(x~))``), so its ordering reaches the largest ABPC of all 120 orderings;
    the plain epsilon rule (``w_i x_i``) does not."""
    import lrp_fx

    w = torch.tensor([[2.0, -1.0, 0.5, 3.0, -0.25]], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, -2.0, 0.5, 4.0], dtype=torch.float64)
    base = torch.tensor([0.5, 3.0, -1.0, 0.0, 3.0], dtype=torch.float64)  # f(x) > f(x~): R and the change agree
    model = torch.nn.Linear(5, 1).double()
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.fill_(0.7)
    task = fl.FlipTask(
        n_features=5,
        perturb=lambda masks: torch.where(masks, base, x),
        score=lambda batch: model(batch).detach().repeat(1, 2),
    )
    ref = lrp_fx.attribute(model, x[None], target=0, composite="epsilon", reference=base).relevance[0]
    exact = w[0] * (x - base)
    torch.testing.assert_close(ref / ref.sum(), exact / exact.sum())
    eps = lrp_fx.attribute(model, x[None], target=0, composite="epsilon").relevance[0]
    best = max(
        fl.evaluate(task, torch.tensor(list(p), dtype=torch.float64), steps=5).abpc[0].item()
        for p in itertools.permutations(range(5))
    )
    assert fl.evaluate(task, ref, steps=5).abpc[0].item() == pytest.approx(best)
    assert fl.evaluate(task, eps, steps=5).abpc[0].item() < best - 0.1


def _faithfulness_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "faithfulness.py"
    spec = importlib.util.spec_from_file_location("lrp_fx_benchmarks_faithfulness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(offset: int, n: int, methods: dict[str, list[float]], **config) -> dict:
    per_input = ("abpc", "abpc_logit", "auc_morf", "auc_lerf", "comprehensiveness", "sufficiency")
    return {
        "model": "fashion_vgg",
        "config": {"baseline": "blur", "steps": 15, "patch": 2, "offset": offset, "n": n, "held_out": False, **config},
        "methods": [
            {"name": name, "family": name.split()[0], **{k: list(v) for k in per_input}} for name, v in methods.items()
        ],
    }


def test_pooling_concatenates_disjoint_reported_runs_only():
    fb = _faithfulness_module()
    a = _run(0, 2, {"lrp_fx x": [1.0, 2.0], "captum ig": [0.5, 0.5], "zennit only_here": [9.0, 9.0]})
    b = _run(10, 3, {"lrp_fx x": [3.0, 4.0, 5.0], "captum ig": [1.0, 1.0, 1.0]})
    overlapping = _run(0, 1, {"lrp_fx x": [7.0], "captum ig": [7.0]})  # inside a's inputs: dropped
    held_out = _run(100, 2, {"lrp_fx x": [0.0, 0.0], "captum ig": [0.0, 0.0]}, held_out=True)
    other_steps = _run(50, 2, {"lrp_fx x": [0.0, 0.0], "captum ig": [0.0, 0.0]}, steps=5)  # another protocol
    [pooled] = fb.pool_runs([a, b, overlapping, held_out, other_steps])
    assert pooled["config"]["n"] == 5 and pooled["config"]["pooled"] == [[0, 2], [10, 3]]
    by_name = {m["name"]: m for m in pooled["methods"]}
    assert set(by_name) == {"lrp_fx x", "captum ig"}  # only methods run on every pooled input
    assert by_name["lrp_fx x"]["abpc"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert by_name["captum ig"]["sufficiency"] == [0.5, 0.5, 1.0, 1.0, 1.0]
    assert fb._inputs(pooled) == ", inputs 0-1 + 10-12 (pooled)"
    assert fb.pool_runs([a, overlapping]) == []


def test_chosen_method_by_offset_before_by_model():
    fb = _faithfulness_module()
    lrp = [{"name": "lrp_fx epsilon_gamma_box gamma=0.05"}, {"name": "lrp_fx epsilon_gamma_box gamma=0.1"}]
    run = {"model": "efficientnet_lite0", "config": {"baseline": "blur", "offset": 38}}
    assert fb.chosen_method(run, lrp)[0]["name"] == fb.CHOSEN[("efficientnet_lite0", "blur", 38)]
    run["config"]["offset"] = 0
    assert fb.chosen_method(run, lrp)[0]["name"] == fb.CHOSEN[("efficientnet_lite0", "blur")]
    assert fb.CHOSEN[("efficientnet_lite0", "blur", 38)] != fb.CHOSEN[("efficientnet_lite0", "blur")]


def test_chosen_method_by_run_name_first():
    fb = _faithfulness_module()
    by_name = "lrp_fx cplrp embedding sum epsilon=0.01 layernorm epsilon=0.001"
    lrp = [{"name": by_name}, {"name": "lrp_fx cplrp embedding sum epsilon=0.01"}, {"name": "lrp_fx cplrp"}]
    run = {"model": "minilm_sentiment", "config": {"baseline": "unk", "offset": 200, "split": "val"}}
    assert fb.run_key(run) in fb.CHOSEN and fb.chosen_method(run, lrp) == (lrp[0], "chosen on held-out inputs")
    run["config"] = {"baseline": "unk", "offset": 400}  # the test split: the (model, baseline, offset) entry
    assert fb.chosen_method(run, lrp)[0]["name"] == fb.CHOSEN[("minilm_sentiment", "unk", 400)] != by_name


def test_pooling_keeps_sentence_length_ranges_apart():
    fb = _faithfulness_module()
    short = _run(0, 2, {"lrp_fx x": [1.0, 2.0], "captum ig": [0.5, 0.5]}, max_tokens=40)
    more = _run(2, 2, {"lrp_fx x": [1.0, 2.0], "captum ig": [0.5, 0.5]}, max_tokens=40)
    long = _run(10, 2, {"lrp_fx x": [3.0, 4.0], "captum ig": [1.0, 1.0]}, max_tokens=128, min_tokens=40)
    [pooled] = fb.pool_runs([short, more, long])
    assert pooled["config"]["pooled"] == [[0, 2], [2, 2]]


def test_cross_fitting_chooses_each_runs_method_on_the_other_runs():
    """Method ``a`` is best on the first run and ``b`` on the second: cross-fitting must pick ``b`` for the first
    run and ``a`` for the second (never a run's own winner), so its ABPC is that of the two losers."""
    fb = _faithfulness_module()
    first = _run(0, 2, {"lrp_fx a": [0.9, 0.9], "lrp_fx b": [0.5, 0.5], "captum ig": [0.6, 0.6]})
    second = _run(2, 2, {"lrp_fx a": [0.2, 0.2], "lrp_fx b": [0.8, 0.8], "captum ig": [0.1, 0.3]})
    text = fb.cross_fitted([first, second])
    assert "inputs 0-1: b, inputs 2-3: a" in text
    assert "ABPC 0.350 ± 0.087 over n = 4" in text  # mean of [0.5, 0.5, 0.2, 0.2] and its standard error
    # paired differences [-0.1, -0.1, +0.1, -0.1]: mean -0.05, standard error 0.1 / sqrt(4); better on 1 of 4
    assert "| captum ig | -0.050 ± 0.050 | -1.0 | 1/4 |" in text


def _qt_resource_file(files: dict[str, bytes], compress: set[str]) -> bytes:
    """A compiled Qt resource file (format 3) written out by hand: one directory level per path component."""
    import struct
    import zlib

    tree: dict = {}
    for path in files:
        node = tree
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = path
    names, payload, nodes = bytearray(), bytearray(), []

    def name_offset(name: str) -> int:
        off = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return off

    nodes.append(None)  # the root, filled in below
    queue = [(0, "", tree)]
    while queue:  # breadth first: a directory's children are consecutive nodes
        index, name, children = queue.pop(0)
        first = len(nodes)
        entries = sorted(children.items())
        nodes.extend([None] * len(entries))
        nodes[index] = struct.pack(">IHII", name_offset(name), 2, len(entries), first) + bytes(8)
        for k, (child, value) in enumerate(entries):
            if isinstance(value, dict):
                queue.append((first + k, child, value))
                continue
            blob = files[value]
            flags = 0
            if value in compress:
                blob, flags = struct.pack(">I", len(blob)) + zlib.compress(blob), 1
            data_offset = len(payload)
            payload.extend(struct.pack(">I", len(blob)) + blob)
            nodes[first + k] = struct.pack(">IHHHI", name_offset(child), flags, 0, 0, data_offset) + bytes(8)
    tree_bytes = b"".join(nodes)
    header = 24
    return (
        b"qres"
        + struct.pack(">IIIII", 3, header, header + len(tree_bytes), header + len(tree_bytes) + len(payload), 0)
        + tree_bytes
        + bytes(payload)
        + bytes(names)
    )


def test_qt_resource_reader_returns_every_file_with_its_path():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import _data

    files = {
        "a/resource/animals/cat.webp": b"RIFF cat",
        "a/resource/animals/dog.webp": bytes(range(256)) * 3,
        "a/other.txt": "ünïcode".encode(),
        "top.bin": b"",
    }
    blob = _qt_resource_file(files, compress={"a/resource/animals/dog.webp"})
    assert _data.read_qt_resources(blob) == files
    with pytest.raises(ValueError, match="qres"):
        _data.read_qt_resources(b"RIFF" + blob[4:])


def test_pooling_keeps_the_two_text_models_apart():
    """The frozen-encoder and the fine-tuned text model share sentences and baselines but are different models."""
    fb = _faithfulness_module()
    text = {"baseline": "unk", "max_tokens": 40}
    frozen = [_run(o, 2, {"lrp_fx x": [1.0, 2.0], "captum ig": [0.5, 0.5]}, **text) for o in (0, 2)]
    tuned = _run(4, 2, {"lrp_fx x": [3.0, 4.0], "captum ig": [1.0, 1.0]}, **text)
    for run in frozen:
        run["model"] = "minilm_sentiment"
    tuned["model"] = "minilm_sentiment_ft"
    [pooled] = fb.pool_runs([*frozen, tuned])
    assert pooled["model"] == "minilm_sentiment" and pooled["config"]["pooled"] == [[0, 2], [2, 2]]


def test_missing_finetuned_text_model_names_its_training_script(tmp_path):
    fb = _faithfulness_module()
    with pytest.raises(FileNotFoundError, match="train_sentiment_finetune.py"):
        fb._models.load_sentiment_minilm_finetuned(tmp_path / "absent.pt")
    assert fb.VARIANTS["minilm_sentiment_ft"] == fb.VARIANTS["minilm_sentiment"]
