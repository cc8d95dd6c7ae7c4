"""Hugging Face ``transformers`` models for the coverage sweep: tiny configs (random weights, no downloads) and the
published sizes of the DynamicLRP paper's 15 architectures.

Each ``Case`` builds a model from a config, makes example inputs and says which output to explain. The explained
output is always a ``[batch, classes]`` tensor, so ``target=None`` (each sample's argmax) applies everywhere:

* classifiers (``*ForSequenceClassification``, ``*ForImageClassification``, ``*ForAudioClassification``): their logits;
* causal language models, encoder-decoders and the state-space models: the next-token logits at the last position
  (``logits[:, -1]``; encoder-decoders are fed ``decoder_input_ids``, so the decoder logits are explained);
* image-text models (CLIP, SigLIP): ``logits_per_image`` ``[images, texts]``, relevance flowing to both pixels and
  token ids.

Tiny configs: hidden size 32 to 64, 2 layers, 2 to 4 heads (fewer key-value heads where a family has grouped-query
attention), vocabulary 128, sequences of 8 tokens, 32-pixel images, 0.2 s of 16 kHz audio. Attention runs through
``scaled_dot_product_attention`` where the family supports it (``attn_implementation="sdpa"``), eager otherwise; caches
are off; mixture-of-experts layers use the ``batched_mm`` experts implementation (gathers of expert weights and
batched matmuls: static shapes, which ``torch.export`` captures; the default ``grouped_mm`` and the eager loop branch
on which experts were hit).

``PAPER15``: the paper's 15 architectures at their published sizes, with the configs written out (no hub access), for
capture on the meta device (``lrp_fx.coverage.report``): no weights are materialised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

VOCAB = 128
SEQ = 8
BATCH = 2


@dataclass(frozen=True)
class Case:
    """One architecture: how to build it, feed it and pick the explained ``[batch, classes]`` output."""

    name: str
    kind: str  # "text encoder", "decoder", "encoder-decoder", "vision", "audio", "multimodal", "state-space", "moe"
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], dict[str, Any]]
    output: Callable[[Any], torch.Tensor] | str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _tf():
    import transformers

    return transformers


def last_logits(out: Any) -> torch.Tensor:
    """Next-token logits at the last position: ``[batch, vocab]``."""
    return out.logits[:, -1]


def image_text_logits(out: Any) -> torch.Tensor:
    """Image-text similarity logits ``[images, texts]``."""
    return out.logits_per_image


def _ids(gen: torch.Generator, n: int = SEQ, vocab: int = VOCAB, batch: int = BATCH, low: int = 3) -> torch.Tensor:
    return torch.randint(low, vocab, (batch, n), generator=gen)


def _text(gen: torch.Generator, mask: bool = True, **kw: Any) -> dict[str, Any]:
    ids = _ids(gen, **kw)
    out: dict[str, Any] = {"input_ids": ids}
    if mask:
        m = torch.ones_like(ids)
        m[1, -2:] = 0  # padding in the second sample: masks must carry no relevance
        out["attention_mask"] = m
    return out


def _causal(gen: torch.Generator, mask: bool = False) -> dict[str, Any]:
    out = {"input_ids": _ids(gen), "use_cache": False}
    if mask:
        out["attention_mask"] = torch.ones(BATCH, SEQ, dtype=torch.long)
    return out


def _seq2seq(gen: torch.Generator) -> dict[str, Any]:
    out = _text(gen)
    out["decoder_input_ids"] = _ids(gen, n=5)
    out["use_cache"] = False
    return out


def _pixels(gen: torch.Generator, size: int = 32, channels: int = 3) -> dict[str, Any]:
    return {"pixel_values": torch.randn(BATCH, channels, size, size, generator=gen)}


def _audio(gen: torch.Generator, samples: int = 3200) -> dict[str, Any]:
    return {"input_values": torch.randn(BATCH, samples, generator=gen)}


def _sdpa(model_cls: Any, config: Any, impl: str = "sdpa") -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        config._attn_implementation = impl
        return model_cls(config).eval()

    return build


# Shared sizes of the tiny configs.
ENC = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    num_labels=3,
)
DEC = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    use_cache=False,
)
TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _text_encoders() -> list[Case]:
    t = _tf()
    cases = [
        Case("bert", "text encoder", _sdpa(t.BertForSequenceClassification, t.BertConfig(**ENC)), _text),
        Case(
            "roberta",
            "text encoder",
            _sdpa(t.RobertaForSequenceClassification, t.RobertaConfig(**ENC, pad_token_id=1)),
            _text,
        ),
        Case(
            "distilbert",
            "text encoder",
            _sdpa(
                t.DistilBertForSequenceClassification,
                t.DistilBertConfig(
                    vocab_size=VOCAB,
                    dim=32,
                    n_layers=2,
                    n_heads=4,
                    hidden_dim=64,
                    max_position_embeddings=64,
                    num_labels=3,
                ),
            ),
            _text,
        ),
        Case(
            "albert",
            "text encoder",
            _sdpa(
                t.AlbertForSequenceClassification,
                t.AlbertConfig(**ENC, embedding_size=16),
            ),
            _text,
        ),
        Case(
            "electra",
            "text encoder",
            _sdpa(t.ElectraForSequenceClassification, t.ElectraConfig(**ENC, embedding_size=16)),
            _text,
        ),
        Case(
            "deberta-v2",
            "text encoder",
            _sdpa(
                t.DebertaV2ForSequenceClassification,
                t.DebertaV2Config(
                    **ENC,
                    relative_attention=True,
                    position_buckets=8,
                    max_relative_positions=16,
                    pos_att_type=["p2c", "c2p"],
                    position_biased_input=False,
                ),
                "eager",
            ),
            _text,
        ),
        Case(
            "xlm-roberta",
            "text encoder",
            _sdpa(t.XLMRobertaForSequenceClassification, t.XLMRobertaConfig(**ENC, pad_token_id=1)),
            _text,
        ),
        Case(
            "mpnet",
            "text encoder",
            _sdpa(t.MPNetForSequenceClassification, t.MPNetConfig(**ENC, pad_token_id=1), "eager"),
            _text,
        ),
    ]
    return cases


def _decoders() -> list[Case]:
    t = _tf()
    mha = {k: v for k, v in DEC.items() if k != "num_key_value_heads"}
    gpt = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False, **TOKENS)

    def lm(cls: Any, cfg: Any, impl: str = "sdpa") -> Callable[[], nn.Module]:
        return _sdpa(cls, cfg, impl)

    cases = [
        Case("gpt2", "decoder", lm(t.GPT2LMHeadModel, t.GPT2Config(**gpt)), _causal, last_logits),
        Case(
            "gpt-neo",
            "decoder",
            lm(
                t.GPTNeoForCausalLM,
                t.GPTNeoConfig(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    num_layers=2,
                    num_heads=4,
                    max_position_embeddings=64,
                    attention_types=[[["global", "local"], 1]],
                    window_size=4,
                    intermediate_size=64,
                    use_cache=False,
                    **TOKENS,
                ),
                "eager",
            ),
            _causal,
            last_logits,
        ),
        Case(
            "gpt-j",
            "decoder",
            lm(t.GPTJForCausalLM, t.GPTJConfig(**gpt, rotary_dim=4), "eager"),
            _causal,
            last_logits,
        ),
        Case(
            "opt",
            "decoder",
            lm(
                t.OPTForCausalLM,
                t.OPTConfig(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    num_hidden_layers=2,
                    ffn_dim=64,
                    num_attention_heads=4,
                    max_position_embeddings=64,
                    word_embed_proj_dim=32,
                    use_cache=False,
                    **TOKENS,
                ),
            ),
            _causal,
            last_logits,
        ),
        Case(
            "bloom",
            "decoder",
            lm(
                t.BloomForCausalLM,
                t.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4, use_cache=False, **TOKENS),
                "eager",
            ),
            lambda g: _causal(g, mask=True),
            last_logits,
        ),
        Case(
            "falcon",
            "decoder",
            lm(
                t.FalconForCausalLM,
                t.FalconConfig(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    new_decoder_architecture=True,
                    num_kv_heads=2,
                    alibi=False,
                    use_cache=False,
                    **TOKENS,
                ),
            ),
            _causal,
            last_logits,
        ),
        Case("llama", "decoder", lm(t.LlamaForCausalLM, t.LlamaConfig(**DEC)), _causal, last_logits),
        Case(
            "mistral",
            "decoder",
            lm(t.MistralForCausalLM, t.MistralConfig(**DEC, sliding_window=4)),
            _causal,
            last_logits,
        ),
        Case("qwen2", "decoder", lm(t.Qwen2ForCausalLM, t.Qwen2Config(**DEC)), _causal, last_logits),
        Case("qwen3", "decoder", lm(t.Qwen3ForCausalLM, t.Qwen3Config(**DEC, head_dim=8)), _causal, last_logits),
        Case(
            "gemma",
            "decoder",
            lm(t.GemmaForCausalLM, t.GemmaConfig(**DEC, head_dim=8)),
            _causal,
            last_logits,
        ),
        Case(
            "gemma3-text",
            "decoder",
            lm(
                t.Gemma3ForCausalLM,
                t.Gemma3TextConfig(
                    **DEC,
                    head_dim=8,
                    sliding_window=4,
                    layer_types=["sliding_attention", "full_attention"],
                    query_pre_attn_scalar=8,
                ),
            ),
            _causal,
            last_logits,
        ),
        Case(
            "phi",
            "decoder",
            lm(t.PhiForCausalLM, t.PhiConfig(**mha, partial_rotary_factor=0.5)),
            _causal,
            last_logits,
        ),
        Case("phi3", "decoder", lm(t.Phi3ForCausalLM, t.Phi3Config(**DEC)), _causal, last_logits),
        Case("stablelm", "decoder", lm(t.StableLmForCausalLM, t.StableLmConfig(**DEC)), _causal, last_logits),
        Case("olmo", "decoder", lm(t.OlmoForCausalLM, t.OlmoConfig(**DEC)), _causal, last_logits),
        Case("olmo2", "decoder", lm(t.Olmo2ForCausalLM, t.Olmo2Config(**DEC)), _causal, last_logits),
        Case(
            "gpt-neox",
            "decoder",
            lm(t.GPTNeoXForCausalLM, t.GPTNeoXConfig(**mha, rotary_pct=0.5)),
            _causal,
            last_logits,
        ),
    ]
    return cases


def _encoder_decoders() -> list[Case]:
    t = _tf()
    bart = dict(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        use_cache=False,
        decoder_start_token_id=1,
        **TOKENS,
    )
    return [
        Case(
            "t5",
            "encoder-decoder",
            _sdpa(
                t.T5ForConditionalGeneration,
                t.T5Config(
                    vocab_size=VOCAB,
                    d_model=32,
                    d_kv=8,
                    d_ff=64,
                    num_layers=2,
                    num_heads=4,
                    relative_attention_num_buckets=8,
                    feed_forward_proj="gated-gelu",
                    use_cache=False,
                    decoder_start_token_id=0,
                    pad_token_id=0,
                    eos_token_id=1,
                ),
                "eager",
            ),
            _seq2seq,
            last_logits,
        ),
        Case(
            "bart",
            "encoder-decoder",
            _sdpa(t.BartForConditionalGeneration, t.BartConfig(**bart)),
            _seq2seq,
            last_logits,
        ),
        Case(
            "pegasus",
            "encoder-decoder",
            _sdpa(t.PegasusForConditionalGeneration, t.PegasusConfig(**bart)),
            _seq2seq,
            last_logits,
        ),
        Case(
            "marian",
            "encoder-decoder",
            _sdpa(t.MarianMTModel, t.MarianConfig(**{**bart, "decoder_start_token_id": 0})),
            _seq2seq,
            last_logits,
        ),
    ]


VIT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_labels=3,
)


def _vision() -> list[Case]:
    t = _tf()
    clip_v = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    return [
        Case("vit", "vision", _sdpa(t.ViTForImageClassification, t.ViTConfig(**VIT)), _pixels),
        Case("deit", "vision", _sdpa(t.DeiTForImageClassification, t.DeiTConfig(**VIT)), _pixels),
        Case(
            "beit",
            "vision",
            _sdpa(
                t.BeitForImageClassification,
                t.BeitConfig(**VIT, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1),
            ),
            _pixels,
        ),
        Case(
            "swin",
            "vision",
            _sdpa(
                t.SwinForImageClassification,
                t.SwinConfig(
                    image_size=32,
                    patch_size=4,
                    embed_dim=16,
                    depths=[2, 2],
                    num_heads=[2, 4],
                    window_size=4,
                    num_labels=3,
                ),
            ),
            _pixels,
        ),
        Case(
            "convnext",
            "vision",
            _sdpa(
                t.ConvNextForImageClassification,
                t.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_labels=3, image_size=32, num_stages=2),
                "eager",
            ),
            _pixels,
        ),
        Case(
            "segformer",
            "vision",
            _sdpa(
                t.SegformerForImageClassification,
                t.SegformerConfig(
                    num_encoder_blocks=2,
                    depths=[1, 1],
                    sr_ratios=[2, 1],
                    hidden_sizes=[16, 32],
                    patch_sizes=[7, 3],
                    strides=[4, 2],
                    num_attention_heads=[1, 2],
                    mlp_ratios=[2, 2],
                    num_labels=3,
                    image_size=32,
                ),
            ),
            _pixels,
        ),
        Case(
            "dinov2",
            "vision",
            _sdpa(t.Dinov2ForImageClassification, t.Dinov2Config(**{**VIT, "image_size": 32, "mlp_ratio": 2})),
            _pixels,
        ),
        Case(
            "clip-vision",
            "vision",
            _sdpa(
                t.CLIPForImageClassification, t.CLIPConfig(vision_config=clip_v, text_config=_clip_text(), num_labels=3)
            ),
            _pixels,
        ),
        Case(
            "siglip-vision",
            "vision",
            _sdpa(
                t.SiglipForImageClassification,
                t.SiglipConfig(vision_config=clip_v, text_config=_clip_text(), num_labels=3),
            ),
            _pixels,
        ),
    ]


def _clip_text() -> dict[str, Any]:
    return dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=SEQ,
        **TOKENS,
    )


def _wav2vec2_like(cls: Any, cfg_cls: Any) -> Callable[[], nn.Module]:
    cfg = cfg_cls(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        num_labels=3,
        classifier_proj_size=16,
    )
    return _sdpa(cls, cfg)


def _whisper_inputs(gen: torch.Generator) -> dict[str, Any]:
    return {
        "input_features": torch.randn(BATCH, 16, 32, generator=gen),
        "decoder_input_ids": _ids(gen, n=5),
        "use_cache": False,
    }


def _audio_cases() -> list[Case]:
    t = _tf()
    return [
        Case("wav2vec2", "audio", _wav2vec2_like(t.Wav2Vec2ForSequenceClassification, t.Wav2Vec2Config), _audio),
        Case("hubert", "audio", _wav2vec2_like(t.HubertForSequenceClassification, t.HubertConfig), _audio),
        Case(
            "whisper",
            "audio",
            _sdpa(
                t.WhisperForConditionalGeneration,
                t.WhisperConfig(
                    vocab_size=VOCAB,
                    num_mel_bins=16,
                    d_model=32,
                    encoder_layers=2,
                    decoder_layers=2,
                    encoder_attention_heads=4,
                    decoder_attention_heads=4,
                    encoder_ffn_dim=64,
                    decoder_ffn_dim=64,
                    max_source_positions=16,
                    max_target_positions=16,
                    use_cache=False,
                    decoder_start_token_id=1,
                    suppress_tokens=None,
                    begin_suppress_tokens=None,
                    **TOKENS,
                ),
            ),
            _whisper_inputs,
            last_logits,
        ),
    ]


def _image_text(gen: torch.Generator) -> dict[str, Any]:
    out = _pixels(gen)
    out["input_ids"] = _ids(gen)
    return out


def _pix2struct_inputs(gen: torch.Generator) -> dict[str, Any]:
    patches = 16
    flat = torch.randn(BATCH, patches, 2 + 3 * 4 * 4, generator=gen)
    flat[:, :, 0] = torch.arange(patches).div(4, rounding_mode="floor") + 1.0  # row ids (1-based)
    flat[:, :, 1] = torch.arange(patches).remainder(4) + 1.0  # column ids
    mask = torch.ones(BATCH, patches)
    return {"flattened_patches": flat, "attention_mask": mask, "decoder_input_ids": _ids(gen, n=5), "use_cache": False}


def _multimodal() -> list[Case]:
    t = _tf()
    v = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    p2s = t.Pix2StructConfig(
        vision_config=dict(
            hidden_size=32,
            patch_embed_hidden_size=48,
            d_ff=64,
            d_kv=8,
            num_hidden_layers=2,
            num_attention_heads=4,
            seq_len=16,
            relative_attention_num_buckets=8,
        ),
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            d_ff=64,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            use_cache=False,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        ),
    )
    return [
        Case(
            "clip",
            "multimodal",
            _sdpa(t.CLIPModel, t.CLIPConfig(vision_config=v, text_config=_clip_text())),
            _image_text,
            image_text_logits,
        ),
        Case(
            "siglip",
            "multimodal",
            _sdpa(t.SiglipModel, t.SiglipConfig(vision_config=v, text_config=_clip_text())),
            _image_text,
            image_text_logits,
        ),
        Case(
            "pix2struct",
            "multimodal",
            _sdpa(t.Pix2StructForConditionalGeneration, p2s, "eager"),
            _pix2struct_inputs,
            last_logits,
        ),
    ]


def _state_space() -> list[Case]:
    t = _tf()
    return [
        Case(
            "mamba",
            "state-space",
            _sdpa(
                t.MambaForCausalLM,
                t.MambaConfig(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    state_size=8,
                    num_hidden_layers=2,
                    expand=2,
                    conv_kernel=4,
                    use_cache=False,
                    **TOKENS,
                ),
                "eager",
            ),
            _causal,
            last_logits,
        ),
        Case(
            "mamba2",
            "state-space",
            _sdpa(
                t.Mamba2ForCausalLM,
                t.Mamba2Config(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    state_size=8,
                    num_hidden_layers=2,
                    expand=2,
                    conv_kernel=4,
                    num_heads=8,
                    head_dim=8,
                    n_groups=1,
                    chunk_size=4,
                    use_cache=False,
                    **TOKENS,
                ),
                "eager",
            ),
            _causal,
            last_logits,
        ),
    ]


def _moe_build(cls: Any, cfg: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        cfg._attn_implementation = "sdpa"
        cfg._experts_implementation = "batched_mm"
        return cls(cfg).eval()

    return build


def _moe() -> list[Case]:
    t = _tf()
    moe = dict(num_experts_per_tok=2)
    return [
        Case(
            "mixtral",
            "moe",
            _moe_build(t.MixtralForCausalLM, t.MixtralConfig(**DEC, **moe, num_local_experts=4)),
            _causal,
            last_logits,
        ),
        Case(
            "qwen2-moe",
            "moe",
            _moe_build(
                t.Qwen2MoeForCausalLM,
                t.Qwen2MoeConfig(
                    **DEC, **moe, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=32
                ),
            ),
            _causal,
            last_logits,
        ),
        Case(
            "olmoe",
            "moe",
            _moe_build(t.OlmoeForCausalLM, t.OlmoeConfig(**DEC, **moe, num_experts=4)),
            _causal,
            last_logits,
        ),
    ]


def tiny_cases() -> list[Case]:
    """Every family of the transformers sweep, tiny configs."""
    return [
        *_text_encoders(),
        *_decoders(),
        *_encoder_decoders(),
        *_vision(),
        *_audio_cases(),
        *_multimodal(),
        *_state_space(),
        *_moe(),
    ]


def tiny_case(name: str) -> Case:
    for case in tiny_cases():
        if case.name == name:
            return case
    raise KeyError(f"no tiny case {name!r}; known: {', '.join(c.name for c in tiny_cases())}")


# -- the DynamicLRP paper's 15 architectures at their published sizes ------------------------------------------------
TEXT_LEN = 128  # tokens for the text models at published sizes
MAMBA_LEN = 16  # tokens for Mamba: its reference scan unrolls one step per token (nodes grow linearly)


def _meta_randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)  # meta when built under torch.device("meta")


def _meta_ids(batch: int, n: int, vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, n))


def _torchvision(name: str, size: int) -> Case:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None).eval()

    return Case(
        name,
        "torchvision",
        build,
        lambda gen: {"x": _meta_randn(1, 3, size, size)},
        extra={"composite": "epsilon_plus_flat"},
    )


def _hf(name: str, build: Callable[[], nn.Module], inputs: Callable[[Any], dict], output: Any = None) -> Case:
    return Case(name, "transformers", build, inputs, output)


def llama_3_2_1b_config(layers: int = 16) -> Any:
    """meta-llama/Llama-3.2-1B's configuration (its first ``layers`` of 16 layers), for transformers 5 or 4."""
    t = _tf()
    rope = dict(
        rope_type="llama3",
        rope_theta=500000.0,
        factor=32.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    )
    kw: dict[str, Any] = dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        use_cache=False,
    )
    if int(t.__version__.split(".")[0]) >= 5:
        kw["rope_parameters"] = rope
    else:  # transformers 4 (the LXT environment)
        kw.update(rope_theta=rope.pop("rope_theta"), rope_scaling=rope)
    return t.LlamaConfig(**kw)


def paper15() -> list[Case]:
    """VGG16, ResNet-50, ViT-B/16, EfficientNetV2-M, SigLIP2-So400m, Wav2Vec2-XLS-R-300m, Whisper-small, GPT-2,
    RoBERTa-large, Llama-3.2-1B, Gemma-3-270m, Qwen3-0.6B, Flan-T5-large, DePlot (Pix2Struct-base) and Mamba-130m,
    with the configs of their published checkpoints written out (hub ``config.json`` values; random weights)."""
    t = _tf()
    so400m = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16)
    siglip2 = t.SiglipConfig(  # google/siglip2-so400m-patch14-384 (fixed resolution: the SigLIP architecture)
        vision_config=dict(**so400m, image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh"),
        text_config=dict(**so400m, vocab_size=256000, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh"),
    )
    xlsr = t.Wav2Vec2Config(  # facebook/wav2vec2-xls-r-300m
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        num_labels=2,
    )
    whisper = t.WhisperConfig(  # openai/whisper-small
        vocab_size=51865,
        num_mel_bins=80,
        d_model=768,
        encoder_layers=12,
        decoder_layers=12,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_source_positions=1500,
        max_target_positions=448,
        use_cache=False,
    )
    roberta = t.RobertaConfig(  # FacebookAI/roberta-large
        vocab_size=50265,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        num_labels=2,
    )
    llama = llama_3_2_1b_config()
    gemma3 = t.Gemma3TextConfig(  # google/gemma-3-270m
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        max_position_embeddings=32768,
        query_pre_attn_scalar=256,
        sliding_window=512,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
        use_cache=False,
    )
    qwen3 = t.Qwen3Config(  # Qwen/Qwen3-0.6B
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        use_cache=False,
    )
    flan_t5 = t.T5Config(  # google/flan-t5-large
        vocab_size=32128,
        d_model=1024,
        d_kv=64,
        d_ff=2816,
        num_layers=24,
        num_decoder_layers=24,
        num_heads=16,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        use_cache=False,
        decoder_start_token_id=0,
    )
    rel = dict(relative_attention_num_buckets=32, relative_attention_max_distance=128)
    deplot = t.Pix2StructConfig(  # google/deplot (Pix2Struct-base)
        vision_config=dict(
            hidden_size=768,
            patch_embed_hidden_size=768,
            d_ff=2048,
            d_kv=64,
            num_hidden_layers=12,
            num_attention_heads=12,
            seq_len=4096,
            **rel,
        ),
        text_config=dict(
            vocab_size=50244, hidden_size=768, d_ff=2048, d_kv=64, num_layers=12, num_heads=12, use_cache=False, **rel
        ),
        is_vqa=True,
    )
    mamba = t.MambaConfig(  # state-spaces/mamba-130m-hf
        vocab_size=50280,
        hidden_size=768,
        state_size=16,
        num_hidden_layers=24,
        expand=2,
        conv_kernel=4,
        use_cache=False,
    )

    def lm_inputs(vocab: int, n: int = TEXT_LEN) -> Callable[[Any], dict]:
        return lambda gen: {"input_ids": _meta_ids(1, n, vocab), "use_cache": False}

    def seq2seq(vocab: int) -> Callable[[Any], dict]:
        return lambda gen: {
            "input_ids": _meta_ids(1, TEXT_LEN, vocab),
            "decoder_input_ids": _meta_ids(1, 16, vocab),
            "use_cache": False,
        }

    def deplot_inputs(gen: Any) -> dict:
        patches = 1024  # DePlot's processor default (max_patches)
        return {
            "flattened_patches": _meta_randn(1, patches, 2 + 16 * 16 * 3),
            "attention_mask": torch.ones(1, patches),
            "decoder_input_ids": _meta_ids(1, 16, 50244),
            "use_cache": False,
        }

    return [
        _torchvision("vgg16", 224),
        _torchvision("resnet50", 224),
        _torchvision("vit_b_16", 224),
        _torchvision("efficientnet_v2_m", 480),
        _hf(
            "siglip2-so400m",
            _sdpa(t.SiglipModel, siglip2),
            lambda gen: {"pixel_values": _meta_randn(1, 3, 384, 384), "input_ids": _meta_ids(1, 64, 256000)},
            image_text_logits,
        ),
        _hf(
            "wav2vec2-xls-r-300m",
            _sdpa(t.Wav2Vec2ForSequenceClassification, xlsr),
            lambda gen: {"input_values": _meta_randn(1, 16000)},
        ),
        _hf(
            "whisper-small",
            _sdpa(t.WhisperForConditionalGeneration, whisper),
            lambda gen: {
                "input_features": _meta_randn(1, 80, 3000),
                "decoder_input_ids": _meta_ids(1, 16, 51865),
                "use_cache": False,
            },
            last_logits,
        ),
        _hf("gpt2", _sdpa(t.GPT2LMHeadModel, t.GPT2Config(use_cache=False)), lm_inputs(50257), last_logits),
        _hf(
            "roberta-large",
            _sdpa(t.RobertaForSequenceClassification, roberta),
            lambda gen: {"input_ids": _meta_ids(1, TEXT_LEN, 50265), "attention_mask": torch.ones(1, TEXT_LEN)},
        ),
        _hf("llama-3.2-1b", _sdpa(t.LlamaForCausalLM, llama), lm_inputs(128256), last_logits),
        _hf("gemma-3-270m", _sdpa(t.Gemma3ForCausalLM, gemma3), lm_inputs(262144), last_logits),
        _hf("qwen3-0.6b", _sdpa(t.Qwen3ForCausalLM, qwen3), lm_inputs(151936), last_logits),
        _hf("flan-t5-large", _sdpa(t.T5ForConditionalGeneration, flan_t5, "eager"), seq2seq(32128), last_logits),
        _hf("deplot", _sdpa(t.Pix2StructForConditionalGeneration, deplot, "eager"), deplot_inputs, last_logits),
        _hf("mamba-130m", _sdpa(t.MambaForCausalLM, mamba, "eager"), lm_inputs(50280, MAMBA_LEN), last_logits),
    ]


def paper_case(name: str) -> Case:
    for case in paper15():
        if case.name == name:
            return case
    raise KeyError(f"no paper case {name!r}; known: {', '.join(c.name for c in paper15())}")
