"""Ahead-of-time attribution graphs: ``lrp_fx.export``, and the dynamic-shape build it shares with the compile
backend (``lrp_fx.backend``).

``export(model, example_inputs)`` returns a ``torch.export.ExportedProgram`` of signature
``(model inputs..., seed) -> (output, relevance per floating input...)`` whose batch dimension is dynamic and whose
parameters and buffers are the exported program's own. It contains only aten ops (promises are planned away), so
``torch.export.load`` reads it back in a process that never imports lrp_fx, and AOTInductor compiles it.

Dynamic shapes. The model is captured with a symbolic batch size and the program is traced over the capture's own
fake tensors (``ProgramBuilder.build(..., tracing_mode="symbolic")``). A dynamic capture reads sizes from activations
(``sym_size(x, 0)`` feeding a ``view``); sizes carry no relevance, so ``detach_sizes`` rewrites each such read to read
the size from a *size carrier* instead: an extra int8 placeholder of that length (never a float input, so never an
activation), filled at run time with a zero-stride view costing no memory.
"""

from __future__ import annotations

import inspect
import keyword
import operator
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from torch import Tensor, fx, nn
from torch.utils import _pytree as pytree
from torch.utils._sympy.functions import FloorDiv

from . import analysis
from .api import _float_dtypes, _split_inputs
from .canonicalize import canonicalize
from .capture import Captured, OutputSelector, Source, capture, eval_mode
from .composites import Composite, precision_defaults, resolve, warn_unmatched_overrides
from .errors import CaptureError, InputError, LRPError
from .fold import fold_broadcast_bmm
from .hoist import hoist_weights
from .inplace import copy_graph_module
from .prepare import prepare, token_inputs
from .program import AttributionProgram, Options, ProgramBuilder

aten = torch.ops.aten

__all__ = ["SizeCarrier", "build_program", "capture_dynamic", "detach_sizes", "export", "fold_broadcast_bmm"]


@dataclass(frozen=True)
class SizeCarrier:
    """An int8 placeholder added to a dynamic capture whose length is the size of dimension ``dim`` of input leaf
    ``leaf``; sizes are read from it instead of from activations."""

    leaf: int
    dim: int

    def make(self, leaves: list[Any]) -> Tensor:
        ref = leaves[self.leaf]
        return torch.zeros((), dtype=torch.int8, device=ref.device).expand(ref.shape[self.dim])


class _Unsupported(Exception):
    pass


def detach_sizes(captured: Any, float_inputs: list[int]) -> list[SizeCarrier]:
    """Make every size read from an activation read from a size carrier (see the module docstring).

    Appends one placeholder (and one ``Source("input", index=n_leaves + i)``) per symbol read; returns the carriers
    in that order. Raises ``CaptureError`` for a size expression it cannot rebuild.
    """
    graph: fx.Graph = captured.graph
    phs = [n for n in graph.nodes if n.op == "placeholder"]
    float_nodes = {
        ph for ph, src in zip(phs, captured.sources) if src.kind == "input" and src.index in set(float_inputs)
    }
    acts = analysis.activations(graph, float_nodes)
    where: dict[sympy.Symbol, tuple[int, int, Any]] = {}
    for ph, src in zip(phs, captured.sources):
        val = ph.meta.get("val")
        if src.kind == "input" and isinstance(val, Tensor):
            for d, s in enumerate(val.shape):
                if isinstance(s, torch.SymInt) and isinstance(s.node.expr, sympy.Symbol):
                    where.setdefault(s.node.expr, (src.index, d, val))
    carriers: list[SizeCarrier] = []
    size_nodes: dict[sympy.Symbol, fx.Node] = {}
    last = [phs[-1]]

    def size_of(sym: sympy.Symbol) -> fx.Node:
        if sym not in size_nodes:
            if sym not in where:
                raise _Unsupported(f"size {sym} is not the size of an input dimension")
            leaf, dim, val = where[sym]
            symint = val.shape[dim]
            with graph.inserting_after(last[0]):
                ph = graph.placeholder(f"lrp_fx_size_{len(carriers)}")
            last[0] = ph
            with val.fake_mode:
                ph.meta["val"] = torch.empty((symint,), dtype=torch.int8, device=val.device)
            captured.sources.append(Source("input", index=captured.n_leaves + len(carriers)))
            carriers.append(SizeCarrier(leaf, dim))
            with graph.inserting_after(_after_placeholders(graph)):
                size_nodes[sym] = graph.call_function(aten.sym_size.int, (ph, 0))
            size_nodes[sym].meta["val"] = symint
        return size_nodes[sym]

    def emit(expr: sympy.Expr) -> Any:
        if expr.is_Integer:
            return int(expr)
        if isinstance(expr, sympy.Symbol):
            return size_of(expr)
        if isinstance(expr, (sympy.Add, sympy.Mul)):
            fn = operator.add if isinstance(expr, sympy.Add) else operator.mul
            parts = [emit(a) for a in expr.args]
            acc = parts[0]
            for p in parts[1:]:
                acc = graph.call_function(fn, (acc, p))
            return acc
        if isinstance(expr, FloorDiv):
            return graph.call_function(operator.floordiv, (emit(expr.args[0]), emit(expr.args[1])))
        raise _Unsupported(f"cannot rebuild size expression {expr}")

    try:
        for node in list(graph.nodes):
            if node.op != "call_function" or node not in acts:
                continue
            val = node.meta.get("val")
            if val is None or isinstance(val, (Tensor, list, tuple)):
                continue
            if not any(a in acts and isinstance(a.meta.get("val"), Tensor) for a in node.all_input_nodes):
                continue  # derived from other sizes: stops being an activation once those are rewritten
            if isinstance(val, torch.SymInt):
                with graph.inserting_before(node):
                    new = emit(val.node.expr)
            elif isinstance(val, (int, float, bool)):
                new = val
            else:
                raise _Unsupported(f"{node.target} returns {type(val).__name__}")
            if isinstance(new, fx.Node):
                node.replace_all_uses_with(new)
            else:
                _replace_with_constant(node, new)
            graph.erase_node(node)
    except _Unsupported as err:
        raise CaptureError(f"dynamic shapes: {err}; capture with static shapes instead") from err
    graph.lint()
    captured.gm.recompile()
    return carriers


def _after_placeholders(graph: fx.Graph) -> fx.Node:
    last = None
    for n in graph.nodes:
        if n.op != "placeholder":
            break
        last = n
    return last


def _replace_with_constant(node: fx.Node, value: Any) -> None:
    for user in list(node.users):
        user.args = fx.node.map_arg(user.args, lambda a: value if a is node else a)
        user.kwargs = fx.node.map_arg(user.kwargs, lambda a: value if a is node else a)


def capture_dynamic(
    model: nn.Module, args: tuple, kwargs: dict, select: OutputSelector, float_inputs: list[int], dynamic_shapes: Any
) -> tuple[Captured, list[SizeCarrier], dict[str, int]]:
    """Capture with ``dynamic_shapes`` (``(args spec, kwargs spec)``), then what ``attribute`` does to a capture
    (canonicalize, prepare), then detach the size reads ``prepare`` did not already mark as constants.

    The captured graph's placeholders are the capture's (parameters, buffers, constants, input leaves), then one
    per size carrier.
    """
    captured = capture(model, args, kwargs, select, dynamic_shapes=dynamic_shapes)
    canon = canonicalize(captured.gm)
    canon.update(prepare(captured))
    carriers = detach_sizes(captured, sorted(set(float_inputs) | set(token_inputs(captured))))
    return captured, carriers, canon


def build_program(
    captured: Captured, composite: Composite, options: Options, float_inputs: list[int], canon: dict[str, int]
) -> AttributionProgram:
    """Trace the program over the capture's own (possibly symbolic) fake inputs."""
    builder = ProgramBuilder(captured, composite, options, float_inputs)
    program = builder.build([], tracing_mode="symbolic")
    program.canonicalized = canon
    return program


def placeholder_values(program: AttributionProgram, model: nn.Module, leaves: list[Any], carriers: list[SizeCarrier]):
    """The program's inputs (without the seed) for input ``leaves`` and the live parameters of ``model``."""
    captured = program.captured
    n = captured.n_leaves
    out = []
    for src in captured.sources:
        if src.kind == "param":
            out.append(model.get_parameter(src.name))
        elif src.kind == "buffer":
            out.append(model.get_buffer(src.name))
        elif src.kind == "constant":
            out.append(src.value)
        elif src.index < n:
            out.append(leaves[src.index])
        else:
            out.append(carriers[src.index - n].make(leaves))
    return out


class _AttributionModule(nn.Module):
    """What gets exported: ``forward(*model_inputs, seed, **model_kwargs) -> (output, relevances...)``."""

    def __init__(
        self,
        model: nn.Module,
        program: AttributionProgram,
        carriers: list[SizeCarrier],
        n_outputs: int,
        reuse_weights: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self._program = program
        self._carriers = carriers
        self._n_outputs = n_outputs
        sources = program.captured.sources
        for i, src in enumerate(sources):
            if src.kind == "constant" and isinstance(src.value, Tensor):
                self.register_buffer(f"lrp_fx_constant_{i}", src.value, persistent=False)
        self._n_hoisted = 0
        hoisted = hoist_weights(program.graph_module, [s.kind for s in sources]) if reuse_weights else None
        self.attribution = copy_graph_module(program.graph_module) if hoisted is None else hoisted.main
        fold_broadcast_bmm(self.attribution)
        if hoisted is not None:
            # the parameter-only prologue runs once, now: its results are constants of the exported program
            weights = [_source_value(sources[i], model) for i in hoisted.slots]
            storages = {w.untyped_storage().data_ptr() for w in weights if isinstance(w, Tensor)}
            with torch.no_grad():
                values = hoisted.prologue(*weights)
            for k, v in enumerate(values):
                # a constant of its own, in a storage of its own (not a view of a parameter or of a dropped value)
                if not v.is_contiguous():
                    v = v.contiguous()
                elif v.untyped_storage().data_ptr() in storages or v.untyped_storage().nbytes() != v.nbytes:
                    v = v.clone()
                self.register_buffer(f"lrp_fx_hoisted_{k}", v, persistent=False)
            self._n_hoisted = len(values)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, ...]:
        *inputs, seed = args
        leaves = pytree.tree_leaves((tuple(inputs), dict(kwargs)))
        values = placeholder_values(self._program, self.model, leaves, self._carriers)
        for i, src in enumerate(self._program.captured.sources):
            if src.kind == "constant" and isinstance(src.value, Tensor):
                values[i] = getattr(self, f"lrp_fx_constant_{i}")
        hoisted = [getattr(self, f"lrp_fx_hoisted_{k}") for k in range(self._n_hoisted)]
        outs = self.attribution(*values, seed, *hoisted)
        return tuple(outs[: self._n_outputs])


def _source_value(src: Source, model: nn.Module) -> Any:
    if src.kind == "param":
        return model.get_parameter(src.name)
    if src.kind == "buffer":
        return model.get_buffer(src.name)
    return src.value


def _hint(size: Any) -> int:
    if isinstance(size, torch.SymInt):
        hint = size.node.hint
        if hint is None:
            raise LRPError(f"size {size} has no example value")
        return int(hint)
    return int(size)


def export(
    model: nn.Module,
    example_inputs: Tensor | tuple | list | dict,
    composite: str | Composite = "epsilon_plus_flat",
    *,
    output: OutputSelector = None,
    overrides: Any = None,
    strict: bool = True,
    memory_budget: int | None = None,
    reuse_weights: bool = True,
    **rule_params: Any,
) -> torch.export.ExportedProgram:
    """Export the attribution of ``model`` as a ``torch.export.ExportedProgram``.

    The program's inputs are the model inputs followed by the output relevance ``seed`` (a tensor of the output's
    shape, used as given: ``attribute``'s tensor-target convention); its outputs are ``(output, relevance of each
    floating input and of each token-id input that feeds an embedding, in input order...)``, as ``attribute``
    returns them. Dimension 0 (the batch) of every input whose dimension 0 equals the first floating input's (or
    the first input's) is dynamic, and so is the seed's. Parameters and buffers are the program's own
    (``prog.state_dict``: copies taken at export, so training the model further does not change the program).

    ``composite``, ``overrides``, ``strict``, ``memory_budget`` and ``**rule_params`` are ``attribute``'s.
    ``reuse_weights`` (default on): the values that depend on parameters only (batch norms folded into convolutions,
    z+/gamma weights; ``lrp_fx.hoist``) are computed once, here, and stored in the program as constants
    (``prog.constants``) instead of being recomputed in every call; the program then holds them next to the
    parameters, and editing its parameters afterwards does not update them (export again instead). ``False``
    exports the program that computes them from the parameters in every call.

    Example::

        prog = lrp_fx.export(model, torch.randn(2, 3, 224, 224), composite="epsilon_plus_flat")
        torch.export.save(prog, "attr.pt2")
        output, relevance = torch.export.load("attr.pt2").module()(x, seed)  # no lrp_fx needed here
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    attribute_only = sorted({"param_relevance", "modules", "track_absorbed", "target"} & set(rule_params))
    if attribute_only:  # they would otherwise read as unknown rule parameters of the composite
        raise InputError(
            f"{', '.join(attribute_only)}: not available in an exported program, whose inputs are the model's inputs "
            "and the output relevance (the target, as a seed tensor) and whose outputs are the output and the input "
            "relevance; use lrp_fx.attribute for parameter or module relevance and absorbed shares"
        )
    args, kwargs = _split_inputs(example_inputs)
    leaves, in_spec = pytree.tree_flatten((args, kwargs))
    tensors = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
    float_inputs = [i for i in tensors if leaves[i].is_floating_point()]
    if not tensors:
        raise InputError("export needs a floating-point input tensor or integer token ids that feed an embedding")
    first = leaves[(float_inputs or tensors)[0]]
    if first.dim() == 0:
        raise InputError("export makes dimension 0 (the batch) dynamic: the first input tensor needs one")
    batch = first.shape[0]
    in_batch = [isinstance(leaf, Tensor) and leaf.dim() > 0 and leaf.shape[0] == batch for leaf in leaves]
    if batch == 1:  # a size-1 example would be specialised: trace with two copies
        leaves = [torch.cat([leaf, leaf]) if b else leaf for leaf, b in zip(leaves, in_batch)]
        args, kwargs = pytree.tree_unflatten(leaves, in_spec)
    dim = torch.export.Dim("batch")
    specs = [{0: dim} if b else None for b in in_batch]
    arg_spec, kwarg_spec = pytree.tree_unflatten(specs, in_spec)
    comp = resolve(composite, overrides, precision_defaults(composite, rule_params, _float_dtypes(model, leaves)))
    options = Options(strict=strict, memory_budget=memory_budget, seed_mode="tensor")
    warn_unmatched_overrides(comp, model)
    with eval_mode(model):
        captured, carriers, canon = capture_dynamic(
            model, tuple(args), dict(kwargs), output, float_inputs, (arg_spec, kwarg_spec)
        )
        relevance_inputs = sorted(set(float_inputs) | set(token_inputs(captured)))  # as attribute: token ids too
        if not relevance_inputs:
            raise InputError("export needs a floating-point input tensor or integer token ids that feed an embedding")
        program = build_program(captured, comp, options, relevance_inputs, canon)
        out_shape = program.output_shape
        batch_sym = leaves_batch_symbol(program, (float_inputs or tensors)[0])
        seed_spec = {d: dim for d, s in enumerate(out_shape) if _is_symbol(s, batch_sym)}
        seed_val = [n for n in program.graph_module.graph.nodes if n.op == "placeholder"][-1].meta["val"]
        seed = torch.zeros([_hint(s) for s in out_shape], dtype=seed_val.dtype, device=first.device)
        positional = (*arg_spec, seed_spec)
        names = [f"args_{i}" for i in range(len(positional))]
        if kwargs and _keyword_names_ok(list(kwargs), names):
            # named parameters, not **kwargs: torch.export's guards misname a **kwargs forward's keyword inputs
            # (``L['kwargs']['x']``, a NameError in every call of ``prog.module()``)
            cls = _named_forward(_AttributionModule, names, list(kwargs))
            dynamic = {**dict(zip(names, positional)), **{k: kwarg_spec[k] for k in kwargs}}
        else:
            cls = _AttributionModule
            dynamic = {"args": positional, **({"kwargs": kwarg_spec} if kwargs else {})}
        module = cls(model, program, carriers, 1 + len(relevance_inputs), reuse_weights)
        with torch.no_grad():
            try:
                prog = torch.export.export(module, (*args, seed), dict(kwargs), strict=False, dynamic_shapes=dynamic)
            except Exception as err:  # export raises many types
                raise CaptureError(
                    f"could not export the attribution program of {type(model).__name__} with a dynamic batch "
                    f"dimension: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
                ) from err
    _own_tensors(prog, model)
    return prog


def _own_tensors(prog: torch.export.ExportedProgram, model: nn.Module) -> None:
    """Copy the parameters and buffers the program shares with ``model``: its hoisted weights are computed from them
    at export, so a later optimizer step on the model would change the program's forward but not those, and its
    relevance would belong to neither model."""
    shared = {id(t) for t in (*model.parameters(), *model.buffers())}
    for table in (prog.state_dict, prog.constants):
        for name, t in list(table.items()):
            if isinstance(t, Tensor) and id(t) in shared:
                copy = t.detach().clone()
                table[name] = nn.Parameter(copy, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else copy


def _keyword_names_ok(keys: list[Any], positional: list[str]) -> bool:
    return all(
        isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) and k not in (*positional, "self")
        for k in keys
    )


def _named_forward(cls: type[nn.Module], positional: list[str], keywords: list[str]) -> type[nn.Module]:
    """A subclass of ``cls`` whose ``forward(*args, **kwargs)`` presents the signature
    ``(positional..., *, keywords...)`` (what ``torch.export`` binds inputs and names placeholders by)."""
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
    params += [P(n, P.POSITIONAL_OR_KEYWORD) for n in positional] + [P(k, P.KEYWORD_ONLY) for k in keywords]

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return cls.forward(self, *args, **kwargs)

    forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return type(cls.__name__, (cls,), {"forward": forward})


def leaves_batch_symbol(program: AttributionProgram, leaf: int) -> Any:
    for ph, src in zip(program.graph_module.graph.nodes, program.captured.sources):
        if src.kind == "input" and src.index == leaf:
            size = ph.meta["val"].shape[0]
            return size.node.expr if isinstance(size, torch.SymInt) else None
    return None


def _is_symbol(size: Any, sym: Any) -> bool:
    return sym is not None and isinstance(size, torch.SymInt) and size.node.expr == sym
