"""Rule coverage and conservation over the convolutional torchvision classification models.

For each model (``weights=None``, eval mode, seeded) this runs

1. ``lrp_fx.attribute(model, x, composite="epsilon_plus_flat")`` in strict mode: the coverage check. On a missing
   rule the model is attributed again with ``strict=False`` to count how many nodes have a rule, and the missing ops
   are recorded.
2. ``lrp_fx.attribute(model, x, composite="epsilon", track_absorbed=True)`` on the same model made bias-free: every
   additive constant zeroed (convolution and linear biases, batch-norm shifts and running means, norm-layer
   shifts), weights rescaled so that each convolution and linear layer outputs unit RMS on ``x`` (``unit_scale``:
   random weights otherwise shrink the signal to where the 1e-6 stabiliser absorbs everything), in float64 so that
   the numbers measure the rules rather than round-off. Only the epsilon stabilisers then absorb relevance:
   ``|sum R_in + sum absorbed - sum R_out| / |sum R_out|`` checks the bookkeeping (round-off level) and
   ``|sum R_in - sum R_out| / |sum R_out|`` is the stabilisers' share (about 1e-5).

Every result is printed and written as a markdown table (default ``docs/coverage.md``). A model that fails (capture,
rule, anything) is recorded with its error and the sweep goes on; with ``--isolate`` each model runs in its own
process, so that a crash or an out-of-memory kill costs one row too.

    python benchmarks/coverage.py                          # every conv model, 64 px (more where a model needs it)
    python benchmarks/coverage.py --isolate --json /tmp/rows.json   # the full sweep as docs/coverage.md has it
    python benchmarks/coverage.py --models resnet18,vgg11 --out /tmp/cov.md --size 96
    python benchmarks/coverage.py --from-json /tmp/rows.json        # re-render a table without running anything

Other families (``--family``; the Hugging Face models in ``benchmarks/_hf_models.py``):

* ``--family transformers``: 50 Hugging Face families from tiny configs (text encoders, decoders, encoder-decoders,
  vision, audio, multimodal, state-space, mixture-of-experts): coverage under ``attnlrp``, conservation under
  ``cplrp`` and ``attnlrp`` in float64 with every additive constant zeroed (``run_transformer``);
* ``--family paper15``: the DynamicLRP paper's 15 architectures at their published sizes, built and captured on the
  meta device (``lrp_fx.coverage.report``): node counts and rule coverage, no memory spent (``run_paper``);
* ``--family tasks``: torchvision beyond classification (``task_cases``): every video, segmentation and optical-flow
  model and one detector (SSDlite, whole and backbone + head), measured as the CNNs are (``run_task``);
* ``--family all``: CNNs, transformers, paper15 and tasks in turn.

    python benchmarks/coverage.py --family transformers --json docs/coverage_rows/transformers.json
    python benchmarks/coverage.py --family paper15 --isolate --json docs/coverage_rows/paper15.json
    python benchmarks/coverage.py --family tasks --isolate --timeout 900 --json docs/coverage_rows/tasks.json
    python benchmarks/coverage.py --from-json cnn=docs/coverage_rows/cnn.json,\
transformers=docs/coverage_rows/transformers.json,paper15=docs/coverage_rows/paper15.json   # docs/coverage.md
    python benchmarks/coverage.py --from-json tasks=docs/coverage_rows/tasks.json --update  # that section only
    python benchmarks/coverage.py --family tasks --refresh-promises  # new planner statistics, other columns kept
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import gc
import json
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import lrp_fx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_hf_models.py

EXCLUDED_PREFIXES = ("vit_", "swin_", "maxvit_")  # transformers: a later issue
MIN_SIZE = {"inception_v3": 96}  # inception_v3 needs at least 75 px
BATCH = 2
# Families with squeeze-excitation gates, whose conservation error is summarised apart (see the rendered notes).
GATED_PREFIXES = ("efficientnet_", "mobilenet_v3_", "regnet_y_")
# Each family's section heading in docs/coverage.md (``--update`` finds the sections it replaces by them).
TITLES = {
    "cnn": "# Rule coverage: torchvision convolutional classifiers",
    "tasks": "# Rule coverage: torchvision video, segmentation, optical flow and detection models",
    "transformers": "# Rule coverage: Hugging Face transformers families",
    "paper15": "# The DynamicLRP paper's 15 architectures at their published sizes",
}


def conv_models() -> list[str]:
    """Every torchvision classification model except the transformer families."""
    names = torchvision.models.list_models(module=torchvision.models)
    return sorted(n for n in names if not n.startswith(EXCLUDED_PREFIXES))


def input_size(name: str, size: int) -> int:
    return max(size, MIN_SIZE.get(name, 0))


def build(name: str, seed: int = 0) -> nn.Module:
    """The model with random (seeded) weights in eval mode; auxiliary heads off where a model has them."""
    torch.manual_seed(seed)
    kwargs = {"weights": None}
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(name, **kwargs).eval()


def example(name: str, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    s = input_size(name, size)
    return torch.randn(BATCH, 3, s, s, generator=gen)


@torch.no_grad()
def zero_biases(model: nn.Module) -> None:
    """Set every additive constant of the model to zero: conv/linear biases, batch-norm shifts and running means,
    layer/group-norm shifts. The model then is a bias-free network and LRP-epsilon is conservative up to its
    stabiliser."""
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.bias is not None:
            m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.bias is not None:
                m.bias.zero_()
            if m.running_mean is not None:
                m.running_mean.zero_()
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.bias is not None:
            m.bias.zero_()
    for name, p in model.named_parameters():  # custom layer norms (e.g. convnext's LayerNorm2d subclass)
        if name.endswith("bias"):
            p.zero_()


@torch.no_grad()
def unit_scale(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
    """Rescale every convolution and linear weight so that its output has unit RMS on ``x`` (an LSUV-style
    data-dependent init, one eval pass, each layer seeing the already rescaled layers before it).

    Meant for bias-free models (``zero_biases`` first): dividing ``W`` by ``c`` then divides the output by exactly
    ``c``. Untrained networks otherwise shrink the signal (logits of ~1e-14 in efficientnet, ~1e-2 in alexnet), and
    the epsilon stabiliser (1e-6) then absorbs a large share of the relevance: the conservation check would measure
    the initialisation, not the rules. A tuple ``x`` is passed as positional inputs (RAFT's two images); a layer
    called several times (RAFT's recurrent update) is rescaled at each call.
    """

    def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor | None:
        rms = out.double().pow(2).mean().sqrt().item()
        if not (rms > 0 and rms < float("inf")):
            return None
        module.weight.div_(rms)
        return out / rms

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model(*x) if isinstance(x, tuple) else model(x)
    finally:
        for h in handles:
            h.remove()


def output_relevance(res: lrp_fx.Attribution) -> torch.Tensor:
    """The relevance the program seeded for ``target=None``: ``onehot(argmax(output)) * output``.

    Computed from ``res.output`` because ``res.seed`` is the program's seed *input* (zeros in argmax mode, the
    one-hot for class targets), not the output relevance actually used.
    """
    out = res.output.double()
    return torch.zeros_like(out).scatter(-1, out.argmax(-1, keepdim=True), 1.0) * out


def conservation(res: lrp_fx.Attribution) -> tuple[float, float]:
    """``(with absorbed, plain)`` relative conservation errors of one ``target=None`` attribution (in float64)."""
    seed = output_relevance(res).sum().item()
    r_in = res.relevance.double().sum().item()
    absorbed = sum(res.absorbed.values())
    denom = abs(seed) if seed != 0 else 1.0
    return abs(r_in + absorbed - seed) / denom, abs(r_in - seed) / denom


@dataclass
class Row:
    model: str
    size: int = 0
    nodes: int = 0
    ops: int = 0
    live: int = 0
    ruled: int = 0
    promises: int = 0
    dead: int = 0  # promise requests no rule result depends on, dropped before planning (``res.stats.dead``)
    kept: int = 0
    aliased: int = 0
    recomputed: int = 0
    mb_kept: float = 0.0
    err_absorbed: float | None = None
    err_plain: float | None = None
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing


def _graph_counts(res: lrp_fx.Attribution, row: Row) -> None:
    graph = res.program.captured.graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    row.nodes = len(calls)
    row.ops = len({str(n.target) for n in calls})
    row.live = len(res.program.assignments)
    row.ruled = sum(1 for a in res.program.assignments if not a.fallback)


def _coverage_pass(row: Row, model: nn.Module, inputs: Any, composite: str, **kw: Any) -> lrp_fx.Attribution:
    """The coverage half of a row: ``composite`` strictly (non-strict when a rule is missing, to count: the missing
    ops go to ``row.missing``), then the graph counts, a check for non-finite relevance and the promise statistics.
    Returns the attribution (callers read which ops it assigned)."""
    try:
        res = lrp_fx.attribute(model, inputs, composite=composite, **kw)
    except lrp_fx.MissingRuleError:
        res = lrp_fx.attribute(model, inputs, composite=composite, strict=False, **kw)
        row.missing = sorted({a.op for a in res.program.assignments if a.fallback})
    _graph_counts(res, row)
    leaves = torch.utils._pytree.tree_leaves(res.relevance)
    if not all(torch.isfinite(r).all() for r in leaves if isinstance(r, torch.Tensor)):
        row.error = f"non-finite relevance under {composite}"
    stats = res.stats.as_dict()
    row.promises, row.kept, row.aliased = stats["promises"], stats["kept"], stats["aliased"]
    row.dead = stats["dead"]
    row.recomputed, row.mb_kept = stats["recomputed"], stats["bytes_kept"] / 2**20
    return res


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}"


@contextlib.contextmanager
def _measuring(row: Any, short: Callable[[BaseException], str] = _short) -> Iterator[None]:
    """One row of a sweep: its wall time into ``row.seconds``, and an exception into ``row.error`` (one model
    failing must not stop the sweep); the program cache emptied afterwards either way."""
    start = time.perf_counter()
    try:
        yield
    except Exception as err:
        row.error = short(err)
        traceback.print_exc(file=sys.stderr)
    finally:
        lrp_fx.CACHE.clear()
        gc.collect()
        row.seconds = time.perf_counter() - start


def run_model(name: str, size: int) -> Row:
    row = Row(name, size=input_size(name, size))
    with _measuring(row):
        model = build(name)
        x = example(name, size)
        _coverage_pass(row, model, x, "epsilon_plus_flat", reuse_weights=False)
        lrp_fx.CACHE.clear()  # the float32 program and its cached weights are not needed again
        zero_biases(model)
        model.double()
        x = x.double()
        unit_scale(model, x)
        res = lrp_fx.attribute(  # no weight cache: one call per program, and regnet_y_128gf must fit in memory
            model, x, composite="epsilon", track_absorbed=True, strict=not row.missing, reuse_weights=False
        )
        row.err_absorbed, row.err_plain = conservation(res)
        del res, model
    return row


def _fmt_err(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


HEADER = (
    "| model | px | aten nodes | unique ops | nodes with a rule | promises | dead | kept | aliased | recomputed "
    "| MB kept | cons. err (+absorbed) | cons. err (plain) | s | status |"
)


def promise_note(dead_column: bool) -> str:
    """The sentence every section's text has on what the promise columns count (the planner since it drops dead
    requests and counts storages, not views)."""
    dead = "dropped before planning and counted in *dead*" if dead_column else "dropped before planning"
    return (
        f"Promise counts exclude dead requests (those no rule result depends on: {dead}), and *MB kept* counts "
        "each kept storage once (a kept view is not counted apart from its base)."
    )


def _status(r: Row) -> str:
    """The status column: the error, the ops without a rule, or ok."""
    if r.error and not r.nodes:
        return r.error.replace("|", "\\|")
    if r.missing:
        return "missing: " + ", ".join(f"`{m}`" for m in r.missing)
    return "ok" if not r.error else r.error.replace("|", "\\|")


def table_row(r: Row) -> str:
    status, cover = _status(r), f"{r.ruled}/{r.live}" if r.live else "-"
    return (
        f"| {r.model} | {r.size} | {r.nodes} | {r.ops} | {cover} | {r.promises} | {r.dead} | {r.kept} | {r.aliased} "
        f"| {r.recomputed} | {r.mb_kept:.1f} | {_fmt_err(r.err_absorbed)} | {_fmt_err(r.err_plain)} "
        f"| {r.seconds:.0f} | {status} |"
    )


def gated(name: str) -> bool:
    """Whether a model has squeeze-excitation gates (see the notes in the rendered table)."""
    return name.startswith(GATED_PREFIXES)


def _conservation_summary(rows: list[Row]) -> str:
    parts = []
    for label, group in (
        ("without squeeze-excitation gates", [r for r in rows if r.err_plain is not None and not gated(r.model)]),
        ("with gates", [r for r in rows if r.err_plain is not None and gated(r.model)]),
    ):
        if not group:
            continue
        worst = max(group, key=lambda r: r.err_plain)
        parts.append(
            f"{len(group)} models {label}: plain median {statistics.median(r.err_plain for r in group):.1e}, "
            f"worst {worst.err_plain:.1e} ({worst.model}), +absorbed at most {max(r.err_absorbed for r in group):.1e}"
        )
    return "; ".join(parts)


def totals(rows: list[Row]) -> str:
    ok = sum(1 for r in rows if r.ok)
    nodes = sum(r.nodes for r in rows)
    live = sum(r.live for r in rows)
    ruled = sum(r.ruled for r in rows)
    pct = 100.0 * ruled / live if live else 0.0
    text = (
        f"**Totals:** {len(rows)} models, {ok} attributed strictly, {len(rows) - ok} failing; "
        f"{nodes} aten nodes, {ruled}/{live} live nodes with a rule ({pct:.2f}% covered)."
    )
    summary = _conservation_summary(rows)
    return text + (f" Conservation (bias-free, float64): {summary}." if summary else "")


def render(rows: list[Row], size: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        TITLES["cnn"],
        "",
        f"Generated by `python benchmarks/coverage.py` on {today}; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, machine: 2-core CPU.",
        "",
        totals(rows),
        "",
        f"Inputs: batch {BATCH}, {size} px square (more where a model needs it, column *px*), random weights "
        "(`weights=None`, seed 0). Every model of `torchvision.models.list_models(module=torchvision.models)` except "
        "`vit_*`, `swin_*`, `maxvit_*` (transformers, covered separately).",
        "",
        "Columns:",
        "",
        "* *aten nodes*, *unique ops*: `call_function` nodes of the captured graph after canonicalisation "
        "(batch norms folded, identities dropped) and their distinct targets.",
        "* *nodes with a rule*: live nodes (those relevance flows through) that have a registered rule, under "
        "`epsilon_plus_flat` in strict mode (re-run non-strict when a rule is missing, to count).",
        "* *promises* ... *MB kept*: the promise planner's statistics (`res.stats`) for that program, default "
        f"(unlimited) memory budget. {promise_note(True)}",
        "* *cons. err*: composite `epsilon`, `target=None`, on the model made bias-free and cast to float64: every "
        "additive constant zeroed (conv/linear biases, batch-norm shifts and running means, norm-layer shifts) and "
        "each conv/linear weight rescaled to unit output RMS on the input (`unit_scale`; untrained weights otherwise "
        "shrink the logits to 1e-2 .. 1e-14, where the 1e-6 stabiliser absorbs most of the relevance). "
        "*+absorbed*: `|sum R_in + sum absorbed - sum R_out| / |sum R_out|` with `track_absorbed=True` (the "
        "bookkeeping: round-off level); *plain*: `|sum R_in - sum R_out| / |sum R_out|`, the share the epsilon "
        "stabilisers absorbed (no bias is left to absorb anything else).",
        "* *s*: wall seconds for both attributions including capture and program build, on a shared, loaded "
        "machine (compare within one run only).",
        "",
        "Why some plain errors are large:",
        "",
        "* Squeeze-excitation families (`efficientnet_*`, `mobilenet_v3_*`, `regnet_y_*`) are listed apart because "
        "their gates `x * sigmoid(g)` need their own rule: the gate is a constant and `x` receives all the "
        "relevance (`lrp_fx.prepare`, Arras et al.'s signal-take-all). With the uniform product rule instead (half "
        "to the gate) the plain error was 5e4 on efficientnet_b0 and 4e30 on efficientnet_v2_l: `R / stab(g)` "
        "explodes where the gate's logits are near zero.",
        "* `convnext_*` (~1e-4): layer norm hands its input relevance proportional to the *centred* input, so the "
        "depthwise convolution and the residual sum feeding it see relevance that does not vanish where their "
        "output does, and their stabilisers absorb a small share.",
        "",
        HEADER,
        "|" + "---|" * (HEADER.count("|") - 1),
        *[table_row(r) for r in rows],
        "",
    ]
    return "\n".join(lines)


def run_isolated(name: str, size: int, timeout: float) -> Row:
    """``run_model`` in a fresh interpreter, so that a crash or an out-of-memory kill costs one row, not the sweep."""
    cmd = [sys.executable, __file__, "--worker", name, "--size", str(size)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Row(name, size=input_size(name, size), error=f"timed out after {timeout:.0f} s", seconds=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        killed = " (killed: out of memory?)" if proc.returncode < 0 else ""
        why = f"worker exited with code {proc.returncode}{killed}"
        return Row(name, size=input_size(name, size), error=why, seconds=time.perf_counter() - start)
    sys.stderr.write(proc.stderr)
    return Row(**json.loads(lines[-1]))


# -- transformers: benchmarks/_hf_models.py ---------------------------------------------------------------------------
# Parameters and buffers that are added to activations but do not depend on the inputs (besides every ``*bias``):
# absolute position tables, token-type tables, class / distillation / mask / register tokens, Pix2Struct's patch
# row and column tables. They absorb relevance as biases do, so the plain conservation check zeroes them.
ADDITIVE_NAMES = (
    "position_embedding",
    "embed_positions",
    "wpe",
    "pos_embed",
    "positional_embedding",
    "token_type_embeddings",
    "cls_token",
    "mask_token",
    "distillation_token",
    "class_embedding",
    "register_tokens",
    "row_embedder",
    "column_embedder",
)


@torch.no_grad()
def zero_additive(model: nn.Module, names: tuple[str, ...] = ADDITIVE_NAMES) -> list[str]:
    """Zero every input-independent additive constant of a transformer (see ``ADDITIVE_NAMES``, or ``names``):
    parameters and buffers named ``bias`` or ``*_bias`` (linear and convolution biases, layer-norm shifts, Mamba-2's
    ``dt_bias``, SigLIP's ``logit_bias``, relative-position bias tables), position and token-type tables, class and
    mask tokens. Returns the names zeroed. Multiplicative constants (norm weights, layer scales, rotary tables)
    stay."""
    zeroed = []
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, t in tensors:
        if not t.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias" or leaf.endswith("_bias") or any(k in name for k in names):
            t.zero_()
            zeroed.append(name)
    return zeroed


@torch.no_grad()
def unit_scale_any(model: nn.Module, inputs: dict) -> None:
    """``unit_scale`` for models fed keyword inputs: every ``nn.Linear``, convolution, Hugging Face ``Conv1D``
    (GPT-2's transposed linear) and embedding table gets its weight divided by its output's RMS on ``inputs``, one
    eval pass (tables of zeroed position embeddings stay zero). A module
    called several times (ALBERT's shared layers) is rescaled at each call; tied weights are rescaled by the last
    module using them. Meant for models whose additive constants are zeroed (``zero_additive``)."""
    from transformers.pytorch_utils import Conv1D

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(out, torch.Tensor):
            return None
        rms = out.double().pow(2).mean().sqrt().item()
        if not (rms > 0 and rms < float("inf")):
            return None
        module.weight.div_(rms)
        return out / rms

    kinds = (nn.modules.conv._ConvNd, nn.Linear, Conv1D, nn.Embedding)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        model(**inputs)
    finally:
        for h in handles:
            h.remove()


def to_double(inputs: dict) -> dict:
    """Floating-point tensors of ``inputs`` in float64 (token ids and masks unchanged)."""
    return {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}


def total_relevance(res: lrp_fx.Attribution) -> float:
    """Sum of the relevance of every input that received some (pixels, audio, token ids)."""
    leaves = torch.utils._pytree.tree_leaves(res.relevance)
    return sum(float(r.double().sum()) for r in leaves if isinstance(r, torch.Tensor))


def conservation_any(res: lrp_fx.Attribution, seeded: bool = False) -> tuple[float, float]:
    """``conservation`` for models with several inputs (a dict of relevances): ``(with absorbed, plain)``.
    ``seeded``: the attribution had a callable or tensor target, whose output relevance is ``res.seed``."""
    seed = (res.seed.double().sum() if seeded else output_relevance(res).sum()).item()
    r_in = total_relevance(res)
    absorbed = sum(res.absorbed.values())
    denom = abs(seed) if seed != 0 else 1.0
    return abs(r_in + absorbed - seed) / denom, abs(r_in - seed) / denom


@dataclass
class HFRow(Row):
    """A transformers row: ``Row`` plus the family's kind, its inputs, the attnlrp bookkeeping error and the nodes
    that absorbed most in the plain (cplrp) run."""

    kind: str = ""
    inputs: str = ""
    err_attnlrp: float | None = None
    absorbers: str = ""


def _describe(inputs: dict) -> str:
    parts = []
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            parts.append(f"{k} {'x'.join(map(str, v.shape))}")
    return ", ".join(parts)


def _absorbers(res: lrp_fx.Attribution, seed: float, top: int = 2) -> str:
    big = sorted(res.absorbed.items(), key=lambda kv: -abs(kv[1]))[:top]
    denom = abs(seed) if seed else 1.0
    return ", ".join(f"{k} {v / denom:+.1e}" for k, v in big if abs(v) > 1e-6 * denom)


def hf_setup(case: Any) -> tuple[nn.Module, dict, dict]:
    """One ``_hf_models`` tiny case as its row measures it: the model (seed 0), its inputs (seed 0) and the options
    of ``lrp_fx.attribute``."""
    torch.manual_seed(0)
    model = case.build()
    inputs = case.inputs(torch.Generator().manual_seed(0))
    return model, inputs, {"output": case.output}


def run_transformer(name: str) -> HFRow:
    """One family of ``_hf_models.tiny_cases()``: coverage under ``attnlrp`` (strict; non-strict to count when a rule
    is missing), then conservation in float64 on the model with its additive constants zeroed (``zero_additive``):
    ``cplrp`` (every rule conservative up to stabilisers: plain and +absorbed errors) and ``attnlrp`` (the softmax's
    Taylor rule is not conservative: +absorbed only, the bookkeeping)."""
    from _hf_models import tiny_case

    case = tiny_case(name)
    row = HFRow(name, kind=case.kind)
    with _measuring(row):
        model, inputs, kw = hf_setup(case)
        row.inputs = _describe(inputs)
        _coverage_pass(row, model, inputs, "attnlrp", **kw)
        zero_additive(model)
        model.double()
        inputs = to_double(inputs)
        unit_scale_any(model, inputs)
        strict = not row.missing
        res = lrp_fx.attribute(model, inputs, composite="cplrp", track_absorbed=True, strict=strict, **kw)
        row.err_absorbed, row.err_plain = conservation_any(res)
        row.absorbers = _absorbers(res, output_relevance(res).sum().item())
        res = lrp_fx.attribute(model, inputs, composite="attnlrp", track_absorbed=True, strict=strict, **kw)
        row.err_attnlrp = conservation_any(res)[0]
        del res, model
    return row


HF_HEADER = (
    "| family | kind | inputs | aten nodes | unique ops | nodes with a rule | promises | kept | MB kept "
    "| cplrp err (+absorbed) | cplrp err (plain) | attnlrp err (+absorbed) | s | status |"
)


def hf_table_row(r: HFRow) -> str:
    status, cover = _status(r), f"{r.ruled}/{r.live}" if r.live else "-"
    return (
        f"| {r.model} | {r.kind} | {r.inputs} | {r.nodes} | {r.ops} | {cover} | {r.promises} | {r.kept} "
        f"| {r.mb_kept:.2f} | {_fmt_err(r.err_absorbed)} | {_fmt_err(r.err_plain)} | {_fmt_err(r.err_attnlrp)} "
        f"| {r.seconds:.0f} | {status} |"
    )


def _totals_head(rows: list, noun: str, kinds_noun: str) -> str:
    """``**Totals:** N <noun> (K <kinds_noun>), ... live nodes with a rule (P% covered).`` for a family's rows."""
    ok = sum(1 for r in rows if r.ok)
    nodes = sum(r.nodes for r in rows)
    live = sum(r.live for r in rows)
    ruled = sum(r.ruled for r in rows)
    pct = 100.0 * ruled / live if live else 0.0
    kinds = len({r.kind for r in rows})
    return (
        f"**Totals:** {len(rows)} {noun} ({kinds} {kinds_noun}), {ok} attributed strictly, {len(rows) - ok} failing; "
        f"{nodes} aten nodes, {ruled}/{live} live nodes with a rule ({pct:.2f}% covered)."
    )


def hf_totals(rows: list[HFRow]) -> str:
    text = _totals_head(rows, "families", "kinds")
    measured = [r for r in rows if r.err_plain is not None]
    if measured:
        worst = max(measured, key=lambda r: r.err_plain)
        worst_abs = max(measured, key=lambda r: r.err_absorbed)
        attn = [r for r in measured if r.err_attnlrp is not None]
        worst_attn = max(attn, key=lambda r: r.err_attnlrp) if attn else None
        text += (
            f" Conservation (additive constants zeroed, float64), cplrp: plain median "
            f"{statistics.median(r.err_plain for r in measured):.1e}, worst {worst.err_plain:.1e} ({worst.model}); "
            f"+absorbed worst {worst_abs.err_absorbed:.1e} ({worst_abs.model})"
        )
        if worst_attn is not None:
            text += f"; attnlrp +absorbed worst {worst_attn.err_attnlrp:.1e} ({worst_attn.model})"
        text += "."
    return text


def _kinds(rows: list[HFRow]) -> str:
    order = ["text encoder", "decoder", "encoder-decoder", "vision", "audio", "multimodal", "state-space", "moe"]
    counts = {k: sum(1 for r in rows if r.kind == k) for k in order}
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n)


def render_transformers(rows: list[HFRow]) -> str:
    """The transformers section of docs/coverage.md."""
    import transformers

    today = datetime.date.today().isoformat()
    lines = [
        TITLES["transformers"],
        "",
        f"Generated by `python benchmarks/coverage.py --family transformers` on {today}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, machine: 2-core CPU.",
        "",
        hf_totals(rows),
        "",
        f"Families per kind: {_kinds(rows)}.",
        "",
        "Every family is built from a tiny config in `benchmarks/_hf_models.py` (random weights, nothing downloaded; "
        "hidden size 32 (16 and 32 in the stages of Swin, ConvNeXt and SegFormer), 2 layers, 4 heads, 2 key-value "
        "heads where the family has grouped-query attention, vocabulary 128, 8 tokens, 32-pixel images, 0.2 s of "
        "audio), batch 2, the second text sample padded by two tokens where the family takes an attention mask. "
        "Attention through `scaled_dot_product_attention` where the family supports it, eager otherwise; "
        'mixture-of-experts layers with `experts_implementation="batched_mm"` (static shapes); Mamba and Mamba-2 '
        "with their reference PyTorch scans. Explained output: classifier logits; for causal LMs, encoder-decoders "
        "(fed `decoder_input_ids`) and state-space models the next-token logits at the last position; for CLIP and "
        "SigLIP the image-text logits. `target=None` (the argmax).",
        "",
        "Columns:",
        "",
        "* *aten nodes*, *unique ops*, *nodes with a rule*, *promises* ... *MB kept*: as in the CNN table, under "
        f"`attnlrp` in strict mode. {promise_note(False)}",
        "* *cplrp err*: composite `cplrp` with `track_absorbed=True` on the model in float64 with every additive "
        "constant that does not depend on the inputs zeroed (`zero_additive`: parameters and buffers named `bias` "
        "or `*_bias`, i.e. linear/convolution biases, layer-norm shifts, relative-position bias tables, SigLIP's "
        "logit bias, Mamba-2's `dt_bias`; absolute position and token-type tables; class, distillation, mask and "
        "register tokens), and each linear, convolution and embedding weight rescaled to unit output RMS "
        "(`unit_scale_any`, as `unit_scale` for the CNNs). Such constants are not inputs, so the relevance an `add` "
        "or a `cat` hands them is *absorbed*: "
        "recorded per node with `track_absorbed=True`, never lost. *+absorbed*: "
        "`|sum R_in + sum absorbed - sum R_out| / |sum R_out|` (the bookkeeping); *plain*: "
        "`|sum R_in - sum R_out| / |sum R_out|`, what the stabilisers and any constant left over absorbed. "
        "`R_in` sums every input that receives relevance (token ids per token, pixels, audio samples, "
        "encoder and decoder tokens).",
        "* *attnlrp err (+absorbed)*: the same under `attnlrp`, whose softmax (Taylor) rule is not conservative by "
        "design: input plus absorbed relevance against the output relevance.",
        "",
        "What the sweep needed beyond BERT, GPT-2, Llama and ViT: rules for `native_group_norm` (wav2vec 2.0, "
        "HuBERT), `topk` and other selections, `cumsum` (registered by default now) and further unary functions; "
        "`lrp_fx.prepare` marking mixture-of-experts router weights and state-space decays `exp(dt A)` as constants "
        "(see docs/transformers.md); routing ops recording what a constant input, a pad value or a narrowing cast "
        "keeps. *+absorbed* errors of ~1e-8 come from families that run part of the model in float32 whatever the "
        "input dtype (OLMo's layer norm, the eager attention scores of GPT-Neo, GPT-J and BLOOM, Mamba-2's scan): "
        "the rules there compute in float32; the plain errors are the epsilon stabilisers' "
        "share (1e-6 against unit-scale activations), largest where an attention output or a residual sum has "
        "entries near zero.",
        "",
        HF_HEADER,
        "|" + "---|" * (HF_HEADER.count("|") - 1),
        *[hf_table_row(r) for r in rows],
        "",
    ]
    return "\n".join(lines)


# -- the paper's 15 architectures at published sizes (meta device) ----------------------------------------------------
@dataclass
class PaperRow:
    model: str
    source: str = ""
    params_m: float = 0.0
    inputs: str = ""
    nodes: int = 0
    ops: int = 0
    live: int = 0
    ruled: int = 0
    promises: int = 0
    dead: int = 0
    mb_kept: float = 0.0
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing


def run_paper(name: str, trace: bool = True) -> PaperRow:
    """One of ``_hf_models.paper15()``, built on the meta device and captured on meta inputs: node counts and rule
    coverage (``lrp_fx.coverage.report``), with the attribution program traced on fake tensors (no memory spent)."""
    from _hf_models import paper_case

    from lrp_fx.coverage import report

    case = paper_case(name)
    row = PaperRow(name, source=case.kind)
    with _measuring(row):
        with torch.device("meta"):
            model = case.build()
            inputs = case.inputs(None)
        row.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        row.inputs = _describe(inputs)
        rep = report(model, inputs, composite=case.extra.get("composite", "attnlrp"), output=case.output, trace=trace)
        row.nodes, row.ops, row.live, row.ruled = rep.nodes, rep.unique_ops, rep.live, rep.ruled
        row.missing = [m.op for m in rep.missing]
        if rep.stats is not None:
            row.promises, row.mb_kept = rep.stats.promises, rep.stats.bytes_kept / 2**20
            row.dead = rep.stats.dead
    return row


PAPER_HEADER = (
    "| architecture | built with | parameters (M) | inputs | aten nodes | unique ops | nodes with a rule "
    "| promises | MB kept | s | status |"
)


def paper_table_row(r: PaperRow) -> str:
    if r.error:
        status = r.error.replace("|", "\\|")
    elif r.missing:
        status = "missing: " + ", ".join(f"`{m}`" for m in r.missing)
    else:
        status = "ok"
    cover = f"{r.ruled}/{r.live}" if r.live else "-"
    return (
        f"| {r.model} | {r.source} | {r.params_m:.1f} | {r.inputs} | {r.nodes} | {r.ops} | {cover} | {r.promises} "
        f"| {r.mb_kept:.0f} | {r.seconds:.0f} | {status} |"
    )


def paper_totals(rows: list[PaperRow]) -> str:
    nodes = sum(r.nodes for r in rows)
    live = sum(r.live for r in rows)
    ruled = sum(r.ruled for r in rows)
    ok = sum(1 for r in rows if r.ok)
    pct = 100.0 * ruled / live if live else 0.0
    return (
        f"**Totals:** {len(rows)} architectures, {ok} fully covered; {nodes} aten nodes, {ruled}/{live} live nodes "
        f"with a rule ({pct:.2f}%), no fallback. DynamicLRP's reference point: 99.92% of 31,465 nodes on the same 15 "
        "architectures, with an identity fallback for the rest."
    )


def render_paper(rows: list[PaperRow]) -> str:
    today = datetime.date.today().isoformat()
    return "\n".join(
        [
            TITLES["paper15"],
            "",
            f"Generated by `python benchmarks/coverage.py --family paper15` on {today}; torch {torch.__version__}.",
            "",
            paper_totals(rows),
            "",
            "Configs written out in `benchmarks/_hf_models.py` (`paper15()`; torchvision models by name; SigLIP2 as "
            "the image-text model, So400m vision tower and its text tower), built under "
            "`torch.device('meta')` and captured on meta inputs: `lrp_fx.coverage.report` exports, canonicalises and "
            "prepares the graph, assigns rules (`attnlrp`; `epsilon_plus_flat` for the CNNs) and traces the "
            "attribution program with fake tensors, so no weight or activation is ever allocated (*MB kept*: what "
            f"the program would keep at these input sizes). {promise_note(False)} No conservation here: meta tensors "
            "have no values. "
            "Node counts are of our aten graph after canonicalisation (batch norms folded, identities dropped), "
            "which need not match the paper's graph granularity. Inputs: 224-pixel images (480 for EfficientNetV2-M, "
            "384 for SigLIP2), 128 tokens, 1 s of audio, 30 s of log-mel features, 1024 Pix2Struct patches; Mamba's "
            "reference scan is unrolled one step per token, so its node count grows linearly with the sequence "
            "(16 tokens here). Mixture-of-experts and state-space rules are exercised by the tiny-config table "
            "above.",
            "",
            PAPER_HEADER,
            "|" + "---|" * (PAPER_HEADER.count("|") - 1),
            *[paper_table_row(r) for r in rows],
            "",
        ]
    )


# -- torchvision beyond classification: video, segmentation, optical flow, detection ----------------------------------
# Inputs per model: (batch, frames, px) for video; r3d-style models run at 16 frames of 112 px, s3d's final 2x7x7
# average pool needs at least 13 frames of 209 px, MViT's position tables fix 16 frames of 224 px, Swin3D pads any
# size up to its windows (112 px is enough).
VIDEO_INPUT = {"s3d": (1, 16, 209), "mvit_v1_b": (1, 16, 224), "mvit_v2_s": (1, 16, 224)}
VIDEO_DEFAULT, SWIN3D_INPUT = (2, 16, 112), (1, 16, 112)
SEGMENTATION_INPUT = (2, 128)  # (batch, px)
FLOW_INPUT, FLOW_UPDATES = (2, 128), 2  # 128 px: RAFT's minimum (torchvision's weights meta, min_size)
DETECTION = "ssdlite320_mobilenet_v3_large"
DETECTION_INPUT = (2, 320)
TASK_ORDER = ("video", "segmentation", "optical flow", "detection")


def per_pixel_class(out: torch.Tensor) -> torch.Tensor:
    """Segmentation target: every pixel's predicted class, ``onehot(argmax over classes) * out`` (what
    ``target=None`` does for a classifier, per pixel): relevance sums to the summed winning logits."""
    return torch.zeros_like(out).scatter(1, out.argmax(1, keepdim=True), 1.0) * out


def per_anchor_class(out: torch.Tensor) -> torch.Tensor:
    """Detection-head target: every anchor's predicted class (background included) in ``[batch, anchors, classes]``
    logits, ``onehot(argmax) * out``."""
    return torch.zeros_like(out).scatter(-1, out.argmax(-1, keepdim=True), 1.0) * out


def flow_magnitude(out: torch.Tensor) -> torch.Tensor:
    """Optical-flow target: the flow's L1 magnitude, ``R = sign(flow) * flow`` at every pixel and both components
    (a plain ``R = flow`` would sum signed displacements that largely cancel)."""
    return out.sign() * out


# Ops that ``cplrp`` (the transformers table's conservation check) treats differently from ``epsilon``: softmax
# (``Taylor``, not conservative by design; ``cplrp``: ``Stop``, attention probabilities constant) and, with their
# ``eps``, the norms with statistics of their own input. A model with any of them is measured under both.
CPLRP_OPS = (
    "aten.native_layer_norm.default",
    "aten.native_group_norm.default",
    "aten._native_batch_norm_legit.no_stats",  # instance norm
    "aten._softmax.default",
)


def all_outputs(out: torch.Tensor) -> torch.Tensor:
    """``R = out``: every output explained as it is."""
    return out


class LastFlow(nn.Module):
    """RAFT returning the last of its ``num_flow_updates`` flow predictions (forward returns all of them)."""

    def __init__(self, raft: nn.Module, updates: int = FLOW_UPDATES):
        super().__init__()
        self.raft, self.updates = raft, updates

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return self.raft(image1, image2, num_flow_updates=self.updates)[-1]


class DetectionScores(nn.Module):
    """A whole torchvision detector fed a batch tensor: the first image's detection scores, after box decoding,
    score threshold and non-maximum suppression."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector(list(images))[0]["scores"]


class DetectionHead(nn.Module):
    """An SSD's backbone and head only: ``{"bbox_regression", "cls_logits"}`` per anchor, before the detector's
    pre-processing (normalisation, resize) and post-processing (box decoding, score threshold, NMS)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector.head(list(self.detector.backbone(images).values()))


@dataclass
class TaskCase:
    """One model of the tasks family: how to build it (random weights, nothing downloaded), its input shapes, and
    what is explained (``output=`` and ``target=`` of ``lrp_fx.attribute``; ``target=None``: the argmax class)."""

    name: str
    kind: str
    build: Callable[[], nn.Module]
    shapes: list[tuple[int, ...]]
    explained: str
    output: str | None = None
    target: Callable[[torch.Tensor], torch.Tensor] | None = None
    float64: bool = True  # RAFT builds float32 coordinate grids: its conservation is measured in float32
    additive: tuple[str, ...] = ()  # parameters added to activations, zeroed with the biases (``zero_additive``)


def task_cases() -> list[TaskCase]:
    """Every torchvision video, segmentation and optical-flow model, and one small detector (whole, and its
    backbone and head)."""
    models = torchvision.models
    cases = []
    for name in models.list_models(module=models.video):
        b, t, s = VIDEO_INPUT.get(name, SWIN3D_INPUT if name.startswith("swin3d") else VIDEO_DEFAULT)
        build = functools.partial(models.get_model, name, weights=None)
        case = TaskCase(name, "video", build, [(b, 3, t, s, s)], "argmax class")
        if name.startswith("mvit"):  # class token, absolute position tables (mvit_v1_b): zeroed as for transformers
            case.additive = ("pos_encoding.",)
        cases.append(case)
    b, s = SEGMENTATION_INPUT
    for name in models.list_models(module=models.segmentation):
        build = functools.partial(models.get_model, name, weights=None, weights_backbone=None)
        cases.append(
            TaskCase(name, "segmentation", build, [(b, 3, s, s)], "argmax class per pixel", "out", per_pixel_class)
        )
    b, s = FLOW_INPUT
    for name in models.list_models(module=models.optical_flow):
        build = functools.partial(lambda n: LastFlow(models.get_model(n, weights=None)), name)
        shapes = [(b, 3, s, s), (b, 3, s, s)]
        cases.append(TaskCase(name, "optical flow", build, shapes, "flow magnitude", None, flow_magnitude, False))
    b, s = DETECTION_INPUT
    detector = functools.partial(models.get_model, DETECTION, weights=None, weights_backbone=None)
    whole = lambda: DetectionScores(detector())  # noqa: E731
    cases.append(TaskCase(DETECTION, "detection", whole, [(b, 3, s, s)], "scores", target=all_outputs))
    cases.append(
        TaskCase(
            f"{DETECTION}:head",
            "detection",
            lambda: DetectionHead(detector()),
            [(b, 3, s, s)],
            "argmax class per anchor",
            "cls_logits",
            per_anchor_class,
        )
    )
    return cases


def task_case(name: str) -> TaskCase:
    for case in task_cases():
        if case.name == name:
            return case
    raise KeyError(f"unknown tasks model {name!r}")


@dataclass
class TaskRow(Row):
    """A tasks row: ``Row`` plus the task, the input shapes, what is explained, the conservation dtype and, for models
    with layer, group or instance norms or a softmax (``CPLRP_OPS``), the conservation errors under ``cplrp``."""

    kind: str = ""
    inputs: str = ""
    explained: str = ""
    cons_dtype: str = "float64"
    err_cplrp_absorbed: float | None = None
    err_cplrp_plain: float | None = None


def _short_task(err: BaseException) -> str:
    """``_short``, but a capture that stops on a data-dependent guard says where (the guard's expression is a sum of
    dozens of unbacked sizes)."""
    text = str(err)
    if "data-dependent expression" not in text:
        return _short(err)
    where = re.search(r"Caused by: \((.*?)\)", text)
    return f"{type(err).__name__}: torch.export cannot guard on a data-dependent size" + (
        f" ({where.group(1)})" if where else ""
    )


def task_setup(case: TaskCase) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict]:
    """One tasks case as its row measures it: the model (seed 0, eval mode), its inputs (seed 0) and the options of
    ``lrp_fx.attribute``."""
    torch.manual_seed(0)
    model = case.build().eval()
    gen = torch.Generator().manual_seed(0)
    xs = tuple(torch.randn(*s, generator=gen) for s in case.shapes)
    return model, xs, {"target": case.target, "output": case.output, "reuse_weights": False}


def run_task(name: str) -> TaskRow:
    """One model of ``task_cases()``, as ``run_model`` does for the CNNs: coverage under ``epsilon_plus_flat``
    (strict; non-strict to count when a rule is missing), then conservation under ``epsilon`` with
    ``track_absorbed=True`` on the bias-free (``zero_biases``), unit-scale (``unit_scale``) model in float64 (float32
    for RAFT), explaining the case's target; for a model with ops in ``CPLRP_OPS`` the same again under ``cplrp``."""
    case = task_case(name)
    row = TaskRow(
        name,
        kind=case.kind,
        inputs=", ".join("x".join(map(str, s)) for s in case.shapes),
        explained=case.explained,
        cons_dtype="float64" if case.float64 else "float32",
    )
    with _measuring(row, _short_task):
        model, xs, kw = task_setup(case)
        x = xs[0] if len(xs) == 1 else xs
        res = _coverage_pass(row, model, x, "epsilon_plus_flat", **kw)
        cplrp = any(a.op in CPLRP_OPS for a in res.program.assignments)
        del res
        lrp_fx.CACHE.clear()
        zero_biases(model)
        if case.additive:
            zero_additive(model, case.additive)
        if case.float64:
            model.double()
            xs = tuple(t.double() for t in xs)
        x = xs[0] if len(xs) == 1 else xs
        unit_scale(model, x)
        res = lrp_fx.attribute(model, x, composite="epsilon", track_absorbed=True, strict=not row.missing, **kw)
        row.err_absorbed, row.err_plain = conservation_any(res, seeded=case.target is not None)
        if cplrp:
            del res
            res = lrp_fx.attribute(model, x, composite="cplrp", track_absorbed=True, strict=not row.missing, **kw)
            row.err_cplrp_absorbed, row.err_cplrp_plain = conservation_any(res, seeded=case.target is not None)
        del res, model
    return row


TASK_HEADER = (
    "| model | task | inputs | explained | aten nodes | unique ops | nodes with a rule | promises | dead | kept "
    "| aliased "
    "| recomputed | MB kept | cons. err (+absorbed) | cons. err (plain) | cplrp err (+absorbed) | cplrp err (plain) "
    "| s | status |"
)


def task_table_row(r: TaskRow) -> str:
    status, cover = _status(r), f"{r.ruled}/{r.live}" if r.live else "-"
    dtype = f" ({r.cons_dtype})" if r.cons_dtype != "float64" else ""
    errs = (r.err_absorbed, r.err_plain, r.err_cplrp_absorbed, r.err_cplrp_plain)
    errs = " | ".join(_fmt_err(v) + (dtype if v is not None else "") for v in errs)
    return (
        f"| {r.model} | {r.kind} | {r.inputs} | {r.explained} | {r.nodes} | {r.ops} | {cover} | {r.promises} "
        f"| {r.dead} | {r.kept} | {r.aliased} | {r.recomputed} | {r.mb_kept:.1f} | {errs} | {r.seconds:.0f} "
        f"| {status} |"
    )


def task_totals(rows: list[TaskRow]) -> str:
    text = _totals_head(rows, "models", "tasks")
    conv = [r for r in rows if r.err_plain is not None and r.err_cplrp_plain is None]
    other = [r for r in rows if r.err_plain is not None and r.err_cplrp_plain is not None]
    parts = []
    if conv:
        worst = max(conv, key=lambda r: r.err_plain)
        parts.append(
            f"`epsilon` on the {len(conv)} models without layer or instance norms or softmax: plain median "
            f"{statistics.median(r.err_plain for r in conv):.1e}, worst {worst.err_plain:.1e} ({worst.model}), "
            f"+absorbed at most {max(r.err_absorbed for r in conv):.1e}"
        )
    if other:
        low, high = min(other, key=lambda r: r.err_plain), max(other, key=lambda r: r.err_plain)
        worst = max(other, key=lambda r: r.err_cplrp_plain)
        worst_abs = max(other, key=lambda r: r.err_cplrp_absorbed)
        parts.append(
            f"`epsilon` on the {len(other)} with them: plain {low.err_plain:.0e} ({low.model}) to "
            f"{high.err_plain:.0e} ({high.model}) (see below); `cplrp` on these: plain median "
            f"{statistics.median(r.err_cplrp_plain for r in other):.1e}, worst {worst.err_cplrp_plain:.1e} "
            f"({worst.model}), +absorbed at most {worst_abs.err_cplrp_absorbed:.1e} ({worst_abs.model})"
        )
    dtypes = sorted({r.cons_dtype for r in rows if r.err_plain is not None and r.cons_dtype != "float64"})
    marked = f", {' and '.join(dtypes)} where marked" if dtypes else ""
    return text + (f" Conservation (bias-free, unit scale, float64{marked}): {'; '.join(parts)}." if parts else "")


def _task_kinds(rows: list[TaskRow]) -> str:
    counts = {k: sum(1 for r in rows if r.kind == k) for k in TASK_ORDER}
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n)


def render_tasks(rows: list[TaskRow]) -> str:
    """The tasks section of docs/coverage.md."""
    today = datetime.date.today().isoformat()
    lines = [
        TITLES["tasks"],
        "",
        f"Generated by `python benchmarks/coverage.py --family tasks --isolate` on {today}; torch "
        f"{torch.__version__}, torchvision {torchvision.__version__}, machine: 2-core CPU.",
        "",
        task_totals(rows),
        "",
        f"Models per task: {_task_kinds(rows)}.",
        "",
        *TASK_NOTES,
        "",
        TASK_HEADER,
        "|" + "---|" * (TASK_HEADER.count("|") - 1),
        *[task_table_row(r) for r in rows],
        "",
    ]
    return "\n".join(lines)


TASK_NOTES = [
    "Models: every model of `torchvision.models.list_models(module=...)` for `video`, `segmentation` and "
    "`optical_flow`, and one small detector, `ssdlite320_mobilenet_v3_large`, twice: whole, and its backbone and "
    "head only (`:head`). Random weights (`weights=None`, and `weights_backbone=None` for segmentation and "
    "detection: nothing is downloaded), eval mode, seed 0; random normal inputs (seed 0), shapes in column *inputs*: "
    "r3d_18, mc3_18 and r2plus1d_18 at 16 frames of 112 px, batch 2; s3d at 16 frames of 209 px (its final 2x7x7 "
    "average pool needs at least 13 frames of 209 px: 112 px fails with `input image (T: 2 H: 3 W: 3) smaller than "
    "kernel size`), MViT at 16 frames of 224 px (its position tables fix the size), Swin3D at 16 frames of 112 px "
    "(it pads any size up to its 8x7x7-patch windows), batch 1; segmentation at 128 px, batch 2; RAFT two images "
    "of 128 px (its minimum), batch 2, `num_flow_updates=2`, forward wrapped to return the last flow "
    "(`LastFlow`); SSDlite at its 320 px, batch 2.",
    "",
    "*explained* (`target=`, and `output=` for dict outputs): video classifiers `target=None`, the argmax class as "
    'for the CNNs; segmentation `output="out"`, `target=per_pixel_class`: every pixel\'s predicted class, '
    "`onehot(argmax over classes) * out`, so the relevance sums to the winning logits summed over all pixels (the "
    "per-pixel `target=None`); RAFT `target=flow_magnitude`: `R = sign(flow) * flow`, the flow's L1 magnitude over "
    "every pixel and both components (the signed displacements would largely cancel in a sum); SSDlite's head "
    '`output="cls_logits"`, `target=per_anchor_class`: the predicted class (background included) of each of the 3234 '
    "anchors; the whole detector its first image's detection `scores`.",
    "",
    "Columns:",
    "",
    f"* *aten nodes* ... *MB kept*: as in the CNN table (strict `epsilon_plus_flat`). {promise_note(True)}",
    "* *cons. err*: as in the CNN table, composite `epsilon` with `track_absorbed=True` on the model made bias-free "
    "(`zero_biases`; MViT's class token and position tables zeroed too, `zero_additive`, as in the transformers "
    "table) and unit-scale (`unit_scale`), in float64, against the output relevance the target seeds. RAFT builds "
    "its coordinate grids in float32 (`make_coords_grid`) and cannot run in float64 (`Input type (float) and bias "
    "type (double) should be the same`): its errors are float32, marked.",
    "* *cplrp err*: the same under `cplrp` (the transformers table's check: layer, group and instance norms on "
    "`Epsilon`, softmax `Stop`, attention probabilities constant), measured for the models with a layer or instance "
    "norm or a softmax (MViT, Swin3D, RAFT; `CPLRP_OPS`), `-` elsewhere.",
    "* *s*: wall seconds for all attributions of the row (two, three with *cplrp err*) including capture and "
    "program build, on a shared, loaded machine.",
    "",
    "Why `epsilon`'s plain error is large on MViT, Swin3D and raft_large, and what else the table shows:",
    "",
    "* `epsilon` leaves the softmax on its default rule, AttnLRP's `Taylor`, which is not conservative by design: "
    "what it does not pass on is recorded as absorbed by the `_softmax` nodes, so the +absorbed column closes to "
    "round-off while the plain error is that share (0.1 to 0.9 here; raft_large's softmax is the mask of its convex "
    "upsampling, 0.5). `cplrp` stops the softmax (attention probabilities, and the mask, constant) and conserves up "
    "to the stabilisers.",
    "* This sweep's first run (session 10) found two bugs, fixed before this table was made: layer, group and "
    "instance norms were on the element-wise `Pass` rule in the CNN presets, which is not proportional to the "
    "norm's input; the layer before divides by that input, and the relevance exploded layer by layer (plain error "
    "1e+47 on mvit_v2_s, relevances of 4e18 per pixel in RAFT-small's instance-normed encoder). Every preset now "
    "gives these norms the epsilon rule with the normaliser constant (`docs/rules.md`). And `cplrp`'s stopped "
    "softmax, multiplied element-wise with the flow in raft_large, got half of the product's relevance, which "
    "`Stop` dropped unrecorded (error 0.5); a stopped softmax is now a constant in every product, and `Stop` records "
    "what reaches it.",
    "* ssdlite320_mobilenet_v3_large (whole): `torch.export` cannot capture torchvision's detection post-processing: "
    "after the score threshold the number of candidate boxes is data-dependent, and `torchvision.ops.batched_nms` "
    "branches on it (`boxes.numel() > 4000` picks one of its two implementations, `boxes.py:86`); NMS then returns "
    "a data-dependent number of boxes. Its backbone and head before post-processing (`:head`, `DetectionHead`: no "
    "normalisation, resize, box decoding or NMS) capture and attribute strictly; which anchors a detection "
    "comes from is then chosen outside the graph (e.g. a tensor target on `cls_logits`). The other torchvision "
    "detectors (Faster, Mask and Keypoint R-CNN, RetinaNet, FCOS, SSD300) share this post-processing and were not "
    "tried.",
]


FAMILIES = ("cnn", "transformers", "paper15", "tasks")


def run_isolated_family(name: str, family: str, timeout: float) -> HFRow | PaperRow | TaskRow:
    """``run_transformer`` / ``run_paper`` / ``run_task`` in a fresh interpreter (a crash or an OOM kill costs one
    row)."""
    cmd = [sys.executable, __file__, "--worker", name, "--family", family]
    start = time.perf_counter()
    cls = ROW_CLASSES[family]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return cls(name, error=f"timed out after {timeout:.0f} s", seconds=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        killed = " (killed: out of memory?)" if proc.returncode < 0 else ""
        return cls(
            name, error=f"worker exited with code {proc.returncode}{killed}", seconds=time.perf_counter() - start
        )
    return cls(**json.loads(lines[-1]))


def _family_names(family: str, models: str) -> list[str]:
    from _hf_models import paper15, tiny_cases

    chosen = [m.strip() for m in models.split(",") if m.strip()]
    if chosen:
        return chosen
    if family == "cnn":
        return conv_models()
    if family == "tasks":
        return [c.name for c in task_cases()]
    return [c.name for c in (tiny_cases() if family == "transformers" else paper15())]


def parse_from_json(spec: str) -> dict[str, str]:
    """``--from-json``: ``PATH`` (CNN rows, as before) or ``family=PATH[,family=PATH...]``."""
    if "=" not in spec:
        return {"cnn": spec}
    out = {}
    for part in spec.split(","):
        family, _, path = part.partition("=")
        if family.strip() not in FAMILIES:
            raise SystemExit(f"--from-json: unknown family {family!r} (known: {', '.join(FAMILIES)})")
        out[family.strip()] = path.strip()
    return out


def render_doc(tables: dict[str, list], size: int) -> str:
    """docs/coverage.md: one section per family present, CNNs first, then the other torchvision tasks."""
    parts = []
    if "cnn" in tables:
        parts.append(render(tables["cnn"], size))
    if "tasks" in tables:
        parts.append(render_tasks(tables["tasks"]))
    if "transformers" in tables:
        parts.append(render_transformers(tables["transformers"]))
    if "paper15" in tables:
        parts.append(render_paper(tables["paper15"]))
    return "\n".join(parts)


ROW_CLASSES = {"cnn": Row, "transformers": HFRow, "paper15": PaperRow, "tasks": TaskRow}


def load_rows(family: str, path: str) -> list:
    return [ROW_CLASSES[family](**r) for r in json.loads(Path(path).read_text())]


def save_rows(path: str | Path, rows: list) -> None:
    Path(path).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))


def _sections(text: str) -> list[str]:
    """A markdown document cut before each top-level heading (``# ``), each piece without its trailing newlines."""
    starts = [m.start() for m in re.finditer(r"^# ", text, flags=re.M)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [p.rstrip("\n") for p in (text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])) if p.strip()]


def update_doc(old: str, tables: dict[str, list], size: int) -> str:
    """``--update``: the sections of the families in ``tables`` rendered anew into ``old`` (replacing the section
    with the same heading, or inserted in ``render_doc``'s order); every other section is kept as it is, its date
    and any note written into it by hand included."""
    fresh = {f: render_doc({f: rows}, size).rstrip("\n") for f, rows in tables.items()}
    kept = {s.split("\n", 1)[0]: s for s in _sections(old)}
    by_title = {title: family for family, title in TITLES.items()}
    parts = []
    for family in ("cnn", "tasks", "transformers", "paper15"):
        if family in fresh:
            parts.append(fresh[family])
        elif TITLES[family] in kept:
            parts.append(kept[TITLES[family]])
    parts += [s for title, s in kept.items() if title not in by_title]  # sections of no family: kept, at the end
    return "\n\n".join(parts) + "\n"


# -- --refresh-promises: new planner statistics for existing rows ------------------------------------------------------
# The fields of a row that come from the promise planner (``res.stats``), per family; everything else in a row stays.
PROMISE_FIELDS = {
    "cnn": ("promises", "dead", "kept", "aliased", "recomputed", "mb_kept"),
    "tasks": ("promises", "dead", "kept", "aliased", "recomputed", "mb_kept"),
    "transformers": ("promises", "dead", "kept", "aliased", "recomputed", "mb_kept"),
    "paper15": ("promises", "dead", "mb_kept"),
}
# Graph counts a refreshed row must reproduce (else its program is not the one the row measured).
GRAPH_FIELDS = ("nodes", "ops", "live", "ruled", "missing")
# The line of each section's text that describes the promise columns (by its start), replaced by the fresh one.
PROMISE_TEXT = {
    "cnn": "* *promises* ... *MB kept*:",
    "tasks": "* *aten nodes* ... *MB kept*:",
    "transformers": "* *aten nodes*, *unique ops*, *nodes with a rule*, *promises* ... *MB kept*:",
    "paper15": "Configs written out in `benchmarks/_hf_models.py`",
}
REFRESHED = "Promise columns refreshed on "


def coverage_only(family: str, row: Any) -> Any:
    """A fresh row of ``family`` for ``row.model`` with only its coverage half measured (graph counts and promise
    statistics: ``_coverage_pass``, or ``run_paper`` for paper15), the model, inputs and options built as the
    family's sweep builds them (``build``/``example``, ``task_setup``, ``hf_setup``)."""
    if family == "paper15":
        return run_paper(row.model)
    fresh = ROW_CLASSES[family](row.model, size=row.size)
    with _measuring(fresh):
        if family == "cnn":
            model, x = build(row.model), example(row.model, row.size)
            _coverage_pass(fresh, model, x, "epsilon_plus_flat", reuse_weights=False)
        elif family == "tasks":
            model, xs, kw = task_setup(task_case(row.model))
            _coverage_pass(fresh, model, xs[0] if len(xs) == 1 else xs, "epsilon_plus_flat", **kw)
        else:
            from _hf_models import tiny_case

            model, inputs, kw = hf_setup(tiny_case(row.model))
            _coverage_pass(fresh, model, inputs, "attnlrp", **kw)
    return fresh


def refresh_promises(family: str, rows: list, models: list[str]) -> tuple[list, list[str]]:
    """``rows`` with their promise statistics (``PROMISE_FIELDS``) measured anew, every other field as it was.
    Only the rows named in ``models`` (all when empty). A row that records a failure stays as it is, and so does
    one whose fresh coverage pass fails or does not reproduce its graph counts (``GRAPH_FIELDS``). Returns the rows
    and the names of those left as they were, with why."""
    out, skipped = [], []
    for row in rows:
        if models and row.model not in models:
            out.append(row)
            continue
        if row.error:
            skipped.append(f"{row.model} (its row records a failure)")
            out.append(row)
            continue
        fresh = coverage_only(family, row)
        diff = [f for f in GRAPH_FIELDS if getattr(fresh, f) != getattr(row, f)]
        if fresh.error or diff:
            changed = ", ".join(f"{f} {getattr(row, f)} -> {getattr(fresh, f)}" for f in diff)
            why = fresh.error or f"its graph changed since the row was made: {changed}; the row needs a full re-run"
            skipped.append(f"{row.model} ({why})")
            print(f"{row.model}: not refreshed: {why}", flush=True)
            out.append(row)
            continue
        new = dataclasses.replace(row, **{f: getattr(fresh, f) for f in PROMISE_FIELDS[family]})
        change = ", ".join(f"{f} {getattr(row, f):.4g} -> {getattr(new, f):.4g}" for f in PROMISE_FIELDS[family])
        print(f"{row.model}: {change} ({fresh.seconds:.0f} s)", flush=True)
        out.append(new)
    return out, skipped


def _table_span(lines: list[str]) -> tuple[int, int]:
    """``[start, end)`` of the first markdown table (consecutive lines starting with ``|``) in ``lines``."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return start, end


def refresh_section(old: str, family: str, rows: list, command: str, left: list[str] = ()) -> str:
    """``old``'s section of ``family`` with only what the promise statistics change taken from a fresh render of
    ``rows``: the table, the line describing the promise columns (``PROMISE_TEXT``) and a line after "Generated
    by" saying when and how the promise columns were refreshed (and which rows were not: ``left``). The rest of the
    section (its date, totals and any note written into it by hand) and every other section stay as they are."""
    sections = _sections(old)
    index = next((i for i, sec in enumerate(sections) if sec.split("\n", 1)[0] == TITLES[family]), None)
    if index is None:
        raise SystemExit(f"--refresh-promises: no section {TITLES[family]!r} to refresh")
    lines = sections[index].split("\n")
    fresh = render_doc({family: rows}, 64).rstrip("\n").split("\n")  # size: only the CNN text uses it, not kept
    start, end = _table_span(lines)
    fresh_start, fresh_end = _table_span(fresh)
    lines[start:end] = fresh[fresh_start:fresh_end]
    key = PROMISE_TEXT[family]
    at = [i for i, ln in enumerate(lines) if ln.startswith(key)]
    if at:
        lines[at[0]] = next(ln for ln in fresh if ln.startswith(key))
    else:
        print(f"--refresh-promises: no line starting {key!r} in the {family} section; its text left as it is")
    columns = ", ".join(f"*{c}*" for c in ("promises", "dead", "kept", "aliased", "recomputed", "MB kept"))
    if family == "transformers":
        columns = "*promises*, *kept*, *MB kept*"
    elif family == "paper15":
        columns = "*promises*, *MB kept*"
    note = (
        f"{REFRESHED}{datetime.date.today().isoformat()} by `{command}`, for the planner that drops dead requests "
        f"and counts each kept storage once: only the promise columns ({columns}) were measured anew, every other "
        "column is as generated."
    )
    if left:
        note += f" Rows left as they were: {'; '.join(left)}."
    old_note = [i for i, ln in enumerate(lines) if ln.startswith(REFRESHED)]
    if old_note:
        lines[old_note[0]] = note
    else:
        generated = next(i for i, ln in enumerate(lines) if ln.startswith("Generated by"))
        lines[generated + 1 : generated + 1] = ["", note]
    sections[index] = "\n".join(lines)
    return "\n\n".join(sections) + "\n"


def main_refresh(args: argparse.Namespace) -> int:
    """``--refresh-promises``: the family's rows from its JSON (``--json``, default ``docs/coverage_rows/F.json``)
    with new promise statistics (``refresh_promises``), written back, and the family's section of ``--out``
    (default docs/coverage.md) refreshed (``refresh_section``)."""
    families = FAMILIES if args.family == "all" else (args.family,)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = Path(args.out or "docs/coverage.md")
    failed = False
    for family in families:
        start = time.perf_counter()
        path = Path(args.json or f"docs/coverage_rows/{family}.json")
        rows, skipped = refresh_promises(family, load_rows(family, str(path)), models)
        save_rows(path, rows)
        command = f"python benchmarks/coverage.py --family {family} --refresh-promises"
        command += f" --models {','.join(models)}" if models else ""
        out.write_text(refresh_section(out.read_text(), family, rows, command, skipped))
        done = sum(1 for r in rows if not models or r.model in models) - len(skipped)
        print(f"{family}: {done} rows refreshed in {time.perf_counter() - start:.0f} s; wrote {path} and {out}")
        for why in skipped:
            print(f"  left as it was: {why}")
        failed |= any("records a failure" not in why for why in skipped)
    return 1 if failed else 0


def main_family(args: argparse.Namespace) -> int:
    """``--family transformers|paper15|all`` and ``--from-json family=PATH,...`` (see ``main``)."""
    if args.worker:
        run = {"transformers": run_transformer, "paper15": run_paper, "tasks": run_task}[args.family]
        print(json.dumps(dataclasses.asdict(run(args.worker))), flush=True)
        return 0
    if args.from_json:
        tables = {f: load_rows(f, p) for f, p in parse_from_json(args.from_json).items()}
        out = Path(args.out or "docs/coverage.md")
        if args.update:
            text = update_doc(out.read_text() if out.exists() else "", tables, args.size)
        else:
            text = render_doc(tables, args.size)
        out.write_text(text)
        print(text)
        print(f"wrote {out}")
        return 0
    families = FAMILIES if args.family == "all" else (args.family,)
    tables: dict[str, list] = {}
    for family in families:
        header, fmt, summary = {
            "cnn": (HEADER, table_row, totals),
            "transformers": (HF_HEADER, hf_table_row, hf_totals),
            "paper15": (PAPER_HEADER, paper_table_row, paper_totals),
            "tasks": (TASK_HEADER, task_table_row, task_totals),
        }[family]
        print(header, flush=True)
        rows: list = []
        for name in _family_names(family, args.models):
            if family == "cnn":
                row = run_isolated(name, args.size, args.timeout) if args.isolate else run_model(name, args.size)
            elif args.isolate:
                row = run_isolated_family(name, family, args.timeout)
            else:
                row = {"transformers": run_transformer, "paper15": run_paper, "tasks": run_task}[family](name)
            rows.append(row)
            print(fmt(row), flush=True)
            if args.json:
                path = Path(args.json if len(families) == 1 else args.json.replace(".json", f"_{family}.json"))
                save_rows(path, rows)
        tables[family] = rows
        print(summary(rows))
    if args.out:
        Path(args.out).write_text(render_doc(tables, args.size))
        print(f"wrote {args.out}")
    return 0 if all(r.ok for rows in tables.values() for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated model names (default: every conv model)")
    parser.add_argument("--out", default="", help="markdown file to write (default docs/coverage.md for the CNNs)")
    parser.add_argument(
        "--family",
        choices=(*FAMILIES, "all"),
        default="cnn",
        help="cnn: torchvision CNNs (default); transformers: the Hugging Face families of _hf_models.py (tiny "
        "configs); paper15: the DynamicLRP paper's 15 architectures at published sizes, on the meta device; tasks: "
        "torchvision video, segmentation, optical-flow models and one detector; all",
    )
    parser.add_argument("--size", type=int, default=64, help="input side in pixels (raised where a model needs it)")
    parser.add_argument(
        "--isolate", action="store_true", help="run each model in its own process (survives crashes and OOM kills)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per model with --isolate")
    parser.add_argument("--json", default="", help="also write the rows as JSON to this file")
    parser.add_argument(
        "--from-json",
        default="",
        help="render the rows of earlier --json files, run nothing: PATH (CNN rows) or "
        "cnn=PATH,transformers=PATH,paper15=PATH,tasks=PATH (one table per family given)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --from-json family=PATH: rewrite only those families' sections of the existing --out file "
        "(default docs/coverage.md), keeping every other section as it is",
    )
    parser.add_argument(
        "--refresh-promises",
        action="store_true",
        help="re-measure only the promise statistics of the --family's rows in its JSON (--json, default "
        "docs/coverage_rows/FAMILY.json; --models: only those rows), keep every other field, write the JSON back "
        "and refresh the table and promise-column text of that family's section of --out (default docs/coverage.md)",
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: one model, JSON row to stdout
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if args.refresh_promises:
        return main_refresh(args)
    if args.family != "cnn" or "=" in args.from_json:
        return main_family(args)
    if args.worker:
        print(json.dumps(dataclasses.asdict(run_model(args.worker, args.size))), flush=True)
        return 0
    print(HEADER, flush=True)
    rows = []
    if args.from_json:
        rows = [Row(**r) for r in json.loads(Path(args.from_json).read_text())]
        for row in rows:
            print(table_row(row), flush=True)
    else:
        names = [m.strip() for m in args.models.split(",") if m.strip()] or conv_models()
        for name in names:
            row = run_isolated(name, args.size, args.timeout) if args.isolate else run_model(name, args.size)
            rows.append(row)
            print(table_row(row), flush=True)
            if args.json:  # rewritten after every model: a long sweep that dies keeps what it measured
                save_rows(args.json, rows)
    text = render(rows, args.size)
    out = Path(args.out or "docs/coverage.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(totals(rows))
    print(f"wrote {out}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
