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
``LRP_FX_LINEAR_KERNEL=stacked``: cuBLAS GEMMs + fused elementwise kernels; the fused Triton GEMMs only with
``--fused-linear``) and ``memory_budget=0``. ``--compiled`` adds ``torch.compile(model, backend=lrp_fx.backend(...))``
rows and PyTorch's compiled gradient; ``--reuse-weights-check`` adds each preset with ``reuse_weights=False``;
``--folded-conv`` adds CNN rows with ``LRP_FX_CONV_KERNEL=folded`` (AlphaBeta/Gamma in fewer cuDNN products).
``--dry-run`` runs the same code paths on this CPU (one call per measurement), to check the script before a lease.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback

import torch

#: the kernel switches (read per call by ``lrp_fx`` and ``kernels``) as the library's defaults set them
KERNEL_ENV = {"LRP_FX_KERNELS": "auto", "LRP_FX_LINEAR_KERNEL": "fused", "LRP_FX_CONV_KERNEL": "stacked"}
#: ``--dry-run``: CPU, one timed call instead of do_bench, no peak memory (checks the script's code paths here)
DRY_RUN = False
DEVICE = "cuda"


def _bench(fn, rep_ms: int = 300) -> float:
    if DRY_RUN:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=50, rep=rep_ms, return_mode="median")


def _peak(fn) -> int:
    if DRY_RUN:
        return 1
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


HEADER = [
    "| model | dtype | method | median ms | x fwd+grad | peak MB | x fwd+grad | build s | rel err vs fp64, same eps |",
    "|---|---|---|---|---|---|---|---|---|",
]


def end_to_end(
    models: list[str], batch: int, dtypes: list[str], presets: list[str], on_rows=None, **opts: bool
) -> list[str]:
    """Rows of the end-to-end table; ``on_rows(rows)`` after each model and dtype (so a run cut off by the device's
    time limit keeps what it measured)."""
    rows = list(HEADER)
    for name in models:
        for dt_name in dtypes:
            try:
                new = _measure_model(name, dt_name, batch, presets, **opts)
            except Exception as err:  # keep the run going: one failure must not lose the other numbers
                traceback.print_exc()
                new = [_failed_row(name, dt_name, "", err)]
            rows += new
            print("\n".join(new), flush=True)
            if not DRY_RUN:
                torch.cuda.empty_cache()
            if on_rows is not None:
                on_rows(rows)
    return rows


def _measure_model(
    name: str,
    dt_name: str,
    batch: int,
    presets: list[str],
    fused_linear: bool = False,
    torch_rules: bool = True,
    compiled: bool = False,
    reuse_check: bool = False,
    folded_conv: bool = False,
) -> list[str]:
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt_name]
    model, x, target = setup(name, dt, batch, DEVICE)

    def fwd():
        with torch.no_grad():
            model(x)

    grad = gradient_fn(model, x, target)
    t_f, t_g = _bench(fwd), _bench(grad)
    m_f, m_g = _peak(fwd), _peak(grad)
    rows = [
        _row(name, dt_name, "forward", t_f, m_f, t_g, m_g),
        _row(name, dt_name, "fwd+input-grad", t_g, m_g, t_g, m_g),
    ]
    print("\n".join(rows), flush=True)  # a run cut off later still has the baseline in its log
    # (label, kernel switches other than KERNEL_ENV's defaults, extra attribute() arguments, only for this preset)
    variants = [("kernels", {}, {}, None)]
    # torch rules in fp32 (and in bf16 for ViT-B/16, where the kernels' gain on short sequences is in question)
    with_off = torch_rules and (dt is torch.float32 or name.startswith("vit"))
    variants += [("torch rules", {"LRP_FX_KERNELS": "off"}, {}, None)] if with_off else []
    if reuse_check:  # the weight cache's per-call check ends in a device sync; this skips it (and the cache)
        variants += [("kernels, reuse_weights=False", {}, {"reuse_weights": False}, None)]
    if folded_conv and not name.startswith("vit"):  # AlphaBeta/Gamma convolutions with fewer cuDNN products
        variants += [("kernels, folded conv", {"LRP_FX_CONV_KERNEL": "folded"}, {}, None)]
    if name.startswith("vit"):
        # the fused Triton GEMMs lost to cuBLAS 2-6x in the kernel table (docs/gpu.md): opt-in only
        variants += [("kernels, fused linear", {"LRP_FX_KERNELS": "all"}, {}, None)] if fused_linear else []
        stacked = {"LRP_FX_KERNELS": "all", "LRP_FX_LINEAR_KERNEL": "stacked"}
        variants += [("kernels, stacked linear", stacked, {}, None)]
        # the planner's least-memory plan (bit-identical relevance; about a gradient's memory on CPU), cplrp only
        variants += [("kernels, memory_budget=0", {}, {"memory_budget": 0}, "cplrp")]
        presets = VIT_PRESETS
    for preset in presets:
        for label, env, extra, only in variants:
            if only is not None and preset != only:
                continue
            kw = dict(preset_kw(preset), **extra)
            os.environ.update(KERNEL_ENV, **env)
            try:  # one failing variant must not lose the model's other rows
                rows.append(_measure_variant(model, x, target, name, dt_name, preset, kw, label, t_g, m_g))
            except Exception as err:
                traceback.print_exc()
                rows.append(_failed_row(name, dt_name, f"lrp {preset} ({label})", err))
            print(rows[-1], flush=True)
    os.environ.update(KERNEL_ENV)
    if compiled:
        rows += _compiled_rows(model, x, target, name, dt_name, presets, t_g, m_g)
    return rows


def setup(name: str, dt: torch.dtype, batch: int, device: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A torchvision model (random weights, frozen, eval), a batch of 224 px inputs and one class target each."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    if name.startswith("vit"):
        with torch.no_grad():  # torchvision zero-initialises the head: every logit (and relevance) would be 0
            torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    model = model.eval().to(device, dt)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dt)
    target = torch.randint(0, 1000, (batch,), device=device)
    return model, x, target


def gradient_fn(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor):
    """Forward + input gradient of the target logits: the baseline every ratio is taken to."""

    def grad():
        xx = x.detach().requires_grad_(True)
        out = model(xx)
        seed = torch.zeros_like(out).scatter_(1, target[:, None], 1.0)
        torch.autograd.grad(out, xx, seed)

    return grad


def preset_kw(preset: str) -> dict:
    """The preset's rule parameters (bf16 runs on the library's half-precision defaults, epsilon = stabilizer =
    1e-2, ``lrp_fx/composites.py``)."""
    return {"low": -3.0, "high": 3.0} if preset == "epsilon_gamma_box" else {}


def _row(name, dt_name, label, t, m, t_g, m_g, build: float | None = None, err: str = "") -> str:
    """One table row: time and peak memory, each also as a ratio to forward + input gradient."""
    build_s = "" if build is None else f"{build:.1f}"
    return (
        f"| {name} | {dt_name} | {label} | {t:.2f} | {t / t_g:.2f} | {m / 2**20:.0f} | {m / m_g:.2f} | {build_s} | "
        f"{err} |"
    )


def _failed_row(name: str, dt_name: str, label: str, err: Exception) -> str:
    return f"| {name} | {dt_name} | {label} FAILED: {type(err).__name__}: {str(err)[:80]} | | | | | | |"


def _first_call(fn):
    """``fn()``'s result and the seconds it took (on a GPU, to the end of its device work): a build's cost."""
    t0 = time.perf_counter()
    out = fn()
    if not DRY_RUN:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _compiled_rows(model, x, target, name, dt_name, presets, t_g, m_g) -> list[str]:
    """``torch.compile(model, backend=lrp_fx.backend(preset))`` with the torch rules (Inductor fuses their
    elementwise work), then PyTorch's own compiled forward + input gradient: ratios stay to the eager gradient."""
    import lrp_fx

    rows = []
    with torch.no_grad():
        out0 = model(x)
    seed = torch.zeros_like(out0).scatter_(1, target[:, None], 1.0)
    os.environ["LRP_FX_KERNELS"] = "off"
    runs = [(preset, {}) for preset in presets]
    if "cplrp" in presets:  # the least-memory plan through Inductor (on CPU: 2.06x -> 1.19x a gradient's peak)
        runs.append(("cplrp", {"memory_budget": 0}))
    for preset, extra in runs:
        kw = dict(preset_kw(preset), **extra)
        label = f"lrp {preset} (torch.compile backend, torch rules{', memory_budget=0' if extra else ''})"
        try:
            eager = lrp_fx.attribute(model, x, target=seed, composite=preset, **kw).relevance
            cmodel = torch.compile(model, backend=lrp_fx.backend(preset, **kw))
            rows.append(_compiled_row(cmodel, x, seed, name, dt_name, label, t_g, m_g, eager))
            del eager
        except Exception as err:
            traceback.print_exc()
            rows.append(_failed_row(name, dt_name, label, err))
        print(rows[-1], flush=True)
        torch.compiler.reset()
    os.environ["LRP_FX_KERNELS"] = "auto"
    label = "fwd+input-grad (torch.compile, inductor)"
    try:
        rows.append(_compiled_row(torch.compile(model), x, seed, name, dt_name, label, t_g, m_g))
    except Exception as err:
        traceback.print_exc()
        rows.append(_failed_row(name, dt_name, label, err))
    print(rows[-1], flush=True)
    torch.compiler.reset()
    return rows


def _compiled_row(cmodel, x, seed, name, dt_name, label, t_g, m_g, reference=None) -> str:
    """One compiled method's row: its first call (Dynamo + build + Inductor) as build time; the last column is the
    relative difference to eager ``lrp_fx.attribute`` in the same dtype where ``reference`` is given."""

    def run():
        xx = x.detach().requires_grad_(True)
        return torch.autograd.grad(cmodel(xx), xx, seed)[0]

    rel, build = _first_call(run)
    t, m = _bench(run), _peak(run)
    err = "" if reference is None else f"{((rel - reference).norm() / reference.norm()).item():.1e} vs eager"
    return _row(name, dt_name, label, t, m, t_g, m_g, build, err)


def _measure_variant(model, x, target, name, dt_name, preset, kw, label, t_g, m_g) -> str:
    import lrp_fx

    def run():
        return lrp_fx.attribute(model, x, target=target, composite=preset, **kw)

    first, build = _first_call(run)
    t_l, m_l = _bench(run), _peak(run)
    err = _rel_error(name, model, preset, kw, x[:2], target[:2], first.relevance[:2])
    return _row(name, dt_name, f"lrp {preset} ({label})", t_l, m_l, t_g, m_g, build, f"{err:.1e}")


#: ViT-B/16 takes the transformer presets (the CNN presets are for convolutional networks)
VIT_PRESETS = ["cplrp", "attnlrp"]
_REFERENCE: dict = {}


def _rel_error(name: str, model, preset: str, kw: dict, x, target, got) -> float:
    """Relevance ``got`` of the first two inputs ``x``, ``target`` (in the model's dtype) vs the torch rules in
    float64 on the same inputs and weights (computed once per model, preset and stabiliser).

    The float64 reference takes the stabilisers the model's dtype ran with (in half precision the library's defaults
    are 1e-2, not 1e-6), so the error is rounding, not the change of rule that a larger epsilon is: on a
    random-weight ViT-B/16 in bf16 on CPU that is 0.11 against 0.91 with the float64 default."""
    import copy

    import lrp_fx
    from lrp_fx.composites import HALF_PRECISION_STABILIZER

    half = x.dtype in (torch.bfloat16, torch.float16)
    key = (name, preset, half)
    if key not in _REFERENCE:
        ref_model = copy.deepcopy(model).double()
        kw64 = {k: v for k, v in kw.items() if k in ("low", "high")}
        kw64.update(dict(epsilon=HALF_PRECISION_STABILIZER, stabilizer=HALF_PRECISION_STABILIZER) if half else {})
        mode = os.environ.get("LRP_FX_KERNELS", "auto")
        os.environ["LRP_FX_KERNELS"] = "off"
        ref = lrp_fx.attribute(ref_model, x.double(), target=target, composite=preset, **kw64).relevance
        _REFERENCE[key] = ref
        os.environ["LRP_FX_KERNELS"] = mode
    ref = _REFERENCE[key]
    return ((got.double() - ref).norm() / ref.norm()).item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.environ.get("OUT", "docs"))
    ap.add_argument("--models", default="vgg16,resnet50,vit_b_16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--presets", default="epsilon,epsilon_plus_flat,epsilon_gamma_box")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--kernel-timeout", type=int, default=240)
    ap.add_argument("--kernel-args", default="", help="extra arguments for gpu_kernels.py, e.g. '--only linear'")
    ap.add_argument("--fused-linear", action="store_true", help="ViT-B/16: also the fused Triton linear GEMMs")
    ap.add_argument("--no-torch-rules", action="store_true", help="skip the fp32 'torch rules' (kernels off) rows")
    ap.add_argument(
        "--compiled",
        action="store_true",
        help="also torch.compile(backend=lrp_fx.backend(preset)) and a compiled gradient",
    )
    ap.add_argument("--table", default="gpu_end_to_end.md", help="file name of the end-to-end table under --out")
    ap.add_argument(
        "--reuse-weights-check",
        action="store_true",
        help="also each preset with reuse_weights=False (no weight cache, so no per-call check and its device sync)",
    )
    ap.add_argument(
        "--folded-conv",
        action="store_true",
        help="CNNs: also each preset with LRP_FX_CONV_KERNEL=folded (kernels/signsplit_folded.py)",
    )
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="on this CPU, without kernels' timing or memory: one call per measurement (checks the code paths)",
    )
    args = ap.parse_args()
    global DRY_RUN, DEVICE
    if args.dry_run:
        DRY_RUN, DEVICE, args.skip_kernels = True, "cpu", True
    os.makedirs(args.out, exist_ok=True)
    device_name = "cpu (dry run)" if DRY_RUN else torch.cuda.get_device_name()
    print(f"device: {device_name}  torch {torch.__version__}", flush=True)
    if not args.skip_kernels:
        cmd = [sys.executable, "benchmarks/gpu_kernels.py", "--out", os.path.join(args.out, "gpu_kernels_table.md")]
        cmd += ["--budget", str(args.kernel_timeout - 40), *args.kernel_args.split()]
        try:
            subprocess.run(cmd, timeout=args.kernel_timeout, check=False)
        except subprocess.TimeoutExpired:
            print("kernel benchmark timed out", flush=True)

    def write(rows: list[str]) -> str:
        table = "\n".join([f"device: {device_name}, torch {torch.__version__}, batch {args.batch}", "", *rows])
        with open(os.path.join(args.out, args.table), "w") as f:
            f.write(table + "\n")
        return table

    models, dtypes, presets = args.models.split(","), args.dtypes.split(","), args.presets.split(",")
    opts = dict(
        fused_linear=args.fused_linear,
        torch_rules=not args.no_torch_rules,
        compiled=args.compiled,
        reuse_check=args.reuse_weights_check,
        folded_conv=args.folded_conv,
    )
    rows = end_to_end(models, args.batch, dtypes, presets, write, **opts)
    print(write(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
