"""Emit the attribution program: one FX graph, forward then relevance.

``ProgramBuilder`` assigns a rule to every live node, then traces (``make_fx``, fake tensors) a function that runs
the captured forward graph and walks it backwards applying each rule. Forward values reach rules only as Promise
nodes; ``PromisePlanner`` resolves them. The result is a plain aten ``GraphModule`` of signature
``(placeholders of the captured graph..., seed) -> (output, relevances...)``: it can be run eagerly, compiled with
Inductor or exported, and needs nothing from lrp_fx to run.
"""

from __future__ import annotations

import difflib
import operator
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx
from torch.fx.experimental.proxy_tensor import make_fx

from . import analysis
from .capture import Captured, module_stack, user_frame
from .composites import FIRST_LAYER_GROUPS, Composite
from .errors import InputError, MissingRuleError, RuleError, TargetError
from .fold import fold_broadcast_bmm
from .hoist import HoistedProgram, WeightCache, hoist_weights
from .inplace import copy_graph_module, reuse_buffers
from .promises import PROMISE, PromisePlanner, PromiseRecord, PromiseStats, promise
from .rules import routing
from .rules.attention import Stop, Taylor, weights_a_product
from .rules.base import Gradient, Pass, Rule
from .rules.call import RuleCall
from .rules.elementwise import ZERO_PRESERVING
from .rules.registry import OpRule, get_rule

aten = torch.ops.aten


@dataclass(frozen=True)
class Options:
    """Build options that change the emitted program (part of the cache key)."""

    strict: bool = True
    memory_budget: int | None = None
    track_absorbed: bool = False
    param_relevance: bool = False
    modules: tuple[str, ...] = ()
    alias_support: bool = True
    # Triton kernels for heavy rules: "auto" (CUDA tensors), "off", or "all" (also CPU, where the kernel ops run
    # their torch references: used to test the dispatch). Default from the LRP_FX_KERNELS environment variable.
    kernels: str = field(default_factory=lambda: os.environ.get("LRP_FX_KERNELS", "auto"))
    seed_mode: str = "tensor"  # "tensor": R = seed; "scaled": R = seed * output; "argmax": R = onehot(argmax) * output
    reuse_weights: bool = True  # hoist parameter-only values (folded / modified weights) and cache them (hoist.py)

    def __post_init__(self) -> None:  # every entry point (attribute, export, the compile backend) builds one
        if self.kernels not in ("auto", "off", "all"):  # "OFF" or "0" read as anything else would turn them on
            raise InputError(
                f"LRP_FX_KERNELS must be 'auto' (Triton kernels for CUDA tensors), 'off' or 'all', got {self.kernels!r}"
            )
        bad = [m for m in self.modules if not isinstance(m, str)]
        if bad:
            raise InputError(
                f"modules are names of submodules, as model.named_modules() gives them (e.g. 'layer1.0'), got {bad!r}"
            )
        budget = self.memory_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InputError(
                f"memory_budget is a number of bytes >= 0 (an int; 0 keeps no forward value alive that can be "
                f"recomputed) or None (keep everything), got {budget!r}"
            )


@dataclass
class Assignment:
    node: str
    op: str
    rule: str
    module: str
    fallback: bool = False


@dataclass
class AttributionProgram:
    """The emitted program and everything needed to feed it and read its outputs."""

    graph_module: fx.GraphModule
    captured: Captured
    float_inputs: list[int]  # flat input leaf indices that receive relevance
    module_names: list[str]
    param_names: list[str]
    absorbed_nodes: list[str]
    stats: PromiseStats
    assignments: list[Assignment]
    fallback_nodes: list[str]
    build_seconds: float
    output_shape: tuple[int, ...]
    canonicalized: dict[str, int] = field(default_factory=dict)
    hoisted: HoistedProgram | None = None  # the same program split into a weight prologue and the rest
    weight_cache: WeightCache = field(default_factory=WeightCache)
    runner: fx.GraphModule | None = None  # what __call__ runs: graph_module (or hoisted.main) with buffer reuse
    inplace_ops: int = 0  # element-wise ops of the runner that write into a dying operand (inplace.py)

    def __post_init__(self) -> None:
        if self.runner is None:
            # hoisted.main is a graph of its own, rewritten in place; graph_module is shared with backend and export
            self.runner = self.hoisted.main if self.hoisted is not None else copy_graph_module(self.graph_module)
            fold_broadcast_bmm(self.runner)  # before buffer reuse: it creates fresh temporaries
            self.inplace_ops = reuse_buffers(self.runner)

    def placeholder_values(self, model: torch.nn.Module, leaves: list[Any]) -> list[Any]:
        return feed(self.captured, model, leaves)

    def __call__(self, model: torch.nn.Module, leaves: list[Any], seed: Tensor) -> dict[str, Any]:
        values = self.placeholder_values(model, leaves)
        with torch.no_grad():
            if self.hoisted is None:
                outs = self.runner(*values, seed)
            else:
                outs = self.runner(*values, seed, *self.weight_cache.get(self.hoisted, values))
        return self.unpack(outs)

    def unpack(self, outs: Any) -> dict[str, Any]:
        outs = list(outs)
        result: dict[str, Any] = {"output": outs.pop(0), "seed": outs.pop()}
        result["relevance"] = [outs.pop(0) for _ in self.float_inputs]
        result["modules"] = {m: outs.pop(0) for m in self.module_names}
        result["params"] = {p: outs.pop(0) for p in self.param_names}
        if self.absorbed_nodes:
            vec = outs.pop(0)
            result["absorbed"] = dict(zip(self.absorbed_nodes, vec.tolist()))
        return result

    def rule_table(self) -> str:
        """A readable table of the rule each node got."""
        rows = [f"{a.node:<28} {a.op:<44} {a.rule:<24} {a.module}" for a in self.assignments]
        return "\n".join([f"{'node':<28} {'op':<44} {'rule':<24} module", *rows])


class _Pieces:
    """Relevance of a tensor gathered from its ``select``/``slice`` views along one dimension, assembled once.

    Summing each view's routed relevance (``select_backward``: a zero tensor the size of the whole, one slice
    copied in) costs a full-size fill and add per view: the q, k, v selected from one fused projection would pay
    three of each. Kept apart and stacked or concatenated once, they cost one copy."""

    def __init__(self, shape: torch.Size, dim: int) -> None:
        self.shape, self.dim = shape, dim
        self.parts: dict[tuple[int, int], tuple[Tensor, bool]] = {}  # (start, stop) -> (relevance, from select)

    def add(self, start: int, stop: int, r: Tensor, selected: bool) -> bool:
        """Take the relevance of elements ``start:stop`` along ``dim``; False if it overlaps a part already held."""
        if any(start < b and a < stop for a, b in self.parts):
            return False
        self.parts[(start, stop)] = (r, selected)
        return True

    def materialize(self) -> Tensor:
        pieces, at = [], 0
        for (start, stop), (r, selected) in sorted(self.parts.items()):
            if start > at:
                pieces.append(self._zeros(r, start - at))
            pieces.append(r.unsqueeze(self.dim) if selected else r)
            at = stop
        if at < self.shape[self.dim]:
            pieces.append(self._zeros(pieces[-1], self.shape[self.dim] - at))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, self.dim)

    def _zeros(self, like: Tensor, n: int) -> Tensor:
        shape = list(self.shape)
        shape[self.dim] = n
        return like.new_zeros(shape)


def _plain(r: Any) -> Any:
    return r.materialize() if isinstance(r, _Pieces) else r


def _live_tensor(model: torch.nn.Module, kind: str, name: str) -> Tensor:
    """``model.get_parameter(name)`` / ``get_buffer(name)``, read straight from the modules' ``_modules``,
    ``_parameters`` and ``_buffers`` dicts: the public getters cost about 15 us each (a ResNet-50 call reads 320
    tensors: 5 ms of host time on every call, which a GPU waits for). Anything unusual goes to them, for their
    errors."""
    *path, leaf = name.split(".")
    module = model
    try:
        for atom in path:
            module = module._modules[atom]
        tensor = (module._parameters if kind == "param" else module._buffers)[leaf]
    except (KeyError, AttributeError):
        tensor = None
    if tensor is None:
        return model.get_parameter(name) if kind == "param" else model.get_buffer(name)
    return tensor


def feed(captured: Captured, model: torch.nn.Module, leaves: list[Any]) -> list[Any]:
    """The captured graph's inputs: live parameters and buffers of ``model``, constants, input leaves."""
    out = []
    for src in captured.sources:
        if src.kind == "param" or src.kind == "buffer":
            out.append(_live_tensor(model, src.kind, src.name).detach())
        elif src.kind == "constant":
            out.append(src.value)
        else:
            leaf = leaves[src.index]
            out.append(leaf.detach() if isinstance(leaf, Tensor) else leaf)
    return out


def _maps_zero_to_zero(node: fx.Node) -> bool:
    """``f(0) = 0`` for this call: ``hardtanh(0) = clamp(0, min_val, max_val)`` is 0 only for ``min_val <= 0 <=
    max_val`` (``hardtanh(x, 0.5, 2)`` maps 0 to 0.5); the other zero-preserving activations are, whatever their
    parameters."""
    if node.target is not torch.ops.aten.hardtanh.default:
        return True
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return low <= 0 <= high


def _unknown_module(module: str, live: list[fx.Node]) -> str:
    """``modules=[module]`` names no module relevance passes through: suggest the names it does pass through."""
    names = list(dict.fromkeys(e[0] for n in live for e in (n.meta.get("nn_module_stack") or {}).values() if e[0]))
    close = difflib.get_close_matches(module, names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    sample = ", ".join(repr(n) for n in names[:: max(1, len(names) // 6)][:6]) or "(none: the model has no submodules)"
    return (
        f"no live node comes from module {module!r} (unknown, or relevance does not pass through it); {hint}"
        f"modules are named by their qualified names (model.named_modules()), e.g. {sample}"
    )


def _several_outputs(name: str, leaving: list[fx.Node]) -> str:
    """Why ``modules=[name]`` has no one answer, and the submodules (if any) that compute each output."""
    module = name.rpartition("@")[0] if "@" in name else name
    parts = []
    for n in leaving:
        inner = [entry[0] for entry in (n.meta.get("nn_module_stack") or {}).values()]
        deeper = [m for m in inner if m.startswith(f"{module}.")] if module else [m for m in inner if m]
        shape = tuple(n.meta["val"].shape) if isinstance(n.meta.get("val"), Tensor) else "?"
        parts.append(f"{n.name} {list(shape)}" + (f" from {deeper[0]!r}" if deeper else ""))
    return (
        f"module {name!r} passes {len(leaving)} tensors on to the rest of the model ({'; '.join(parts)}), so its "
        "output relevance is not one tensor; ask for a submodule that computes one of them, or return one tensor"
    )


class ProgramBuilder:
    """Assign rules, trace forward + relevance, plan promises (see module docstring)."""

    def __init__(self, captured: Captured, composite: Composite, options: Options, float_inputs: list[int]) -> None:
        self.captured = captured
        self.composite = composite
        self.options = options
        self.float_inputs = float_inputs
        graph = captured.graph
        self.placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        self.output = captured.output_node  # the model's output, not a buffer update listed before it
        self.input_nodes = {
            src.index: ph for ph, src in zip(self.placeholders, captured.sources) if src.kind == "input"
        }
        float_nodes = {self.input_nodes[i] for i in float_inputs}
        self.activations = analysis.activations(graph, float_nodes)
        if self.output not in self.activations:
            raise RuleError("the explained output does not depend on any floating-point input: nothing to attribute")
        self.live = analysis.live(graph, self.activations, self.output)
        self.assignment: dict[fx.Node, tuple[OpRule | None, Rule]] = {}
        self.fallback_nodes: list[str] = []
        self._assign_rules()
        groups = {n: op_rule.group for n, (op_rule, _) in self.assignment.items() if op_rule is not None}
        self.nonneg = analysis.nonneg(graph, self.activations, groups)
        supports = {n: self._support(n, op_rule, rule) for n, (op_rule, rule) in self.assignment.items()}
        self.support_ok = analysis.support_follows_value(self.live, supports, self.output)
        self.seed_fn = None  # a callable target, traced into the program
        self.records: dict[int, PromiseRecord] = {}
        self.absorbed: dict[fx.Node, Tensor] = {}
        self.param_rel: dict[str, Tensor] = {}
        self.env: dict[fx.Node, Any] = {}
        self.module_outputs = self._module_outputs()

    # -- rule assignment ---------------------------------------------------------------------------------------------
    def _assign_rules(self) -> None:
        first_seen = False
        missing = []
        for node in self.live:
            if node.op != "call_function":
                continue
            op_rule = get_rule(node.target)
            if op_rule is None:
                if self.options.strict:
                    missing.append(node)
                    continue
                self.assignment[node] = (None, Gradient())
                self.fallback_nodes.append(node.name)
                continue
            is_first = not first_seen and op_rule.group in FIRST_LAYER_GROUPS
            first_seen = first_seen or op_rule.group in FIRST_LAYER_GROUPS
            rule = self.composite.rule_for(node, op_rule, is_first)
            preset_stop = isinstance(rule, Stop) and rule is self.composite.groups.get(op_rule.group)
            if preset_stop and not weights_a_product(node, self.activations.__contains__):
                # CP-LRP stops attention weights; a softmax that weights no product is a classifier's output
                # probabilities (an nn.Softmax head), which Stop would leave with no relevance at all
                rule = Taylor()
            op_rule.check(rule)
            self.assignment[node] = (op_rule, rule)
        if missing:
            raise _missing_rule_error(missing)

    def _support(self, node: fx.Node, op_rule: OpRule | None, rule: Rule) -> str:
        if op_rule is None:
            return "none"
        if isinstance(rule, Pass) and op_rule.group == "activation":
            return "follows" if node.target in ZERO_PRESERVING and _maps_zero_to_zero(node) else "none"
        if op_rule.group in ("batchnorm", "layernorm", "mul", "div"):
            return "none"
        return rule.support

    def _module_outputs(self) -> dict[str, fx.Node]:
        """The node whose relevance is each requested module's output relevance: the last live node of the module's
        call whose value leaves it. ``name@k`` asks for the ``k``-th call (from 0) of a module that forward runs
        several times (torchvision's ``BasicBlock`` calls ``relu`` twice); a plain name of such a module is an error,
        as one output relevance would silently stand for one of its calls."""
        found = {}
        live = set(self.live)
        for name in self.options.modules:
            base, _, k = name.rpartition("@")
            module, call = (base, int(k)) if base and k.isdigit() else (name, None)
            calls = self._module_calls(module)
            if not calls:
                raise RuleError(_unknown_module(module, self.live))
            if call is None and len(calls) > 1:
                options = ", ".join(f"'{module}@{i}'" for i in sorted(calls))
                raise RuleError(
                    f"module {module!r} runs {len(calls)} times in forward, so its output relevance is not one tensor; "
                    f"ask for one call: {options}"
                )
            if call is not None and call not in calls:
                raise RuleError(f"module {module!r} has calls {sorted(calls)} with live nodes, not {call}")
            inside = calls[next(iter(calls)) if call is None else call]
            members = set(inside)
            leaving = [
                n
                for n in inside
                if any(u not in members or u.op == "output" for u in n.users if u in live or u.op == "output")
            ]
            if len(leaving) > 1:  # a tuple or dict output (an LSTM's output and state used both)
                raise RuleError(_several_outputs(name, leaving))
            found[name] = leaving[-1]
        return found

    def _module_calls(self, module: str) -> dict[int, list[fx.Node]]:
        """The live nodes of each call of ``module``: ``torch.export`` names the ``k``-th call's entry of the module
        stack ``key@k`` (the first one ``key``)."""
        calls: dict[int, list[fx.Node]] = {}
        for n in self.live:
            stacks = {**(n.meta.get("nn_module_stack") or {}), **(n.meta.get("lrp_fx_folded_stack") or {})}
            for key, entry in stacks.items():
                if entry[0] == module:
                    base, _, k = key.rpartition("@")
                    calls.setdefault(int(k) if base and k.isdigit() else 0, []).append(n)
                    break
        return calls

    # -- promises ----------------------------------------------------------------------------------------------------
    def served_by(self, n: fx.Node, support_only: bool) -> fx.Node:
        """The node whose value serves a promise of ``n``: ``n`` itself, or an alias equal on the support."""
        if support_only and self.options.alias_support and n in self.activations:
            alias = self._alias(n)
            if alias is not None:
                return alias
        return n

    def promise(self, n: fx.Node, requester: fx.Node, support_only: bool, index: int | None = None) -> Any:
        if n not in self.activations:
            return self.env[n]
        target = self.served_by(n, support_only)
        aliased = target.name if target is not n else None
        value = self.env[target]
        if index is not None:
            value = value[index]
        if isinstance(value, (tuple, list)):
            return type(value)(self._wrap(v, n, requester, support_only, aliased) for v in value)
        return self._wrap(value, n, requester, support_only, aliased)

    def _wrap(self, value: Any, n: fx.Node, requester: fx.Node, support_only: bool, aliased: str | None) -> Any:
        if not isinstance(value, Tensor):
            return value
        pid = len(self.records)
        self.records[pid] = PromiseRecord(pid, n.name, requester.name, support_only, aliased)
        return promise(value, pid)

    def _alias(self, n: fx.Node) -> fx.Node | None:
        """A kept value equal to ``n`` wherever ``n``'s relevance is non-zero: the ReLU right after it."""
        live = set(self.live)
        users = [u for u in n.users if u in live]
        if len(users) == 1 and len(n.users) == 1 and users[0].target is aten.relu.default:
            if users[0] in self.support_ok:
                return users[0]
        return None

    # -- bookkeeping from rules --------------------------------------------------------------------------------------
    def record_absorbed(self, node: fx.Node, amount: Tensor) -> None:
        self.absorbed[node] = self.absorbed[node] + amount if node in self.absorbed else amount

    def wants_param_relevance(self, node: fx.Node) -> bool:
        return self.options.param_relevance

    def record_param_relevance(self, node: fx.Node, param: Any, relevance: Tensor) -> None:
        original = node.meta.get("lrp_fx_weight", param)
        name = self._param_name(original)
        if name is None:
            return
        self.param_rel[name] = self.param_rel[name] + relevance if name in self.param_rel else relevance

    def _param_name(self, n: Any) -> str | None:
        if isinstance(n, fx.Node) and n.op == "placeholder":
            src = self.captured.sources[self.placeholders.index(n)]
            return src.name if src.kind == "param" else None
        return None

    # -- the traced function -----------------------------------------------------------------------------------------
    def _run(self, *flat: Any) -> tuple:
        graph = self.captured.graph
        env = self.env
        env.clear()
        for ph, v in zip(self.placeholders, flat):
            env[ph] = v
        seed = flat[-1]
        with torch.no_grad():
            for node in graph.nodes:
                if node.op == "call_function":
                    args = fx.node.map_arg(node.args, env.__getitem__)
                    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
                    env[node] = node.target(*args, **kwargs)
            out = env[self.output]
            seed_relevance = self._seed(out, seed)
            relevance: dict[fx.Node, Any] = {self.output: seed_relevance}
            module_rel: dict[str, Tensor] = {}
            wanted: dict[fx.Node, list[str]] = {}  # a module and its last child can share their output node
            for name, node in self.module_outputs.items():
                wanted.setdefault(node, []).append(name)
            for node in reversed(self.live):
                if node.op != "call_function":
                    continue
                r = _plain(relevance.pop(node, None))
                for name in wanted.get(node, ()):
                    module_rel[name] = r if r is not None else torch.zeros_like(env[node])
                if r is None or (isinstance(r, list) and all(x is None for x in r)):
                    continue
                if node.target is operator.getitem:
                    self._to_slot(relevance, node, r)
                    continue
                self._apply(node, r, relevance)
        outputs = [out]
        for i in self.float_inputs:
            ph = self.input_nodes[i]
            r = _plain(relevance.get(ph))
            outputs.append(r if r is not None else torch.zeros_like(env[ph]))
        outputs += [module_rel[m] for m in self.options.modules]
        self.param_names = sorted(self.param_rel)
        outputs += [self.param_rel[p] for p in self.param_names]
        self.absorbed_names = [n.name for n in self.absorbed]
        if self.absorbed:
            outputs.append(torch.stack([a.reshape(()) for a in self.absorbed.values()]))
        outputs.append(seed_relevance)  # last: the output relevance actually used (reported as Attribution.seed)
        return tuple(outputs)

    def _seed(self, out: Tensor, seed: Tensor) -> Tensor:
        mode = self.options.seed_mode
        if self.seed_fn is not None:
            try:
                r = self.seed_fn(out)
            except Exception as exc:  # the callable runs on fake tensors, once, while the program is traced
                name = getattr(self.seed_fn, "__qualname__", type(self.seed_fn).__name__)
                raise InputError(
                    f"target={name} failed while lrp_fx traced it into the attribution program "
                    f"({type(exc).__name__}: {str(exc)[:200]}). A callable target is traced once per model and input "
                    "shape and reused, so it must compute the output relevance from the output alone; it cannot "
                    "use tensors it captured. For per-sample weights, pass them as a floating tensor of the "
                    "output's shape (target=R), or class indices (target=[...])."
                ) from exc
            # a wrong shape that broadcasts would be accepted by the first rule and mix samples (o[0] seeding every
            # sample with sample 0's outputs), so it is refused here
            if not isinstance(r, Tensor) or not r.is_floating_point() or r.shape != out.shape:
                name = getattr(self.seed_fn, "__qualname__", type(self.seed_fn).__name__)
                got = f"shape {tuple(r.shape)}, dtype {r.dtype}" if isinstance(r, Tensor) else type(r).__name__
                raise TargetError(
                    f"target={name} must return the output relevance: a floating tensor of the output's shape "
                    f"{tuple(out.shape)}, got {got}. Keep the other entries zero, e.g. "
                    "R = torch.zeros_like(o); R[:, k] = o[:, k]"
                )
            return r
        if mode == "tensor":
            return seed
        if mode == "scaled":  # where the one-hot is 0 the seed is 0, not 0 * -inf (a log-probability of 0)
            return torch.where(seed != 0, seed * out, torch.zeros((), dtype=out.dtype, device=out.device))
        if out.dim() != 2:  # argmax over the last dimension is "the predicted class" only for [batch, classes]
            raise TargetError(
                f"target=None explains each sample's predicted class and needs an output of shape [batch, classes], "
                f"got {tuple(out.shape)}. Pass the output relevance as a tensor or a callable (e.g. "
                "target=lambda o: o for a [batch] score), or select the explained output with output= (e.g. "
                "output=lambda o: o.logits[:, -1] for a language model's last position)"
            )
        mask = torch.zeros_like(out).scatter(-1, out.argmax(-1, keepdim=True), 1.0)
        return torch.where(mask != 0, out, torch.zeros((), dtype=out.dtype, device=out.device))

    def _to_slot(self, relevance: dict, node: fx.Node, r: Tensor) -> None:
        producer, index = node.args
        value = self.env[producer]
        slots = relevance.setdefault(producer, [None] * len(value))
        slots[index] = r if slots[index] is None else slots[index] + r

    def _apply(self, node: fx.Node, r: Any, relevance: dict) -> None:
        op_rule, rule = self.assignment[node]
        call = RuleCall(node, rule, self)
        if isinstance(r, list):  # multi-output op: missing slots are zeros
            value = self.env[node]
            r = [x if x is not None or not isinstance(v, Tensor) else None for x, v in zip(r, value)]
        if op_rule is not None and op_rule.fn is routing.route and self._gather_view(node, r, relevance):
            return
        fn = routing.gradient_fallback if op_rule is None else op_rule.fn
        try:
            rel = fn(call, r)
        except MissingRuleError:
            raise
        except Exception as err:
            raise RuleError(
                f"rule {rule.name} failed on node {node.name} ({node.target}) from {user_frame(node)}: {err}"
            ) from err
        if not isinstance(rel, (list, tuple)):  # a bare tensor would be taken row by row
            got = "a tensor" if isinstance(rel, Tensor) else type(rel).__name__
            raise RuleError(
                f"rule {getattr(fn, '__qualname__', fn)} for {node.target} (node {node.name}) returned {got}; a rule "
                "returns a list with one relevance (or None) per input of the op: build it with call.first(r) (the "
                "first input gets r) or call.assign({index: r, ...})"
            )
        rel = list(rel)
        if len(rel) != len(call.inputs):
            raise RuleError(
                f"rule for {node.target} returned {len(rel)} relevances for {len(call.inputs)} tensor inputs"
            )
        live = self._live_set
        for inp, ri in zip(call.inputs, rel):
            if ri is None or inp not in live:
                continue
            expected = self.env[inp]
            if isinstance(expected, Tensor) and tuple(ri.shape) != tuple(expected.shape):
                raise RuleError(
                    f"rule for {node.target} returned relevance of shape {tuple(ri.shape)} for input {inp.name} "
                    f"of shape {tuple(expected.shape)}"
                )
            relevance[inp] = ri if inp not in relevance else _plain(relevance[inp]) + ri

    def _gather_view(self, node: fx.Node, r: Any, relevance: dict) -> bool:
        """Hold the relevance of a ``select`` or step-1 ``slice`` of a tensor as a piece of the tensor's relevance
        (``_Pieces``) instead of routing it now; False where that does not apply (the caller routes as usual)."""
        if node.target not in (aten.select.int, aten.slice.Tensor) or not isinstance(r, Tensor):
            return False
        src = node.args[0]
        value = self.env.get(src) if isinstance(src, fx.Node) else None
        if not isinstance(value, Tensor) or src not in self.activations or src not in self._live_set:
            return False
        shape = value.shape
        dim = node.args[1] if len(node.args) > 1 else 0
        if not isinstance(dim, int):
            return False
        dim %= len(shape)
        size = shape[dim]
        bounds = list(node.args[2:5])
        if not isinstance(size, int) or not all(isinstance(v, int) or v is None for v in bounds):
            return False
        selected = node.target is aten.select.int
        if selected:
            start = bounds[0] % size
            stop = start + 1
        else:
            start, stop, step = slice(*(bounds + [None] * 3)[:3]).indices(size)  # Python's slice semantics
            if step != 1 or stop <= start:
                return False
        held = relevance.get(src)
        if held is None:
            held = relevance[src] = _Pieces(shape, dim)
        elif not isinstance(held, _Pieces) or held.dim != dim:
            return False
        if not held.add(start, stop, r, selected):
            relevance[src] = held.materialize()
            return False
        return True

    @property
    def _live_set(self) -> set[fx.Node]:
        if not hasattr(self, "_live_cache"):
            self._live_cache = set(self.live)
        return self._live_cache

    # -- build -------------------------------------------------------------------------------------------------------
    def build(self, example_flat: list[Any], tracing_mode: str = "fake") -> AttributionProgram:
        """Trace and plan the program. ``tracing_mode="symbolic"`` traces over the captured graph's own fake inputs
        instead of ``example_flat``, so sizes the capture made dynamic stay symbolic in the program."""
        start = time.perf_counter()
        out_val = self.output.meta.get("val")
        if out_val is None:
            raise RuleError("the captured output has no shape metadata")
        if tracing_mode == "symbolic":
            with out_val.fake_mode:
                seed = torch.zeros(out_val.shape, dtype=out_val.dtype, device=out_val.device)
            flat = [ph.meta["val"] for ph in self.placeholders] + [seed]
        else:
            seed = torch.zeros(out_val.shape, dtype=out_val.dtype, device=out_val.device)
            flat = [v.detach() if isinstance(v, Tensor) else v for v in example_flat] + [seed]
        gm = make_fx(self._run, tracing_mode=tracing_mode)(*flat)
        seed_ph = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
        seed_ph.meta["lrp_fx_seed"] = True
        stats = PromisePlanner(gm, self.options.memory_budget).plan(self.records)  # counts live aliased requests
        if any(n.target is PROMISE for n in gm.graph.nodes if n.op == "call_function"):
            raise RuleError("internal error: unresolved promise nodes remain")
        assignments = [
            Assignment(
                node=n.name,
                op=str(n.target),
                rule=repr(rule),
                module=(module_stack(n)[-1][0] if module_stack(n) else ""),
                fallback=op_rule is None,
            )
            for n, (op_rule, rule) in self.assignment.items()
        ]
        return AttributionProgram(
            graph_module=gm,
            captured=self.captured,
            float_inputs=self.float_inputs,
            module_names=list(self.options.modules),
            param_names=self.param_names,
            absorbed_nodes=self.absorbed_names,
            stats=stats,
            assignments=assignments,
            fallback_nodes=self.fallback_nodes,
            build_seconds=time.perf_counter() - start,
            output_shape=tuple(out_val.shape),
            hoisted=(
                hoist_weights(gm, [src.kind for src in self.captured.sources]) if self.options.reuse_weights else None
            ),
        )


def _missing_rule_error(nodes: list[fx.Node]) -> MissingRuleError:
    ops = {}
    for n in nodes:
        ops.setdefault(str(n.target), n)
    lines = []
    for op, n in ops.items():
        count = sum(1 for m in nodes if str(m.target) == op)
        args = ", ".join(_describe(a) for a in n.args)
        lines.append(f"  {op}({args})  x{count}, first at {user_frame(n)}")
    first = next(iter(ops))
    return MissingRuleError(
        "no relevance rule for:\n" + "\n".join(lines) + "\n"
        "To fix: register a rule, e.g.\n"
        f"    @lrp_fx.register_rule(torch.ops.{first.replace('.default', '')}, group='my_group', "
        "accepts=(lrp_fx.rules.Pass,), default=lrp_fx.rules.Pass())\n"
        "    def my_rule(call, relevance):\n"
        "        return call.first(relevance)\n"
        "or pass strict=False to use the declared gradient fallback (every node it touches is listed in "
        "result.fallback_nodes). See docs/rules.md."
    )


def _describe(a: Any) -> str:
    if isinstance(a, fx.Node):
        val = a.meta.get("val")
        if isinstance(val, Tensor):
            return f"{str(val.dtype).replace('torch.', '')}{list(val.shape)}"
        return a.name
    return repr(a)
