"""The folded sign-split rules (``lrp_fx/rules/linear.py::_signsplit_folded``) against the term-by-term formula.

    python benchmarks/signsplit_fold.py                       # layers + models -> docs/signsplit_fold.md
    python benchmarks/signsplit_fold.py --quick               # small layers, 2 repeats, prints only

ZPlus, AlphaBeta and Gamma are sums over sign combinations of ``x`` and ``W``. Written term by term (``_groups`` +
``_propagate``, still used for parameter relevance) a rule with a mixed-sign input spends up to four products of the
layer for its denominators and four transposed products for its relevance. The folded form takes the positive
contributions from ``f(|x|; |W|)`` and the layer's own output, and needs at most three. This script measures what
that buys, in one process and interleaved (each repeat runs every method once, in rotating order): the same
attribution program built twice, once with the term-by-term evaluation patched in, both called directly
(``AttributionProgram.__call__``: no API overhead on either side), next to a forward + input gradient.

Reported: median process CPU seconds per call, the median per-repeat ratio to the gradient, the number of
products of the layer (``linear``/``mm``/``convolution`` and their backward ops) in each program, and the largest
relative difference between the two relevances.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import median, timed  # noqa: E402

import lrp_fx  # noqa: E402
from lrp_fx.rules import AlphaBeta, Gamma, ZPlus  # noqa: E402
from lrp_fx.rules import linear as linear_rules  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "signsplit_fold.md"
PRODUCT_OPS = ("aten.linear", "aten.mm", "aten.addmm", "aten.bmm", "aten.convolution")


def term_by_term(call, f, x, w, b, relevance):
    """The unfolded evaluation: every sign combination its own product (what the folded path replaces)."""
    return linear_rules._propagate(call, f, x, linear_rules._groups(call, x, w, b), relevance)


def build_program(model: nn.Module, x: torch.Tensor, seed: torch.Tensor, folded: bool, **kw: Any):
    """The attribution program of one variant (the cache cleared so each variant is built afresh)."""
    lrp_fx.CACHE.clear()
    original = linear_rules._signsplit_folded
    if not folded:
        linear_rules._signsplit_folded = term_by_term
    try:
        res = lrp_fx.attribute(model, x, target=seed, **kw)
    finally:
        linear_rules._signsplit_folded = original
    lrp_fx.CACHE.clear()
    return res.program, res.relevance


def products(program) -> int:
    return sum(
        1 for n in program.graph_module.graph.nodes if n.op == "call_function" and str(n.target).startswith(PRODUCT_OPS)
    )


def layer_case(kind: str, rule, nonneg: bool, quick: bool):
    torch.manual_seed(0)
    if kind == "linear":
        width = 256 if quick else 1024
        layer: nn.Module = nn.Linear(width, width)
        x = torch.randn(64 if quick else 256, width)
    else:
        ch = 16 if quick else 64
        layer = nn.Conv2d(ch, ch, 3, padding=1)
        x = torch.randn(4 if quick else 8, ch, 28, 28)
    model = nn.Sequential(nn.ReLU(), layer) if nonneg else nn.Sequential(layer)
    model.eval().requires_grad_(False)
    name = f"{kind} {type(rule).__name__}{' after ReLU' if nonneg else ''}"
    kw = {"composite": "epsilon", "overrides": {type(layer): rule}}
    return name, model, x, kw


def model_case(name: str, preset: str, batch: int):
    import memory_budget

    model, inputs, seed = memory_budget.build(name, batch)
    kw: dict[str, Any] = {"composite": preset}
    if preset == "epsilon_gamma_box":
        kw.update(low=float(inputs["x"].min()), high=float(inputs["x"].max()))
    if preset in ("cplrp", "attnlrp"):
        kw["gamma"] = 0.25  # the gamma rule on every linear layer (their inputs change sign)
    return f"{name} {preset}{' gamma=0.25' if 'gamma' in kw else ''} (batch {batch})", model, inputs["x"], kw


def measure(name: str, model: nn.Module, x: torch.Tensor, kw: dict[str, Any], repeats: int) -> dict[str, Any]:
    with torch.no_grad():
        out = model(x)
    seed = torch.nn.functional.one_hot(out.argmax(-1), out.shape[-1]).to(x.dtype) if out.dim() == 2 else None
    seed = torch.randn_like(out) if seed is None else seed
    folded, r_folded = build_program(model, x, seed, True, **kw)
    unfolded, r_unfolded = build_program(model, x, seed, False, **kw)
    diff = ((r_folded - r_unfolded).abs().max() / r_unfolded.abs().max().clamp_min(1e-30)).item()

    def gradient():
        xx = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(xx), xx, seed)[0]

    methods: dict[str, Callable[[], object]] = {
        "gradient": gradient,
        "term by term": lambda: unfolded(model, [x], seed),
        "folded": lambda: folded(model, [x], seed),
    }
    for fn in methods.values():  # warm-up
        fn()
    names = list(methods)
    cpu: dict[str, list[float]] = {m: [] for m in names}
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for m in order:
            cpu[m].append(timed(methods[m])[1])
    ratio = {m: median([cpu[m][i] / cpu["gradient"][i] for i in range(repeats)]) for m in names}
    speedup = median([cpu["term by term"][i] / cpu["folded"][i] for i in range(repeats)])
    return {
        "case": name,
        "gradient_s": median(cpu["gradient"]),
        "unfolded_s": median(cpu["term by term"]),
        "folded_s": median(cpu["folded"]),
        "unfolded_x": ratio["term by term"],
        "folded_x": ratio["folded"],
        "speedup": speedup,
        "products": (products(unfolded), products(folded)),
        "rel_diff": diff,
    }


def render(rows: list[dict[str, Any]], machine: str, repeats: int) -> str:
    lines = [
        "# Folded sign-split rules against the term-by-term formula",
        "",
        f"- machine: {machine}; torch {torch.__version__}; 1 intra-op thread; float32",
        f"- `python benchmarks/signsplit_fold.py`; median process CPU seconds per call over {repeats} interleaved "
        "repeats (layers; models: `--model-repeats`, default 9); `x grad` = median per-repeat ratio to forward + "
        "input gradient; speed-up = median per-repeat ratio term-by-term / folded",
        "- products: `linear`/`mm`/`convolution` nodes (forward and backward) in the whole attribution program, "
        "term by term -> folded",
        "- rel. diff: largest absolute difference of the two relevances over the largest |relevance|",
        "",
        "| case | gradient s | term by term s (x grad) | folded s (x grad) | speed-up | products | rel. diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['gradient_s']:.4f} | {r['unfolded_s']:.4f} ({r['unfolded_x']:.2f}) | "
            f"{r['folded_s']:.4f} ({r['folded_x']:.2f}) | {r['speedup']:.2f}x | "
            f"{r['products'][0]} -> {r['products'][1]} | {r['rel_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small layers only, 2 repeats, print without writing")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats per layer case")
    ap.add_argument("--model-repeats", type=int, default=9, help="interleaved repeats per model case")
    ap.add_argument("--no-models", action="store_true", help="layers only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 2 if args.quick else args.repeats
    cases = [
        layer_case(kind, rule, nonneg, args.quick)
        for kind in ("linear", "conv")
        for nonneg in (False, True)
        for rule in (ZPlus(), AlphaBeta(2.0, 1.0), Gamma(0.25))
    ]
    if not (args.quick or args.no_models):
        cases += [
            model_case("resnet50", p, 2) for p in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")
        ]
        cases.append(model_case("vit_b_16", "cplrp", 1))
    rows = []
    for name, model, x, kw in cases:
        reps = repeats if name.startswith(("linear", "conv")) or args.quick else args.model_repeats
        row = measure(name, model, x, kw, reps)
        rows.append(row)
        print(render([row], "", repeats).splitlines()[-1], flush=True)
    text = render(rows, f"{platform.machine()} CPU", repeats)
    print(text)
    if not args.quick:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
