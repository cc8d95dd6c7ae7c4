"""Where eager ``lrp_fx.attribute`` spends its time on a GPU, next to forward + input gradient: the kernels that take
the most device time, the number of kernel launches, and host time against device time per call.

    PYTHONPATH=. python benchmarks/gpu_profile.py --models resnet50 --dtypes fp32,bf16 --presets epsilon
    PYTHONPATH=. python benchmarks/gpu_profile.py --device cpu --batch 2   # check the script here (CPU op times)

On 2026-11-27 eager ``attribute`` on an H200 took 1.39x the gradient's time on ResNet-50 fp32 (epsilon) and 1.68x in
bf16, where the compiled program took 0.77x / 0.79x (``docs/gpu.md``). This script says which kernels, and how
much host time, make that difference. It prints one markdown table per method: the top kernels by total device time
(``torch.profiler``), then a summary line with the call's wall time, the summed device time and the launch count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (the end-to-end script's model setup and gradient baseline)

import lrp_fx  # noqa: E402


def _methods(model, x, target, presets):
    yield "fwd+input-grad", gpu.gradient_fn(model, x, target)
    for preset in presets:
        kw = gpu.preset_kw(preset)
        yield (
            f"lrp {preset}",
            lambda kw=kw, preset=preset: lrp_fx.attribute(model, x, target=target, composite=preset, **kw),
        )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def profile_method(fn, device: str, top: int, calls: int = 5) -> tuple[str, str]:
    """(table of the top kernels, summary line) over ``calls`` calls after a warm-up."""
    for _ in range(3):
        fn()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        wall = (time.perf_counter() - t0) / calls * 1e3
    events = prof.key_averages()
    if device == "cuda":
        # device-side events: the kernels (and memcpy/memset) that ran on the GPU
        kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        time_of = lambda e: e.device_time_total  # noqa: E731 (microseconds, all calls)
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        time_of = lambda e: e.self_cpu_time_total  # noqa: E731
    kernels.sort(key=time_of, reverse=True)
    total = sum(time_of(e) for e in kernels) / calls / 1e3
    launches = sum(e.count for e in kernels) / calls
    lines = ["| kernel | ms per call | calls per call | share |", "|---|---|---|---|"]
    for e in kernels[:top]:
        ms = time_of(e) / calls / 1e3
        lines.append(f"| `{e.key[:90]}` | {ms:.3f} | {e.count / calls:.0f} | {ms / max(total, 1e-9):.0%} |")
    summary = f"wall {wall:.2f} ms per call, device {total:.2f} ms, {launches:.0f} kernels per call"
    return "\n".join(lines), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--presets", default="epsilon")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch}\n", flush=True)
    for model_name in args.models.split(","):
        for dt_name in args.dtypes.split(","):
            dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt_name]
            model, x, target = gpu.setup(model_name, dt, args.batch, dev)
            for label, fn in _methods(model, x, target, args.presets.split(",")):
                table, summary = profile_method(fn, dev, args.top)
                print(f"### {model_name} {dt_name} {label}: {summary}\n\n{table}\n", flush=True)


if __name__ == "__main__":
    main()
