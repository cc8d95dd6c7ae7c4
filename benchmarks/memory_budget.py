"""What ``memory_budget=0`` costs and saves on CNNs and transformers: time, peak memory and kept forward values.

``memory_budget=0`` makes the promise planner recompute every forward value it can rebuild from kept values by cheap
ops (element-wise ops, views, copies, layer norms; chains of at most 8 data-moving ops, reading at most 8 times the
value's bytes) right before the rule that needs it, instead of keeping it from the forward pass
(``lrp_fx/promises.py``). The relevance is bit-identical (checked here). This script measures
the trade side by side with the default (keep everything) and forward + input gradient:

    python benchmarks/memory_budget.py                      # resnet50, vgg16, vit_b_16, bert_base at batch 4
    python benchmarks/memory_budget.py --models resnet50 --batch 8 --repeats 5

Time: one intra-op thread, CPU seconds per call, median of ``--repeats`` interleaved repeats, as a ratio to forward +
input gradient. Peak: the resident-set high-water mark above the level before the call, in a fresh process per
method (``_measure.PeakRSS``, glibc's mmap threshold fixed so freed memory is returned; see ``_measure.py``).
Kept: ``Attribution.stats.bytes_kept``, the forward values held for the relevance pass. Writes
``docs/memory_budget.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _measure  # noqa: E402

import lrp_fx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "memory_budget.md"
#: model -> the preset it is explained with (each family's usual choice)
MODELS = {"resnet50": "epsilon_plus_flat", "vgg16": "epsilon_gamma_box", "vit_b_16": "cplrp", "bert_base": "cplrp"}
METHODS = ("gradient", "lrp_fx", "lrp_fx memory_budget=0")


def build(name: str, batch: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """The model (eval, frozen), its inputs as keyword arguments (``x`` floating) and a one-hot seed."""
    if name in ("bert_base", "vit_b_16"):  # the transformer suite's models (ViT's zero-initialised head re-drawn)
        import speed_transformers

        model = speed_transformers.build(name)
        inputs, seed = speed_transformers.make_inputs(name, batch, model)
        return model, inputs, seed
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    seed = torch.nn.functional.one_hot(out.argmax(1), out.shape[1]).to(x.dtype)
    return model, {"x": x}, seed


def method(name: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor], seed: torch.Tensor, preset: str):
    rest = {k: v for k, v in inputs.items() if k != "x"}
    if name == "gradient":

        def gradient() -> torch.Tensor:
            x = inputs["x"].detach().requires_grad_(True)
            return torch.autograd.grad(model(x, **rest), x, seed)[0]

        return gradient
    kw: dict[str, Any] = {"memory_budget": 0} if name.endswith("memory_budget=0") else {}
    if preset == "epsilon_gamma_box":  # the box: the range of these (normal random) inputs
        kw.update(low=float(inputs["x"].min()), high=float(inputs["x"].max()))

    def lrp() -> lrp_fx.Attribution:
        return lrp_fx.attribute(model, inputs if rest else inputs["x"], target=seed, composite=preset, **kw)

    return lrp


def probe(model_name: str, batch: int, name: str) -> dict[str, Any]:
    """Peak RSS of one call (after a warm-up call), in this process."""
    model, inputs, seed = build(model_name, batch)
    fn = method(name, model, inputs, seed, MODELS[model_name])
    fn()
    return {"peak_mb": _measure.call_peak(fn)[0] / 2**20}


def bench(model_name: str, batch: int, repeats: int) -> dict[str, Any]:
    model, inputs, seed = build(model_name, batch)
    preset = MODELS[model_name]
    fns = {n: method(n, model, inputs, seed, preset) for n in METHODS}
    kept = fns["lrp_fx"]()
    low = fns["lrp_fx memory_budget=0"]()
    rel = lambda a: a.relevance["x"] if isinstance(a.relevance, dict) else a.relevance  # noqa: E731
    identical = bool(torch.equal(rel(kept), rel(low)))
    fns["gradient"]()
    cpu: dict[str, list[float]] = {n: [] for n in METHODS}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit every method alike
        for n, fn in fns.items():
            cpu[n].append(_measure.timed(fn)[1])
    peaks = {}
    for n in METHODS:
        peaks[n] = _measure.probe_process([sys.executable, __file__, "--probe", model_name, str(batch), n])["peak_mb"]
    return {
        "model": model_name,
        "preset": preset,
        "batch": batch,
        "repeats": repeats,
        "cpu_s": {n: _measure.median(v) for n, v in cpu.items()},
        "ratio": {n: _measure.median([t / g for t, g in zip(v, cpu["gradient"])]) for n, v in cpu.items()},
        "peak_mb": peaks,
        "kept_mb": {"lrp_fx": kept.stats.bytes_kept / 2**20, "lrp_fx memory_budget=0": low.stats.bytes_kept / 2**20},
        "recomputed": low.stats.recomputed,
        "identical": identical,
    }


def render(rows: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "# `memory_budget=0`: time and memory next to the default",
        "",
        "Generated by `python benchmarks/memory_budget.py` (its docstring says what is measured); do not edit by hand. "
        f"{machine}",
        "",
        "*kept MB* (`stats.bytes_kept`): the forward values held for the relevance pass, each storage once (a kept "
        "view counts with the tensor it views). The peak adds the relevance pass's own tensors and allocator slack.",
        "",
        "| model | preset | batch | method | CPU s / call | / gradient | peak MB | peak / gradient's | kept MB "
        "| recomputed values | relevance identical |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        g = r["peak_mb"]["gradient"]
        for n in METHODS:
            kept = f"{r['kept_mb'][n]:.0f}" if n in r["kept_mb"] else ""
            extra = (str(r["recomputed"]), "yes" if r["identical"] else "**no**") if n.endswith("=0") else ("", "")
            lines.append(
                f"| {r['model']} | {r['preset']} | {r['batch']} | {n} | {r['cpu_s'][n]:.3f} | {r['ratio'][n]:.2f}x "
                f"| {r['peak_mb'][n]:.0f} | {r['peak_mb'][n] / g:.2f}x | {kept} | {extra[0]} | {extra[1]} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(DOC), help="markdown to write ('none': print only)")
    ap.add_argument("--probe", nargs=3, metavar=("MODEL", "BATCH", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.probe:
        name, batch, meth = args.probe
        print(json.dumps(probe(name, int(batch), meth)))
        return 0
    rows = []
    for name in args.models:
        rows.append(bench(name, args.batch, args.repeats))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = (
        f"Run on {platform.machine()} ({os.cpu_count()} CPUs visible, load average {load:.1f} at the end), "
        f"torch {torch.__version__}, 1 intra-op thread, float32, batch {args.batch}, median of {args.repeats} "
        "interleaved repeats."
    )
    text = render(rows, machine)
    print(text)
    if args.out != "none":
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
