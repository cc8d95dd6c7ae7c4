"""Capture: ``torch.export`` the user's model, then decompose to the op set the rules are written for.

The model is wrapped (never modified) so that an output selector picks the tensor to explain from tuples, dicts or
``ModelOutput``s; the wrapper's ``model.`` prefix is stripped from every parameter and module name.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from torch.utils import _pytree as pytree

from .errors import CaptureError

aten = torch.ops.aten

# Ops kept whole because their rule is best written at this level (a linear layer rather than its matmul and add; an
# activation rather than the products it decomposes into); everything else is decomposed to core aten.
KEEP_WHOLE = [
    aten.linear.default,
    aten.silu.default,
    aten.hardswish.default,
    aten.hardsigmoid.default,
    aten.mish.default,
    aten.elu.default,
    aten.softplus.default,
    aten.leaky_relu.default,
    aten.gelu.default,
    aten.hardtanh.default,
    aten.relu6.default,
    aten.scaled_dot_product_attention.default,  # its math decomposition changes output strides (breaks views)
    aten.logsumexp.default,  # decomposed, ``x - max`` is zero at the maximum, where a sum's rule divides by it
]

OutputSelector = str | int | Callable[[Any], torch.Tensor] | None


class _Selected(nn.Module):
    """``model`` followed by the output selector: what gets exported."""

    def __init__(self, model: nn.Module, select: OutputSelector) -> None:
        super().__init__()
        self.model = model
        self.select = select

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return select_output(self.model(*args, **kwargs), self.select)


class _SelectedFlat(_Selected):
    """``_Selected`` called with the input leaves of ``model(*args, **kwargs)`` as positional arguments."""

    def __init__(self, model: nn.Module, select: OutputSelector, in_spec: Any) -> None:
        super().__init__(model, select)
        self.in_spec = in_spec

    def forward(self, *leaves: Any) -> torch.Tensor:
        args, kwargs = pytree.tree_unflatten(list(leaves), self.in_spec)
        return super().forward(*args, **kwargs)


def select_output(out: Any, select: OutputSelector) -> torch.Tensor:
    """Pick the tensor to explain. Default: the tensor itself; ``logits`` (or the first entry) of a dict or
    ``ModelOutput``; the first element of a tuple or list."""
    if callable(select):
        return select(out)
    if select is not None:
        if isinstance(out, torch.Tensor):
            raise CaptureError(
                f"output={select!r} selects from a dict, tuple or model output, but the model returns one tensor: "
                "leave output unset (or pass a callable, e.g. output=lambda out: out[:, 0])"
            )
        if isinstance(select, str) and (isinstance(out, dict) or hasattr(out, "keys")):
            if select not in out.keys():
                keys = ", ".join(repr(k) for k in out.keys())
                raise CaptureError(f"output={select!r} is not a key of the model's output; its keys: {keys}")
            return out[select]
        if isinstance(select, str):
            if not hasattr(out, select):
                raise CaptureError(f"output={select!r}: the model's output ({type(out).__name__}) has no such field")
            return getattr(out, select)
        if isinstance(out, (tuple, list)) and isinstance(select, int) and not -len(out) <= select < len(out):
            raise CaptureError(
                f"output={select!r} is out of range: the model returns {type(out).__name__} of {len(out)} entries"
            )
        return out[select]
    while not isinstance(out, torch.Tensor):
        if hasattr(out, "keys"):
            keys = list(out.keys())
            out = out["logits"] if "logits" in keys else out[keys[0]]
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
        else:
            raise CaptureError(
                f"cannot find a tensor to explain in a model output of type {type(out).__name__}; "
                "pass output=<key, index or callable> to choose one"
            )
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode and restore every submodule's training flag afterwards, also on error."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@dataclass
class Source:
    """Where a placeholder of the captured graph gets its value at run time."""

    kind: str  # "param", "buffer", "constant", "input"
    name: str | None = None  # parameter or buffer name (without the wrapper prefix)
    index: int | None = None  # flat input leaf index
    value: Any = None  # constant tensor


@dataclass
class Captured:
    """A captured, decomposed graph and how to feed it."""

    gm: fx.GraphModule
    sources: list[Source]
    in_spec: Any  # pytree spec of (args, kwargs)
    n_leaves: int
    # torch.export lists the model's in-place updates of buffers, parameters and inputs among the graph's outputs,
    # before the model's own output: the position of that output, and (position, what it updates) per update
    output_index: int = 0
    mutations: list[tuple[int, Source]] = field(default_factory=list)

    @property
    def graph(self) -> fx.Graph:
        return self.gm.graph

    @property
    def output_node(self) -> fx.Node:
        """The graph node of the model's (selected) output: the one to explain, not a buffer update."""
        outs = next(n for n in self.gm.graph.nodes if n.op == "output").args[0]
        return outs[self.output_index] if isinstance(outs, (list, tuple)) else outs


def _strip(name: str) -> str:
    return name[len("model.") :] if name.startswith("model.") else ("" if name == "model" else name)


def is_higher_order(op: Any) -> bool:
    """A higher-order operator (``torch.cond``, ``while_loop``, ``map``, ``flex_attention``): it runs subgraphs, so
    no rule of one op can say where relevance goes inside them. By class name: its class is private."""
    return any(c.__name__ == "HigherOrderOperator" for c in type(op).__mro__)


def _subgraph_error(model: nn.Module, nodes: list[fx.Node]) -> CaptureError:
    """``torch.cond``, ``while_loop``, ``map`` or ``flex_attention`` captured as an op that runs subgraphs."""
    found = "; ".join(f"{n.target} at {user_frame(n)}" for n in nodes[:3])
    return CaptureError(
        f"{type(model).__name__} uses an operator that runs subgraphs ({found}): lrp_fx needs one straight-line "
        "graph, and no rule can say how relevance crosses a branch chosen at run time. What to try: compute both "
        "branches and pick one with torch.where (relevance follows the values picked), unroll the loop, or use "
        "F.scaled_dot_product_attention in place of flex_attention."
    )


def _explain_failure(model: nn.Module, err: Exception) -> CaptureError:
    text = str(err).strip().splitlines()
    quoted = "\n    ".join(text[:12])
    return CaptureError(
        f"torch.export could not capture {type(model).__name__}:\n    {type(err).__name__}: {quoted}\n"
        "What to try: check that the inputs match what the model's forward expects (shapes, dtypes, argument "
        "names); move data-dependent Python control flow out of forward (compute both branches and pick one with "
        "torch.where); wrap non-tensor outputs with output=...; for Hugging Face models pass use_cache=False and "
        "return_dict=True. "
        "See https://pytorch.org/docs/stable/export.html for what torch.export supports."
    )


def capture(
    model: nn.Module, args: tuple, kwargs: dict, select: OutputSelector = None, dynamic_shapes: Any = None
) -> Captured:
    """Export ``model(*args, **kwargs)`` (eval mode, ``strict=False``) and decompose it.

    ``dynamic_shapes``: optional ``(args spec, kwargs spec)`` in ``torch.export``'s format (e.g.
    ``(({0: torch.export.Dim("batch")},), {})``); the captured graph's placeholders then carry symbolic sizes.
    """
    wrapped = _Selected(model, select)
    # capture through detached aliases: torch.export reads torch._dynamo.mark_dynamic marks (a Python attribute of the
    # tensor object) as dynamic dimensions, where the shapes are static or given by ``dynamic_shapes``; and with
    # ``dynamic_shapes`` its input guards read the size of an input's ``.grad``, which fails once a backward has set it
    # (the compile backend's own protocol does) and the guard code sees ``None``
    args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: t.detach(), (tuple(args), dict(kwargs)))
    call_args, call_kwargs = tuple(args), dict(kwargs)
    if dynamic_shapes is not None and kwargs:
        # torch.export's input guards misname the keyword inputs of a ``**kwargs`` forward (``L['kwargs']['x']``:
        # a NameError when the guards run, in run_decompositions): pass every input leaf positionally instead and
        # rebuild the call inside the wrapper (same leaves, same order: the sources' indices do not change)
        flat, spec = pytree.tree_flatten((call_args, call_kwargs))
        wrapped = _SelectedFlat(model, select, spec)
        call_args, call_kwargs = tuple(flat), {}
        dynamic_shapes = {"leaves": tuple(spec.flatten_up_to((tuple(dynamic_shapes[0]), dict(dynamic_shapes[1]))))}
    elif dynamic_shapes is not None:  # _Selected takes (*args, **kwargs): export wants the spec per parameter name
        dynamic_shapes = {"args": tuple(dynamic_shapes[0])}
    with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        # nn.LSTM/GRU/RNN keep their parameters in a plain list (``_flat_weights``) that they reassign in forward;
        # torch.export warns about that list though it lifts the parameters themselves correctly
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights\[", category=UserWarning)
        try:
            ep: ExportedProgram = torch.export.export(
                wrapped, call_args, call_kwargs, strict=False, dynamic_shapes=dynamic_shapes
            )
        except CaptureError:
            raise
        except Exception as err:  # export raises many types; each becomes one explained error
            raise _explain_failure(model, err) from err
        table = torch.export.default_decompositions()
        for op in KEEP_WHOLE:
            table.pop(op, None)
        ep = ep.run_decompositions(table)
    gm = ep.graph_module
    subgraph_ops = [n for n in gm.graph.nodes if n.op == "call_function" and is_higher_order(n.target)]
    if subgraph_ops:
        raise _subgraph_error(model, subgraph_ops)
    leaves, in_spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
    sources: list[Source] = []
    user_index = 0
    user_names: dict[str, int] = {}  # user input placeholder name -> flat leaf index (for input mutations)
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.PARAMETER:
            sources.append(Source("param", name=_strip(spec.target)))
        elif spec.kind == InputKind.BUFFER:
            if spec.persistent is False:
                sources.append(Source("constant", value=ep.constants[spec.target]))
            else:
                sources.append(Source("buffer", name=_strip(spec.target)))
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            sources.append(Source("constant", value=ep.constants[spec.target]))
        elif spec.kind == InputKind.USER_INPUT:
            user_names[getattr(spec.arg, "name", "")] = user_index
            sources.append(Source("input", index=user_index))
            user_index += 1
        elif spec.kind == InputKind.CUSTOM_OBJ:
            raise _custom_object_error(model, gm, spec, ep.constants.get(spec.target))
        else:
            raise CaptureError(f"unsupported graph input kind {spec.kind} ({spec.target})")
    output_index, mutations = _outputs(ep, user_names)
    for node in gm.graph.nodes:  # module names as the user knows them
        stack = node.meta.get("nn_module_stack")
        if stack:
            node.meta["nn_module_stack"] = {k: (_strip(v[0]), v[1]) for k, v in stack.items() if v[0] != ""}
    return Captured(
        gm=gm,
        sources=sources,
        in_spec=in_spec,
        n_leaves=len(leaves),
        output_index=output_index,
        mutations=mutations,
    )


def _outputs(ep: ExportedProgram, user_names: dict[str, int]) -> tuple[int, list[tuple[int, Source]]]:
    """The position of the model's output among the graph's outputs, and the in-place updates listed before it
    (``OutputKind.BUFFER_MUTATION`` and the like: the new value of a buffer, parameter or input)."""
    output_index = None
    mutations: list[tuple[int, Source]] = []
    for pos, spec in enumerate(ep.graph_signature.output_specs):
        kind = spec.kind.name  # by name: the set of kinds differs between torch versions
        if kind == "USER_OUTPUT":
            output_index = pos if output_index is None else output_index
        elif kind == "BUFFER_MUTATION":
            mutations.append((pos, Source("buffer", name=_strip(spec.target))))
        elif kind == "PARAMETER_MUTATION":
            mutations.append((pos, Source("param", name=_strip(spec.target))))
        elif kind == "USER_INPUT_MUTATION" and spec.target in user_names:
            mutations.append((pos, Source("input", index=user_names[spec.target])))
    if output_index is None:
        raise CaptureError("the captured graph has no user output: nothing to explain")
    return output_index, mutations


def _custom_object_error(model: nn.Module, gm: fx.GraphModule, spec: Any, obj: Any) -> CaptureError:
    """Explain a custom or script object (a ``torch.Generator`` created in forward, a TorchScript class) that
    ``torch.export`` lifted to a graph input."""
    name = getattr(spec.arg, "name", None)
    kind = getattr(spec.arg, "class_fqn", None) or (type(obj).__qualname__ if obj is not None else "custom object")
    ph = next((n for n in gm.graph.nodes if n.op == "placeholder" and n.name == name), None)
    uses = [f"{u.target} at {user_frame(u)}" for u in (ph.users if ph is not None else ())]
    where = "; ".join(uses[:3]) if uses else "<unknown>"
    return CaptureError(
        f"cannot attribute through {type(model).__name__}: its forward uses a {kind} object, which torch.export "
        f"lifts to a graph input ({spec.target}) that lrp_fx cannot feed or propagate relevance through. Used by: "
        f"{where}.\nWhat to try: custom and script objects, such as a torch.Generator created in forward for seeded "
        "noise or augmentation, have no place in the forward being explained: skip the randomness in eval mode "
        "(`if self.training:`; lrp_fx runs the model in eval mode), or draw the noise outside the model and pass "
        "it as an input (model(x, noise))."
    )


def module_stack(node: fx.Node) -> list[tuple[str, str]]:
    """``[(qualified name, type name)]`` of the modules a node came from, outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())  # the model itself is ("", its type)


def user_frame(node: fx.Node) -> str:
    """The user-code source line that produced ``node`` (last frame of its stack trace), or ``"<unknown>"``."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    # frames of code torch generated (a traced subgraph's ``<eval_with_key>``) are not what the user wrote
    frames = [i for i, ln in enumerate(lines) if ln.startswith("File ") and not ln.startswith('File "<eval_with_key>')]
    if not frames:
        return "<unknown>"
    last = frames[-1]
    code = lines[last + 1] if last + 1 < len(lines) and not lines[last + 1].startswith("File ") else ""
    return f"{lines[last]}: {code}".rstrip(": ")
