"""Train the VGG-style Fashion-MNIST CNN of the faithfulness benchmark (``_models.FashionVGG``) on CPU.

    python benchmarks/train_fashion_mnist.py                 # 2 epochs, writes benchmarks/weights/fashion_vgg.pt
    python benchmarks/train_fashion_mnist.py --epochs 1 --out /tmp/f.pt   # a quick check

Data: the IDX files of Debian's ``dataset-fashion-mnist`` (see ``_data.fashion_mnist_dir``; ``python
benchmarks/faithfulness.py --fetch`` extracts them into the cache). Inputs are ``pixel / 255`` in ``[0, 1]``, no
normalisation, no augmentation. AdamW (lr 3e-3, cosine decay to 0, weight decay 1e-4), batch 128, seeded;
the model is trained on the 60k training images and the test accuracy on the 10k test images is printed once at the
end (no model selection on the test set).
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


def as_tensors(images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[N, 28, 28]`` and labels -> float ``[N, 1, 28, 28]`` in ``[0, 1]`` and int64 labels."""
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.copy())


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def train(epochs: int, batch: int, lr: float, seed: int) -> tuple[_models.FashionVGG, float]:
    """Train from scratch; returns the model and its test accuracy."""
    torch.manual_seed(seed)
    x_train, y_train = as_tensors(*_data.load_fashion_mnist("train"))
    x_test, y_test = as_tensors(*_data.load_fashion_mnist("test"))
    model = _models.FashionVGG()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x_train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        start, total = time.perf_counter(), 0.0
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x_train):.4f} ({time.perf_counter() - start:.0f} s)")
    test_acc = accuracy(model, x_test, y_test)
    print(f"train accuracy {accuracy(model, x_train, y_train):.4f}, test accuracy {test_acc:.4f}")
    return model.eval(), test_acc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=_models.FASHION_WEIGHTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = train(args.epochs, args.batch, args.lr, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
