"""Transformers end to end: Hugging Face BERT, GPT-2, Llama and ViT (tiny configs, random weights, no downloads) and
torchvision's VisionTransformer, under the ``attnlrp`` and ``cplrp`` presets.

Conservation is checked in float64 with biases (and additive position / token-type embeddings, class tokens) zeroed:

* ``cplrp``: every rule on the path is conservative up to its stabiliser, so the input relevance sums to the explained
  logit (ViT: plus the share the zeroed class token's position keeps, recorded as absorbed);
* ``attnlrp``: the softmax rule is not conservative (its Taylor bias); the input relevance plus everything recorded as
  absorbed sums to the explained logit.
"""

from __future__ import annotations

import pytest
import torch

import lrp_fx

transformers = pytest.importorskip("transformers")

D = torch.float64
REL = 1e-4


def _prepare(model):
    """float64, eval, biases and additive embeddings zeroed (they are bias-like and absorb relevance)."""
    model = model.to(D).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or any(k in name for k in ("position", "wpe", "token_type", "cls_token")):
                p.zero_()
        for name, b in model.named_buffers():
            if "token_type" in name:
                b.zero_()
    return model


def _close(a, b, rel=REL):
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    assert abs(a - b) <= rel * max(abs(b), 1e-3), (a, b)


def _check_conservation(res, explained, composite, absorbed_ok=False):
    total = sum(r.sum() for r in _relevances(res))
    assert all(torch.isfinite(r).all() for r in _relevances(res))
    if composite == "attnlrp" or absorbed_ok:
        total = total + sum(res.absorbed.values())
    _close(total, explained)


def _relevances(res):
    rel = res.relevance
    if isinstance(rel, dict):
        return [r for r in rel.values() if r is not None]
    return [rel]


# -- BERT --------------------------------------------------------------------------------------------------------------
BERT = dict(
    vocab_size=60,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    num_labels=3,
    initializer_range=0.2,
)


@pytest.fixture(scope="module")
def bert_inputs():
    torch.manual_seed(1)
    return {"input_ids": torch.randint(0, 60, (2, 6)), "attention_mask": torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])}


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
def test_bert_sequence_classification(composite, bert_inputs):
    torch.manual_seed(0)
    model = _prepare(transformers.BertForSequenceClassification(transformers.BertConfig(**BERT)))
    res = lrp_fx.attribute(model, bert_inputs, target=2, composite=composite, track_absorbed=True)
    ids = res.relevance["input_ids"]
    assert ids.shape == (2, 6) and ids.dtype == D
    assert res.relevance["attention_mask"] is None
    assert (ids[1, 4:] == 0).all()  # padded tokens are never attended to
    _check_conservation(res, model(**bert_inputs).logits[:, 2].sum(), composite)


def test_bert_eager_attention_matches_sdpa(bert_inputs):
    """The decomposed (eager) attention and the whole scaled-dot-product attention get the same relevance."""
    torch.manual_seed(0)
    sdpa = _prepare(transformers.BertForSequenceClassification(transformers.BertConfig(**BERT)))
    eager = transformers.BertForSequenceClassification(transformers.BertConfig(**BERT, attn_implementation="eager"))
    eager = _prepare(eager)
    eager.load_state_dict(sdpa.state_dict())
    a = lrp_fx.attribute(sdpa, bert_inputs, target=1, composite="attnlrp")
    b = lrp_fx.attribute(eager, bert_inputs, target=1, composite="attnlrp")
    assert any("_softmax" in x.op for x in b.program.assignments)
    torch.testing.assert_close(a.relevance["input_ids"], b.relevance["input_ids"], rtol=1e-4, atol=1e-6)


# -- causal language models --------------------------------------------------------------------------------------------
def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=60,
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=16,
        initializer_range=0.2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        initializer_range=0.2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


LMS = {"gpt2": _gpt2, "llama": _llama}


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
@pytest.mark.parametrize("arch", list(LMS))
def test_causal_lm_token_relevance(arch, composite):
    """Explain vocabulary entry 7 at position 3 (a tensor target): tokens after position 3 get nothing."""
    torch.manual_seed(0)
    model = _prepare(LMS[arch]())
    ids = torch.randint(0, 60, (2, 6))
    inputs = {"input_ids": ids, "use_cache": False}
    logits = model(**inputs).logits
    seed = torch.zeros_like(logits)
    seed[:, 3, 7] = logits[:, 3, 7]
    res = lrp_fx.attribute(model, inputs, target=seed, composite=composite, track_absorbed=True)
    r = res.relevance["input_ids"]
    assert r.shape == (2, 6)
    assert (r[:, 4:] == 0).all()  # causal
    _check_conservation(res, logits[:, 3, 7].sum(), composite)


def test_causal_lm_targets_callable_and_selector():
    """The same explanation three ways: a callable target, a tensor target, and an output selector + class index."""
    torch.manual_seed(0)
    model = _prepare(_gpt2())
    inputs = {"input_ids": torch.randint(0, 60, (2, 5)), "use_cache": False}

    def last_token(out):  # relevance of vocabulary entry 11 at the last position
        seed = torch.zeros_like(out)
        seed[:, -1, 11] = out[:, -1, 11]
        return seed

    a = lrp_fx.attribute(model, inputs, target=last_token, composite="attnlrp").relevance["input_ids"]
    logits = model(**inputs).logits
    b = lrp_fx.attribute(model, inputs, target=last_token(logits), composite="attnlrp").relevance["input_ids"]
    c = lrp_fx.attribute(model, inputs, target=11, output=lambda o: o.logits[:, -1], composite="attnlrp")
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c.relevance["input_ids"])


# -- vision transformers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
def test_hf_vit_pixel_relevance(composite):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=16,
        patch_size=8,
        num_labels=3,
        initializer_range=0.2,
    )
    model = _prepare(transformers.ViTForImageClassification(cfg))
    x = torch.randn(2, 3, 16, 16, dtype=D)
    res = lrp_fx.attribute(model, {"pixel_values": x}, target=1, composite=composite, track_absorbed=True)
    assert res.relevance["pixel_values"].shape == x.shape
    # the zeroed class token keeps its position's relevance (absorbed by the position-embedding add)
    _check_conservation(res, model(pixel_values=x).logits[:, 1].sum(), composite, absorbed_ok=True)


def _torchvision_vit(**kw):
    vt = pytest.importorskip("torchvision.models.vision_transformer")
    model = vt.VisionTransformer(**kw) if kw else vt.vit_b_16(image_size=32)
    with torch.no_grad():
        torch.nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zero-initialises the head
        model.class_token.zero_()
        model.encoder.pos_embedding.zero_()
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model.to(D).eval()


@pytest.mark.parametrize("composite", ["attnlrp", "cplrp"])
def test_torchvision_vision_transformer(composite):
    torch.manual_seed(0)
    model = _torchvision_vit(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    x = torch.randn(2, 3, 32, 32, dtype=D)
    res = lrp_fx.attribute(model, x, target=4, composite=composite, track_absorbed=True)
    assert res.relevance.shape == x.shape
    _check_conservation(res, model(x)[:, 4].sum(), composite, absorbed_ok=True)


@pytest.mark.slow
def test_torchvision_vit_b_16_small_images():
    torch.manual_seed(0)
    model = _torchvision_vit()
    x = torch.randn(1, 3, 32, 32, dtype=D)
    res = lrp_fx.attribute(model, x, target=3, composite="attnlrp", track_absorbed=True)
    assert res.relevance.shape == x.shape
    _check_conservation(res, model(x)[:, 3].sum(), "attnlrp")


def test_docs_example_runs():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "transformers.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    scope: dict = {}
    exec(compile(example, "docs/transformers.md", "exec"), scope)
    rel = scope["res"].relevance
    assert rel["input_ids"].shape == (1, 8) and rel["attention_mask"] is None
