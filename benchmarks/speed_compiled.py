"""Compiled and exported attribution next to eager ``lrp_fx.attribute`` and a plain input gradient, on CPU.

    python benchmarks/speed_compiled.py                # ResNet-50 + ViT-B/16, batch 4 -> docs/compiled_benchmarks.md
    python benchmarks/speed_compiled.py --models resnet50 --batch 8 --repeats 5 --aoti
    python benchmarks/speed_compiled.py --from-json run.json  # re-render the doc from a saved run
    python benchmarks/speed_compiled.py --runs resnet50:epsilon_plus_flat resnet50:epsilon --unhoisted --aoti

``main(argv)`` returns 0, so ``benchmarks/speed.py`` can run it as its ``compiled`` suite.

Methods (one process, interleaved: each repeat runs every method once, the starting method rotating, so load from
other processes hits all alike; tables report medians over repeats, ratios are medians of per-repeat ratios):

* ``forward``: ``model(x)`` under ``no_grad``;
* ``gradient``: forward + input gradient, ``torch.autograd.grad(model(x), x, seed)``;
* ``eager``: ``lrp_fx.attribute(model, x, target=seed, composite=preset)`` (program cached);
* ``compiled``: ``torch.compile(model, backend=lrp_fx.backend(preset))``, then ``out = cmodel(x)`` and
  ``torch.autograd.grad(out, x, seed)``; its first call (Dynamo, capture, program build, Inductor) is the one-time
  cost, and every timed call is checked not to rebuild;
* ``compiled_unhoisted``, ``exported_unhoisted`` (``--unhoisted``): the same with ``reuse_weights=False`` (the
  parameter-only values recomputed in every call, not once): what weight hoisting buys;
* ``compiled_unfolded`` (``--unfolded``): the backend with ``fold_bmm=False`` (``lrp_fx.export.fold_broadcast_bmm``
  off: ``nn.MultiheadAttention``'s projections stay batched products with a broadcast weight);
* ``exported``: ``lrp_fx.export(model, x, composite=preset).module()(x, seed)`` (the exported graph run by PyTorch's
  interpreter; export time is the one-time cost);
* ``aoti`` (``--aoti``): the same exported program compiled with AOTInductor (``aoti_compile_and_package``, layout
  optimisation off as in the backend), loaded with ``aoti_load_package``; the compile is the one-time cost.

The seed is a one-hot output relevance. Every method's relevance is compared with eager ``attribute`` and with eager
``attribute`` of the model in float64 (relative L2 difference; the latter shows how well conditioned float32 LRP is
on the model, and whether a method is further from the exact value than eager is). Models have random weights;
ViT-B/16's zero-initialised head is re-initialised so its relevance is not identically zero.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _measure  # noqa: E402

import lrp_fx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "compiled_benchmarks.md"
MODELS = ("resnet50", "vit_b_16")
PRESETS = {"resnet50": "epsilon_plus_flat", "vit_b_16": "attnlrp"}  # docs/transformers.md: attnlrp for ViTs


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).float().eval()
    if name.startswith("vit"):
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_input(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 224, 224, generator=gen)
    seed = torch.zeros(batch, 1000)
    seed[torch.arange(batch), torch.arange(batch) * 37 % 1000] = 1.0
    return x, seed


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def supported(model: torch.nn.Module, preset: str) -> str | None:
    """``None`` if ``attribute`` runs on the model, else why not (e.g. a missing rule)."""
    try:
        lrp_fx.attribute(model, torch.randn(1, 3, 224, 224), composite=preset)
    except lrp_fx.MissingRuleError as err:
        return "MissingRuleError: " + " ".join(str(err).splitlines()[:2])
    return None


def _compiled_call(cmodel: Any, x: torch.Tensor, seed: torch.Tensor) -> Any:
    """Relevance of ``x`` through the compiled model: the gradient of its output for ``seed``."""

    def call() -> torch.Tensor:
        xx = x.clone().requires_grad_(True)
        return torch.autograd.grad(cmodel(xx), xx, seed)[0]

    return call


def bench(
    name: str,
    batch: int,
    preset: str,
    repeats: int,
    aoti: bool,
    log,
    unhoisted: bool = False,
    unfolded: bool = False,
) -> dict[str, Any]:
    model = make_model(name)
    x, seed = make_input(batch)
    res: dict[str, Any] = {"model": name, "batch": batch, "preset": preset, "repeats": repeats, "once_s": {}}
    why = supported(model, preset)
    if why is not None:
        res["skipped"] = why
        log(f"  {name}: skipped ({why})")
        return res

    def forward():
        with torch.no_grad():
            return model(x)

    def gradient():
        xx = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(xx), xx, seed)[0]

    def eager():
        return lrp_fx.attribute(model, x, target=seed, composite=preset).relevance

    be = lrp_fx.backend(preset)
    compiled = _compiled_call(torch.compile(model, backend=be), x, seed)

    fns: dict[str, Any] = {"forward": forward, "gradient": gradient, "eager": eager}
    outs: dict[str, torch.Tensor] = {}
    for n in ("forward", "gradient", "eager"):
        start = time.perf_counter()
        outs[n] = fns[n]()
        res["once_s"][n] = time.perf_counter() - start
        log(f"  first call {n:<10} {res['once_s'][n]:8.2f} s")
    start = time.perf_counter()
    outs["compiled"] = compiled()
    res["once_s"]["compiled"] = time.perf_counter() - start
    res["compile_detail"] = {
        "graphs": be.graphs,
        "builds": be.builds,
        "build_s": be.build_seconds,
        "inductor_s": be.compile_seconds,
    }
    log(f"  compile (first call) {res['once_s']['compiled']:8.2f} s  {res['compile_detail']}")
    fns["compiled"] = compiled
    backends = [be]
    variants = {"compiled_unhoisted": dict(reuse_weights=False)} if unhoisted else {}  # what hoisting buys
    if unfolded:  # the backend without fold_broadcast_bmm: what that rewrite buys
        variants["compiled_unfolded"] = dict(fold_bmm=False)
    for variant, options in variants.items():
        be_v = lrp_fx.backend(preset, **options)
        backends.append(be_v)
        fn = _compiled_call(torch.compile(model, backend=be_v), x, seed)
        start = time.perf_counter()
        outs[variant] = fn()
        res["once_s"][variant] = time.perf_counter() - start
        log(f"  compile, {variant.split('_', 1)[1]} (first call) {res['once_s'][variant]:8.2f} s")
        fns[variant] = fn
    start = time.perf_counter()
    prog = lrp_fx.export(model, x, composite=preset)
    res["once_s"]["exported"] = time.perf_counter() - start
    log(f"  export {res['once_s']['exported']:8.2f} s")
    module = prog.module()

    def exported():
        return module(x, seed)[1]

    fns["exported"] = exported
    outs["exported"] = exported()
    if unhoisted:
        module0 = lrp_fx.export(model, x, composite=preset, reuse_weights=False).module()

        def exported_unhoisted():
            return module0(x, seed)[1]

        fns["exported_unhoisted"] = exported_unhoisted
        outs["exported_unhoisted"] = exported_unhoisted()
    if aoti:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = torch._inductor.aoti_compile_and_package(
                prog,
                package_path=os.path.join(tmp, "attr.pt2"),
                inductor_configs={"layout_optimization": False},  # as the backend: see lrp_fx.backend._compile
            )
            runner = torch._inductor.aoti_load_package(path)
            res["once_s"]["aoti"] = time.perf_counter() - start
        log(f"  AOTInductor compile {res['once_s']['aoti']:8.2f} s")

        def aoti_run():
            return runner(x, seed)[1]

        fns["aoti"] = aoti_run
        outs["aoti"] = aoti_run()
    res["parity"] = {n: _rel_diff(outs[n], outs["eager"]) for n in fns if n not in ("forward", "gradient", "eager")}
    model64 = make_model(name).double()
    ref64 = lrp_fx.attribute(model64, x.double(), target=seed.double(), composite=preset).relevance
    res["parity"]["eager"] = _rel_diff(outs["eager"].double(), ref64)  # float32 vs float64: the conditioning
    res["parity64"] = {n: _rel_diff(outs[n].double(), ref64) for n in fns if n not in ("forward", "gradient")}
    del model64, ref64
    log(f"  parity (relative L2 to eager; eager: to float64): {res['parity']}")
    log(f"  relative L2 to eager attribute in float64: {res['parity64']}")
    del outs
    gc.collect()
    names = list(fns)
    res["methods"] = names
    res["times"] = {n: [] for n in names}
    res["cpu_times"] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            builds = [b.builds for b in backends]
            prologues = [b.prologue_runs for b in backends]
            wall, cpu = _measure.timed(fns[n])
            assert [b.builds for b in backends] == builds, f"{n}: a timed call rebuilt the program"
            assert [b.prologue_runs for b in backends] == prologues, f"{n}: a timed call recomputed the weights"
            res["times"][n].append(wall)
            res["cpu_times"][n].append(cpu)
        log("  repeat " + f"{r + 1}/{repeats}: " + "  ".join(f"{n}={res['times'][n][-1]:.3f}" for n in names))
    return res


def summarize(res: dict[str, Any], clock: str = "wall") -> dict[str, dict[str, float]]:
    times = res["times"] if clock == "wall" else res["cpu_times"]
    out = {}
    for n, ts in times.items():
        out[n] = {
            "median_s": _measure.median(ts),
            "to_eager": _measure.median([t / e for t, e in zip(ts, times["eager"])]),
            "to_gradient": _measure.median([t / g for t, g in zip(ts, times["gradient"])]),
        }
    return out


def render(run: dict[str, Any]) -> str:
    env = run["env"]
    lines = [
        "# Compiled and exported attribution: speed",
        "",
        "Generated by `python benchmarks/speed_compiled.py` (see its docstring for the methods); do not edit by hand.",
        "",
        f"Run {env['date']} on {env['machine']} ({env['cpus']} CPUs visible, shared with other jobs), torch "
        f"{env['torch']}, {env['threads']} intra-op thread(s), float32, one-hot seed, "
        f"{run['repeats']} interleaved repeats (median).",
        "",
        "Time per batch, and as a ratio to eager `lrp_fx.attribute` and to forward + input gradient (median of the "
        "per-repeat ratios; process CPU time, with wall clock in brackets: on a shared machine with one intra-op "
        "thread the CPU time is the steadier of the two):",
        "",
        "| model | preset | batch | method | time per batch (s) | / eager attribute | / forward+gradient "
        "| relevance vs eager | vs float64 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    once_rows = []
    for res in run["results"]:
        if "skipped" in res:
            lines.append(f"| {res['model']} | {res['preset']} | {res['batch']} | skipped: {res['skipped']} | | | | | |")
            continue
        wall, cpu = summarize(res, "wall"), summarize(res, "cpu")
        for n in res["methods"]:
            w, c = wall[n], cpu[n]
            parity = None if n == "eager" else res["parity"].get(n)
            parity64 = res.get("parity64", {}).get(n, res["parity"].get(n) if n == "eager" else None)
            parity_text = "" if parity is None else f"{parity:.1e}"
            parity_text += " |" + ("" if parity64 is None else f" {parity64:.1e}")
            lines.append(
                f"| {res['model']} | {res['preset']} | {res['batch']} | {n} "
                f"| {c['median_s']:.3f} ({w['median_s']:.3f}) "
                f"| {c['to_eager']:.2f} ({w['to_eager']:.2f}) | {c['to_gradient']:.2f} ({w['to_gradient']:.2f}) "
                f"| {parity_text} |"
            )
        detail = res.get("compile_detail", {})
        once = res["once_s"]
        once_rows.append(
            f"| {res['model']} | {res['preset']} | {once.get('eager', float('nan')):.1f} "
            f"| {once.get('compiled', float('nan')):.1f} "
            f"(build {detail.get('build_s', float('nan')):.1f}, Inductor {detail.get('inductor_s', float('nan')):.1f})"
            f" | {once.get('exported', float('nan')):.1f} | "
            + (f"{once['aoti']:.1f}" if "aoti" in once else "not run")
            + " |"
        )
    lines += [
        "",
        "One-time cost in seconds (first call, including the timed batch): eager `attribute` (capture + build), "
        "`torch.compile` (Dynamo + capture + program build + Inductor compile of the forward and relevance parts), "
        "`lrp_fx.export`, AOTInductor compile of the exported program:",
        "",
        "| model | preset | eager build | compile | export | AOTInductor compile |",
        "|---|---|---|---|---|---|",
        *once_rows,
        "",
        "Notes:",
        "",
        "* `compiled` includes the forward pass: the compiled model returns the outputs and the relevance comes from "
        "`autograd.grad`, so compare it with `eager` and with `gradient` (forward + input gradient) as they are.",
        "* `exported` runs the exported graph without compilation (PyTorch's interpreter): the aten ops of eager "
        "`attribute`, with the weights hoisted at export and broadcast products folded (`fold_broadcast_bmm`), but "
        "without eager's in-place buffer reuse; its value is portability (no lrp_fx at load time) and AOTInductor.",
        "* `compiled` and `exported` compute the values that depend on parameters only (folded batch norms, z+ "
        "weights) once, outside the per-call graphs, as eager `attribute` does (`lrp_fx.hoist`); the `*_unhoisted` "
        "rows (`--unhoisted`) are the same with `reuse_weights=False`, recomputing them in every call. Every timed "
        "call is checked not to rebuild a program and not to recompute the hoisted weights.",
        "* Inductor compile time on a small shared CPU box is long and varies with load and the on-disk cache "
        "(`/tmp/torchinductor_*`); a second process with a warm cache compiles much faster.",
    ]
    lines += run.get("notes", [])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--preset", default=None, help="composite for every model (default: per model, see PRESETS)")
    ap.add_argument(
        "--runs",
        nargs="+",
        default=None,
        metavar="MODEL:PRESET",
        help="model and preset pairs, e.g. resnet50:epsilon (default: each of --models with --preset or PRESETS)",
    )
    ap.add_argument(
        "--unhoisted",
        action="store_true",
        help="also time the backend and the export with reuse_weights=False (what weight hoisting buys)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--unfolded",
        action="store_true",
        help="also time the backend with fold_bmm=False (what lrp_fx.export.fold_broadcast_bmm buys)",
    )
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: torch's default)")
    ap.add_argument("--aoti", action="store_true", help="also compile the exported program with AOTInductor")
    ap.add_argument("--json", type=Path, default=None, help="save the raw run here")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None, help="re-render the doc from saved run(s)")
    ap.add_argument("--note", action="append", default=[], help="a line added under the notes")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/compiled_benchmarks.md")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.from_json:
        runs = [json.loads(p.read_text()) for p in args.from_json]
        run = runs[0]
        run["results"] = [r for one in runs for r in one["results"]]
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch._inductor.config.compile_threads = 1
        run = {
            "repeats": args.repeats,
            "env": {
                "date": datetime.date.today().isoformat(),
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            "results": [],
        }
        pairs = [tuple(r.split(":", 1)) for r in args.runs] if args.runs else None
        if pairs is None:
            pairs = [(name, args.preset or PRESETS.get(name, "epsilon_plus_flat")) for name in args.models]
        for name, preset in pairs:
            log(f"{name} batch {args.batch} ({preset})")
            run["results"].append(
                bench(name, args.batch, preset, args.repeats, args.aoti, log, args.unhoisted, args.unfolded)
            )
            torch._dynamo.reset()
            gc.collect()
        if args.json:
            args.json.write_text(json.dumps(run, indent=1))
    run["notes"] = run.get("notes", []) + [f"* {n}" for n in args.note]
    text = render(run)
    print(text)
    if not args.no_doc:
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
