"""``torch.compile(model, backend="lrp")``: Layer-wise Relevance Propagation through autograd.

The compiled model returns exactly the model's outputs; the *gradient* of an output with respect to an input is its
LRP relevance::

    cmodel = torch.compile(model, backend="lrp")           # or backend=lrp_fx.backend(composite="epsilon")
    out = cmodel(x.requires_grad_())
    (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed)   # == lrp_fx.attribute(model, x, target=seed)

How. Dynamo hands the backend one torch-level graph per region of the model (one region without graph breaks) and
its example inputs. On the region's first call the backend captures the graph with ``torch.export`` (parameters and
buffers that Dynamo lifted to graph inputs are re-attached as parameters, so they never receive relevance), builds
the attribution program with a symbolic batch size (``lrp_fx.export.capture_dynamic``) and splits it where the
relevance pass starts: the *forward* part computes the outputs and the forward values the rules need, the *backward*
part takes those and the output relevance (``grad_output``) and returns the input relevances. Both are compiled with
Inductor and run inside a ``torch.autograd.Function``. Values that depend on parameters only (batch norms folded into
convolutions, z+/gamma weights) are first split off (``lrp_fx.hoist``): they are computed outside the compiled parts,
once per parameter version (an in-place update, ``load_state_dict`` or a replaced parameter computes them again), and
fed to both parts as inputs, as eager ``attribute`` does. Relevance stays linear in the seed, so a region with several
outputs is explained as one output: their flattened concatenation.

Shapes. Programs are traced with dimension 0 of every input symbolic, so a new batch size does not rebuild
anything; every program keeps the shape assumptions its trace made (sizes, guards) and is reused only where they
hold, like Dynamo's guards. With ``torch.compile``'s default ``dynamic=None`` Dynamo itself re-traces its graph once,
at the first new batch size; the backend recognises the re-traced graph and reuses the program (``LRPBackend.builds``
counts programs built, ``graphs`` the graphs Dynamo sent). ``torch._dynamo.mark_dynamic(x, 0)`` avoids that re-trace.
``dynamic=True`` also works: the other sizes Dynamo makes symbolic stay symbolic where the capture allows, and the
Python numbers it passes as 0-d tensors (a batch norm's ``eps``) are fixed at their values, a new value building a
new program.

Graph breaks. Each region propagates relevance with its rules; Python code that Dynamo ran eagerly between regions
goes through ordinary autograd, so any tensor op there gets its gradient, not an LRP rule. The first relevance pass
after a compile with graph breaks emits one ``GraphBreakWarning`` naming the breaks and the ops found (by walking
the autograd graph) between regions. A composite's first-layer rule (``Flat``, ``ZBox``) is applied only in a region
that is not fed by another region.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import sympy
import torch
import torch.fx.traceback as fx_traceback
from torch import Tensor, fx, nn

from .capture import module_stack
from .composites import HALF_PRECISION, Composite, precision_defaults, resolve, warn_unmatched_overrides
from .errors import InputError, RuleError
from .export import SizeCarrier, build_program, capture_dynamic, fold_broadcast_bmm
from .hoist import WeightCache, hoist_weights
from .program import AttributionProgram, Options
from .rules.registry import registry_version

__all__ = ["GraphBreakWarning", "LRPBackend", "SplitProgram", "backend", "lrp_backend", "split_program"]


class GraphBreakWarning(UserWarning):
    """Relevance crossed a graph break: code between compiled regions ran eagerly under ordinary autograd."""


# -- splitting the program into a forward and a relevance part --------------------------------------------------------
@dataclass
class SplitProgram:
    """The attribution program cut where its relevance pass starts.

    ``forward(*inputs) -> (output, *saved)``; ``backward(*saved, *(inputs[i] for i in saved_inputs), seed) ->
    relevances``; ``inference(*inputs) -> (output,)`` (the forward part alone, for calls that need no relevance).
    """

    forward: fx.GraphModule
    backward: fx.GraphModule
    inference: fx.GraphModule
    saved_inputs: list[int]
    n_saved: int


def split_program(gm: fx.GraphModule, seed_index: int = -1) -> SplitProgram:
    """Cut an attribution program ``(inputs..., seed) -> (output, relevances...)`` at its first seed-dependent op.

    Everything before that point is the forward pass (the planner's recomputations sit after it and stay in the
    relevance part, so ``memory_budget`` keeps its meaning); the forward values the relevance part reads are saved.
    ``seed_index`` is the seed's placeholder position (a hoisted program, ``lrp_fx.hoist``, has its weights after the
    seed); the parts' "inputs" are the other placeholders, in order.
    """
    graph = gm.graph
    phs = [n for n in graph.nodes if n.op == "placeholder"]
    seed = phs[seed_index]
    inputs = [ph for ph in phs if ph is not seed]
    out_node = next(n for n in graph.nodes if n.op == "output")
    outs = list(out_node.args[0])
    rel = {seed}
    back = False
    fwd_nodes, bwd_nodes = [], []
    for n in graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        if any(a in rel for a in n.all_input_nodes):
            rel.add(n)
            back = True
        (bwd_nodes if back else fwd_nodes).append(n)
    if outs[0] in rel:
        raise RuleError("internal error: the program's output depends on its seed")
    bwd_set = set(bwd_nodes)
    needed: dict[fx.Node, None] = {}
    for n in bwd_nodes:
        for a in n.all_input_nodes:
            if a not in bwd_set and a is not seed:
                needed[a] = None
    for o in outs[1:]:
        if isinstance(o, fx.Node) and o not in bwd_set and o is not seed:
            needed[o] = None
    saved_inputs = [inputs.index(a) for a in needed if a.op == "placeholder"]
    computed = [a for a in needed if a.op != "placeholder"]

    def forward_graph(extra: list[fx.Node]) -> fx.GraphModule:
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for ph in inputs:
            env[ph] = g.node_copy(ph)
        for n in fwd_nodes:
            env[n] = g.node_copy(n, env.__getitem__)
        g.output((env[outs[0]], *[env[c] for c in extra]))
        g.eliminate_dead_code()
        return fx.GraphModule(gm, g)

    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for a in [*computed, *(inputs[i] for i in saved_inputs), seed]:
        ph = g.placeholder(a.name)
        ph.meta = dict(a.meta)
        env[a] = ph
    for n in bwd_nodes:
        env[n] = g.node_copy(n, env.__getitem__)
    g.output(tuple(env[o] for o in outs[1:]))
    g.eliminate_dead_code()
    return SplitProgram(
        forward=forward_graph(computed),
        backward=fx.GraphModule(gm, g),
        inference=forward_graph([]),
        saved_inputs=saved_inputs,
        n_saved=len(computed),
    )


def _compile(gm: fx.GraphModule, inductor: bool, layout_optimization: bool = False) -> Any:
    """Inductor-compile one part over its placeholders' (symbolic) fake values; ``gm`` itself if not ``inductor``.

    Inductor's layout optimisation is off by default: it gives the forward convolutions channels-last outputs, and
    the relevance part's convolution VJPs then copy between layouts (ResNet-50 on CPU: 20% slower than eager with
    it, 20% faster without).
    """
    if not inductor:
        return gm
    example = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    # A size that is an expression of the capture's symbols (the seed of a model with several outputs is their
    # concatenation, ``5*s0`` long) makes Inductor's on-disk graph cache store a guard that names the capture's
    # inputs (``L['args']``), which a later process cannot evaluate: such parts skip that cache.
    compound = any(
        isinstance(t, Tensor) and any(isinstance(d, torch.SymInt) and not str(d).isidentifier() for d in t.shape)
        for t in example
    )
    patch = {"layout_optimization": layout_optimization, **({"fx_graph_cache": False} if compound else {})}
    with torch._inductor.config.patch(**patch):
        return torch._inductor.compile(gm, example)


# -- one built program ------------------------------------------------------------------------------------------------
class _Entry:
    """A program built for one capture, with its compiled parts and the shape assumptions it was traced under."""

    def __init__(
        self, program: AttributionProgram, carriers: list[SizeCarrier], n_user: int, backend: LRPBackend
    ) -> None:
        self.program = program
        self.carriers = carriers
        # The parameter-only prologue (folded batch norms, modified weights) runs outside the compiled parts, once
        # per parameter version (``lrp_fx.hoist``); the parts take its results as inputs after the model's.
        self.hoisted = None
        if backend.reuse_weights:
            # a fresh split: the program's own ``hoisted.main`` is rewritten in place for the eager runner
            self.hoisted = hoist_weights(program.graph_module, [src.kind for src in program.captured.sources])
        self.weight_cache = WeightCache()
        if self.hoisted is None:
            self.split = split_program(program.graph_module)
        else:
            self.split = split_program(self.hoisted.main, seed_index=len(program.captured.sources))
        if backend.fold_bmm:
            for part in (self.split.forward, self.split.backward, self.split.inference):
                fold_broadcast_bmm(part)
        self.backend = backend
        self.n_user = n_user
        self._parts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._weights_lock = threading.Lock()
        captured = program.captured
        # The model's in-place updates of its buffers (and inputs): the capture lists their new values among its
        # outputs, the program drops them. A graph computing them alone runs after each call and its values are
        # written back, as the model itself (and Dynamo's own backends) would do.
        self.mutations = list(captured.mutations)
        self.mutated = {
            i for i, src in enumerate(captured.sources) if any(_same_source(src, m) for _, m in self.mutations)
        }
        self.updates = None
        if self.mutations:
            outs = next(n for n in captured.graph.nodes if n.op == "output").args[0]
            self.updates = _outputs_only(captured.gm, [outs[pos] for pos, _ in self.mutations])
        self.checks: list[tuple[int, int, Any]] = []
        self.kinds: dict[int, tuple[torch.dtype, int]] = {}
        self.shape_env = None
        for ph, src in zip(program.graph_module.graph.nodes, captured.sources):
            val = ph.meta.get("val")
            if src.kind != "input" or src.index >= n_user or not isinstance(val, Tensor):
                continue
            self.kinds[src.index] = (val.dtype, val.dim())
            for d, s in enumerate(val.shape):
                if isinstance(s, torch.SymInt):
                    self.shape_env = s.node.shape_env
                    self.checks.append((src.index, d, s.node.expr))
                else:
                    self.checks.append((src.index, d, int(s)))
        self._verdicts: dict[tuple, bool] = {}

    def inputs(self, values: list[Any]) -> list[Any]:
        """The compiled parts' inputs: the program's (without the seed), then the hoisted weights, computed again
        only when a parameter or buffer they read changed (in place, by ``load_state_dict``, or replaced)."""
        if self.hoisted is None:
            return values
        with self._weights_lock, torch.no_grad():
            weights = self.weight_cache.get(self.hoisted, values)
        return [*values, *weights]

    def part(self, name: str) -> Any:
        fn = self._parts.get(name)
        if fn is None:
            with self._lock:
                fn = self._parts.get(name)
                if fn is None:
                    start = time.perf_counter()
                    fn = _compile(getattr(self.split, name), self.backend.inductor, self.backend.layout_optimization)
                    self.backend.compile_seconds += time.perf_counter() - start
                    self._parts[name] = fn
        return fn

    def matches(self, user: list[Tensor]) -> bool:
        """Whether the inputs satisfy every assumption the program was traced (and compiled) under."""
        if len(user) != self.n_user:
            return False
        for k, (dtype, ndim) in self.kinds.items():
            t = user[k]
            if not isinstance(t, Tensor) or t.dtype != dtype or t.dim() != ndim:
                return False
        binding: dict[Any, int] = {}
        for k, d, e in self.checks:
            v = user[k].shape[d]
            if isinstance(e, int):
                if v != e:
                    return False
            elif binding.setdefault(e, v) != v:
                return False
        key = tuple(sorted((str(s), v) for s, v in binding.items()))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._guards_hold(binding)
        return verdict

    def _guards_hold(self, binding: dict[Any, int]) -> bool:
        env = self.shape_env
        if env is None or not binding:
            return True
        values = {s: sympy.Integer(v) for s, v in binding.items()}
        for s, v in binding.items():
            rng = env.var_to_range.get(s)
            if rng is not None and not (rng.lower <= v <= rng.upper):
                return False
        for s, e in env.replacements.items():
            if s in values and e.free_symbols <= set(values) and e.xreplace(values) != values[s]:
                return False
        for guard in env.guards:
            expr = guard.expr
            if not expr.free_symbols <= set(values):
                continue
            try:
                if not bool(expr.xreplace(values)):
                    return False
            except TypeError:
                return False
        return True


# -- one Dynamo graph --------------------------------------------------------------------------------------------------
def _is_state(node: fx.Node, example: Any) -> bool:
    """A parameter, buffer or global tensor Dynamo lifted to a graph input (never relevance, never an activation)."""
    if isinstance(example, nn.Parameter):
        return True
    if "_dynamo_static_input_type" in (node.meta.get("tensor_dict") or {}):
        return True
    source = getattr(node.meta.get("grapharg"), "source", None)
    if source is None:
        return False
    kind = source.guard_source
    kind = kind() if callable(kind) else kind
    name = getattr(kind, "name", "")
    return "NN_MODULE" in name or "FSDP" in name or name.startswith("GLOBAL")


def _is_wrapped_scalar(node: fx.Node, example: Any) -> bool:
    """A Python number Dynamo turned into a 0-d tensor input that the graph only reads back with ``.item()``."""
    if not isinstance(example, Tensor) or example.dim() != 0 or not node.users:
        return False
    return all(u.op == "call_method" and u.target == "item" for u in node.users)


def _unwrap_scalars(gm: fx.GraphModule, placeholders: list[fx.Node]) -> fx.GraphModule:
    """A copy of ``gm`` in which ``placeholders`` hold the Python numbers themselves (their ``.item()`` calls go)."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = g.graph_copy(gm.graph, env)
    g.output(out)
    for ph in placeholders:
        new = env[ph]
        for user in list(new.users):
            user.replace_all_uses_with(new)
            g.erase_node(user)
    g.lint()
    return fx.GraphModule(gm, g)


def _example(node: fx.Node) -> Any:
    return node.meta.get("example_value", node.meta.get("val"))


class _RegionModule(nn.Module):
    """What gets captured for one Dynamo graph: its lifted state re-attached as parameters and buffers."""

    def __init__(self, region: _Region, args: list[Any]) -> None:
        super().__init__()
        self.graph_module = region.capture_gm
        self.region = [region]  # a list: not a submodule
        for k, i in enumerate(region.state):
            t = args[i]
            if isinstance(t, nn.Parameter):
                self.register_parameter(f"state_{k}", t)
            else:
                self.register_buffer(f"state_{k}", t)
        self.fixed = {i: args[i] for i in region.fixed}
        self.fixed.update({i: args[i].item() for i in region.scalars})

    def forward(self, *user: Tensor) -> Tensor:
        region = self.region[0]
        args: list[Any] = [None] * region.n_args
        for k, i in enumerate(region.state):
            args[i] = getattr(self, f"state_{k}")
        for k, i in enumerate(region.user):
            args[i] = user[k]
        for i, (j, d) in region.sym_from.items():
            args[i] = args[j].shape[d]
        for i, v in self.fixed.items():
            args[i] = v
        with fx_traceback.preserve_node_meta():  # Dynamo's module stack reaches the captured nodes (overrides)
            outs = fx.Interpreter(self.graph_module).run(*args)
        floats = [outs[k] for k in region.float_out]
        return floats[0] if len(floats) == 1 else torch.cat([o.reshape(-1) for o in floats])


class _Region:
    """The callable the backend returns for one Dynamo graph."""

    def __init__(self, backend: LRPBackend, gm: fx.GraphModule, example_inputs: list[Any], resumed: bool) -> None:
        self.backend = backend
        self.gm = gm
        self.resumed = resumed
        self.whole = False  # set by the backend: the graph holds the whole forward (no break, not resumed)
        phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.n_args = len(phs)
        self.state: list[int] = []
        self.user: list[int] = []
        syms: list[int] = []
        # Python numbers Dynamo passes as 0-d tensors read back with ``.item()`` (``dynamic=True`` does this to float
        # attributes such as a batch norm's ``eps``): programs are built for their values, like other fixed inputs
        self.scalars: list[int] = []
        for i, (ph, ex) in enumerate(zip(phs, example_inputs)):
            if not isinstance(ex, Tensor):
                syms.append(i)
            elif _is_wrapped_scalar(ph, ex):
                self.scalars.append(i)
            elif _is_state(ph, ex):
                self.state.append(i)
            else:
                self.user.append(i)
        # sizes Dynamo passes as graph inputs: read them from a tensor input where one has that size
        self.sym_from: dict[int, tuple[int, int]] = {}
        self.fixed: list[int] = []
        self.symbolic_dims: dict[int, list[int]] = {}
        for i in syms:
            expr = getattr(getattr(_example(phs[i]), "node", None), "expr", None)
            found = None
            for j, ph in enumerate(phs):
                val = _example(ph)
                if isinstance(val, Tensor) and expr is not None:
                    for d, s in enumerate(val.shape):
                        if isinstance(s, torch.SymInt) and s.node.expr == expr:
                            found = (j, d)
                            break
                if found:
                    break
            if found:
                self.sym_from[i] = found
            else:
                self.fixed.append(i)
        for k, i in enumerate(self.user):
            val = _example(phs[i])
            if isinstance(val, Tensor):
                self.symbolic_dims[k] = [d for d, s in enumerate(val.shape) if isinstance(s, torch.SymInt)]
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        outs = out_node.args[0]
        self.single_output = not isinstance(outs, (tuple, list))
        outs = [outs] if self.single_output else list(outs)
        self.out_nodes = outs
        self.float_out = []
        self.aux_out = []
        # outputs that are a lifted buffer itself (``self.calls += 1`` returns it, and Dynamo assigns it back to the
        # attribute): returned as that very tensor, updated in place, never explained
        self.state_out: dict[int, int] = {}
        for k, o in enumerate(outs):
            val = _example(o) if isinstance(o, fx.Node) else o
            state = [i for i in self.state if isinstance(val, Tensor) and _example(phs[i]) is val]
            if state:
                self.state_out[k] = state[0]
                continue
            (self.float_out if isinstance(val, Tensor) and val.is_floating_point() else self.aux_out).append(k)
        self.placeholders = phs
        self.capture_gm = _unwrap_scalars(gm, [phs[i] for i in self.scalars]) if self.scalars else gm
        self.entries: list[tuple[tuple, _Entry]] = []  # (values of the non-tensor inputs it was built for, entry)
        self.eager_reason: str | None = None
        self.module: _RegionModule | None = None
        self._getters: dict[int, list[tuple[str, Any]]] = {}
        self._aux = None
        self._checked = False
        self._lock = threading.Lock()

    # -- building ----------------------------------------------------------------------------------------------------
    def _floats(self, args: list[Any]) -> list[int]:
        return [k for k, i in enumerate(self.user) if args[i].is_floating_point()]

    def _entry(self, args: list[Any]) -> _Entry | None:
        user = [args[i] for i in self.user]
        # the rule registry's version too: a rule registered or replaced after the build applies at the next call
        fixed = tuple(args[i] for i in self.fixed) + tuple(args[i].item() for i in self.scalars) + (registry_version(),)
        for built_for, entry in self.entries:
            if built_for == fixed and entry.matches(user):
                return entry
        with self._lock:
            for built_for, entry in self.entries:
                if built_for == fixed and entry.matches(user):
                    return entry
            if self.eager_reason is not None:
                return None
            if not self.float_out or not self._floats(args):
                self.eager_reason = "no floating input or output"
                return None
            first = not (self.resumed or self._fed_by_region(args))
            try:
                entry = self.backend._entry_for(self, args, user, first)
            except RuleError as err:
                if "does not depend on any floating-point input" not in str(err):
                    raise
                self.eager_reason = str(err)
                return None
            self.entries.append((fixed, entry))
            return entry

    def _fed_by_region(self, args: list[Any]) -> bool:
        tensors = [args[i] for i in self.user if isinstance(args[i], Tensor)]
        if any(getattr(t, "_lrp_fx_region", False) for t in tensors):
            return True
        reached, _ = _walk(tensors)
        return reached

    def dynamic_spec(self, user: list[Tensor]) -> tuple:
        specs = []
        for k, t in enumerate(user):
            dims = set(self.symbolic_dims.get(k, [])) | ({0} if t.dim() > 0 else set())
            dims = {d for d in dims if t.shape[d] >= 2}  # a size-1 example would be specialised anyway
            specs.append({d: torch.export.Dim.AUTO for d in sorted(dims)} or None)
        return (tuple(specs), {})

    def update(self, entry: _Entry, args: tuple, values: list[Any]) -> None:
        """Apply the graph's in-place updates of buffers (and inputs), computed from the program's inputs."""
        targets = []
        for _, src in entry.mutations:
            m = re.fullmatch(r"state_(\d+)", src.name or "")
            if src.kind == "input":
                target = args[self.user[src.index]]
            elif m:
                target = args[self.state[int(m.group(1))]]
            else:
                target = (self.module.get_parameter if src.kind == "param" else self.module.get_buffer)(src.name)
            if target.requires_grad and src.kind == "input":
                raise RuleError(
                    "torch.compile(backend='lrp'): the model updates an input that requires grad in place; "
                    "relevance cannot flow through that update. Update a copy (x = x.clone()) in the model instead"
                )
            targets.append(target)
        with torch.no_grad():
            new = entry.updates(*values[: len(entry.program.captured.sources)])
            for target, value in zip(targets, new):
                target.copy_(value)

    def getters(self, entry: _Entry) -> list[tuple[str, Any]]:
        got = self._getters.get(id(entry))
        if got is None:
            got = []
            n = entry.program.captured.n_leaves
            for src in entry.program.captured.sources:
                if src.kind in ("param", "buffer"):
                    m = re.fullmatch(r"state_(\d+)", src.name or "")
                    if m:
                        got.append(("arg", self.state[int(m.group(1))]))
                    else:
                        attr = self.module.get_parameter if src.kind == "param" else self.module.get_buffer
                        got.append(("value", attr(src.name)))
                elif src.kind == "constant":
                    got.append(("value", src.value))
                elif src.index < n:
                    got.append(("arg", self.user[src.index]))
                else:
                    c = entry.carriers[src.index - n]
                    got.append(("size", (self.user[c.leaf], c.dim)))
            self._getters[id(entry)] = got
        return got

    def values(self, entry: _Entry, args: tuple) -> list[Any]:
        out = []
        for kind, what in self.getters(entry):
            if kind == "arg":
                v = args[what]
                out.append(v.detach() if isinstance(v, Tensor) and v.requires_grad else v)
            elif kind == "value":
                out.append(what)
            else:
                ref = args[what[0]]
                out.append(torch.zeros((), dtype=torch.int8, device=ref.device).expand(ref.shape[what[1]]))
        return out

    # -- running -----------------------------------------------------------------------------------------------------
    def __call__(self, *args: Any) -> Any:
        args = list(args)
        if not self._checked:
            self._checked = True
            rel = [args[i] for i in self.user if isinstance(args[i], Tensor) and args[i].is_floating_point()]
            _, ops = _walk(rel)
            if ops:
                self.backend.note_eager(ops)
        entry = self._entry(args)
        if entry is None:
            return self.gm(*args)
        outs = _LRPFunction.apply((self, entry), *args)
        if self.state_out:
            outs = tuple(args[self.state_out[k]] if k in self.state_out else o for k, o in enumerate(outs))
        for k in self.float_out:
            outs[k]._lrp_fx_region = True
        return outs[0] if self.single_output else outs

    def unpack(self, out: Tensor, args: tuple) -> list[Any]:
        """The Dynamo graph's outputs from the program output (the concatenation, for several float outputs)."""
        result: list[Any] = [None] * len(self.out_nodes)
        if len(self.float_out) == 1:
            result[self.float_out[0]] = out
        else:
            shapes = self.out_shapes(args)
            start = 0
            for k in self.float_out:
                numel = 1
                for s in shapes[k]:
                    numel *= s
                dtype = _example(self.out_nodes[k]).dtype
                result[k] = out[start : start + numel].view(shapes[k]).to(dtype).clone()
                start += numel
        if self.aux_out:
            if self._aux is None:
                self._aux = _outputs_only(self.gm, [self.out_nodes[k] for k in self.aux_out])
            with torch.no_grad():
                aux = self._aux(*args)
            for k, v in zip(self.aux_out, aux):
                result[k] = v
        return result

    def out_shapes(self, args: tuple) -> dict[int, list[int]]:
        binding: dict[Any, int] = {}
        for ph, a in zip(self.placeholders, args):
            val = _example(ph)
            if isinstance(val, torch.SymInt) and isinstance(val.node.expr, sympy.Symbol):
                binding[val.node.expr] = int(a)
            elif isinstance(val, Tensor):
                for d, s in enumerate(val.shape):
                    if isinstance(s, torch.SymInt) and isinstance(s.node.expr, sympy.Symbol):
                        binding[s.node.expr] = a.shape[d]
        shapes = {}
        for k in self.float_out:
            val = _example(self.out_nodes[k])
            shapes[k] = [
                int(s.node.expr.xreplace(binding)) if isinstance(s, torch.SymInt) else int(s) for s in val.shape
            ]
        return shapes


def _same_source(a: Any, b: Any) -> bool:
    if a.kind == "input" or b.kind == "input":
        return a.kind == b.kind and a.index == b.index
    return a.kind in ("param", "buffer") and a.kind == b.kind and a.name == b.name


def _outputs_only(gm: fx.GraphModule, nodes: list[fx.Node]) -> fx.GraphModule:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            break
        env[n] = g.node_copy(n, env.__getitem__)
    g.output(tuple(env[n] for n in nodes))
    g.eliminate_dead_code()
    return fx.GraphModule(gm, g)


class _LRPFunction(torch.autograd.Function):
    """Forward: the program's forward part. Backward: its relevance part, seeded with ``grad_output``."""

    @staticmethod
    def forward(ctx: Any, call: tuple[_Region, _Entry], *args: Any) -> tuple[Any, ...]:
        region, entry = call
        values = entry.inputs(region.values(entry, args))
        want = any(ctx.needs_input_grad[1 + i] for i in region.user)
        if want:
            res = entry.part("forward")(*values)
            out, computed = res[0], list(res[1 : 1 + entry.split.n_saved])
            # a saved input the model updates in place (below) is saved as it was: the relevance pass reads it
            inputs = [values[i].clone() if i in entry.mutated else values[i] for i in entry.split.saved_inputs]
            saved = computed + inputs
            tensors = [v for v in saved if isinstance(v, Tensor)]
            ctx.layout = [isinstance(v, Tensor) for v in saved]
            ctx.others = [v for v in saved if not isinstance(v, Tensor)]
            ctx.save_for_backward(*tensors)
        else:
            out = entry.part("inference")(*values)[0]
        if entry.mutations:
            region.update(entry, args, values)
        ctx.want = want
        ctx.call = call
        outs = region.unpack(out, args)
        ctx.out_meta = [(outs[k].shape, outs[k].dtype, outs[k].device) for k in region.float_out]
        ctx.mark_non_differentiable(*[outs[k] for k in region.aux_out if isinstance(outs[k], Tensor)])
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
        region, entry = ctx.call
        region.backend.flush_warning()
        result: list[Any] = [None] * (1 + region.n_args)
        if not ctx.want:
            return tuple(result)
        seeds = []
        for k, (shape, dtype, device) in zip(region.float_out, ctx.out_meta):
            g = grads[k]
            seeds.append(torch.zeros(shape, dtype=dtype, device=device) if g is None else g)
        seed = seeds[0] if len(seeds) == 1 else torch.cat([s.reshape(-1) for s in seeds])
        tensors = iter(ctx.saved_tensors)
        others = iter(ctx.others)
        saved = [next(tensors) if is_tensor else next(others) for is_tensor in ctx.layout]
        rels = entry.part("backward")(*saved, seed.contiguous())
        for k, r in zip(entry.program.float_inputs, rels):
            if ctx.needs_input_grad[1 + region.user[k]]:
                result[1 + region.user[k]] = r
        return tuple(result)


# -- graph breaks ------------------------------------------------------------------------------------------------------
def _break_reason(gm: fx.GraphModule) -> str | None:
    """``file:line in function: reason`` if Dynamo ended this graph at a graph break."""
    reason = getattr(gm, "compile_subgraph_reason", None)
    if reason is None or not getattr(reason, "graph_break", False):
        return None
    text = (str(getattr(reason, "reason", "")) or "graph break").strip().splitlines()[0]
    stack = getattr(reason, "user_stack", None) or []
    where = f"{stack[-1].filename}:{stack[-1].lineno} in {stack[-1].name}" if stack else "<unknown>"
    return f"{where}: {text[:200]}"


def _warn(breaks: list[str], eager: Counter[str]) -> None:
    parts = [
        f"torch.compile(backend='lrp'): relevance crossed {len(breaks) or 'a'} graph break(s); each compiled "
        "region applies LRP rules, code between regions ran eagerly under ordinary autograd."
    ]
    if breaks:
        parts.append("Breaks: " + "; ".join(breaks) + ".")
    if eager:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(eager.items()))
        parts.append(f"Ops that ran eagerly between regions got their gradient, not an LRP rule: {ops}.")
    else:
        parts.append("No tensor op ran between regions, so no rule was lost.")
    parts.append("Remove the break (see torch._dynamo.explain) or compile with fullgraph=True to be sure.")
    warnings.warn(" ".join(parts), GraphBreakWarning, stacklevel=3)


def _walk(tensors: list[Tensor], limit: int = 20000) -> tuple[bool, Counter[str]]:
    """Walk the autograd graph behind ``tensors``: whether it reaches another lrp region, and the ops on paths from
    such a region to ``tensors`` (what ran eagerly between regions)."""
    region_cls = _LRPFunction._backward_cls
    roots = [t.grad_fn for t in tensors if isinstance(t, Tensor) and t.grad_fn is not None]
    reach: dict[Any, bool] = {}
    stack = [(fn, False) for fn in roots]
    seen = 0
    while stack:
        fn, done = stack.pop()
        if fn in reach:
            continue
        if isinstance(fn, region_cls):
            reach[fn] = True
            continue
        children = [c for c, _ in getattr(fn, "next_functions", ()) if c is not None]
        if done:
            reach[fn] = any(reach.get(c, False) for c in children)
            continue
        seen += 1
        if seen > limit:
            break
        stack.append((fn, True))
        stack.extend((c, False) for c in children if c not in reach)
    ops: Counter[str] = Counter()
    for fn, r in reach.items():
        if r and not isinstance(fn, region_cls):
            ops[re.sub(r"Backward\d*$", "", type(fn).__name__).lower() or type(fn).__name__] += 1
    return any(reach.get(fn, False) for fn in roots), ops


# -- the backend -------------------------------------------------------------------------------------------------------
class LRPBackend:
    """A ``torch.compile`` backend computing LRP relevance as the gradient of the compiled model.

    ``composite``, ``overrides``, ``strict``, ``memory_budget`` and ``**rule_params`` are ``attribute``'s (module
    names come from Dynamo's graph: ``L['self'].layer1[0]`` is ``layer1.0``). ``inductor=False`` runs the forward
    and relevance parts as plain FX graphs (no Inductor compile, for debugging); ``layout_optimization`` is
    Inductor's option of that name (off: see ``_compile``). ``reuse_weights`` (default on) computes the values that
    depend on parameters only (folded batch norms, z+/gamma weights) outside the compiled parts, once per parameter
    version, as ``attribute(..., reuse_weights=True)`` does; off, both parts recompute them in every call.
    ``fold_bmm`` (default on) turns batched products with one broadcast weight into one matrix product
    (``lrp_fx.fold.fold_broadcast_bmm``: ``nn.MultiheadAttention``'s projections).
    Counters: ``graphs`` (Dynamo graphs received), ``captures`` (graphs exported), ``builds`` (programs built),
    ``build_seconds``, ``compile_seconds``, ``prologue_runs`` (computations of hoisted weights).
    """

    def __init__(
        self,
        composite: str | Composite = "epsilon_plus_flat",
        *,
        overrides: Any = None,
        strict: bool = True,
        memory_budget: int | None = None,
        inductor: bool = True,
        layout_optimization: bool = False,
        reuse_weights: bool = True,
        fold_bmm: bool = True,
        **rule_params: Any,
    ) -> None:
        attribute_only = sorted({"param_relevance", "modules", "track_absorbed", "target", "output"} & set(rule_params))
        if attribute_only:  # they would otherwise read as unknown rule parameters
            raise TypeError(
                f"{', '.join(attribute_only)}: not available through the compile backend, whose relevance arrives as "
                "x.grad; use lrp_fx.attribute for parameter or module relevance, absorbed shares and targets"
            )
        self.composite = resolve(composite, overrides, rule_params)
        # a preset on a half-precision graph gets the half-precision stabilisers (composites.precision_defaults);
        # the dtypes are known per graph, so that variant is resolved when a graph needs it
        self._half_composite = resolve(
            composite, overrides, precision_defaults(composite, rule_params, set(HALF_PRECISION))
        )
        self._strict, self._memory_budget = strict, memory_budget
        Options(strict=strict, memory_budget=memory_budget, kernels="auto")  # bad values fail here, not per graph
        self.inductor = inductor
        self.reuse_weights = reuse_weights
        self.fold_bmm = fold_bmm
        self.layout_optimization = layout_optimization
        self.__name__ = "lrp"
        self._programs: dict[Any, list[_Entry]] = {}
        self._pending_lock = threading.Lock()
        self._pending_breaks: list[str] = []
        self._pending_eager: Counter[str] = Counter()
        self.reset_counters()

    @property
    def options(self) -> Options:
        """Built per graph: ``$LRP_FX_KERNELS`` is read (and checked) when a graph is compiled, not at import."""
        return Options(strict=self._strict, memory_budget=self._memory_budget, seed_mode="tensor")

    def reset_counters(self) -> None:
        self.graphs = 0
        self.captures = 0
        self.builds = 0
        self.build_seconds = 0.0
        self.compile_seconds = 0.0

    @property
    def prologue_runs(self) -> int:
        """How many times the built programs computed their hoisted weights (once each, then after weight updates)."""
        return sum(e.weight_cache.runs for entries in self._programs.values() for e in entries)

    def clear_cache(self) -> None:
        """Forget every built program (compiled models keep the ones they use)."""
        self._programs.clear()

    def __call__(self, gm: fx.GraphModule, example_inputs: list[Any]) -> _Region:
        self.graphs += 1
        reason = _break_reason(gm)
        if reason is not None:
            with self._pending_lock:
                self._pending_breaks.append(reason)
        region = _Region(self, gm, list(example_inputs), _resumed())
        # a graph that Dynamo neither resumed nor ended at a break holds the whole forward, so an override that
        # matches none of its modules matches nothing the model runs
        region.whole = reason is None and not region.resumed
        return region

    def note_eager(self, ops: Counter[str]) -> None:
        with self._pending_lock:
            self._pending_eager.update(ops)

    def flush_warning(self) -> None:
        """Emit one ``GraphBreakWarning`` for the breaks compiled and eager ops seen since the last one."""
        with self._pending_lock:
            if not self._pending_breaks and not self._pending_eager:
                return
            breaks, eager = list(self._pending_breaks), Counter(self._pending_eager)
            self._pending_breaks.clear()
            self._pending_eager.clear()
        _warn(breaks, eager)

    def __repr__(self) -> str:
        return f"lrp_fx.backend(composite={self.composite.name!r})"

    def _entry_for(self, region: _Region, args: list[Any], user: list[Tensor], first: bool) -> _Entry:
        start = time.perf_counter()
        # half-precision inputs, or a half-precision model casting its inputs (as attribute decides: HF ViT in bf16
        # casts float32 pixels to its own dtype); the region's parameters arrive among its example inputs
        first_param = next((t for t in args if isinstance(t, nn.Parameter)), None)
        half = any(isinstance(t, Tensor) and t.dtype in HALF_PRECISION for t in [*user, first_param])
        comp = self._half_composite if half else self.composite
        comp = comp if first else dataclasses.replace(comp, first_layer=None)
        module = _RegionModule(region, args)
        region.module = module
        float_inputs = region._floats(args)
        captured, carriers, canon = capture_dynamic(
            module, tuple(user), {}, None, float_inputs, region.dynamic_spec(user)
        )
        self.captures += 1
        _module_names(captured)
        _refuse_training_mode(captured.gm)
        key = (_graph_key(captured), comp.key(), self.options, registry_version())
        for entry in self._programs.get(key, []):
            if entry.matches(user):
                return entry
        if region.whole:
            _warn_unmatched_overrides(comp, captured)
        program = build_program(captured, comp, self.options, float_inputs, canon)
        entry = _Entry(program, carriers, len(user), self)
        self._programs.setdefault(key, []).append(entry)
        self.builds += 1
        self.build_seconds += time.perf_counter() - start
        return entry


# ops that only a module in training mode emits: batch norm with batch statistics (updating its running ones) and
# dropout. ``attribute`` and ``export`` switch the model to eval mode themselves; the backend compiles the model as
# called, so a forgotten ``model.eval()`` would otherwise surface as a missing rule for these ops.
_TRAINING_OPS = {
    torch.ops.aten._native_batch_norm_legit_functional.default: "batch norm with batch statistics",
    torch.ops.aten.native_dropout.default: "dropout",
    torch.ops.aten.dropout.default: "dropout",
    torch.ops.aten.bernoulli.p: "dropout",
}


def _refuse_training_mode(gm: fx.GraphModule) -> None:
    found = [(n, _TRAINING_OPS[n.target]) for n in gm.graph.nodes if n.target in _TRAINING_OPS]
    if found:
        node, what = found[0]
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        where = f" in module {stack[-1][0]!r}" if stack and stack[-1][0] else ""
        raise InputError(
            f"the compiled model runs in training mode ({what}{where}: {node.target}, {len(found)} such op(s)); LRP "
            "explains the model in eval mode. Call model.eval() before calling the model compiled with "
            "torch.compile(model, backend='lrp')"
        )


def _dynamo_name(name: str) -> str | None:
    """``"L['self'].layer1[0]._modules['conv1']"`` -> ``"layer1.0.conv1"``; ``None`` for a non-Dynamo name."""
    m = re.match(r"""L\[(['"])[^'"]*\1\]""", name)
    if not m:
        return None
    rest = re.sub(r"""\._modules\[(['"])([^'"]+)\1\]""", r".\2", name[m.end() :])
    rest = re.sub(r"""\[(['"])([^'"]+)\1\]""", r".\2", rest)
    rest = re.sub(r"\[(\d+)\]", r".\1", rest)
    return rest.lstrip(".")


def _module_names(captured: Any) -> None:
    """Give the captured nodes the module names the user knows (Dynamo's, preserved through the capture), so
    overrides by module name or type apply; the backend's own wrapper is dropped from the stacks."""
    for node in captured.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        names = {k: (_dynamo_name(str(v[0])), v[1]) for k, v in stack.items()}
        node.meta["nn_module_stack"] = {k: v for k, v in names.items() if v[0] is not None}


def _warn_unmatched_overrides(composite: Composite, captured: Any) -> None:
    """``UnmatchedOverrideWarning`` for overrides that match no module of a whole-model graph (``attribute``'s check,
    made on the modules the graph's ops came from: a module that runs no op, such as an ``nn.Identity``, counts as
    unmatched too, and an override on it would have no effect anyway)."""
    names, types = [""], set()
    for node in captured.graph.nodes:
        for name, typ in module_stack(node):
            names.append(name)
            types.add(typ)
    warn_unmatched_overrides(composite, modules=(list(dict.fromkeys(names)), types), what="the compiled model")


def _graph_key(captured: Any) -> tuple:
    stacks = tuple(tuple(v[0] for v in (n.meta.get("nn_module_stack") or {}).values()) for n in captured.graph.nodes)
    parts = [stacks]
    for ph, src in zip(captured.graph.nodes, captured.sources):
        val = ph.meta.get("val")
        if isinstance(val, Tensor):
            shape = tuple(s if isinstance(s, int) else "?" for s in val.shape)
            parts.append((src.kind, src.name, src.index, shape, val.dtype, str(val.device)))
        else:
            parts.append((src.kind, src.name, src.index, repr(val)))
    return (captured.gm.code, tuple(parts))


def _resumed() -> bool:
    """Whether Dynamo is compiling a function it resumes after a graph break (not the model's entry)."""
    try:
        codes = torch._guards.TracingContext.get_traced_code() or []
    except Exception:  # noqa: BLE001 - a private API: no information is fine
        return False
    return any("resume_in" in code.co_name or code.co_name.startswith("__resume") for code in codes[:1])


def backend(composite: str | Composite = "epsilon_plus_flat", **kwargs: Any) -> LRPBackend:
    """A configured ``torch.compile`` backend: ``torch.compile(model, backend=lrp_fx.backend(composite="epsilon"))``.

    Keyword arguments are ``LRPBackend``'s: ``overrides``, ``strict``, ``memory_budget``, ``inductor`` and the
    preset's rule parameters (``epsilon``, ``stabilizer``, ``gamma``, ``low``, ``high``).
    """
    return LRPBackend(composite, **kwargs)


lrp_backend = LRPBackend()
"""The backend registered as ``"lrp"`` (entry point ``torch_dynamo_backends``): composite ``epsilon_plus_flat``."""
