"""``lrp_fx.attribute`` on long sequences on a GPU: the attention rule through its Triton kernel
(``LRP_FX_KERNELS=auto``, from 1024 keys on) next to the dense torch rule (``off``) and forward + input gradient.

    PYTHONPATH=. python benchmarks/gpu_attention_e2e.py --tokens 1024,4096,16384 --out "$OUT/attention_e2e.md"
    PYTHONPATH=. python benchmarks/gpu_attention_e2e.py --device cpu --tokens 64 --repeats 1   # this script's paths

The model is a small causal transformer written with ``F.scaled_dot_product_attention`` (grouped-query heads, 8 query
and 2 kv heads of 64, pre-norm blocks, a token-mean classifier head) on float inputs ``[1, N, 256]``. Per sequence
length and dtype it prints one table row per method: the median time (``triton.testing.do_bench`` on CUDA, a timer
loop on CPU), the ratio to forward + input gradient, the peak memory above the inputs (CUDA), and the relevance's
relative difference to the dense torch rule of the same dtype. The dense rule materialises ``[heads, N, N]`` scores
several times: at 16k tokens in float32 about 8 GiB per copy, which is the memory the kernel saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lrp_fx


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim)
        self.o = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(h).view(b, n, self.kv_heads, 2 * self.head_dim).transpose(1, 2).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class Model(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8, kv_heads: int = 2, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(dim, heads, kv_heads) for _ in range(layers)))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(1))


def median_ms(fn, device: str, repeats: int) -> float:
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=1, rep=max(1, repeats) * 50))
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib(fn, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def attribute_with(mode: str, model, x, preset: str):
    def run():
        os.environ["LRP_FX_KERNELS"] = mode
        try:
            return lrp_fx.attribute(model, x, target=0, composite=preset)
        finally:
            os.environ.pop("LRP_FX_KERNELS", None)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--presets", default="attnlrp,cplrp")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    lines = [
        f"device: {name}, torch {torch.__version__}; model: 2 pre-norm blocks, dim 256, 8 query / 2 kv heads, causal",
        "",
        "| tokens | dtype | method | median ms | x fwd+grad | peak MiB | rel. diff to dense rule |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n in (int(t) for t in args.tokens.split(",")):
        for dt_name in args.dtypes.split(","):
            dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt_name]
            torch.manual_seed(0)
            model = Model().to(dev, dt).eval()
            x = torch.randn(1, n, 256, device=dev, dtype=dt)

            def gradient(model=model, x=x):
                xi = x.detach().requires_grad_()
                out = model(xi)
                return torch.autograd.grad(out[:, 0].sum(), xi)[0]

            rows, base = [], None
            try:
                base = median_ms(gradient, dev, args.repeats)
                rows.append(("fwd+input-grad", base, peak_mib(gradient, dev), ""))
                for preset in args.presets.split(","):
                    results = {}
                    kernel = "auto" if dev == "cuda" else "all"  # on CPU "all" runs the kernel op's torch reference
                    for mode, label in (("off", "dense torch rule"), (kernel, f"kernel ({kernel})")):
                        fn = attribute_with(mode, model, x, preset)
                        try:
                            results[mode] = fn().relevance.float()
                            rows.append((f"lrp {preset}, {label}", median_ms(fn, dev, args.repeats), peak_mib(fn, dev)))
                        except torch.OutOfMemoryError:
                            rows.append((f"lrp {preset}, {label}", None, None, "out of memory"))
                        if dev == "cuda":
                            torch.cuda.empty_cache()
                    if "off" in results and kernel in results:
                        ref = results["off"]
                        diff = float((results[kernel] - ref).norm() / ref.norm().clamp_min(1e-30))
                        rows[-1] = (*rows[-1][:3], f"{diff:.2e}")
            except torch.OutOfMemoryError:
                rows.append(("fwd+input-grad", None, None, "out of memory"))
            for row in rows:
                label, ms, mib = row[:3]
                note = row[3] if len(row) > 3 else ""
                ratio = f"{ms / base:.2f}" if ms is not None and base else ""
                line = (
                    f"| {n} | {dt_name} | {label} | {'' if ms is None else f'{ms:.1f}'} | {ratio} | "
                    f"{'' if mib is None else f'{mib:.0f}'} | {note} |"
                )
                lines.append(line)
                print(line, flush=True)
            if dev == "cuda":
                torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
