"""Parity with LXT (LRP eXplains Transformers, 2.1), the reference implementation of AttnLRP and CP-LRP, in float64.

LXT's efficient mode monkey-patches a model's classes so that gradient x input *is* the LRP relevance: the patches
stop gradients through normalisers, divide gradients at products (uniform rule), make element-wise activations
pass relevance through (identity rule) and, for CP-LRP, detach queries and keys. Plain gradients already give the
softmax's Taylor rule and the epsilon rule with ``eps = 0`` on linear layers and sums. lrp_fx's matching rule set is
therefore its preset with every stabiliser close to zero: ``attnlrp`` / ``cplrp`` with
``epsilon=1e-12, stabilizer=1e-12``.

Cases (each in its own process, because LXT patches classes globally):

* ``llama-eager``, ``llama-sdpa``: ``LlamaForCausalLM`` from a small ``LlamaConfig`` (grouped-query attention, rotary
  embeddings, RMS norm, SwiGLU), LXT's default map for Llama (AttnLRP) vs ``attnlrp``; explained: the predicted
  next token's logit at the last position;
* ``vit_b_16``: torchvision's ViT-B/16 at 224x224, LXT's default map for torchvision ViTs (CP-LRP in attention, identity
  on GELU, constant normaliser in layer norm) vs ``cplrp``; explained: the predicted class's logit;
* ``gpt2``, ``gpt2-cp``: GPT-2 from a small config (layer norm, ``gelu_new``, ``Conv1D``), LXT's ``attnLRP`` and
  ``cp_LRP`` maps for GPT-2 vs ``attnlrp`` and ``cplrp``;
* ``llama-cp``: the Llama above (sdpa) under ``cplrp`` vs LXT's ``cp_LRP`` map for Llama with its MLP patch taken from
  the ``attnLRP`` map: lrp_fx's ``cplrp`` splits SwiGLU's product uniformly, as its ``attnlrp`` does;
* ``llama-cp-gate``: the same Llama under ``cplrp`` with ``gate="constant"`` vs LXT's whole ``cp_LRP`` map, which
  also freezes SwiGLU's gate (``silu(gate)`` a constant, all relevance to the up projection).

Both sides explain the logit's value: LXT's backward pass starts from a gradient of 1 at the explained logit (its
README's ``logit.backward(logit)`` would scale every relevance by the logit), lrp_fx's ``target=c`` seeds the
relevance ``onehot(c) * logit``. LXT's relevance is ``e * e.grad`` for the input embeddings ``e`` (or the pixels).
Compared: lrp_fx's per-token relevance (``input_ids``) with LXT's summed over the hidden size, lrp_fx's relevance of
``inputs_embeds`` (the same model called on embeddings) with LXT's in full, and pixel relevance. Error:
``||lrp_fx - lxt|| / ||lxt||``; the target is 1e-4.

Run in the environment built by ``benchmarks/lxt_env.sh`` (LXT 2.1 imports only with transformers 4.x)::

    bash benchmarks/lxt_env.sh
    .venv-lxt/bin/python benchmarks/lxt_parity.py [--cases llama-eager vit_b_16 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

D = torch.float64
TOL = 1e-4
TINY = {"epsilon": 1e-12, "stabilizer": 1e-12}  # LXT's gradient x input has no stabilisers
CASES = {  # name: (lrp_fx preset, LXT patch map, what is explained)
    "llama-eager": ("attnlrp", "llama.attnLRP", "next-token logit"),
    "llama-sdpa": ("attnlrp", "llama.attnLRP", "next-token logit"),
    "vit_b_16": ("cplrp", "vit_torch.cp_LRP", "class logit"),
    "gpt2": ("attnlrp", "gpt2.attnLRP", "next-token logit"),
    "gpt2-cp": ("cplrp", "gpt2.cp_LRP", "next-token logit"),
    "llama-cp": ("cplrp", "llama.cp_LRP, MLP of llama.attnLRP", "next-token logit"),
    "llama-cp-gate": ("cplrp", "llama.cp_LRP", "next-token logit"),
}
OPTIONS = {"llama-cp-gate": {"gate": "constant"}}  # preset options beyond TINY, per case


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(D), b.detach().to(D)
    return float((a - b).norm() / b.norm())


def _llama(attn: str):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        initializer_range=0.1,
        use_cache=False,
        attn_implementation=attn,
    )
    model = transformers.LlamaForCausalLM(cfg).to(D).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 16))
    return model, ids


def _gpt2():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=64, initializer_range=0.1, use_cache=False
    )
    model = transformers.GPT2LMHeadModel(cfg).to(D).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 16))
    return model, ids


def _patch_map(name: str):
    import lxt.efficient.models as models

    name, _, mlp_from = name.partition(", MLP of ")
    module, attr = name.split(".")
    patch_map = dict(getattr(getattr(models, module), attr))
    if mlp_from:  # LXT's CP-LRP for Llama also freezes SwiGLU's gate; keep AttnLRP's uniform rule there instead
        module, attr = mlp_from.split(".")
        other = getattr(getattr(models, module), attr)
        mlp = next(k for k in patch_map if isinstance(k, type) and k.__name__.endswith("MLP"))
        patch_map[mlp] = other[mlp]
    return patch_map


def _run_lm(case: str) -> dict:
    from lxt.efficient import monkey_patch

    import lrp_fx

    preset, patch_map, _ = CASES[case]
    kw = dict(TINY, **OPTIONS.get(case, {}))
    if case.startswith("llama"):
        model, ids = _llama("eager" if case == "llama-eager" else "sdpa")
        from transformers.models.llama import modeling_llama as modeling
    else:
        model, ids = _gpt2()
        from transformers.models.gpt2 import modeling_gpt2 as modeling
    emb = model.get_input_embeddings()(ids).detach()
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    c = int(logits.argmax())
    t0 = time.perf_counter()
    tok = lrp_fx.attribute(model, {"input_ids": ids}, target=c, output=_last_logits, composite=preset, **kw)
    full = lrp_fx.attribute(model, {"inputs_embeds": emb}, target=c, output=_last_logits, composite=preset, **kw)
    t_lrp = time.perf_counter() - t0

    # LXT last: its patches replace class methods for good
    monkey_patch(modeling, _patch_map(patch_map))
    e = emb.clone().requires_grad_(True)
    t0 = time.perf_counter()
    y = model(inputs_embeds=e).logits[0, -1, c]
    y.backward()
    t_lxt = time.perf_counter() - t0
    r_lxt = (e * e.grad).detach()
    return {
        "case": case,
        "logit": float(logits[c]),
        "rows": [
            ("token relevance [1, 16]", _rel(tok.relevance["input_ids"], r_lxt.sum(-1))),
            (f"embedding relevance {list(emb.shape)}", _rel(full.relevance["inputs_embeds"], r_lxt)),
        ],
        "sum_lrp_fx": float(tok.relevance["input_ids"].sum()),
        "sum_lxt": float(r_lxt.sum()),
        "seconds": {"lrp_fx": t_lrp, "lxt": t_lxt},
    }


def _last_logits(out):
    return out.logits[:, -1]


def _run_vit(case: str) -> dict:
    from lxt.efficient import monkey_patch
    from torchvision.models import vision_transformer

    import lrp_fx

    preset, patch_map, _ = CASES[case]
    torch.manual_seed(0)
    model = vision_transformer.vit_b_16(weights=None)
    with torch.no_grad():  # torchvision zero-initialises the head: every logit would be 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    model = model.to(D).eval()
    x = torch.randn(1, 3, 224, 224, dtype=D)
    with torch.no_grad():
        logits = model(x)[0]
    c = int(logits.argmax())
    t0 = time.perf_counter()
    res = lrp_fx.attribute(model, x, target=c, composite=preset, **TINY)
    t_lrp = time.perf_counter() - t0

    monkey_patch(vision_transformer, _patch_map(patch_map))
    xx = x.clone().requires_grad_(True)
    t0 = time.perf_counter()
    model(xx)[0, c].backward()
    t_lxt = time.perf_counter() - t0
    r_lxt = (xx * xx.grad).detach()
    return {
        "case": case,
        "logit": float(logits[c]),
        "rows": [(f"pixel relevance {list(x.shape)}", _rel(res.relevance, r_lxt))],
        "sum_lrp_fx": float(res.relevance.sum()),
        "sum_lxt": float(r_lxt.sum()),
        "seconds": {"lrp_fx": t_lrp, "lxt": t_lxt},
    }


def run_case(case: str) -> dict:
    return _run_vit(case) if case.startswith("vit") else _run_lm(case)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchvision", "transformers", "lxt", "lrp-fx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process, print JSON
    args = ap.parse_args(argv)
    if args.case:
        print("LXT-PARITY " + json.dumps(run_case(args.case)))
        return 0

    versions = _versions()
    if not (versions["transformers"] or "").startswith("4.") or versions["lxt"] is None:
        print(
            f"needs LXT 2.1 with transformers 4.x (found transformers {versions['transformers']}, lxt "
            f"{versions['lxt']}): run `bash benchmarks/lxt_env.sh`, then `.venv-lxt/bin/python {sys.argv[0]}`",
            file=sys.stderr,
        )
        return 2
    print("  ".join(f"{k} {v}" for k, v in versions.items()))
    results = []
    for case in args.cases:
        proc = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LXT-PARITY ")]
        if proc.returncode != 0 or not lines:
            print(f"{case}: failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", file=sys.stderr)
            results.append({"case": case, "error": proc.stderr[-3000:]})
            continue
        results.append(json.loads(lines[-1][len("LXT-PARITY ") :]))

    print("\n| model | lrp_fx preset | LXT patch map | explained | compared | rel. error | <= 1e-4 |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for r in results:
        preset, patch_map, explained = CASES[r["case"]]
        preset += "".join(f", {k}={v!r}" for k, v in OPTIONS.get(r["case"], {}).items())
        if "error" in r:
            ok = False
            print(f"| {r['case']} | `{preset}` | `{patch_map}` | {explained} | error | - | no |")
            continue
        for what, err in r["rows"]:
            good = err <= TOL
            ok &= good
            mark = "yes" if good else "no"
            print(f"| {r['case']} | `{preset}` | `{patch_map}` | {explained} | {what} | {err:.1e} | {mark} |")
    print()
    for r in results:
        if "error" not in r:
            s = r["seconds"]
            print(
                f"{r['case']}: logit {r['logit']:.6f}, relevance sum lrp_fx {r['sum_lrp_fx']:.6f} / LXT "
                f"{r['sum_lxt']:.6f}; lrp_fx {s['lrp_fx']:.1f} s (capture included), LXT {s['lxt']:.1f} s"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": versions, "tolerance": TOL, "results": results}, f, indent=1)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
