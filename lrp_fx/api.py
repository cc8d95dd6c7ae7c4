"""The public entry point: ``lrp_fx.attribute``."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .canonicalize import canonicalize
from .capture import OutputSelector, capture
from .composites import Composite, resolve
from .errors import InputError, TargetError
from .prepare import prepare, token_inputs
from .program import AttributionProgram, Options, ProgramBuilder, feed
from .promises import PromiseStats
from .rules.base import Rule

Target = int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | None


@dataclass
class Attribution:
    """The result of ``attribute``.

    ``output`` is the explained model output; ``relevance`` has the structure of ``inputs``: for integer token ids
    that feed an embedding, the per-token relevance (a float tensor of the ids' shape); ``None`` for other
    non-floating inputs such as attention masks. ``params`` and ``modules`` hold the requested parameter and
    module-output relevances; ``absorbed`` (with ``track_absorbed=True``) the relevance each node's bias or
    stabiliser kept.
    """

    output: Tensor
    relevance: Any
    seed: Tensor
    params: dict[str, Tensor] = field(default_factory=dict)
    modules: dict[str, Tensor] = field(default_factory=dict)
    absorbed: dict[str, float] = field(default_factory=dict)
    stats: PromiseStats | None = None
    fallback_nodes: list[str] = field(default_factory=list)
    program: AttributionProgram | None = None


class _Cache:
    """Programs per model (weakly held) and per call signature. ``builds`` counts captures, for tests."""

    def __init__(self) -> None:
        self.by_model: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
        self.builds = 0

    def clear(self) -> None:
        self.by_model = weakref.WeakKeyDictionary()


CACHE = _Cache()


def _signature(leaves: list[Any], in_spec: Any) -> tuple:
    parts = []
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            parts.append(("T", tuple(leaf.shape), leaf.dtype, leaf.device.type, leaf.device.index))
        else:
            parts.append(("C", repr(leaf)))
    return (str(in_spec), tuple(parts))


def _split_inputs(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise InputError(
        f"inputs must be a tensor, a tuple/list of positional inputs or a dict of keyword inputs, "
        f"got {type(inputs).__name__}"
    )


def _seed_mode(target: Target, output_shape: tuple[int, ...]) -> str:
    if target is None:
        return "argmax"
    if callable(target) and not isinstance(target, Tensor):
        return "tensor"
    if isinstance(target, Tensor) and target.is_floating_point():
        return "tensor"
    return "scaled"


def _make_seed(target: Target, output: Tensor | None, shape: tuple[int, ...], dtype, device) -> Tensor:
    """The seed input of the program (see ``attribute`` for the meaning of each target kind)."""
    if target is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    if isinstance(target, Tensor) and target.is_floating_point():
        if tuple(target.shape) != tuple(shape):
            raise TargetError(
                f"a tensor target is the output relevance and must have the output's shape "
                f"{tuple(shape)}, got {tuple(target.shape)}"
            )
        return target.to(dtype=dtype, device=device)
    if len(shape) < 1:
        raise TargetError("a class-index target needs an output with a class dimension; pass a tensor or callable")
    classes = shape[-1]
    idx = torch.as_tensor(target, device=device)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TargetError(f"class targets must be integers, got dtype {idx.dtype}")
    batch = shape[0] if len(shape) > 1 else 1
    if idx.dim() == 0:
        idx = idx.expand(batch)
    elif idx.dim() != 1 or idx.numel() != batch:
        raise TargetError(
            f"per-sample targets need one class index per sample: {batch} expected, got shape {tuple(idx.shape)}"
        )
    bad = (idx < 0) | (idx >= classes)
    if bool(bad.any()):
        raise TargetError(
            f"target {idx[bad][0].item()} is out of range for an output with {classes} classes "
            f"(valid: 0..{classes - 1})"
        )
    if len(shape) != 2:
        raise TargetError(
            f"class-index targets need an output of shape [batch, classes], got {tuple(shape)}; "
            "pass the output relevance as a tensor or a callable instead"
        )
    seed = torch.zeros(shape, dtype=dtype, device=device)
    seed.scatter_(1, idx.view(-1, 1).long(), 1.0)
    return seed


def attribute(
    model: nn.Module,
    inputs: Tensor | Sequence[Any] | Mapping[str, Any],
    target: Target = None,
    composite: str | Composite = "epsilon_plus_flat",
    *,
    output: OutputSelector = None,
    overrides: Mapping[Any, Rule] | None = None,
    param_relevance: bool = False,
    modules: Sequence[str] = (),
    strict: bool = True,
    memory_budget: int | None = None,
    track_absorbed: bool = False,
    reuse_weights: bool = True,
    **rule_params: Any,
) -> Attribution:
    """Explain ``model(inputs)`` with Layer-wise Relevance Propagation.

    Args:
        model: any ``nn.Module`` that ``torch.export`` can capture. It is never modified; it runs in eval mode and
            its training flags are restored afterwards.
        inputs: a tensor, a tuple/list of positional inputs, or a dict of keyword inputs. Floating-point tensors
            receive relevance; integer token ids feeding an ``nn.Embedding`` receive per-token
            relevance (the embedding's relevance summed over the hidden size); masks receive none.
        target: what to explain, seeding the output relevance ``R``:
            ``None``: each sample's predicted class (argmax), ``R = onehot * output``;
            an ``int`` or one index per sample: ``R = onehot(target) * output`` (the explained logit's value, so
            relevance sums to the logit up to absorbed bias shares);
            a floating tensor of the output's shape: used as ``R`` as given (e.g. a plain one-hot, Zennit's
            convention);
            a callable ``f(output) -> R``, traced into the program once per model and input signature and reused
            while the callable lives: it must compute ``R`` from the output alone (per-sample weights go in a
            tensor target).
        composite: a preset name (``epsilon``, ``epsilon_plus``, ``epsilon_plus_flat``, ``epsilon_gamma_box``,
            ``epsilon_alpha2_beta1``, ``epsilon_alpha2_beta1_flat``) or a ``Composite``.
        output: which output to explain for models returning tuples, dicts or ``ModelOutput`` (key, index or
            callable); default ``logits`` or the first entry.
        overrides: ``{module name glob or module type: rule}`` taking precedence over the composite.
        param_relevance: also return relevance per parameter of linear layers and convolutions.
        modules: qualified module names whose output relevance to return.
        strict: raise on ops without a rule (default). ``strict=False`` applies the declared gradient fallback and
            lists the nodes in ``Attribution.fallback_nodes``.
        memory_budget: bytes of forward activations the relevance pass may keep alive; the planner recomputes
            cheap values beyond it.
        track_absorbed: record the relevance each node's bias and stabiliser absorbed.
        reuse_weights: compute the values that depend on parameters only (batch norms folded into convolutions,
            the modified weights of z+/gamma/alpha-beta) once and keep them between calls until a parameter or
            buffer changes (in place or replaced). Faster, at the cost of holding those values
            (``res.program.weight_cache.nbytes``); ``False`` recomputes them in every call.
        **rule_params: preset parameters (``epsilon``, ``stabilizer``, ``gamma``, ``low``, ``high``).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = _split_inputs(inputs)
    leaves, in_spec = pytree.tree_flatten((args, kwargs))
    float_inputs = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor) and leaf.is_floating_point()]
    if not float_inputs and not _may_have_tokens(model, leaves):
        kinds = ", ".join(str(leaf.dtype) if isinstance(leaf, Tensor) else type(leaf).__name__ for leaf in leaves)
        raise InputError(
            f"attribute needs at least one floating-point input tensor to attribute to; got {kinds}. "
            "Convert images with x.float(); token ids receive relevance through their embeddings "
            "(see the transformers docs)."
        )
    comp = resolve(composite, overrides, rule_params)
    options = Options(
        strict=strict,
        memory_budget=memory_budget,
        track_absorbed=track_absorbed,
        param_relevance=param_relevance,
        modules=tuple(modules),
        seed_mode=_seed_mode(target, ()),
        reuse_weights=reuse_weights,
    )
    sig = (_signature(leaves, in_spec), comp.key(), options, _selector_key(output), _callable_key(target))
    per_model = CACHE.by_model.setdefault(model, {})
    program = per_model.get(sig)
    if program is None:
        program = _build(model, args, kwargs, leaves, float_inputs, comp, options, output, target)
        per_model[sig] = program
    shape = program.output_shape
    ref = leaves[program.float_inputs[0]]
    dtype = ref.dtype if ref.is_floating_point() else _seed_dtype(program)  # token ids only: the output's dtype
    if callable(target) and not isinstance(target, Tensor):
        seed = torch.zeros(shape, dtype=dtype, device=ref.device)
    else:
        seed = _make_seed(target, None, shape, dtype, ref.device)
    runs = program.weight_cache.runs
    result = program(model, leaves, seed)
    if program.weight_cache.runs != runs:  # fresh cached weights: other programs' caches of this model are stale or
        for other in per_model.values():  # duplicates, and would pin replaced parameters (e.g. after model.double())
            if other is not program:
                other.weight_cache.clear()
    rel_leaves: list[Any] = [None] * len(leaves)
    for i, r in zip(program.float_inputs, result["relevance"]):
        rel_leaves[i] = r
    rel_args, rel_kwargs = pytree.tree_unflatten(rel_leaves, in_spec)
    relevance = (
        rel_args[0]
        if isinstance(inputs, Tensor)
        else (rel_kwargs if isinstance(inputs, Mapping) else type(inputs)(rel_args))
    )
    out = result["output"]
    return Attribution(
        output=out,
        relevance=relevance,
        seed=result["seed"],
        params=result["params"],
        modules=result["modules"],
        absorbed=result.get("absorbed", {}),
        stats=program.stats,
        fallback_nodes=list(program.fallback_nodes),
        program=program,
    )


# A callable (output selector, target) is part of the program's cache key as the object itself, not its id(): the
# key keeps it alive, so a later callable cannot reuse the id of a collected one and hit a program traced with the
# old one.
def _selector_key(output: OutputSelector) -> Any:
    return ("callable", output) if callable(output) else output


def _callable_key(target: Target) -> Any:
    return target if callable(target) and not isinstance(target, Tensor) else None


def _may_have_tokens(model: nn.Module, leaves: list[Any]) -> bool:
    """Integer inputs and an embedding table: the ids may be tokens (decided on the captured graph)."""
    ints = any(
        isinstance(x, Tensor) and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool) for x in leaves
    )
    return ints and any(isinstance(m, nn.Embedding) for m in model.modules())


def _seed_dtype(program: AttributionProgram) -> torch.dtype:
    seed_ph = [n for n in program.graph_module.graph.nodes if n.op == "placeholder"][-1]
    val = seed_ph.meta.get("val")
    return val.dtype if isinstance(val, Tensor) else torch.get_default_dtype()


def _builder(model, args, kwargs, float_inputs, comp, options, output) -> tuple[ProgramBuilder, dict]:
    """Capture, canonicalise and prepare the graph, and assign its rules: the steps before tracing the program
    (shared with ``lrp_fx.coverage.report``). Returns the builder and the canonicalisation's counts."""
    captured = capture(model, args, kwargs, output)
    canon = canonicalize(captured.gm)
    canon.update(prepare(captured))
    float_inputs = sorted(set(float_inputs) | set(token_inputs(captured)))  # token ids feeding an embedding
    if not float_inputs:
        raise InputError(
            "attribute needs a floating-point input tensor or integer token ids that feed an embedding; "
            "none of the inputs is either"
        )
    return ProgramBuilder(captured, comp, options, float_inputs), canon


def _build(model, args, kwargs, leaves, float_inputs, comp, options, output, target) -> AttributionProgram:
    builder, canon = _builder(model, args, kwargs, float_inputs, comp, options, output)
    captured = builder.captured
    if callable(target) and not isinstance(target, Tensor):
        builder.seed_fn = target
    example = feed(captured, model, leaves)
    program = builder.build(example)
    program.canonicalized = canon
    CACHE.builds += 1
    return program
