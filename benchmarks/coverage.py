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
   ``|sum R_in - sum R_out| / |sum R_out|`` is the stabilisers' share (about 1e-5 for plain CNNs; large where
   squeeze-excitation gates feed a convolution relevance that is not proportional to its near-zero outputs).

Every result is printed and written as a markdown table (default ``docs/coverage.md``). A model that fails (capture,
rule, anything) is recorded with its error and the sweep goes on; with ``--isolate`` each model runs in its own
process, so that a crash or an out-of-memory kill costs one row too.

    python benchmarks/coverage.py                          # every conv model, 64 px (more where a model needs it)
    python benchmarks/coverage.py --isolate --json /tmp/rows.json   # the full sweep as docs/coverage.md has it
    python benchmarks/coverage.py --models resnet18,vgg11 --out /tmp/cov.md --size 96
    python benchmarks/coverage.py --from-json /tmp/rows.json        # re-render a table without running anything
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

import lrp_fx

EXCLUDED_PREFIXES = ("vit_", "swin_", "maxvit_")  # transformers: a later issue
MIN_SIZE = {"inception_v3": 96}  # inception_v3 needs at least 75 px
BATCH = 2
# Families with squeeze-excitation gates, whose conservation error is reported apart (see the rendered notes).
GATED_PREFIXES = ("efficientnet_", "mobilenet_v3_", "regnet_y_")


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
def unit_scale(model: nn.Module, x: torch.Tensor) -> None:
    """Rescale every convolution and linear weight so that its output has unit RMS on ``x`` (an LSUV-style
    data-dependent init, one eval pass, each layer seeing the already rescaled layers before it).

    Meant for bias-free models (``zero_biases`` first): dividing ``W`` by ``c`` then divides the output by exactly
    ``c``. Untrained networks otherwise shrink the signal (logits of ~1e-14 in efficientnet, ~1e-2 in alexnet), and
    the epsilon stabiliser (1e-6) then absorbs a large share of the relevance: the conservation check would measure
    the initialisation, not the rules.
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
        model(x)
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


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}"


def run_model(name: str, size: int) -> Row:
    row = Row(name, size=input_size(name, size))
    start = time.perf_counter()
    try:
        model = build(name)
        x = example(name, size)
        try:
            res = lrp_fx.attribute(model, x, composite="epsilon_plus_flat")
        except lrp_fx.MissingRuleError:
            res = lrp_fx.attribute(model, x, composite="epsilon_plus_flat", strict=False)
            row.missing = sorted({a.op for a in res.program.assignments if a.fallback})
        _graph_counts(res, row)
        if not torch.isfinite(res.relevance).all():
            row.error = "non-finite relevance under epsilon_plus_flat"
        stats = res.stats.as_dict()
        row.promises, row.kept, row.aliased = stats["promises"], stats["kept"], stats["aliased"]
        row.recomputed, row.mb_kept = stats["recomputed"], stats["bytes_kept"] / 2**20
        del res
        zero_biases(model)
        model.double()
        x = x.double()
        unit_scale(model, x)
        res = lrp_fx.attribute(model, x, composite="epsilon", track_absorbed=True, strict=not row.missing)
        row.err_absorbed, row.err_plain = conservation(res)
        del res, model
    except Exception as err:  # one model failing must not stop the sweep
        row.error = _short(err)
        traceback.print_exc(file=sys.stderr)
    finally:
        lrp_fx.CACHE.clear()
        gc.collect()
    row.seconds = time.perf_counter() - start
    return row


def _fmt_err(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


HEADER = (
    "| model | px | aten nodes | unique ops | nodes with a rule | promises | kept | aliased | recomputed "
    "| MB kept | cons. err (+absorbed) | cons. err (plain) | s | status |"
)


def table_row(r: Row) -> str:
    if r.error and not r.nodes:
        status = r.error.replace("|", "\\|")
    elif r.missing:
        status = "missing: " + ", ".join(f"`{m}`" for m in r.missing)
    else:
        status = "ok" if not r.error else r.error.replace("|", "\\|")
    cover = f"{r.ruled}/{r.live}" if r.live else "-"
    return (
        f"| {r.model} | {r.size} | {r.nodes} | {r.ops} | {cover} | {r.promises} | {r.kept} | {r.aliased} "
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
        "# Rule coverage: torchvision convolutional classifiers",
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
        "(unlimited) memory budget.",
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
        "* Squeeze-excitation families (`efficientnet_*`, `mobilenet_v3_*`, `regnet_y_*`): the gate product "
        "`x * sigmoid(g)` hands half of its relevance to the gate (uniform product rule), and Pass through the "
        "sigmoid gives the gate convolution relevance that is not proportional to its output `g`. Where `g` is near "
        "0, `R / stab(g)` is huge; the summands cancel in exact arithmetic but not in the stabiliser's share "
        "`R * eps / (g + eps)`, and the amplification compounds over the blocks: plain error 5e4 on efficientnet_b0 "
        "(relevance entries up to 3e8 for O(1) logits), 1e25 on efficientnet_b7, 4e30 on efficientnet_v2_l. "
        "Beyond ~1e16 even float64 cannot cancel the sums, so the *+absorbed* column stops balancing too. Treating "
        "the gate as a constant (all relevance of `x * g` to `x`, an experiment outside the library) brings "
        "efficientnet_b0 and efficientnet_b3 to plain errors of 3e-5: the blow-up comes from the gate rule.",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated model names (default: every conv model)")
    parser.add_argument("--out", default="docs/coverage.md", help="markdown file to write")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels (raised where a model needs it)")
    parser.add_argument(
        "--isolate", action="store_true", help="run each model in its own process (survives crashes and OOM kills)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per model with --isolate")
    parser.add_argument("--json", default="", help="also write the rows as JSON to this file")
    parser.add_argument("--from-json", default="", help="render the rows of an earlier --json file, run nothing")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: one model, JSON row to stdout
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
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
                Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    text = render(rows, args.size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(totals(rows))
    print(f"wrote {out}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
