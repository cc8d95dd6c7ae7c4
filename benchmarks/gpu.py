"""One prepared GPU run: kernel checks and timings, then end-to-end LRP vs forward+input-gradient.

Run on a lent GPU machine from the repository root:

    PYTHONPATH=. python benchmarks/gpu.py --out "$OUT"

Part 1 runs ``benchmarks/gpu_kernels.py`` (each Triton kernel against its torch reference in float64, then
``do_bench`` medians). Part 2 measures ``lrp_fx.attribute`` on CUDA against forward and forward+input-gradient on
VGG16, ResNet-50 and ViT-B/16 at batch 64 (fp32 and bf16): median times (``triton.testing.do_bench``), peak memory
(``torch.cuda.max_memory_allocated``), one-time build cost, and the relative error of the fp32/bf16 relevance
against a float64 run of the same program on a small batch. Tables are printed and written under ``--out``.

Kernel variants per preset: "kernels" (``LRP_FX_KERNELS=auto``: convolutions and attention in Triton, linear layers
on the torch rule) and, in fp32, "torch rules" (``off``); for ViT-B/16, whose cost is in its linear layers, also
"kernels, fused linear" (``all``: the Triton GEMMs) and "kernels, stacked linear" (``all`` with
``LRP_FX_LINEAR_KERNEL=stacked``: cuBLAS GEMMs + fused elementwise kernels).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback

import torch


def _bench(fn, rep_ms: int = 300) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=50, rep=rep_ms, return_mode="median")


def _peak(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


HEADER = [
    "| model | dtype | method | median ms | x fwd+grad | peak MB | x fwd+grad | build s | rel err vs fp64 |",
    "|---|---|---|---|---|---|---|---|---|",
]


def end_to_end(models: list[str], batch: int, dtypes: list[str], presets: list[str], on_rows=None) -> list[str]:
    """Rows of the end-to-end table; ``on_rows(rows)`` after each model and dtype (so a run cut off by the device's
    time limit keeps what it measured)."""
    rows = list(HEADER)
    for name in models:
        for dt_name in dtypes:
            try:
                new = _measure_model(name, dt_name, batch, presets)
            except Exception as err:  # keep the run going: one failure must not lose the other numbers
                traceback.print_exc()
                new = [f"| {name} | {dt_name} | FAILED: {type(err).__name__}: {str(err)[:80]} | | | | | | |"]
            rows += new
            print("\n".join(new), flush=True)
            torch.cuda.empty_cache()
            if on_rows is not None:
                on_rows(rows)
    return rows


def _measure_model(name: str, dt_name: str, batch: int, presets: list[str]) -> list[str]:
    import torchvision

    import lrp_fx

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt_name]
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    if name.startswith("vit"):
        with torch.no_grad():  # torchvision zero-initialises the head: every logit (and relevance) would be 0
            torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    model = model.eval().cuda().to(dt)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dt)
    target = torch.randint(0, 1000, (batch,), device="cuda")

    def fwd():
        with torch.no_grad():
            model(x)

    def grad():
        xx = x.detach().requires_grad_(True)
        out = model(xx)
        seed = torch.zeros_like(out).scatter_(1, target[:, None], 1.0)
        torch.autograd.grad(out, xx, seed)

    t_f, t_g = _bench(fwd), _bench(grad)
    m_f, m_g = _peak(fwd), _peak(grad)
    mb = 2**20
    rows = [
        f"| {name} | {dt_name} | forward | {t_f:.2f} | {t_f / t_g:.2f} | {m_f / mb:.0f} | {m_f / m_g:.2f} | | |",
        f"| {name} | {dt_name} | fwd+input-grad | {t_g:.2f} | 1.00 | {m_g / mb:.0f} | 1.00 | | |",
    ]
    variants = [("auto", "fused", "kernels", None)]
    variants += [("off", "fused", "torch rules", None)] if dt is torch.float32 else []
    if name.startswith("vit"):
        variants += [
            ("all", "fused", "kernels, fused linear", None),
            ("all", "stacked", "kernels, stacked linear", None),
        ]
        # the planner's least-memory plan (bit-identical relevance; about a gradient's memory on CPU), cplrp only
        variants += [("auto", "fused", "kernels, memory_budget=0", 0)]
        presets = VIT_PRESETS
    for preset in presets:
        base = {"low": -3.0, "high": 3.0} if preset == "epsilon_gamma_box" else {}
        if dt is torch.bfloat16:
            base.update(epsilon=1e-2, stabilizer=1e-2)
        for mode, linear, label, budget in variants:
            if budget is not None and preset != "cplrp":
                continue
            kw = dict(base, memory_budget=budget) if budget is not None else base
            os.environ["LRP_FX_KERNELS"] = mode
            os.environ["LRP_FX_LINEAR_KERNEL"] = linear
            t0 = time.perf_counter()
            lrp_fx.attribute(model, x, target=target, composite=preset, **kw)
            torch.cuda.synchronize()
            build = time.perf_counter() - t0

            def run(preset=preset, kw=kw):
                lrp_fx.attribute(model, x, target=target, composite=preset, **kw)

            t_l, m_l = _bench(run), _peak(run)
            err = _rel_error(name, model, preset, kw, dt)
            rows.append(
                f"| {name} | {dt_name} | lrp {preset} ({label}) | {t_l:.2f} | {t_l / t_g:.2f} | {m_l / mb:.0f} | "
                f"{m_l / m_g:.2f} | {build:.1f} | {err:.1e} |"
            )
            print(rows[-1], flush=True)
    os.environ["LRP_FX_KERNELS"] = "auto"
    os.environ["LRP_FX_LINEAR_KERNEL"] = "fused"
    return rows


#: ViT-B/16 takes the transformer presets (the CNN presets are for convolutional networks)
VIT_PRESETS = ["cplrp", "attnlrp"]
_REFERENCE: dict = {}


def _rel_error(name: str, model, preset: str, kw: dict, dt) -> float:
    """Relevance in ``dt`` vs the torch rules in float64 (computed once per model and preset), batch 2."""
    import copy

    import lrp_fx

    key = (name, preset)
    if key not in _REFERENCE:
        gen = torch.Generator(device="cuda").manual_seed(1)
        x64 = torch.randn(2, 3, 224, 224, device="cuda", dtype=torch.float64, generator=gen)
        ref_model = copy.deepcopy(model).double()
        kw64 = {k: v for k, v in kw.items() if k in ("low", "high")}
        mode = os.environ.get("LRP_FX_KERNELS", "auto")
        os.environ["LRP_FX_KERNELS"] = "off"
        _REFERENCE[key] = (x64, lrp_fx.attribute(ref_model, x64, target=[1, 2], composite=preset, **kw64).relevance)
        os.environ["LRP_FX_KERNELS"] = mode
    x, ref = _REFERENCE[key]
    got = lrp_fx.attribute(model, x.to(dt), target=[1, 2], composite=preset, **kw).relevance.double()
    return ((got - ref).norm() / ref.norm()).item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.environ.get("OUT", "docs"))
    ap.add_argument("--models", default="vgg16,resnet50,vit_b_16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--presets", default="epsilon,epsilon_plus_flat,epsilon_gamma_box")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--kernel-timeout", type=int, default=240)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    if not args.skip_kernels:
        cmd = [sys.executable, "benchmarks/gpu_kernels.py", "--out", os.path.join(args.out, "gpu_kernels_table.md")]
        cmd += ["--budget", str(args.kernel_timeout - 40)]
        try:
            subprocess.run(cmd, timeout=args.kernel_timeout, check=False)
        except subprocess.TimeoutExpired:
            print("kernel benchmark timed out", flush=True)

    def write(rows: list[str]) -> str:
        table = "\n".join(
            [f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}", "", *rows]
        )
        with open(os.path.join(args.out, "gpu_end_to_end.md"), "w") as f:
            f.write(table + "\n")
        return table

    rows = end_to_end(args.models.split(","), args.batch, args.dtypes.split(","), args.presets.split(","), write)
    print(write(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
