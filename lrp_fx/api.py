"""The public entry point: ``lrp_fx.attribute``."""

from __future__ import annotations

import dis
import enum
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .canonicalize import canonicalize
from .capture import OutputSelector, capture
from .composites import Composite, precision_defaults, resolve, warn_unmatched_overrides
from .errors import InputError, TargetError
from .prepare import prepare, token_inputs
from .program import AttributionProgram, Options, ProgramBuilder, feed
from .promises import PromiseStats
from .rules.base import Rule
from .rules.registry import registry_version

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
    """Programs per model (weakly held) and per call signature: the ``max_programs`` (default 16) most recently used
    ones per model (least recently used evicted first). ``builds`` counts captures, for tests. ``clear()`` forgets
    every program: the way to force a rebuild after a change the key does not see (see ``_model_key``)."""

    def __init__(self, max_programs: int = 16) -> None:
        self.by_model: weakref.WeakKeyDictionary[nn.Module, OrderedDict] = weakref.WeakKeyDictionary()
        # per model, the hoisted-weight caches by what their prologue computes (``HoistedProgram.key``): programs
        # that differ only in batch size share one, instead of holding a copy each or clearing each other's; held
        # weakly, so a cache goes with the last program using it (evicted, or the model collected)
        self.weights: weakref.WeakKeyDictionary[nn.Module, weakref.WeakValueDictionary] = weakref.WeakKeyDictionary()
        self.builds = 0
        self.max_programs = max_programs

    def clear(self) -> None:
        self.by_model = weakref.WeakKeyDictionary()
        self.weights = weakref.WeakKeyDictionary()

    def _share_weights(self, model: nn.Module, program: AttributionProgram) -> None:
        """Give ``program`` the model's weight cache for the same prologue, or register its own."""
        if program.hoisted is None:
            return
        caches = self.weights.setdefault(model, weakref.WeakValueDictionary())
        sources = program.captured.sources
        reads = tuple(
            (sources[i].kind, sources[i].name if sources[i].name is not None else _Ident(sources[i].value))
            for i in program.hoisted.slots
        )
        shared = caches.setdefault((program.hoisted.key, reads), program.weight_cache)
        program.weight_cache = shared

    def get(self, model: nn.Module, key: Any) -> AttributionProgram | None:
        programs = self.by_model.get(model)
        program = None if programs is None else programs.get(key)
        if program is not None:
            programs.move_to_end(key)
        return program

    def put(self, model: nn.Module, key: Any, program: AttributionProgram) -> OrderedDict:
        """Store ``program``, evict the least recently used ones beyond ``max_programs``; the model's programs."""
        programs = self.by_model.get(model)
        if programs is None:
            programs = self.by_model[model] = OrderedDict()
        programs[key] = program
        programs.move_to_end(key)
        self._share_weights(model, program)
        while len(programs) > max(1, self.max_programs):
            programs.popitem(last=False)
        return programs


CACHE = _Cache()


def _signature(leaves: list[Any], in_spec: Any) -> tuple:
    parts = []
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            # strides too (those of size-1 dimensions mean nothing): a program traced on contiguous inputs turns
            # reshapes into views that fail on, e.g., channels-last inputs of the same shape
            strides = tuple(st if sz > 1 else 0 for st, sz in zip(leaf.stride(), leaf.shape))
            parts.append(("T", tuple(leaf.shape), strides, leaf.dtype, leaf.device.type, leaf.device.index))
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
        # a copy: where every rule passes relevance through, the relevance would otherwise be the caller's tensor
        return target.to(dtype=dtype, device=device, copy=True)
    if len(shape) < 1:
        raise TargetError("a class-index target needs an output with a class dimension; pass a tensor or callable")
    classes = shape[-1]
    try:
        # an empty batch's targets: as_tensor would make an empty float tensor of them
        empty = isinstance(target, (list, tuple)) and len(target) == 0
        idx = torch.as_tensor(target, device=device, dtype=torch.long if empty else None)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TargetError(
            f"cannot use target={target!r}: expected None (the predicted class), a class index, one class index per "
            "sample (list, array or integer tensor), the output relevance as a floating tensor of the output's "
            "shape, or a callable output -> relevance"
        ) from exc
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
            ``None``: each sample's predicted class (argmax) of a ``[batch, classes]`` output,
            ``R = onehot * output`` (other output shapes need a tensor or callable target, or ``output=``);
            an ``int`` or one index per sample: ``R = onehot(target) * output`` (the explained logit's value, so
            relevance sums to the logit up to absorbed bias shares);
            a floating tensor of the output's shape: used as ``R`` as given (e.g. a plain one-hot, Zennit's
            convention);
            a callable ``f(output) -> R``, traced into the program once per model and input signature and reused
            while the callable lives: it must return a floating tensor of the output's shape computed from the
            output alone (per-sample weights go in a tensor target).
        composite: a preset name (``epsilon``, ``epsilon_plus``, ``epsilon_plus_flat``, ``epsilon_gamma_box``,
            ``epsilon_alpha2_beta1``, ``epsilon_alpha2_beta1_flat``) or a ``Composite``.
        output: which output to explain for models returning tuples, dicts or ``ModelOutput`` (key, index or
            callable); default ``logits`` or the first entry.
        overrides: ``{module name glob or module type: rule}`` taking precedence over the composite.
        param_relevance: also return relevance per parameter of linear layers and convolutions.
        modules: qualified module names whose output relevance to return (``Attribution.modules``); for a
            module that forward runs several times, ``name@k`` names its ``k``-th call (from 0). A batch norm folded
            into the layer before it shares that layer's output relevance; a module that hands several tensors on
            (an LSTM whose output and state are both used) is an error: name a submodule that computes one.
        strict: raise on ops without a rule (default). ``strict=False`` applies the declared gradient fallback and
            lists the nodes in ``Attribution.fallback_nodes``.
        memory_budget: bytes of forward activations the relevance pass may keep alive; the planner recomputes
            cheap values beyond it (``0``: all it can, close to what a gradient keeps; ``None``: keep everything,
            the fastest). The relevance is identical either way.
        track_absorbed: record the relevance each node's bias and stabiliser absorbed.
        reuse_weights: compute the values that depend on parameters only (batch norms folded into convolutions,
            the modified weights of z+/gamma/alpha-beta) once and keep them between calls until a parameter or
            buffer changes (in place or replaced). Faster, at the cost of holding those values
            (``res.program.weight_cache.nbytes``); ``False`` recomputes them in every call.
        **rule_params: preset parameters (``epsilon``, ``stabilizer``, ``gamma``, ``low``, ``high``); ``epsilon``
            and ``stabilizer`` default to 1e-6, or to 1e-2 for a bfloat16/float16 model or input
            (``composites.precision_defaults``).
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
    if isinstance(modules, str):  # one name, not its characters
        modules = [modules]
    rule_params = precision_defaults(composite, rule_params, _float_dtypes(model, leaves))
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
    sig += (_model_key(model), registry_version())  # what the program was built from besides the call
    program = CACHE.get(model, sig)
    if program is None:
        warn_unmatched_overrides(comp, model)
        program = _build(model, args, kwargs, leaves, float_inputs, comp, options, output, target)
        # keyed on the state after the capture, which ran forward: a forward that sets attributes (a call counter,
        # a cached tensor) would otherwise miss the cache on every call
        CACHE.put(model, sig[:-2] + (_model_key(model), registry_version()), program)
    per_model = CACHE.by_model.get(model) or {}
    shape = program.output_shape
    ref = leaves[program.float_inputs[0]]
    dtype = _seed_dtype(program)  # the output's: a model may cast its input (HF ViT casts pixels to its own dtype)
    if callable(target) and not isinstance(target, Tensor):
        seed = torch.zeros(shape, dtype=dtype, device=ref.device)
    else:
        seed = _make_seed(target, None, shape, dtype, ref.device)
    runs = program.weight_cache.runs
    result = program(model, leaves, seed)
    if program.weight_cache.runs != runs:  # new cached weights: the other programs' caches of this model that were
        for other in per_model.values():  # computed from weights that have changed since are stale, and pin the old
            # products (after model.double()); those of unchanged weights stay: two programs used in turn (two
            # composites, a smaller last batch) would otherwise clear each other in every call
            if other.weight_cache is not program.weight_cache and other.weight_cache.outdated():
                other.weight_cache.clear()
    rel_leaves: list[Any] = [None] * len(leaves)
    for i, r in zip(program.float_inputs, result["relevance"]):
        rel_leaves[i] = r
    rel_args, rel_kwargs = pytree.tree_unflatten(rel_leaves, in_spec)
    relevance = (
        rel_args[0]
        if isinstance(inputs, Tensor)
        else (rel_kwargs if isinstance(inputs, Mapping) else _same_sequence_type(inputs, rel_args))
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


# A callable (output selector, target) is part of the program's cache key. A plain function whose behaviour is fixed
# by values is keyed by those values (``_function_key``), so that ``lambda o: o.logits[:, -1]`` written in a loop, a
# new function object each time, reuses one program. Any other callable is keyed as the object itself, not its id():
# the key keeps it alive, so a later callable cannot reuse the id of a collected one and hit a program traced with
# the old one.
def _selector_key(output: OutputSelector) -> Any:
    return ("callable", _function_key(output)) if callable(output) else output


def _callable_key(target: Target) -> Any:
    return _function_key(target) if callable(target) and not isinstance(target, Tensor) else None


_VALUE_TYPES = frozenset({int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device})
_GLOBAL_NAMES: dict[types.CodeType, tuple[str, ...]] = {}


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global (or builtin) names ``code`` and the code nested in it (comprehensions, inner lambdas) load."""
    names = _GLOBAL_NAMES.get(code)
    if names is None:
        found = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found.update(_global_names(const))
        names = tuple(sorted(n for n in found if isinstance(n, str)))
        if len(_GLOBAL_NAMES) > 1024:
            _GLOBAL_NAMES.clear()
        _GLOBAL_NAMES[code] = names
    return names


class _Opaque(Exception):
    """A value a function depends on that cannot be keyed by value."""


def _value_key(v: Any, depth: int) -> Any:
    """``v`` as a key that is equal exactly when the value is the same (the type too: ``1``, ``1.0`` and ``True``
    differ); objects whose behaviour is fixed (modules, builtins, classes) by identity; functions recursively."""
    t = type(v)
    if t in _VALUE_TYPES:
        return (t, v)
    if t is tuple or t is frozenset:
        return (t, tuple(_value_key(e, depth) for e in (v if t is tuple else sorted(v, key=repr))))
    if isinstance(v, (types.ModuleType, types.BuiltinFunctionType, type)):
        return ("object", v)  # compared by identity; held, so its id cannot be reused
    if isinstance(v, types.FunctionType) and depth < 4:
        return _function_values(v, depth + 1)
    raise _Opaque


_UNBOUND = object()  # an empty closure cell, or a global name defined nowhere (an attribute name, or an error)


def function_reads(
    fn: types.FunctionType,
) -> tuple[list[Any], tuple | None, list[tuple[str, Any]], list[tuple[str, Any]]]:
    """What ``fn``'s result can depend on besides its arguments and code: its closure cells (``_UNBOUND`` for an
    empty one), ``__defaults__``, its keyword defaults (sorted) and the globals and builtins it loads (sorted by
    name; ``_UNBOUND`` where a name is defined nowhere). One walk shared by the program cache's keys
    (``_function_values``) and ``attribute_dataset``'s configuration digest (``dataset._callable_digest``)."""
    cells = []
    for c in fn.__closure__ or ():
        try:
            cells.append(c.cell_contents)
        except ValueError:  # a name the enclosing function assigns later
            cells.append(_UNBOUND)
    kwdefaults = sorted((fn.__kwdefaults__ or {}).items())
    builtins = fn.__builtins__ if isinstance(fn.__builtins__, dict) else vars(fn.__builtins__)
    loaded = []
    for name in _global_names(fn.__code__):
        if name in fn.__globals__:
            loaded.append((name, fn.__globals__[name]))
        else:
            loaded.append((name, builtins.get(name, _UNBOUND)))
    return cells, fn.__defaults__, kwdefaults, loaded


def _function_values(fn: types.FunctionType, depth: int) -> tuple:
    """The code of ``fn`` and every value its result can depend on besides its arguments (``function_reads``),
    each keyed by value; an empty closure cell is a ``ValueError`` (the function is then keyed as an object)."""
    cells, defaults, kwdefaults, loaded = function_reads(fn)
    if any(c is _UNBOUND for c in cells):
        raise ValueError("empty closure cell")
    return (
        "function",
        fn.__code__,
        tuple(_value_key(c, depth) for c in cells),
        tuple(_value_key(d, depth) for d in defaults or ()),
        tuple((k, _value_key(d, depth)) for k, d in kwdefaults),
        tuple((name, None if v is _UNBOUND else _value_key(v, depth)) for name, v in loaded),
    )


class _Held:
    """An object held by a cache key without taking part in its comparison."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Held)

    def __hash__(self) -> int:
        return 0


class _Ident:
    """A tensor in a cache key by identity; held, so that no new tensor takes its id while the key is stored."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ident) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _function_key(fn: Any) -> Any:
    """A plain function keyed by ``_function_values`` (equivalent functions share a program; the stored key holds the
    one traced); any other callable, or a function that depends on a value that cannot be keyed by value (a tensor,
    a list, an object), by itself."""
    if isinstance(fn, types.FunctionType):
        try:
            return (_function_values(fn, 0), _Held(fn))
        except (_Opaque, ValueError, TypeError):
            pass
    return ("object", fn)


def _model_key(model: nn.Module) -> tuple:
    """What a program captured from ``model`` besides the parameters and persistent buffers it reads by name on every
    call (and whose in-place updates ``WeightCache`` sees): for each module, in a walk of the module tree, its type,
    its children (name and identity), its parameters' and buffers' names, shapes and dtypes, the identity of its
    non-persistent buffers and tensor attributes (captured as constants), its plain Python attributes by value
    (numbers, numpy scalars, Enum members, strings, ``None``, dtypes, devices and tuples of those; not
    ``training``: programs run in eval mode), its callable attributes by identity (an activation function swapped)
    and its forward hooks; which parameters are one tensor (tied weights: the capture lifts a shared parameter
    once, so untying them needs a new program). Not seen: values in containers (lists, dicts, config objects) or
    class attributes, globals read in forward, and in-place writes through ``.data`` to a few elements of a hoisted
    weight (``lrp_fx.hoist``); ``lrp_fx.CACHE.clear()`` forces a rebuild."""
    key: list[Any] = []
    stack, seen = [model], {id(model)}
    shared: dict[int, int] = {}  # id of each parameter and buffer -> the order in which the walk first met it
    while stack:
        module = stack.pop()
        attrs = vars(module)
        key.append(type(module))
        non_persistent = attrs.get("_non_persistent_buffers_set", ())
        for name, v in attrs.items():
            t = type(v)
            if t in _VALUE_TYPES:
                if name != "training":
                    key += (name, t, v)
            elif t is dict or t is OrderedDict:  # first: most of a module's attributes are its bookkeeping dicts
                _dict_key(key, name, v, non_persistent, stack, seen, shared)
            elif isinstance(v, Tensor):
                key += (name, _Ident(v))
            elif t is tuple:
                if all(type(e) in _VALUE_TYPES for e in v):
                    key += (name, v)
            elif isinstance(v, (int, float, str, enum.Enum)):  # numpy's float64 (a float), Enum members
                key += (name, t, v)
            elif t.__module__ == "numpy" and getattr(v, "ndim", None) == 0:  # numpy scalars: np.int64, np.float32
                key += (name, t, v.item())
            elif callable(v) and not isinstance(v, nn.Module):  # a function attribute: F.relu swapped for torch.tanh
                key += (name, _Ident(v))
    return tuple(key)


def _dict_key(
    key: list[Any], name: str, v: dict, non_persistent: Any, stack: list, seen: set, shared: dict[int, int]
) -> None:
    """``_model_key``'s part for one of a module's dicts: children, parameters, buffers, forward hooks."""
    if name == "_modules":
        for child_name, child in v.items():
            # a weak reference, not the id: a new module can take a collected one's id (the program does
            # not hold the modules), but a dead reference equals no other
            key += (child_name, None if child is None else weakref.ref(child))
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    elif name == "_parameters":
        for p_name, p in v.items():
            key += (p_name, None) if p is None else (p_name, p.shape, p.dtype, shared.setdefault(id(p), len(shared)))
    elif name == "_buffers":
        for b_name, b in v.items():
            if b is None:
                key += (b_name, None)
            elif b_name in non_persistent:
                key += (b_name, _Ident(b))
            else:
                key += (b_name, b.shape, b.dtype, shared.setdefault(id(b), len(shared)))
    elif (name == "_forward_hooks" or name == "_forward_pre_hooks") and v:
        key += (name, tuple(v))


def _float_dtypes(model: nn.Module, leaves: list[Any]) -> set[torch.dtype]:
    """The floating dtypes of the inputs and of the model's first parameter (a token-id model has no float input)."""
    dtypes = {leaf.dtype for leaf in leaves if isinstance(leaf, Tensor) and leaf.is_floating_point()}
    first = next(model.parameters(), None)
    return dtypes | ({first.dtype} if first is not None else set())


def _same_sequence_type(inputs: Sequence[Any], items: Sequence[Any]) -> Any:
    """``items`` in the container type of ``inputs`` (a namedtuple takes them as separate arguments)."""
    if isinstance(inputs, tuple) and hasattr(type(inputs), "_fields"):
        return type(inputs)(*items)
    try:
        return type(inputs)(items)
    except TypeError:  # a sequence type that cannot be built from an iterable
        return tuple(items)


def _may_have_tokens(model: nn.Module, leaves: list[Any]) -> bool:
    """Integer inputs and an embedding table: the ids may be tokens (decided on the captured graph)."""
    ints = any(
        isinstance(x, Tensor) and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool) for x in leaves
    )
    return ints and any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())


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
