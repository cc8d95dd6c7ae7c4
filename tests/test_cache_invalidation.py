"""The program cache and the hoisted-weight cache never serve a stale program: every kind of model change the cache
keys see (``lrp_fx.api._model_key``, ``lrp_fx.hoist``) gives the result of a fresh build, and an unchanged model
reuses its program."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.composites import UnmatchedOverrideWarning
from lrp_fx.rules import Flat, Pass, ZBox
from lrp_fx.rules.registry import _RULES

aten = torch.ops.aten


def conv_bn() -> nn.Module:
    """Hoisted weights: the batch norm folded into the first convolution, the z+ weights of the second."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 1.5)
    return model


class Attrs(nn.Module):
    """A model whose forward reads a non-persistent buffer, a tensor attribute and a Python number."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.register_buffer("scale", torch.full((4,), 1.5), persistent=False)
        self.offset = torch.linspace(-1.0, 1.0, 4)
        self.temperature = 1.0
        self.act = nn.ReLU()

    def forward(self, x):
        return self.lin(self.act(x * self.scale + self.offset) / self.temperature)


def fresh(model, x, **kw):
    """The result of a program built now (``CACHE.clear()``: what the documentation tells users to do)."""
    lrp_fx.CACHE.clear()
    return lrp_fx.attribute(model, x, **kw)


def assert_current(model, x, fresh_build=True, **kw):
    """``attribute`` explains the model as it is now: its output is ``model(x)`` and its relevance a fresh build's
    (of a copy, so that the cache of ``model`` is kept for the next step). Returns the result."""
    res = lrp_fx.attribute(model, x, **kw)
    with torch.no_grad():
        torch.testing.assert_close(res.output, model(x), rtol=0, atol=1e-6)
    if fresh_build:
        ref = lrp_fx.attribute(copy.deepcopy(model), x, **kw)
        torch.testing.assert_close(res.relevance, ref.relevance, rtol=0, atol=0)
    return res


@pytest.fixture(autouse=True)
def _empty_cache():
    lrp_fx.CACHE.clear()
    yield
    lrp_fx.CACHE.clear()


# -- 1. writes through .data (no version bump) -------------------------------------------------------------------------
def test_data_writes_recompute_hoisted_weights():
    model, x = conv_bn(), torch.randn(2, 3, 12, 12)
    kw = {"target": 1, "composite": "epsilon_plus_flat"}
    program = lrp_fx.attribute(model, x, **kw).program
    assert program.hoisted is not None
    builds, runs = lrp_fx.CACHE.builds, program.weight_cache.runs
    lrp_fx.attribute(model, x, **kw)
    assert program.weight_cache.runs == runs  # unchanged weights: the prologue does not run again

    def changed():  # the same program, its hoisted weights computed again, equal to recomputing them
        nonlocal runs
        res = lrp_fx.attribute(model, x, **kw)
        assert res.program is program and program.weight_cache.runs == runs + 1
        runs += 1
        with torch.no_grad():
            torch.testing.assert_close(res.output, model(x), rtol=0, atol=1e-6)
        uncached = lrp_fx.attribute(model, x, reuse_weights=False, **kw)
        torch.testing.assert_close(res.relevance, uncached.relevance, rtol=0, atol=0)

    model[3].weight.data.copy_(torch.randn_like(model[3].weight))  # a z+ weight, replaced wholesale
    changed()
    model[1].running_var.data.mul_(4.0)  # a folded batch-norm statistic
    changed()
    model[0].weight.data.mul_(-2.0)
    changed()
    target = [p.detach() * 1.01 + 0.01 for p in model.parameters()]
    for p, t in zip(model.parameters(), target):  # an EMA step: every element moves a little
        p.data.mul_(0.9).add_(0.1 * t)
    changed()
    assert lrp_fx.CACHE.builds == builds + 1  # the program with reuse_weights=False, no other
    torch.testing.assert_close(lrp_fx.attribute(model, x, **kw).relevance, fresh(model, x, **kw).relevance)


def test_data_write_to_one_block_is_seen_and_unchanged_model_reuses_everything():
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    kw = {"target": 2, "composite": "epsilon_plus"}
    first = lrp_fx.attribute(model, x, **kw)
    builds, runs = lrp_fx.CACHE.builds, first.program.weight_cache.runs
    for _ in range(3):
        again = lrp_fx.attribute(model, x, **kw)
    assert lrp_fx.CACHE.builds == builds and again.program is first.program
    assert first.program.weight_cache.runs == runs
    # 16*8*3*3 = 1152 elements: every second one is sampled, so any run of two or more consecutive elements is seen
    model[3].weight.data[5, 2] = torch.randn(3, 3)
    res = lrp_fx.attribute(model, x, **kw)
    assert res.program is first.program and first.program.weight_cache.runs == runs + 1  # no rebuild
    torch.testing.assert_close(res.relevance, fresh(model, x, **kw).relevance, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["channels_last", "strided_with_gaps"])
def test_data_writes_are_seen_for_weights_in_other_layouts(layout):
    """A weight sampled through a view (channels-last: dense, permuted) is checked through the samples kept from the
    last call; one with gaps in memory is sampled as a copy, so it is sampled afresh on every call. Both see
    ``.data`` writes on every later call."""
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    w = model[3].weight
    if layout == "channels_last":
        new = w.detach().contiguous(memory_format=torch.channels_last)
    else:
        new = torch.zeros(w.shape[0], w.shape[1] * 2, *w.shape[2:]).as_strided(
            w.shape, (w.shape[1] * 2 * 9, 18, 3, 1)
        )  # every other input channel of a wider tensor
        new.copy_(w.detach())
    model[3].weight = nn.Parameter(new, requires_grad=False)
    kw = {"target": 2, "composite": "epsilon_plus"}
    first = lrp_fx.attribute(model, x, **kw)
    cache = first.program.weight_cache
    assert (cache.samples is not None) == (layout == "channels_last")
    runs = cache.runs
    lrp_fx.attribute(model, x, **kw)
    assert cache.runs == runs
    for step in range(2):  # a write, a call that sees it; again, through the samples kept (or taken) after the first
        model[3].weight.data[3].mul_(-1.5)
        res = assert_current(model, x, **kw)
        assert res.program is first.program and cache.runs == runs + step + 1


def test_reuse_weights_false_and_clear_see_any_data_write():
    """The documented ways to force fresh weights after a write the sample may miss (a single element)."""
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    kw = {"target": 2, "composite": "epsilon_plus"}
    lrp_fx.attribute(model, x, **kw)
    model[3].weight.data[7, 3, 1, 1] += 1.0
    uncached = lrp_fx.attribute(model, x, reuse_weights=False, **kw)
    torch.testing.assert_close(uncached.relevance, fresh(model, x, **kw).relevance, rtol=0, atol=0)


def test_compile_backend_sees_data_writes():
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    be = lrp_fx.backend("epsilon_plus_flat", inductor=False)
    compiled = torch.compile(model, backend=be)

    def relevance():
        xx = x.clone().requires_grad_()
        out = compiled(xx)
        (g,) = torch.autograd.grad(out, xx, torch.ones_like(out))
        return g

    relevance()
    runs = be.prologue_runs
    relevance()
    assert be.prologue_runs == runs
    model[3].weight.data.mul_(-2.0)
    model[1].running_var.data.mul_(3.0)
    g = relevance()
    assert be.prologue_runs == runs + 1
    ref = fresh(model, x, target=torch.ones(1, 5), composite="epsilon_plus_flat")
    torch.testing.assert_close(g, ref.relevance, rtol=1e-5, atol=1e-7)


# -- 2. what the program captured besides parameters and persistent buffers ------------------------------------------
def test_model_changes_rebuild_the_program():
    model, x = Attrs().eval(), torch.randn(2, 4)
    kw = {"target": 0}
    lrp_fx.attribute(model, x, **kw)
    builds = lrp_fx.CACHE.builds
    lrp_fx.attribute(model, x, **kw)
    assert lrp_fx.CACHE.builds == builds  # nothing changed: reused

    with torch.no_grad():
        model.scale.fill_(2.0)  # in place: the captured constant is the buffer itself
    assert_current(model, x, fresh_build=False, **kw)
    assert lrp_fx.CACHE.builds == builds
    model.scale = torch.full((4,), 3.0)  # a replaced non-persistent buffer
    assert_current(model, x, **kw)
    model.offset = torch.linspace(0.0, 2.0, 4)  # a replaced tensor attribute
    assert_current(model, x, **kw)
    model.temperature = 4.0  # a Python number read in forward
    assert_current(model, x, **kw)
    model.act = nn.Tanh()  # a swapped submodule
    assert_current(model, x, **kw)
    model.lin = nn.Linear(4, 3)  # a swapped head of the same type
    assert_current(model, x, **kw)
    handle = model.act.register_forward_hook(lambda mod, args, out: out * 2.0)  # a forward hook
    try:
        assert_current(model, x, **kw)
    finally:
        handle.remove()
    assert_current(model, x, fresh_build=False, **kw)


def test_function_numpy_and_enum_attributes_rebuild():
    """An activation kept as a function attribute, a numpy scale (``np.sqrt`` gives ``np.float64``) and an Enum
    member were not in the key: the program of the old value kept running (output off by 0.39)."""
    import enum

    import numpy as np

    class Mode(enum.Enum):
        SUM = 1
        MEAN = 2

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin, self.act, self.scale, self.mode = nn.Linear(4, 3), torch.relu, np.float64(1.0), Mode.SUM
            self.steps = np.int64(1)

        def forward(self, x):
            h = self.act(self.lin(x)) * float(self.scale) * int(self.steps)
            return h if self.mode is Mode.SUM else h / 3

    model, x = Model().eval(), torch.randn(2, 4)
    kw = {"target": 0, "composite": "epsilon"}
    lrp_fx.attribute(model, x, **kw)
    for name, value in (("act", torch.tanh), ("scale", np.sqrt(2.0)), ("mode", Mode.MEAN), ("steps", np.int64(3))):
        setattr(model, name, value)
        assert_current(model, x, **kw)


def test_tuple_attribute_and_new_submodule_rebuild():
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    kw = {"target": 1, "composite": "epsilon"}
    lrp_fx.attribute(model, x, **kw)
    model[0].padding = (1, 1)  # a tuple of numbers read in forward
    assert_current(model, x, **kw)
    model.insert(3, nn.Identity())  # a new submodule: the names of the later ones shift
    assert_current(model, x, **kw)


def test_parameter_replacement_and_mode_toggles_do_not_rebuild():
    """Parameters and persistent buffers are read by name on every call: replacing one (same shape) reuses the
    program, and the hoisted weights follow; ``train()``/``eval()`` do not matter either (programs run in eval mode)."""
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    kw = {"target": 1, "composite": "epsilon_plus_flat"}
    first = lrp_fx.attribute(model, x, **kw)
    builds = lrp_fx.CACHE.builds
    model[3].weight = nn.Parameter(torch.randn_like(model[3].weight))
    model.train()
    res = lrp_fx.attribute(model, x, **kw)
    model.eval()
    lrp_fx.attribute(model, x, **kw)
    assert lrp_fx.CACHE.builds == builds and res.program is first.program
    torch.testing.assert_close(res.relevance, fresh(model, x, **kw).relevance, rtol=0, atol=0)


def test_parametrized_weights_and_swapped_buffers_are_read_live():
    """Parameters behind a parametrization (``weight_norm``: ``parametrizations.weight.original0/1``) and a swapped
    persistent buffer are read from the live module tree on every call (``program._live_tensor``), as
    ``get_parameter``/``get_buffer`` would."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).eval()
    model[1].running_mean.uniform_(-0.5, 0.5)
    nn.utils.parametrizations.weight_norm(model[3])
    x, kw = torch.randn(4, 5), {"target": 1, "composite": "epsilon"}
    first = lrp_fx.attribute(model, x, **kw)
    torch.testing.assert_close(first.output, model(x))  # the folded batch norm rounds differently
    names = {src.name for src in first.program.captured.sources if src.kind == "param"}
    assert any(name.startswith("3.parametrizations.weight.") for name in names), names
    with torch.no_grad():
        model[3].parametrizations.weight.original1.mul_(-2.0)  # the direction: the effective weight changes
    model[1].running_var = torch.rand(6) + 0.5  # a new buffer object of the same shape
    res = lrp_fx.attribute(model, x, **kw)
    assert res.program is first.program
    torch.testing.assert_close(res.output, model(x))
    torch.testing.assert_close(res.relevance, fresh(model, x, **kw).relevance, rtol=0, atol=0)


def test_parameter_of_a_new_shape_rebuilds():
    model, x = Attrs().eval(), torch.randn(2, 4)
    lrp_fx.attribute(model, x, target=0)
    model.lin.weight = nn.Parameter(torch.randn(5, 4))
    model.lin.bias = nn.Parameter(torch.randn(5))
    res = assert_current(model, x, target=4)
    assert res.output.shape == (2, 5)


# -- 3. the rule registry ---------------------------------------------------------------------------------------------
def _tanh_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).eval()


def test_register_rule_replace_after_a_build_applies():
    model, x = _tanh_model(), torch.randn(2, 4)
    before = lrp_fx.attribute(model, x, target=0)
    old = _RULES[aten.tanh.default]
    try:

        @lrp_fx.register_rule(aten.tanh.default, group="activation", accepts=(Pass,), default=Pass(), replace=True)
        def nothing(call, relevance):
            return call.first(relevance * 0)

        after = lrp_fx.attribute(model, x, target=0)
        assert after.program is not before.program
        assert float(after.relevance.abs().sum()) == 0.0
        torch.testing.assert_close(after.relevance, fresh(model, x, target=0).relevance, rtol=0, atol=0)
    finally:
        _RULES[aten.tanh.default] = old
    torch.testing.assert_close(lrp_fx.attribute(model, x, target=0).relevance, before.relevance, rtol=0, atol=0)


def test_register_rule_replace_after_a_compiled_build_applies():
    """The compile backend, too: a compiled model built before a rule was replaced uses the new rule next call."""
    model, x = _tanh_model(), torch.randn(2, 4)
    compiled = torch.compile(model, backend="lrp")
    seed = torch.tensor([[1.0, 0.0], [1.0, 0.0]])

    def relevance():
        xg = x.clone().requires_grad_(True)
        (rel,) = torch.autograd.grad(compiled(xg), xg, grad_outputs=seed)
        return rel

    before = relevance()
    assert float(before.abs().sum()) > 0
    old = _RULES[aten.tanh.default]
    try:

        @lrp_fx.register_rule(aten.tanh.default, group="activation", accepts=(Pass,), default=Pass(), replace=True)
        def nothing(call, relevance):
            return call.first(relevance * 0)

        assert float(relevance().abs().sum()) == 0.0
    finally:
        _RULES[aten.tanh.default] = old
    torch.testing.assert_close(relevance(), before, rtol=0, atol=0)


def test_removed_rule_is_not_served_from_the_cache(monkeypatch):
    model, x = _tanh_model(), torch.randn(2, 4)
    lrp_fx.attribute(model, x, target=0)
    monkeypatch.delitem(_RULES, aten.tanh.default)
    with pytest.raises(lrp_fx.errors.MissingRuleError):
        lrp_fx.attribute(model, x, target=0)
    fallback = lrp_fx.attribute(model, x, target=0, strict=False)
    assert fallback.fallback_nodes


# -- 4. overrides that match no module --------------------------------------------------------------------------------
def test_override_matching_no_module_warns():
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    with pytest.warns(UnmatchedOverrideWarning, match=r"'0\.conv'.*module names look like"):
        lrp_fx.attribute(model, x, target=1, overrides={"0.conv": Flat()})
    with pytest.warns(UnmatchedOverrideWarning, match="type LayerNorm"):
        lrp_fx.attribute(model, x, target=1, overrides={nn.LayerNorm: Pass()})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnmatchedOverrideWarning)
        lrp_fx.attribute(model, x, target=1, overrides={"0": Flat(), "[34]": Flat(), nn.ReLU: Pass()})
    with pytest.warns(UnmatchedOverrideWarning, match=r"'0\.conv'"):  # lrp_fx.export checks the same way
        lrp_fx.export(model, x, overrides={"0.conv": Flat()})


# -- 5. per-call keys and the LRU bound -------------------------------------------------------------------------------
def test_lru_bound_per_model():
    model = Attrs().eval()
    old = lrp_fx.CACHE.max_programs
    lrp_fx.CACHE.max_programs = 2
    try:
        for n in (1, 2, 3):
            lrp_fx.attribute(model, torch.randn(n, 4), target=0)
        assert len(lrp_fx.CACHE.by_model[model]) == 2  # batch 1 evicted
        builds = lrp_fx.CACHE.builds
        lrp_fx.attribute(model, torch.randn(2, 4), target=0)  # still cached; now the most recently used
        lrp_fx.attribute(model, torch.randn(4, 4), target=0)  # evicts batch 3
        lrp_fx.attribute(model, torch.randn(2, 4), target=0)
        assert lrp_fx.CACHE.builds == builds + 1
        lrp_fx.attribute(model, torch.randn(3, 4), target=0)
        assert lrp_fx.CACHE.builds == builds + 2 and len(lrp_fx.CACHE.by_model[model]) == 2
    finally:
        lrp_fx.CACHE.max_programs = old


def test_a_weight_cache_goes_with_the_last_program_using_it():
    """Programs share weight caches by prologue; the shared table holds them weakly, so evicting the programs of a
    composite frees its hoisted weights (the table is not a second, unbounded cache)."""
    import gc

    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    old = lrp_fx.CACHE.max_programs
    lrp_fx.CACHE.max_programs = 1
    try:
        lrp_fx.attribute(model, x, target=1, composite="epsilon_plus_flat")
        lrp_fx.attribute(model, x, target=1, composite="epsilon_alpha2_beta1")  # evicts the first program
        gc.collect()
        assert len(lrp_fx.CACHE.weights[model]) == 1
    finally:
        lrp_fx.CACHE.max_programs = old


def test_box_bounds_are_keyed_by_value():
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    assert ZBox((0 - mean) / std, 5.0) == ZBox((0 - mean) / std, 5.0)
    assert hash(ZBox((0 - mean) / std, 5.0)) == hash(ZBox((0 - mean) / std, 5.0))
    assert ZBox((0 - mean) / std, 5.0) != ZBox((1 - mean) / std, 5.0)

    def call(low, high):
        return lrp_fx.attribute(model, x, target=1, composite="epsilon_gamma_box", low=low, high=high)

    first = call((0 - mean) / std, (1 - mean) / std)
    builds = lrp_fx.CACHE.builds
    for _ in range(3):  # new tensors with the same values in every call
        assert call((0 - mean) / std, (1 - mean) / std).program is first.program
    assert lrp_fx.CACHE.builds == builds
    low, high = -mean / std * 2, (1 - mean) / std * 2
    wider = call(low, high)
    assert lrp_fx.CACHE.builds == builds + 1 and not torch.equal(wider.relevance, first.relevance)
    low.mul_(3.0)  # bounds changed in place after the build: their values were baked into the program
    changed = call(low, high)
    ref = fresh(model, x, target=1, composite="epsilon_gamma_box", low=low.clone(), high=high.clone())
    torch.testing.assert_close(changed.relevance, ref.relevance, rtol=0, atol=0)


def test_reference_tensor_is_keyed_by_value():
    """``reference=`` is baked into the program like box bounds: changed in place, it must not serve the old one."""
    model, x = conv_bn(), torch.randn(1, 3, 12, 12)
    ref = torch.zeros(1, 3, 12, 12)
    first = lrp_fx.attribute(model, x, target=1, composite="epsilon_plus", reference=ref)
    again = lrp_fx.attribute(model, x, target=1, composite="epsilon_plus", reference=ref.clone())
    assert again.program is first.program  # equal values, new tensor: reused
    ref.fill_(0.5)
    changed = lrp_fx.attribute(model, x, target=1, composite="epsilon_plus", reference=ref)
    assert not torch.equal(changed.relevance, first.relevance)
    expected = fresh(model, x, target=1, composite="epsilon_plus", reference=ref.clone())
    torch.testing.assert_close(changed.relevance, expected.relevance, rtol=0, atol=0)


K = 1  # read by a target function below


def test_equivalent_functions_share_a_program(monkeypatch):
    model, x = Attrs().eval(), torch.randn(2, 4)
    builds = lrp_fx.CACHE.builds
    results = [lrp_fx.attribute(model, x, target=lambda out: out.softmax(-1)) for _ in range(3)]  # 3 functions
    assert lrp_fx.CACHE.builds == builds + 1 and all(r.program is results[0].program for r in results)
    builds = lrp_fx.CACHE.builds

    def pick(k):
        return lambda out: out * nn.functional.one_hot(torch.tensor(k), 3)

    a = lrp_fx.attribute(model, x, target=pick(0))  # closure values differ: programs differ
    b = lrp_fx.attribute(model, x, target=pick(2))
    assert lrp_fx.CACHE.builds == builds + 2
    torch.testing.assert_close(a.seed[:, 0], a.output[:, 0])
    torch.testing.assert_close(b.seed[:, 2], b.output[:, 2])
    assert lrp_fx.attribute(model, x, target=pick(2)).program is b.program

    g = lrp_fx.attribute(model, x, target=lambda out: out * (torch.arange(3) == K))  # a global it reads
    monkeypatch.setitem(globals(), "K", 2)
    h = lrp_fx.attribute(model, x, target=lambda out: out * (torch.arange(3) == K))
    assert h.program is not g.program
    torch.testing.assert_close(h.seed[:, 2], h.output[:, 2])
    assert float(h.seed[:, :2].abs().sum()) == 0.0

    which = [1]  # a mutable object it closes over: keyed by the function itself, as before
    c1 = lrp_fx.attribute(model, x, target=lambda out: out * (torch.arange(3) == which[0]))
    which[0] = 0
    c2 = lrp_fx.attribute(model, x, target=lambda out: out * (torch.arange(3) == which[0]))
    assert c1.program is not c2.program
    torch.testing.assert_close(c2.seed[:, 0], c2.output[:, 0])


def test_output_selector_lambda_in_a_loop_builds_once():
    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = Attrs()

        def forward(self, x):
            return {"logits": self.m(x), "other": x}

    model, x = Wrap().eval(), torch.randn(2, 4)
    for _ in range(3):
        res = lrp_fx.attribute(model, x, target=1, output=lambda o: o["logits"][:, :2])
    assert len(lrp_fx.CACHE.by_model[model]) == 1
    with torch.no_grad():
        torch.testing.assert_close(res.output, model(x)["logits"][:, :2])


@pytest.mark.filterwarnings("ignore:The tensor attribute self.model.last was assigned during export")
def test_forward_that_sets_attributes_is_cached():
    """Capturing runs forward: attributes it sets (a call counter, a remembered tensor) are keyed as they are after
    the build, so the next call reuses the program."""

    class Counting(Attrs):
        def forward(self, x):
            self.calls = getattr(self, "calls", 0) + 1
            out = super().forward(x)
            self.last = out
            return out

    model, x = Counting().eval(), torch.randn(2, 4)
    lrp_fx.attribute(model, x, target=0)
    builds = lrp_fx.CACHE.builds
    for _ in range(2):
        lrp_fx.attribute(model, x, target=0)
    assert lrp_fx.CACHE.builds == builds


def test_cached_programs_do_not_keep_the_model_alive():
    import gc
    import weakref

    model = Attrs().eval()
    lrp_fx.attribute(model, torch.randn(2, 4), target=lambda out: out.softmax(-1))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None and len(lrp_fx.CACHE.by_model) == 0


def test_two_programs_used_in_turn_keep_their_cached_weights():
    """Comparing two composites over a dataset (or a smaller last batch) runs two programs of one model in turn: each
    new cache cleared the other's, so both recomputed their hoisted weights in every call."""
    model, x = conv_bn(), torch.randn(2, 3, 12, 12)
    a = lrp_fx.attribute(model, x, target=1, composite="epsilon_plus_flat")
    b = lrp_fx.attribute(model, x, target=1, composite="epsilon_alpha2_beta1")
    for _ in range(3):
        lrp_fx.attribute(model, x, target=1, composite="epsilon_plus_flat")
        lrp_fx.attribute(model, x, target=1, composite="epsilon_alpha2_beta1")
    assert a.program.weight_cache.runs == 1 and b.program.weight_cache.runs == 1
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # changed weights: the next call recomputes, and the other's cache is dropped
    assert_current(model, x, target=1, composite="epsilon_plus_flat")
    assert a.program.weight_cache.runs == 2 and b.program.weight_cache.key is None
    assert_current(model, x, target=1, composite="epsilon_alpha2_beta1")
