"""Speed and memory of ``lrp_fx.attribute`` next to a plain input gradient and Zennit, on CPU.

    python benchmarks/speed.py --suite transformers ...  # ViT-B/16, BERT-base, 1B decoder, LXT (speed_transformers.py)
    python benchmarks/speed.py --suite compiled ...      # compiled and exported attribution (speed_compiled.py)
    python benchmarks/speed.py --quick                  # smoke test: ResNet-50, batch 1, 1 repeat (prints only)
    python benchmarks/speed.py                          # full: VGG16 + ResNet-50, batch 1 and 8 -> docs/benchmarks.md
    python benchmarks/speed.py --models resnet50 --batches 8 --presets epsilon epsilon_gamma_box --repeats 3
    python benchmarks/speed.py --from-json run.json     # re-render the tables / doc from a saved run
    python benchmarks/speed.py --from-json a.json b.json # merge runs (e.g. timing, and memory measured separately)
    python benchmarks/speed.py --skip-memory ... / --skip-timing ... # only one half (they can run concurrently)
    python benchmarks/speed.py --models resnet50_bnfolded # ablation: batch norms folded into the convolutions up front

Everything is timed in one process and *interleaved*: each repeat runs every method once, in turn (the starting
method rotates from repeat to repeat), so load from other processes hits all methods alike; each table reports the
median over repeats, and each ratio is the median of the per-repeat ratios to the gradient measured in that same
repeat. Each call is timed by wall clock and by process CPU time (the steadier one on a shared machine with one
thread). Methods:

* ``forward``: ``model(x)`` under ``no_grad``;
* ``gradient``: forward + input gradient, ``torch.autograd.grad(model(x), x, seed)`` (parameters do not require
  grad), the reference every ratio is taken to;
* ``lrp_fx <preset>``: ``lrp_fx.attribute(model, x, target=seed, composite=preset)``; the first call (capture +
  build + one run) is timed separately as the build cost and every timed call is checked not to rebuild
  (``lrp_fx.CACHE.builds``);
* ``zennit <preset>``: one ``zennit.attribution.Gradient`` attributor per preset (equivalent composite and
  canonizer) on a deep copy of the model (Zennit's canonizers and hooks modify the module they are registered on);
  its context is entered around each timed call, outside the timed region (an open context keeps the last call's
  layer tensors alive, so six of them side by side run out of memory at VGG16 batch 8).

The seed is a one-hot output relevance (one class per sample), the convention of Zennit and of the gradient.

Peak memory is measured afterwards, one fresh subprocess per (model, batch, method) (``--memory-probe``), as the peak
resident set size above the process's baseline after a warm-up call, per call; see ``_measure.py`` and
docs/benchmarks.md.

Threads: the default ``--threads 1`` keeps timings stable on a shared machine (with two OpenMP threads on two shared
cores one descheduled thread stalls every parallel region); ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _measure  # noqa: E402
import _zennit  # noqa: E402

import lrp_fx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
MODELS = ("vgg16", "resnet50")
LOW, HIGH = -3.0, 3.0  # input box of epsilon_gamma_box; inputs are clamped to it

# Arithmetic floor of each preset relative to forward + input gradient (docs/benchmarks.md, "Floors").
FLOORS = {
    "epsilon": 1.0,
    "epsilon_plus": 1.5,
    "epsilon_plus_flat": 1.5,
    "epsilon_gamma_box": 2.5,
    "epsilon_alpha2_beta1": 2.5,
    "epsilon_alpha2_beta1_flat": 2.5,
}
TARGETS = {"epsilon": 1.15, "epsilon_plus_flat": 1.7, "epsilon_gamma_box": 2.9}
PRESETS = tuple(FLOORS)  # the presets with a Zennit equivalent (lrp_fx.PRESETS may hold more)
ANALYSIS_BEGIN, ANALYSIS_END = "<!-- analysis:begin -->", "<!-- analysis:end -->"


# -- models, inputs, methods -----------------------------------------------------------------------------------------
def make_model(name: str) -> torch.nn.Module:
    """A torchvision model (random init, eval, float32, no parameter requiring grad).

    ``<name>_bnfolded`` (an ablation): the same model with every batch norm folded into the convolution before it
    once, up front, and replaced by ``nn.Identity``, so that neither ``lrp_fx`` (which otherwise folds them inside
    its program, on every call) nor Zennit's canonizer nor the gradient sees a batch norm.
    """
    base = name.removesuffix("_bnfolded")
    torch.manual_seed(0)
    model = getattr(torchvision.models, base)(weights=None).float().eval()
    if name.endswith("_bnfolded"):
        _fold_batch_norms(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def _fold_batch_norms(model: torch.nn.Module) -> None:
    """Fold each ``BatchNorm2d`` into the ``Conv2d`` registered just before it in the same parent (torchvision
    ResNets and VGG-BN: conv1/bn1, conv2/bn2, conv3/bn3, downsample.0/downsample.1, features.i/features.i+1)."""
    for parent in model.modules():
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
                setattr(parent, bn_name, torch.nn.Identity())


def make_input(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 224, 224, generator=gen).clamp(LOW, HIGH)
    seed = torch.zeros(batch, 1000)
    seed[torch.arange(batch), torch.arange(batch) * 37 % 1000] = 1.0
    return x, seed


def preset_params(preset: str) -> dict[str, float]:
    return {"low": LOW, "high": HIGH} if preset == "epsilon_gamma_box" else {}


def zennit_composite(preset: str, model_name: str):
    """Zennit's composite for ``preset`` with the canonizer of the model family (``_zennit.zennit_composite``)."""
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    canonizers = [ResNetCanonizer() if model_name.startswith("resnet") else VGGCanonizer()]
    return _zennit.zennit_composite(preset, canonizers, low=LOW, high=HIGH)


def method_names(presets: list[str]) -> list[str]:
    return ["forward", "gradient"] + [f"lrp_fx {p}" for p in presets] + [f"zennit {p}" for p in presets]


@dataclass
class Method:
    """``call()`` runs the method once and returns the input relevance (or the output); ``context()`` is entered
    around each timed call and is not timed (Zennit's attributor: registering the composite, canonizing the model)."""

    call: Callable[[], torch.Tensor]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def make_method(name: str, model: torch.nn.Module, model_name: str, x, seed, zennit_model=None) -> Method:
    if name == "forward":

        def forward():
            with torch.no_grad():
                return model(x)

        return Method(forward)
    if name == "gradient":

        def gradient():
            xx = x.detach().requires_grad_(True)
            out = model(xx)
            return torch.autograd.grad(out, xx, seed)[0]

        return Method(gradient)
    kind, preset = name.split(" ", 1)
    if kind == "lrp_fx":
        params = preset_params(preset)

        def lrp():
            return lrp_fx.attribute(model, x, target=seed, composite=preset, **params).relevance

        return Method(lrp)
    if kind == "zennit":
        from zennit.attribution import Gradient

        # One attributor per preset, created once. Its context (hooks + canonizers) is entered around each call,
        # outside the timed region: while it is open, Zennit's hooks keep the last call's layer inputs and outputs
        # alive (about 1.3 GB for ResNet-50 at batch 8), so six open contexts side by side would hold six sets.
        attributor = Gradient(zennit_model if zennit_model is not None else model, zennit_composite(preset, model_name))

        def zen():
            return attributor(x, seed)[1]

        return Method(zen, lambda: attributor)
    raise ValueError(f"unknown method {name!r}")


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# -- timing ----------------------------------------------------------------------------------------------------------
def bench_config(model_name: str, batch: int, presets: list[str], repeats: int, log) -> dict[str, Any]:
    model = make_model(model_name)
    zennit_model = copy.deepcopy(model)  # Zennit's canonizers and hooks modify the module while registered
    x, seed = make_input(batch)
    names = method_names(presets)
    result: dict[str, Any] = {
        "model": model_name,
        "batch": batch,
        "repeats": repeats,
        "methods": names,
        "times": {n: [] for n in names},
        "cpu_times": {n: [] for n in names},
        "build_s": {},
        "stats": {},
        "parity": {},
        "lrp_fx_source": source_digest(),
    }
    methods = {n: make_method(n, model, model_name, x, seed, zennit_model) for n in names}
    # warm-up: one call each; for lrp_fx it is the capture + build, timed as the build cost
    outs = {}
    for n in names:
        before = lrp_fx.CACHE.builds
        with methods[n].context():
            start = time.perf_counter()
            outs[n] = methods[n].call()
            elapsed = time.perf_counter() - start
        if n.startswith("lrp_fx"):
            assert lrp_fx.CACHE.builds == before + 1, f"{n}: first call did not build a program"
            preset = n.split(" ", 1)[1]
            result["build_s"][preset] = elapsed
            res = lrp_fx.attribute(model, x, target=seed, composite=preset, **preset_params(preset))
            assert lrp_fx.CACHE.builds == before + 1, f"{n}: second call rebuilt the program"
            result["stats"][preset] = res.stats.as_dict() if res.stats is not None else {}
            del res
        log(f"  warm-up {n:<34} {elapsed:8.3f} s   rss {_measure.rss() / 2**30:.2f} GiB")
    for p in presets:
        result["parity"][p] = _rel_diff(outs[f"lrp_fx {p}"], outs[f"zennit {p}"])
    del outs
    gc.collect()
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            before = lrp_fx.CACHE.builds
            with methods[n].context():
                wall, cpu = _measure.timed(methods[n].call)
            result["times"][n].append(wall)
            result["cpu_times"][n].append(cpu)
            assert lrp_fx.CACHE.builds == before, f"{n}: a timed call rebuilt the program"
        line = "  ".join(
            f"{n.replace('lrp_fx ', 'L:').replace('zennit ', 'Z:')}={result['times'][n][-1]:.3f}"
            f"/{result['cpu_times'][n][-1]:.3f}"
            for n in names
        )
        log(f"  repeat {r + 1}/{repeats} (wall/CPU s): {line}   rss {_measure.rss() / 2**30:.2f} GiB")
    result["lrp_fx_source_after"] = source_digest()
    del methods, model, zennit_model
    gc.collect()
    return result


def source_digest() -> str:
    """A short hash of lrp_fx's Python sources, to tell which library state a run measured."""
    root = Path(lrp_fx.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


# -- memory (one subprocess per method) ------------------------------------------------------------------------------
def memory_probe(model_name: str, batch: int, method: str) -> dict[str, Any]:
    """Runs inside a fresh process: peak RSS of ``method`` above its baseline, per call, after a warm-up call.

    The method's context (Zennit: hooks and canonized weights) is entered before the baseline and stays open over
    both measured calls, as in ordinary use of an attributor. ``peak1_mb`` is the first measured call,
    ``peak2_mb`` the second one in the same context (the kernel's high-water mark is reset between them), and
    ``held_mb`` what stays resident after the calls: Zennit's hooks keep the last call's layer inputs and outputs
    while the context is open, so its second call starts on top of them.
    """
    model = make_model(model_name)
    x, seed = make_input(batch)
    m = make_method(method, model, model_name, x, seed)
    _measure.trim()
    base0 = _measure.rss()
    with _measure.PeakRSS() as first:
        with m.context():
            out = m.call()
            del out
    _measure.trim()
    peaks = []
    with m.context():
        _measure.trim()
        base = _measure.rss()
        for _ in range(2):
            with _measure.PeakRSS() as peak:
                out = m.call()
                del out
            peaks.append(peak.peak - base)
        _measure.trim()
        held = _measure.rss() - base
    # lrp_fx keeps its hoisted weights (folded batch norms, modified weights) between calls: part of the baseline
    cached = sum(p.weight_cache.nbytes for progs in lrp_fx.CACHE.by_model.values() for p in progs.values())
    return {
        "model": model_name,
        "batch": batch,
        "method": method,
        "baseline_mb": base / 2**20,
        "first_call_peak_mb": (first.peak - base0) / 2**20,
        "peak1_mb": peaks[0] / 2**20,
        "peak2_mb": peaks[1] / 2**20,
        "peak_mb": max(peaks) / 2**20,
        "held_mb": held / 2**20,
        "weights_cached_mb": cached / 2**20,
        "how": peak.method,
        "lrp_fx_source": source_digest(),
    }


def run_probe(model_name: str, batch: int, method: str, threads: int, log) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-probe",
        model_name,
        str(batch),
        method,
        "--threads",
        str(threads),
    ]
    try:
        rec = _measure.probe_process(cmd, timeout=1800)
    except subprocess.CalledProcessError as exc:
        log(f"  memory probe {model_name} b{batch} {method} FAILED:\n{exc.stderr[-4000:]}")
        return None
    log(
        f"  memory {model_name} b{batch} {method:<34} peak {rec['peak1_mb']:7.0f} / {rec['peak2_mb']:7.0f} MB, "
        f"held {rec['held_mb']:6.0f} MB (first call {rec['first_call_peak_mb']:7.0f} MB, "
        f"baseline {rec['baseline_mb']:.0f} MB)"
    )
    return rec


# -- profile ---------------------------------------------------------------------------------------------------------
def profile(spec: str, top: int, log) -> dict[str, Any]:
    """Top ops by self CPU time of one gradient call and one ``attribute`` call (``spec`` = model:batch:preset)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model_name, batch, preset = spec.split(":")
    model = make_model(model_name)
    x, seed = make_input(int(batch))
    out: dict[str, Any] = {"spec": spec, "tables": {}}
    for name in ("gradient", f"lrp_fx {preset}"):
        fn = make_method(name, model, model_name, x, seed).call
        fn()
        fn()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            fn()
            wall = time.perf_counter() - start
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        total = sum(e.self_cpu_time_total for e in events)
        rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        out["tables"][name] = {
            "wall_s": wall,
            "self_total_ms": total / 1e3,
            "rows": [(e.key, e.count, e.self_cpu_time_total / 1e3) for e in rows],
        }
        log(f"  profile {spec} {name}: wall {wall:.3f} s")
    return out


# -- reporting -------------------------------------------------------------------------------------------------------
def summarize(res: dict[str, Any], clock: str = "wall") -> dict[str, Any]:
    """Median times and median per-repeat ratios to the gradient (with their min and max), by wall or CPU clock."""
    times = res["times"] if clock == "wall" else res["cpu_times"]
    grad = times["gradient"]
    summary = {}
    for n, ts in times.items():
        ratios = [t / g for t, g in zip(ts, grad)]
        summary[n] = {
            "median_s": _measure.median(ts),
            "ratio": _measure.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return summary


def _fmt_ratio(s: dict[str, float], spread: bool = True) -> str:
    if not spread or math.isclose(s["ratio_min"], s["ratio_max"]):
        return f"{s['ratio']:.2f}x"
    return f"{s['ratio']:.2f}x ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"


def speed_tables(results: list[dict[str, Any]], presets: list[str]) -> str:
    lines = [
        "| model | batch | repeats | forward ms | gradient ms | forward / gradient (wall) | (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for res in results:
        s, c = summarize(res), summarize(res, "cpu")
        lines.append(
            f"| {res['model']} | {res['batch']} | {res['repeats']} | {s['forward']['median_s'] * 1e3:.0f} | "
            f"{s['gradient']['median_s'] * 1e3:.0f} | {_fmt_ratio(s['forward'])} | {_fmt_ratio(c['forward'])} |"
        )
    lines += [
        "",
        "| model | batch | preset | lrp_fx ms | lrp_fx / gradient, wall (min-max) | CPU (min-max) | floor | target "
        "| met? (CPU) | Zennit ms | Zennit / gradient (CPU) | Zennit / lrp_fx (wall) | (CPU) | first call s "
        "| rel. diff to Zennit |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for res in results:
        s, c = summarize(res), summarize(res, "cpu")
        zw, zc = _zennit_over_lrp(res, "wall"), _zennit_over_lrp(res, "cpu")
        for p in presets:
            if f"lrp_fx {p}" not in s:
                continue
            target = TARGETS.get(p)
            met = "-" if target is None else ("yes" if c[f"lrp_fx {p}"]["ratio"] <= target else "**no**")
            lines.append(
                f"| {res['model']} | {res['batch']} | {p} | {s[f'lrp_fx {p}']['median_s'] * 1e3:.0f} | "
                f"{_fmt_ratio(s[f'lrp_fx {p}'])} | {_fmt_ratio(c[f'lrp_fx {p}'])} | {FLOORS[p]:.1f}x | "
                f"{'-' if target is None else f'{target:.2f}x'} | {met} | "
                f"{s[f'zennit {p}']['median_s'] * 1e3:.0f} | {_fmt_ratio(c[f'zennit {p}'], spread=False)} | "
                f"{_faster(zw[p])} | {_faster(zc[p])} | {res['build_s'][p]:.1f} | {res['parity'][p]:.1e} |"
            )
    return "\n".join(lines)


def _faster(x: float) -> str:
    return f"{x:.2f}x" if x > 1.0 else f"{x:.2f}x **slower**"


def _zennit_over_lrp(res: dict[str, Any], clock: str = "cpu") -> dict[str, float]:
    """Median over repeats of Zennit time / lrp_fx time (same repeat)."""
    times = res["times"] if clock == "wall" else res["cpu_times"]
    out = {}
    for n in times:
        if n.startswith("lrp_fx "):
            p = n.split(" ", 1)[1]
            out[p] = _measure.median([z / t for z, t in zip(times[f"zennit {p}"], times[n])])
    return out


def target_summary(results: list[dict[str, Any]], presets: list[str]) -> str:
    """One line per preset: CPU-time ratio to the gradient (wall in parentheses) and the speed-up over Zennit."""
    lines = []
    for p in presets:
        target = TARGETS.get(p)
        parts = []
        for res in results:
            s, c = summarize(res), summarize(res, "cpu")
            if f"lrp_fx {p}" not in s or res["model"].endswith("_bnfolded"):  # ablations: tables only
                continue
            rc, rw = c[f"lrp_fx {p}"]["ratio"], s[f"lrp_fx {p}"]["ratio"]
            zc, zw = _zennit_over_lrp(res, "cpu")[p], _zennit_over_lrp(res, "wall")[p]
            verdict = "" if target is None else (" met" if rc <= target else " MISSED")
            zen = f"{zc:.2f}x faster than Zennit" if zc > 1 else f"SLOWER than Zennit ({zc:.2f}x)"
            parts.append(f"{res['model']} b{res['batch']}: {rc:.2f}x (wall {rw:.2f}x){verdict}, {zen} (wall {zw:.2f}x)")
        head = f"`{p}` (floor {FLOORS[p]:.1f}x" + (f", target <= {target:.2f}x)" if target else ", no target)")
        lines.append(f"- {head}: " + "; ".join(parts))
    return "\n".join(lines)


def memory_table(memory: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    stats = {(r["model"], r["batch"]): r.get("stats", {}) for r in results}
    grad = {(m["model"], m["batch"]): m for m in memory if m["method"] == "gradient"}
    lines = [
        "| model | batch | method | call 1 peak MB | / gradient | call 2 peak MB | / gradient | held after MB | "
        "first call peak MB | lrp_fx bytes_kept MB | lrp_fx weights cached MB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in memory:
        key = (m["model"], m["batch"])
        g = grad.get(key)
        p1, p2 = m.get("peak1_mb", m["peak_mb"]), m.get("peak2_mb", m["peak_mb"])
        r1 = f"{p1 / g.get('peak1_mb', g['peak_mb']):.2f}x" if g else "-"
        r2 = f"{p2 / g.get('peak2_mb', g['peak_mb']):.2f}x" if g else "-"
        held = f"{max(m['held_mb'], 0.0):.0f}" if "held_mb" in m else "-"
        kept = "-"
        cached = (
            f"{m['weights_cached_mb']:.0f}" if m["method"].startswith("lrp_fx ") and "weights_cached_mb" in m else "-"
        )
        if m["method"].startswith("lrp_fx "):
            st = stats.get(key, {}).get(m["method"].split(" ", 1)[1])
            if st:
                kept = f"{st['bytes_kept'] / 2**20:.0f}"
        lines.append(
            f"| {m['model']} | {m['batch']} | {m['method']} | {p1:.0f} | {r1} | {p2:.0f} | {r2} | {held} | "
            f"{m['first_call_peak_mb']:.0f} | {kept} | {cached} |"
        )
    return "\n".join(lines)


def profile_tables(profiles: list[dict[str, Any]]) -> str:
    out = []
    for prof in profiles:
        for name, t in prof["tables"].items():
            out += [
                f"**{prof['spec']}, {name}** (one call, wall {t['wall_s'] * 1e3:.0f} ms under the profiler, "
                f"aten self CPU total {t['self_total_ms']:.0f} ms)",
                "",
                "| op | calls | self CPU ms | share |",
                "| --- | ---: | ---: | ---: |",
            ]
            for key, count, ms in t["rows"]:
                out.append(f"| `{key}` | {count} | {ms:.1f} | {100 * ms / t['self_total_ms']:.1f}% |")
            out.append("")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    model_name = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", lscpu)
        if m:
            model_name = m.group(1).strip()
        flags = re.search(r"Flags:\s*(.+)", lscpu)
        if flags:
            have = set(flags.group(1).split())
            model_name += " (" + ", ".join(f for f in ("avx2", "avx512f", "amx_tile") if f in have) + ")"
        hyp = re.search(r"Hypervisor vendor:\s*(.+)", lscpu)
        if hyp:
            model_name += f", virtual machine ({hyp.group(1).strip()})"
    except OSError:
        pass
    info = {
        "cpu": model_name,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lrp_fx": lrp_fx.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
    }
    try:
        import zennit

        info["zennit"] = getattr(zennit, "__version__", None) or _dist_version("zennit")
    except ImportError:
        info["zennit"] = None
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def render(run: dict[str, Any]) -> str:
    presets = run["presets"]
    parts = [
        "## Speed (median over interleaved repeats)",
        "",
        speed_tables(run["results"], presets),
        "",
        "## Targets",
        "",
        target_summary(run["results"], presets),
    ]
    if run.get("memory"):
        parts += ["", "## Peak memory (fresh process per method)", "", memory_table(run["memory"], run["results"])]
    if run.get("profiles"):
        parts += ["", "## Profiles (top aten ops by self CPU time)", "", profile_tables(run["profiles"])]
    return "\n".join(parts)


def write_doc(run: dict[str, Any], path: Path) -> None:
    analysis = ""
    if path.exists():
        old = path.read_text()
        if ANALYSIS_BEGIN in old and ANALYSIS_END in old:
            analysis = old[old.index(ANALYSIS_BEGIN) + len(ANALYSIS_BEGIN) : old.index(ANALYSIS_END)].strip("\n")
    m = run["machine"]
    commands = ", ".join(f"`python benchmarks/speed.py {a.strip()}`" for a in run["argv"].split(" ; "))
    header = f"""# Benchmarks: speed and memory on CPU

Generated by {commands} (the tables below are rewritten on every run; the text between the `analysis` markers is
kept).

**Machine:** {m["cpu"]}, {m["logical_cpus"]} logical CPUs{f", {m['memory_gb']} GiB RAM" if "memory_gb" in m else ""};
torch {m["torch"]}, torchvision {m["torchvision"]}, Python {m["python"]}, Zennit {m["zennit"]}, lrp_fx {m["lrp_fx"]};
{m["threads"]} intra-op thread(s); {m["date"]}. Models: torchvision `weights=None` (random init), eval, float32,
224x224 inputs clamped to [{LOW}, {HIGH}], one-hot seed.
"""
    method = METHOD_TEXT
    text = (
        header
        + "\n"
        + method
        + "\n"
        + render(run)
        + "\n\n## Analysis\n\n"
        + ANALYSIS_BEGIN
        + "\n"
        + analysis
        + "\n"
        + ANALYSIS_END
        + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


METHOD_TEXT = """## How it is measured

* **Timing.** One process. After one warm-up call per method (for `lrp_fx` the first call captures the model with
  `torch.export`, builds the relevance program and runs it: the *first call* column), each repeat runs every method
  once in turn, the starting method rotating from repeat to repeat, so that load from other processes on the shared
  machine hits all methods alike. Every call is timed by two clocks: wall (`time.perf_counter`) and the process's
  CPU time (`time.process_time`). With one intra-op thread the CPU time leaves out the time the process sat
  descheduled while other jobs had the cores, so it is the steadier clock here; the verdicts use it, and the wall
  ratios are shown next to it. Times in ms are wall medians over repeats; each ratio is the median of the per-repeat
  ratios `method / gradient` taken in the same repeat (min-max over repeats in parentheses). Every timed `lrp_fx`
  call is checked not to rebuild its program (`lrp_fx.CACHE.builds` unchanged).
* **Reference.** `gradient` = forward + input gradient: `x.requires_grad_()`, parameters not requiring grad,
  `torch.autograd.grad(model(x), x, seed)`. `forward` is `model(x)` under `no_grad`.
* **Zennit** runs each preset through one `zennit.attribution.Gradient` attributor per preset (the equivalent
  composite with `VGGCanonizer` / `ResNetCanonizer`) on a deep copy of the model. Its context (hook registration,
  canonization) is entered around every timed call but outside the timed region: an open context keeps the last
  call's layer inputs and outputs alive in Zennit's hooks (about 1.3 GB for ResNet-50 at batch 8), so six contexts
  open side by side exhausted this machine's memory. The *rel. diff* column is `||R_lrp_fx - R_zennit|| /
  ||R_zennit||` of the warm-up outputs (float32; a sanity check that both compute the same attribution, not a parity
  test; the larger value for `epsilon` on ResNet-50 comes from Zennit's batch-norm merge, which leaves
  `x / sqrt(1 + eps)` per batch norm, and from float32 noise amplified by the epsilon rule's small denominators).
* **Memory.** CPU has no allocator high-water counter, so every (model, batch, method) runs in a fresh subprocess
  (`speed.py --memory-probe MODEL BATCH METHOD`) started with glibc's `MALLOC_MMAP_THRESHOLD_=65536`: every tensor
  buffer above 64 KiB is its own `mmap` and goes back to the kernel when freed, so the resident set size (RSS) follows
  the live tensor memory. The probe loads the model and input and makes one warm-up call (for `lrp_fx` this captures
  and builds the program: the *first call peak* column, above the RSS before it). Then it enters the method's
  context (Zennit: hooks + canonized weights; nothing for the others), runs `gc.collect()` + `malloc_trim(0)`, reads
  the RSS baseline and runs the method twice, resetting the kernel's high-water mark (`echo 5 >
  /proc/self/clear_refs`) before each call: *call N peak* = `VmHWM - baseline` of call N. *Held after* is the RSS
  above the baseline after both calls (after another trim): zero for everything but Zennit, whose open context
  holds the last call's tensors, so its second call starts on top of them. Ratios are to the gradient's peak of the
  same call. Caveats: RSS counts everything resident, not just tensors (allocator slack, oneDNN scratch buffers and
  weight reorders, small-object heap growth); allocations below 64 KiB still come from the heap; the parameters,
  Zennit's canonized copies and `lrp_fx`'s cached weights (batch norms folded into the convolutions and the rules'
  modified weights, computed once and kept while the parameters are unchanged: *weights cached MB*, the library's
  own count `res.program.weight_cache.nbytes`) are in the baseline; if `clear_refs` is not writable the probe falls
  back to a 1 ms psutil sampling thread, which can miss short peaks. MB here means 2^20 bytes. *bytes_kept* is
  `lrp_fx`'s own count of the forward
  activations its plan keeps for the relevance pass (`res.stats.as_dict()`).

## Floors

The floor of a preset is its arithmetic cost relative to the gradient, counting the convolutions and matrix
products, which dominate: the forward pass costs `F`, and an input VJP (`J^T s`, a transposed convolution) costs
about `F` again, so forward + input gradient is `2F`.

* `epsilon`: the forward `F` plus, per layer, `s = R / stab(z)` with `z` the layer's own forward output and one input
  VJP `x * J^T s`: `2F`, **1.0x**. Only element-wise work is added.
* `epsilon_plus` / `epsilon_plus_flat` (z+ on convolutions, epsilon on dense layers): the inputs of every
  convolution but the first are ReLU outputs, so `x^- = 0` and z+ needs one extra forward with `W^+` (`z = x W^+`,
  not available from the forward pass) and one VJP with `W^+`: `F + F + F = 3F`, **1.5x**. The flat first layer is
  cheap (3 input channels).
* `epsilon_gamma_box` (gamma on convolutions): two groups with `W + gamma W^+` (where `z > 0`) and
  `W + gamma W^-` (where `z < 0`); implemented directly, each needs a forward and a VJP: `F + 4F = 5F`, **2.5x**.
* `epsilon_alpha2_beta1(_flat)`: likewise two sign branches, `W^+` weighted by alpha and `W^-` by beta, each a
  forward and a VJP: **2.5x**, the same count as gamma.
* Both two-branch rules have a lower floor by linearity: `x W^- = (x W) - (x W^+)` reuses the forward output, so
  one extra forward gives both denominators, and the two VJPs combine as
  `J(W^+)^T(alpha s^+ + beta s^-) - beta J(W)^T s^-` (gamma:
  `J(W)^T((1+gamma) s_2 + s_1) + gamma J(W^+)^T (s_1 - s_2)`): `F + F + 2F = 4F`, **2.0x**. The table uses
  the direct 2.5x.
"""


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run from several: results, memory records and profiles concatenated; header from the first with timings."""
    main_run = next((r for r in runs if r["results"]), runs[0])
    merged = dict(main_run, results=[], memory=[], profiles=[])
    for r in runs:
        for key in ("results", "memory", "profiles"):
            merged[key] += r.get(key, [])
    if len(runs) > 1:
        merged["argv"] = " ; ".join(r["argv"] for r in runs)
    return merged


# -- main ------------------------------------------------------------------------------------------------------------
SUITES = {  # --suite NAME: the script that measures it (its own options follow)
    "transformers": "speed_transformers",  # ViT-B/16, BERT-base, Llama-3.2-1B shape (4 layers), vs LXT
    "compiled": "speed_compiled",  # torch.compile(backend="lrp"), lrp_fx.export, AOTInductor
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--suite" in argv:  # the CNN suite is this script; the others run their own script with the rest of argv
        i = argv.index("--suite")
        suite = argv[i + 1] if i + 1 < len(argv) else ""
        rest = argv[:i] + argv[i + 2 :]
        if suite != "cnn":
            if suite not in SUITES:
                raise SystemExit(f"--suite: one of cnn, {', '.join(SUITES)}")
            module = __import__(SUITES[suite])
            raise SystemExit(module.main(rest))
        argv = rest
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=None,
        choices=list(MODELS) + ["resnet18", "vgg16_bn", "resnet50_bnfolded", "vgg16_bn_bnfolded"],
    )
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--repeats", type=int, default=None, help="repeats per config (default 7 at batch 1, else 5)")
    ap.add_argument("--quick", action="store_true", help="ResNet-50, batch 1, 1 repeat; prints, writes no doc")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--skip-timing", action="store_true", help="only memory probes and/or profiles")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument(
        "--profile",
        action="append",
        default=None,
        metavar="MODEL:BATCH:PRESET",
        help="profile one gradient and one attribute call (default resnet50:8:epsilon and "
        "resnet50:8:epsilon_gamma_box; 'none' to skip)",
    )
    ap.add_argument("--top", type=int, default=12, help="ops per profile table")
    ap.add_argument(
        "--out", default=None, help=f"markdown file to write (default {DOC.relative_to(ROOT)}; none with --quick)"
    )
    ap.add_argument("--json", default=None, help="also save the raw run as JSON")
    ap.add_argument(
        "--from-json", nargs="+", default=None, help="render saved run(s) instead of measuring; several are merged"
    )
    ap.add_argument("--memory-probe", nargs=3, metavar=("MODEL", "BATCH", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.memory_probe:
        model_name, batch, method = args.memory_probe
        print(json.dumps(memory_probe(model_name, int(batch), method)))
        return

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.from_json:
        run = merge_runs([json.loads(Path(f).read_text()) for f in args.from_json])
    else:
        models = args.models or (["resnet50"] if args.quick else list(MODELS))
        batches = args.batches or ([1] if args.quick else [1, 8])
        profiles = args.profile
        if profiles is None:
            profiles = ["resnet50:1:epsilon"] if args.quick else ["resnet50:8:epsilon", "resnet50:8:epsilon_gamma_box"]
        profiles = [p for p in profiles if p != "none"]
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        run = {
            "argv": argv_text,
            "machine": machine(),
            "presets": args.presets,
            "results": [],
            "memory": [],
            "profiles": [],
        }
        t0 = time.perf_counter()

        def save() -> None:  # after every step, so a late failure keeps what was measured
            if args.json:
                Path(args.json).write_text(json.dumps(run, indent=1))

        for model_name in models if not args.skip_timing else ():
            for batch in batches:
                repeats = args.repeats or (1 if args.quick else (7 if batch == 1 else 5))
                log(f"== {model_name} batch {batch}: {repeats} repeats, {torch.get_num_threads()} thread(s)")
                run["results"].append(bench_config(model_name, batch, args.presets, repeats, log))
                save()
        if not args.skip_memory:
            log("== memory probes")
            for model_name in models:
                for batch in batches:
                    for method in method_names(args.presets):
                        rec = run_probe(model_name, batch, method, torch.get_num_threads(), log)
                        if rec is not None:
                            run["memory"].append(rec)
                            save()
        for spec in profiles:
            log(f"== profile {spec}")
            run["profiles"].append(profile(spec, args.top, log))
        run["elapsed_s"] = time.perf_counter() - t0
        save()

    print()
    print(render(run))
    out = args.out or (None if args.quick and not args.from_json else str(DOC))
    if out and out != "none":
        write_doc(run, Path(out))
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
