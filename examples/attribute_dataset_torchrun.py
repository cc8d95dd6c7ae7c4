"""Attribute a whole dataset, in one process or several, with ``lrp_fx.attribute_dataset``.

A small CNN with seeded random weights on a synthetic dataset of 3x16x16 images (nothing to download), so the
script runs anywhere in seconds. The same command works in one process and under ``torchrun``; each process builds
the same model and the same data loader, takes every ``world_size``-th shard, and rank 0 writes the merged index:

    python examples/attribute_dataset_torchrun.py --out /tmp/rel_1                    # one process
    torchrun --nproc_per_node 2 examples/attribute_dataset_torchrun.py --out /tmp/rel_2   # two (gloo on CPU)

``lrp_fx.load_relevance("/tmp/rel_1")`` and ``lrp_fx.load_relevance("/tmp/rel_2")`` then hold identical tensors.
Stop it (Ctrl-C, a kill) and run the same command again: finished shards are kept, the rest is computed. With GPUs,
each process uses ``cuda:LOCAL_RANK`` and the process group uses nccl.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import lrp_fx
from lrp_fx.dataset import local_device


def build_model(seed: int = 0) -> nn.Module:
    """Two convolutions, ReLU, global average pooling and a linear layer: 3x16x16 images, 10 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()


def build_dataset(samples: int, seed: int = 1) -> torch.utils.data.TensorDataset:
    """Random images with random labels (the same on every process: seeded)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(samples, 3, 16, 16, generator=gen)
    labels = torch.randint(0, 10, (samples,), generator=gen)
    return torch.utils.data.TensorDataset(images, labels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (rerunning into it resumes)")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches-per-shard", type=int, default=2)
    parser.add_argument("--composite", default="epsilon_plus_flat")
    parser.add_argument("--target", default="predicted", help="'predicted', 'label' or a class index")
    args = parser.parse_args(argv)

    device = local_device()
    model = build_model().to(device)
    loader = torch.utils.data.DataLoader(build_dataset(args.samples), batch_size=args.batch_size, shuffle=False)
    target = None if args.target == "predicted" else ("label" if args.target == "label" else int(args.target))
    res = lrp_fx.attribute_dataset(
        model,
        loader,
        args.out,
        target=target,
        composite=args.composite,
        batches_per_shard=args.batches_per_shard,
    )
    print(
        f"rank {res.rank}/{res.world_size}: computed shards {res.computed}, skipped {res.skipped}, "
        f"{res.samples_computed} samples in {res.seconds:.2f} s ({res.samples_per_second:.1f} samples/s); "
        f"index: {res.num_shards} shards, {res.num_samples} samples, complete={res.complete}",
        flush=True,
    )


if __name__ == "__main__":
    main()
