"""Hugging Face families of the coverage sweep (``benchmarks/coverage.py --family transformers``): strict attribution
and conservation, on the tiny configs of ``benchmarks/_hf_models.py`` with the measure of the coverage table.

The default suite runs a representative subset, one family per new construct: DistilBERT (encoder), Qwen3
(grouped-query attention, rotary embeddings, q/k RMS norms), BART (encoder-decoder, decoder logits), wav2vec 2.0
(group norm, convolutional position embedding), Mamba-2 (chunked scan: segment sums, decays) and Mixtral (top-k
router weights as gates). Every family of the sweep (Swin's shifted windows, CLIP's image-text logits, Mamba's
unrolled scan, ...) runs under ``-m slow``.

Per family, in float64 with additive constants zeroed and weights unit-scaled (``zero_additive``, ``unit_scale_any``):
``cplrp`` conserves up to its stabilisers (``|sum R_in - R_out| / |R_out| < 1e-4``) and its absorbed-relevance
bookkeeping closes; ``attnlrp`` (strict) closes its bookkeeping (the softmax's Taylor bias is absorbed).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import lrp_fx

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


hf = _load("lrp_fx_benchmarks_hf_models", "_hf_models.py")
cov = _load("lrp_fx_benchmarks_coverage_hf", "coverage.py")

FAST = ["distilbert", "qwen3", "bart", "wav2vec2", "mamba2", "mixtral"]
ALL = [c.name for c in hf.tiny_cases()]
# Models that compute norms or rotary tables in float32 whatever the input dtype round relevance there.
BOOKKEEPING = 1e-7


def _conservative_model(case):
    torch.manual_seed(0)
    model = case.build()
    inputs = case.inputs(torch.Generator().manual_seed(0))
    cov.zero_additive(model)
    model.double()
    inputs = cov.to_double(inputs)
    cov.unit_scale_any(model, inputs)
    return model, inputs


def _check(name: str) -> None:
    case = hf.tiny_case(name)
    model, inputs = _conservative_model(case)
    res = lrp_fx.attribute(model, inputs, composite="cplrp", output=case.output, track_absorbed=True)
    assert not res.fallback_nodes
    leaves = [r for r in torch.utils._pytree.tree_leaves(res.relevance) if isinstance(r, torch.Tensor)]
    assert leaves and all(torch.isfinite(r).all() for r in leaves)
    with_absorbed, plain = cov.conservation_any(res)
    assert plain < 1e-4, (name, plain, cov._absorbers(res, cov.output_relevance(res).sum().item()))
    assert with_absorbed < BOOKKEEPING, (name, with_absorbed)
    res = lrp_fx.attribute(model, inputs, composite="attnlrp", output=case.output, track_absorbed=True)
    assert cov.conservation_any(res)[0] < BOOKKEEPING, name


@pytest.mark.parametrize("name", FAST)
def test_family_attributes_strictly_and_conserves(name):
    _check(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in FAST])
def test_every_family_attributes_strictly_and_conserves(name):
    _check(name)


def _least_memory_plan_is_identical(name: str) -> None:
    """``memory_budget=0`` rebuilds forward values instead of keeping them: the same relevance, bit for bit, from
    fewer kept bytes."""
    model, inputs, kw = cov.hf_setup(hf.tiny_case(name))
    kept = lrp_fx.attribute(model, inputs, composite="attnlrp", **kw)
    low = lrp_fx.attribute(model, inputs, composite="attnlrp", memory_budget=0, **kw)
    pairs = zip(torch.utils._pytree.tree_leaves(kept.relevance), torch.utils._pytree.tree_leaves(low.relevance))
    assert all(torch.equal(a, b) for a, b in pairs if isinstance(a, torch.Tensor)), name
    assert low.stats.recomputed > 0 and low.stats.bytes_kept < kept.stats.bytes_kept, name


def test_least_memory_plan_on_an_encoder_decoder():
    _least_memory_plan_is_identical("bart")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n != "bart"])
def test_least_memory_plan_of_every_family(name):
    _least_memory_plan_is_identical(name)


def test_padding_tokens_get_no_relevance():
    """The second text sample is padded by two tokens: its attention mask carries no relevance, and the padded
    positions (never attended to by a bidirectional encoder) receive none."""
    case = hf.tiny_case("distilbert")
    model, inputs = _conservative_model(case)
    res = lrp_fx.attribute(model, inputs, composite="attnlrp", output=case.output)
    assert res.relevance["attention_mask"] is None
    assert (res.relevance["input_ids"][1, -2:] == 0).all()


def test_meta_device_report_of_a_published_size_model():
    """``lrp_fx.coverage.report`` captures and traces on the meta device: GPT-2 small, no weight allocated."""
    from lrp_fx.coverage import report

    case = hf.paper_case("gpt2")
    with torch.device("meta"):
        model = case.build()
        inputs = {"input_ids": torch.randint(0, 50257, (1, 16)), "use_cache": False}
    assert next(model.parameters()).device.type == "meta"
    rep = report(model, inputs, output=case.output)
    assert rep.ok and rep.live == rep.ruled > 0 and rep.nodes >= rep.live
    assert rep.stats is not None and rep.stats.promises > 0
