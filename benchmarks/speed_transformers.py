"""Speed and memory of ``lrp_fx.attribute`` on transformers, next to a plain input gradient and LXT, on CPU.

    python benchmarks/speed.py --suite transformers              # = python benchmarks/speed_transformers.py
    python benchmarks/speed_transformers.py --quick              # ViT-B/16, batch 1, 1 repeat, prints only
    python benchmarks/speed_transformers.py --lxt                # also LXT 2.1, in .venv-lxt (benchmarks/lxt_env.sh)
    python benchmarks/speed_transformers.py --from-json a.json b.json   # re-render saved runs

Models (random weights, float32, eval):

* ``vit_b_16``: torchvision's ViT-B/16 at 224 x 224 (its zero-initialised head re-drawn, so logits are not all 0);
  relevance of the pixels;
* ``bert_base``: ``BertForSequenceClassification`` with bert-base-uncased's configuration (12 layers, hidden 768),
  128 tokens, an all-ones attention mask, SDPA attention; relevance of the input embeddings;
* ``llama_1b_4l``: ``LlamaForCausalLM`` with Llama-3.2-1B's configuration (hidden 2048, 32 query / 8 key-value
  heads, SwiGLU 8192, vocabulary 128256, tied embeddings) cut to 4 of its 16 layers, 128 tokens, SDPA attention;
  explained: the next-token logit at the last position (``logits_to_keep=1``); relevance of the input embeddings.

Every method explains the same output of the same wrapper module (``inputs_embeds`` in, ``[batch, classes]``
logits out), so the gradient and the LRP variants differ only in the backward pass:

* ``forward``: the wrapper under ``no_grad``;
* ``gradient``: forward + gradient of the inputs (pixels or input embeddings) for a one-hot seed, the reference of
  every ratio;
* ``lrp_fx <preset>``: ``lrp_fx.attribute(wrapper, inputs, target=seed, composite=preset)`` for ``cplrp`` and
  ``attnlrp`` (epsilon on linear layers, their default), and for Llama also ``cplrp`` with ``gate="constant"``
  (SwiGLU's gate a constant, the rule set of LXT's ``cp_LRP`` map); the first call is the build and is reported
  separately;
* ``lxt <map>`` (``--lxt``): LXT's efficient mode, gradient x input through LXT's patched classes
  (``cp_LRP`` for ViT-B/16 and Llama, ``attnLRP`` for BERT and Llama, the maps LXT ships for these models). LXT
  patches classes process-wide, so its run happens in its own environment (transformers 4.57.6, LXT 2.1 imports
  only with 4.x) and process, where forward, gradient and lrp_fx are timed again beside it: each table row's
  ratios are to the gradient measured in the same process. The patches are applied and undone around each LXT
  call (the classes' and modules' attributes are swapped), so the gradient there runs on unpatched classes.

Timing follows ``speed.py``: one process, interleaved repeats (the starting method rotates), medians of per-repeat
ratios to the gradient, wall clock and process CPU time (one intra-op thread by default). Peak memory: one
fresh subprocess per (model, batch, method), the resident-set high-water mark above the baseline after a warm-up
call (``_measure.py``); lrp_fx's cached hoisted weights are listed separately.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _hf_models  # noqa: E402
import _measure  # noqa: E402

import lrp_fx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks_transformers.md"
LXT_PYTHON = ROOT / ".venv-lxt" / "bin" / "python"
MODELS = ("vit_b_16", "bert_base", "llama_1b_4l")
PRESETS = ("cplrp", "attnlrp")
TARGET = 1.2  # issue 3: cplrp and attnlrp (epsilon on linear layers) at most 1.2x forward + input gradient
SEQ = 128
LXT_MAPS = {"vit_b_16": ("cp_LRP",), "bert_base": ("attnLRP",), "llama_1b_4l": ("cp_LRP", "attnLRP")}


# -- models ----------------------------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """``inputs_embeds`` (or pixels) -> ``[batch, classes]`` logits of the wrapped model."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "vit":
            return self.model(x)
        if self.kind == "bert":
            return self.model(inputs_embeds=x, attention_mask=attention_mask).logits
        return self.model(inputs_embeds=x, logits_to_keep=1).logits[:, -1]


def build(name: str, modeling: Any = None) -> nn.Module:
    """The wrapper of model ``name`` (eval, float32, no parameter requiring grad).

    ``modeling``: for BERT, the (possibly LXT-replaced) module to take ``BertForSequenceClassification`` from."""
    torch.manual_seed(0)
    if name == "vit_b_16":
        from torchvision.models import vit_b_16

        model = vit_b_16(weights=None)
        with torch.no_grad():  # torchvision zero-initialises the head: every logit would be 0
            nn.init.normal_(model.heads.head.weight, std=0.02)
        wrapper = Classifier(model, "vit")
    elif name == "bert_base":
        import transformers as t

        cfg = t.BertConfig(num_labels=2)  # bert-base-uncased's sizes are BertConfig's defaults
        cfg._attn_implementation = "sdpa"
        cls = (modeling or t).BertForSequenceClassification
        wrapper = Classifier(cls(cfg), "bert")
    elif name == "llama_1b_4l":
        import transformers as t

        cfg = _hf_models.llama_3_2_1b_config(layers=4)
        cfg._attn_implementation = "sdpa"
        wrapper = Classifier(t.LlamaForCausalLM(cfg), "llama")
    else:
        raise ValueError(f"unknown model {name!r}")
    wrapper = wrapper.float().eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)
    return wrapper


def make_inputs(name: str, batch: int, wrapper: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    dtype = next(wrapper.parameters()).dtype
    if name == "vit_b_16":
        inputs = {"x": torch.randn(batch, 3, 224, 224, generator=gen, dtype=dtype)}
    else:
        emb = wrapper.model.get_input_embeddings()
        ids = torch.randint(3, 1000, (batch, SEQ), generator=gen)
        inputs = {"x": emb(ids).detach()}
        if name == "bert_base":
            inputs["attention_mask"] = torch.ones(batch, SEQ, dtype=torch.long)
    with torch.no_grad():
        classes = wrapper(**inputs).shape[-1]
    seed = torch.zeros(batch, classes, dtype=dtype)
    seed[torch.arange(batch), (torch.arange(batch) * 37 + 11) % classes] = 1.0
    return inputs, seed


# -- LXT (its own environment) ---------------------------------------------------------------------------------------
class LXTPatches:
    """LXT's monkey patches for one model, switchable: ``with patches.on():`` runs with them, else without.

    ``lxt.efficient.monkey_patch`` replaces attributes of classes (``forward``) and of modules (attention functions,
    whole model classes) for good; the attributes it changed are recorded and swapped back and forth."""

    def __init__(self, model_name: str, map_name: str) -> None:
        from lxt.efficient import monkey_patch

        module, patch_map = _lxt_map(model_name, map_name)
        targets = [module] + [k for k in patch_map if k is not module]
        # registries LXT edits in place (transformers' ALL_ATTENTION_FUNCTIONS, shared with every model module)
        registries = [
            v
            for v in vars(module).values()
            if not isinstance(v, type) and hasattr(v, "items") and hasattr(v, "__setitem__")
        ]
        before = [dict(vars(t)) for t in targets]
        before_items = [dict(r.items()) for r in registries]
        monkey_patch(module, patch_map)
        after = [dict(vars(t)) for t in targets]
        self.module = module
        self.changes = []
        for obj, b, a in zip(targets, before, after):
            keys = [k for k in set(b) | set(a) if b.get(k, _MISSING) is not a.get(k, _MISSING)]
            self.changes.append((obj, {k: b.get(k, _MISSING) for k in keys}, {k: a.get(k, _MISSING) for k in keys}))
        self.items = [(r, b, dict(r.items())) for r, b in zip(registries, before_items)]
        self._set(patched=False)

    def _set(self, patched: bool) -> None:
        for obj, b, a in self.changes:
            for k, v in (a if patched else b).items():
                if v is _MISSING:
                    if k in vars(obj):
                        delattr(obj, k)
                else:
                    setattr(obj, k, v)
        for registry, b, a in self.items:
            for k, v in (a if patched else b).items():
                if registry[k] is not v:
                    registry[k] = v

    @contextlib.contextmanager
    def on(self):
        self._set(True)
        try:
            yield
        finally:
            self._set(False)


_MISSING = object()


def _lxt_map(model_name: str, map_name: str) -> tuple[Any, dict]:
    import lxt.efficient.models as models

    if model_name == "vit_b_16":
        from torchvision.models import vision_transformer as module

        return module, dict(models.vit_torch.cp_LRP)
    if model_name == "bert_base":
        from transformers.models.bert import modeling_bert as module

        return module, dict(getattr(models.bert, map_name))
    from transformers.models.llama import modeling_llama as module

    return module, dict(getattr(models.llama, map_name))


def lxt_method(model_name: str, map_name: str, wrapper: nn.Module, inputs: dict, seed: torch.Tensor) -> Any:
    """LXT's relevance of ``inputs["x"]``: gradient x input through the patched classes (a model built while
    patched where LXT replaces whole classes, BERT's; the same weights)."""
    patches = LXTPatches(model_name, map_name)
    model = wrapper
    if model_name == "bert_base":
        with patches.on():
            model = build(model_name, modeling=patches.module)
        model = model.to(next(wrapper.parameters()).dtype)
        model.load_state_dict(wrapper.state_dict())

    def call() -> torch.Tensor:
        with patches.on():
            x = inputs["x"].detach().requires_grad_(True)
            out = model(x, **{k: v for k, v in inputs.items() if k != "x"})
            (g,) = torch.autograd.grad(out, x, seed)
            return x.detach() * g

    return call


# -- methods ---------------------------------------------------------------------------------------------------------
def make_method(name: str, model_name: str, wrapper: nn.Module, inputs: dict, seed: torch.Tensor) -> Callable:
    rest = {k: v for k, v in inputs.items() if k != "x"}
    if name == "forward":

        def forward():
            with torch.no_grad():
                return wrapper(**inputs)

        return forward
    if name == "gradient":

        def gradient():
            x = inputs["x"].detach().requires_grad_(True)
            return torch.autograd.grad(wrapper(x, **rest), x, seed)[0]

        return gradient
    kind, variant = name.split(" ", 1)
    if kind == "lrp_fx":
        variant, _, budget = variant.partition(" budget=")
        preset, _, opt = variant.partition(" gate=")
        kw: dict[str, Any] = {"gate": opt} if opt else {}
        if budget:  # memory_budget=<bytes>: the promise planner recomputes cheap forward values instead of keeping them
            kw["memory_budget"] = int(budget)

        def lrp():
            return lrp_fx.attribute(wrapper, inputs, target=seed, composite=preset, **kw).relevance["x"]

        return lrp
    if kind == "lxt":
        return lxt_method(model_name, variant, wrapper, inputs, seed)
    raise ValueError(f"unknown method {name!r}")


def method_names(model_name: str, lxt: bool) -> list[str]:
    names = ["forward", "gradient"] + [f"lrp_fx {p}" for p in PRESETS]
    if model_name == "llama_1b_4l":  # the rule set of LXT's cp_LRP map for Llama (SwiGLU's gate frozen)
        names.append("lrp_fx cplrp gate=constant")
    names.append("lrp_fx cplrp budget=0")  # every cheap forward value recomputed: the least memory
    return names + ([f"lxt {m}" for m in LXT_MAPS[model_name]] if lxt else [])


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def bench_config(model_name: str, batch: int, repeats: int, lxt: bool, log) -> dict[str, Any]:
    wrapper = build(model_name)
    inputs, seed = make_inputs(model_name, batch, wrapper)
    names = method_names(model_name, lxt)
    res: dict[str, Any] = {
        "model": model_name,
        "batch": batch,
        "repeats": repeats,
        "env": "lxt" if lxt else "main",
        "methods": names,
        "times": {n: [] for n in names},
        "cpu_times": {n: [] for n in names},
        "build_s": {},
        "agreement": {},
    }
    methods = {n: make_method(n, model_name, wrapper, inputs, seed) for n in names}
    outs = {}
    for n in names:  # warm-up; lrp_fx's first call builds its program
        before = lrp_fx.CACHE.builds
        start = time.perf_counter()
        outs[n] = methods[n]()
        elapsed = time.perf_counter() - start
        if n.startswith("lrp_fx"):
            assert lrp_fx.CACHE.builds == before + 1, f"{n}: first call did not build"
            res["build_s"][n] = elapsed
        log(f"  warm-up {n:<18} {elapsed:8.3f} s   rss {_measure.rss() / 2**30:.2f} GiB")
    del outs
    gc.collect()
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            before = lrp_fx.CACHE.builds
            wall, cpu = _measure.timed(methods[n])
            assert lrp_fx.CACHE.builds == before, f"{n}: a timed call rebuilt the program"
            res["times"][n].append(wall)
            res["cpu_times"][n].append(cpu)
        log(
            f"  repeat {r + 1}/{repeats} (wall/CPU s): "
            + "  ".join(f"{n}={res['times'][n][-1]:.3f}/{res['cpu_times'][n][-1]:.3f}" for n in names)
        )
    if lxt:
        res["agreement"] = agreement(model_name, log)
    return res


TINY = {"epsilon": 1e-12, "stabilizer": 1e-12}  # LXT's gradient x input has no stabilisers


def agreement(model_name: str, log) -> dict[str, float]:
    """lrp_fx next to LXT on the same model in float64, batch 1, stabilisers 1e-12 (as ``lxt_parity.py``, here at
    full size): relative L2 difference of the input relevances. ``cplrp`` with ``gate="constant"`` is the rule
    set of LXT's ``cp_LRP`` map for Llama (it freezes SwiGLU's gate); ViT-B/16's map does not touch its MLP."""
    wrapper = build(model_name)
    wrapper = wrapper.double()
    inputs, seed = make_inputs(model_name, 1, wrapper)
    out = {}
    for m in LXT_MAPS[model_name]:
        preset, kw = ("cplrp", {"gate": "constant"}) if m == "cp_LRP" else ("attnlrp", {})
        if model_name == "vit_b_16":
            kw = {}
        # LXT's gradient x input for a seed of 1 explains the logit's value: lrp_fx's target=class seeds the same
        target = seed.argmax(-1)
        ours = lrp_fx.attribute(wrapper, inputs, target=target, composite=preset, **TINY, **kw).relevance["x"]
        theirs = lxt_method(model_name, m, wrapper, inputs, seed)()
        key = f"lrp_fx {preset}{', gate=constant' if kw else ''} vs lxt {m}"
        out[key] = _rel_diff(ours, theirs)
        log(f"  float64 {key}: {out[key]:.1e}")
    return out


# -- memory ----------------------------------------------------------------------------------------------------------
def memory_probe(model_name: str, batch: int, method: str) -> dict[str, Any]:
    wrapper = build(model_name)
    inputs, seed = make_inputs(model_name, batch, wrapper)
    fn = make_method(method, model_name, wrapper, inputs, seed)
    fn()  # warm-up (lrp_fx: build and cache hoisted weights)
    peak, how = _measure.call_peak(fn, calls=2)
    cached = sum(p.weight_cache.nbytes for progs in lrp_fx.CACHE.by_model.values() for p in progs.values())
    return {
        "model": model_name,
        "batch": batch,
        "method": method,
        "peak_mb": peak / 2**20,
        "weights_cached_mb": cached / 2**20,
        "how": how,
    }


def run_probe(python: str, model_name: str, batch: int, method: str, threads: int, log) -> dict[str, Any] | None:
    cmd = [python, str(Path(__file__).resolve()), "--memory-probe", model_name, str(batch), method]
    cmd += ["--threads", str(threads)]
    try:
        rec = _measure.probe_process(cmd)
    except subprocess.CalledProcessError as exc:
        log(f"  memory probe {model_name} b{batch} {method} FAILED:\n{exc.stderr[-3000:]}")
        return None
    log(f"  memory {model_name} b{batch} {method:<18} peak {rec['peak_mb']:8.0f} MB")
    return rec


# -- report ----------------------------------------------------------------------------------------------------------
def ratios(res: dict[str, Any], clock: str) -> dict[str, tuple[float, float, float]]:
    times = res["times" if clock == "wall" else "cpu_times"]
    grad = times["gradient"]
    out = {}
    for n, ts in times.items():
        rs = [t / g for t, g in zip(ts, grad)]
        out[n] = (_measure.median(rs), min(rs), max(rs))
    return out


def render(run: dict[str, Any]) -> str:
    lines = [
        "# Transformers: speed and memory of LRP next to the gradient and LXT",
        "",
        "Generated by `python benchmarks/speed.py --suite transformers` (`benchmarks/speed_transformers.py`; its "
        "docstring describes the models and methods); do not edit by hand.",
        "",
    ]
    for env in ("main", "lxt"):
        rs = [r for r in run["results"] if r["env"] == env]
        if not rs:
            continue
        m = run["machines"][env]
        title = "lrp_fx" if env == "main" else "lrp_fx and LXT side by side (LXT's environment)"
        lines += [
            f"## {title}",
            "",
            f"Run {m['date']} on {m['machine']} ({m['cpus']} CPUs visible, load average {m['load']} at the start), "
            f"torch {m['torch']}, transformers {m['transformers']}{', LXT ' + m['lxt'] if m.get('lxt') else ''}, "
            f"{m['threads']} intra-op thread(s), float32, one-hot seed; medians of interleaved repeats, ratios are "
            "medians of per-repeat ratios to `gradient` (min-max in brackets).",
            "",
            "| model | batch | repeats | method | time per batch s (wall) | / gradient (wall) | / gradient (CPU) "
            "| target | peak MB | peak / gradient's | first call s |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rs:
            w, c = ratios(r, "wall"), ratios(r, "cpu")
            mem = {
                p["method"]: p
                for p in run["memory"]
                if p["model"] == r["model"] and p["batch"] == r["batch"] and p.get("env", "main") == env
            }
            gmem = mem.get("gradient", {}).get("peak_mb")
            for n in r["methods"]:
                target = f"<= {TARGET}x" if n.startswith("lrp_fx") else ""
                if target:
                    target += " yes" if c[n][0] <= TARGET else " **no**"
                pk = mem.get(n, {}).get("peak_mb")
                lines.append(
                    f"| {r['model']} | {r['batch']} | {r['repeats']} | {n} | "
                    f"{_measure.median(r['times'][n]):.3f} | {w[n][0]:.2f}x ({w[n][1]:.2f}-{w[n][2]:.2f}) | "
                    f"{c[n][0]:.2f}x ({c[n][1]:.2f}-{c[n][2]:.2f}) | {target} | "
                    f"{'' if pk is None else f'{pk:.0f}'} | "
                    f"{'' if pk is None or not gmem else f'{pk / gmem:.2f}x'} | "
                    f"{r['build_s'].get(n, float('nan')):.1f} |".replace("| nan |", "|  |")
                )
        agree = {(r["model"], k): v for r in rs for k, v in r.get("agreement", {}).items()}  # batch 1 each time
        if agree:
            lines += [
                "",
                "The same rules, two implementations, at these sizes: lrp_fx's relevance of the input next to "
                "LXT's, in float64 at batch 1 with lrp_fx's stabilisers at 1e-12 (LXT has none): relative L2 "
                "difference (the small-config parity test is `benchmarks/lxt_parity.py`):",
                "",
                "| model | pair | rel. difference |",
                "| --- | --- | ---: |",
            ]
            lines += [f"| {m_} | {k} | {v:.1e} |" for (m_, k), v in agree.items()]
        cached = [p for p in run["memory"] if p.get("env", "main") == env and p.get("weights_cached_mb")]
        if cached:
            lines += [
                "",
                "Weights lrp_fx caches between calls (hoisted parameter-only values; part of the probe's baseline): "
                + ", ".join(
                    sorted(
                        {
                            f"{p['model']} b{p['batch']} {p['method'].removeprefix('lrp_fx ')} "
                            f"{p['weights_cached_mb']:.0f} MB"
                            for p in cached
                        }
                    )
                )
                + ".",
            ]
        lines.append("")
    lines += [run.get("notes", "")]
    return "\n".join(lines).rstrip() + "\n"


def machine(threads: int) -> dict[str, Any]:
    import transformers

    info = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "load": "/".join(f"{x:.1f}" for x in os.getloadavg()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
    }
    with contextlib.suppress(Exception):
        import importlib.metadata as md

        info["lxt"] = md.version("lxt")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="ViT-B/16, batch 1, 1 repeat, no memory; prints only")
    ap.add_argument("--lxt", action="store_true", help="also run LXT side by side in .venv-lxt")
    ap.add_argument("--lxt-only", action="store_true", help="only the LXT-environment run")
    ap.add_argument("--in-lxt-env", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", default=None, help="save the raw run")
    ap.add_argument("--from-json", nargs="+", default=None, help="render saved runs (merged)")
    ap.add_argument("--out", default=None, help=f"markdown to write (default {DOC.relative_to(ROOT)})")
    ap.add_argument("--memory-probe", nargs=3, metavar=("MODEL", "BATCH", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        name, batch, method = args.memory_probe
        print(json.dumps(memory_probe(name, int(batch), method)))
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.from_json:
        run = {"results": [], "memory": [], "machines": {}}
        for f in args.from_json:
            part = json.loads(Path(f).read_text())
            for k in ("results", "memory"):
                run[k] += part[k]
            run["machines"].update(part["machines"])
    else:
        if args.quick:
            args.models, args.batches, args.repeats, args.skip_memory = ["vit_b_16"], [1], 1, True
        env = "lxt" if args.in_lxt_env else "main"
        run = {"results": [], "memory": [], "machines": {env: machine(args.threads)}}
        if not args.lxt_only or args.in_lxt_env:
            for name in args.models:
                for b in args.batches:
                    log(f"{name} batch {b} ({env})")
                    run["results"].append(bench_config(name, b, args.repeats, args.in_lxt_env, log))
                    if not args.skip_memory:
                        python = str(LXT_PYTHON) if args.in_lxt_env else sys.executable
                        for n in method_names(name, args.in_lxt_env):
                            rec = run_probe(python, name, b, n, args.threads, log)
                            if rec is not None:
                                rec["env"] = env
                                run["memory"].append(rec)
        if (args.lxt or args.lxt_only) and not args.in_lxt_env:
            if not LXT_PYTHON.exists():
                log("no .venv-lxt: build it with `bash benchmarks/lxt_env.sh`")
                return 1
            tmp = Path(args.json or "/tmp/speed_transformers.json").with_suffix(".lxt.json")
            cmd = [str(LXT_PYTHON), __file__, "--in-lxt-env", "--json", str(tmp), "--out", "none"]
            cmd += ["--models", *args.models, "--batches", *map(str, args.batches), "--repeats", str(args.repeats)]
            cmd += ["--threads", str(args.threads)] + (["--skip-memory"] if args.skip_memory else [])
            subprocess.run(cmd, check=True)
            part = json.loads(tmp.read_text())
            run["results"] += part["results"]
            run["memory"] += part["memory"]
            run["machines"].update(part["machines"])
        if args.json:
            Path(args.json).write_text(json.dumps(run, indent=1))
    text = render(run)
    print(text)
    out = args.out or (None if args.quick else str(DOC))
    if out and out != "none":
        Path(out).write_text(text)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
