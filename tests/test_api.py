"""The public contract of lrp_fx.attribute: targets, caching, errors, invariants, model left untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrp_fx


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(8, 5),
    ).double()


@pytest.fixture
def cnn():
    model = small_cnn()
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    return model


def x_batch(n=3):
    return torch.randn(n, 3, 8, 8, dtype=torch.float64)


def test_integer_target_seeds_onehot_times_logit(cnn):
    x = x_batch()
    res = lrp_fx.attribute(cnn, x, target=2, composite="epsilon")
    out = copy.deepcopy(cnn).eval()(x)
    expected = torch.zeros_like(out)
    expected[:, 2] = out[:, 2]
    torch.testing.assert_close(res.output, out)
    ref = lrp_fx.attribute(cnn, x, target=expected, composite="epsilon")
    torch.testing.assert_close(res.relevance, ref.relevance)
    torch.testing.assert_close(res.seed, expected)  # the seed reported is the relevance used, not the one-hot
    torch.testing.assert_close(ref.seed, expected)


def test_none_target_explains_the_prediction(cnn):
    x = x_batch()
    res = lrp_fx.attribute(cnn, x, composite="epsilon")
    pred = res.output.argmax(1)
    ref = lrp_fx.attribute(cnn, x, target=pred.tolist(), composite="epsilon")
    torch.testing.assert_close(res.relevance, ref.relevance)
    onehot = torch.nn.functional.one_hot(pred, res.output.shape[1]).to(res.output.dtype)
    torch.testing.assert_close(res.seed, onehot * res.output)


def test_callable_target(cnn):
    x = x_batch()
    res = lrp_fx.attribute(cnn, x, target=lambda out: out.softmax(-1) * 0 + out * (out > 0), composite="epsilon")
    with torch.no_grad():
        out = copy.deepcopy(cnn).eval()(x)
    ref = lrp_fx.attribute(cnn, x, target=out * (out > 0), composite="epsilon")
    torch.testing.assert_close(res.relevance, ref.relevance)
    torch.testing.assert_close(res.seed, out * (out > 0))


def test_callable_target_that_captures_a_tensor_gets_a_clear_error(cnn):
    """A callable target is traced once (on fake tensors) and reused, so it cannot read a tensor it closed over; the
    error says so and names the alternatives instead of surfacing a fake-tensor assertion."""
    x = x_batch()
    weights = torch.rand(x.shape[0], 5)
    with pytest.raises(lrp_fx.InputError, match=r"(?s)failed while lrp_fx traced it.*floating tensor"):
        lrp_fx.attribute(cnn, x, target=lambda out: out * weights, composite="epsilon")


def test_program_cache_keeps_callable_targets_alive(cnn):
    """The cache key holds the callable itself, so a new callable cannot get a collected one's id() and reuse the
    program traced with the old function (which would silently apply the old seed)."""
    import gc
    import weakref

    x = x_batch()

    def seed(out):
        return out * (out > 0)

    ref = weakref.ref(seed)
    lrp_fx.attribute(cnn, x, target=seed, composite="epsilon")
    del seed
    gc.collect()
    assert ref() is not None
    # and two different callables give their own seeds
    a = lrp_fx.attribute(cnn, x, target=lambda out: out * 2.0, composite="epsilon")
    b = lrp_fx.attribute(cnn, x, target=lambda out: out * 3.0, composite="epsilon")
    torch.testing.assert_close(b.seed, a.seed * 1.5)


def test_per_sample_targets_match_single_sample_attribution(cnn):
    x = x_batch(4)
    targets = [0, 3, 1, 4]
    res = lrp_fx.attribute(cnn, x, target=targets, composite="epsilon_plus_flat")
    for i, t in enumerate(targets):
        single = lrp_fx.attribute(cnn, x[i : i + 1], target=t, composite="epsilon_plus_flat")
        torch.testing.assert_close(res.relevance[i : i + 1], single.relevance, rtol=1e-9, atol=1e-12)


def test_second_call_does_not_rebuild(cnn):
    x = x_batch()
    lrp_fx.attribute(cnn, x, target=1)
    builds = lrp_fx.CACHE.builds
    lrp_fx.attribute(cnn, x_batch(), target=2)
    lrp_fx.attribute(cnn, x_batch(), target=[0, 1, 2])
    assert lrp_fx.CACHE.builds == builds
    lrp_fx.attribute(cnn, x_batch(5), target=1)  # new shape: one new program
    assert lrp_fx.CACHE.builds == builds + 1


def test_program_follows_weight_updates(cnn):
    x = x_batch()
    a = lrp_fx.attribute(cnn, x, target=1, composite="epsilon").relevance
    with torch.no_grad():
        cnn[4].weight.mul_(-1.5)
    b = lrp_fx.attribute(cnn, x, target=1, composite="epsilon").relevance
    fresh = lrp_fx.attribute(copy.deepcopy(cnn), x, target=1, composite="epsilon").relevance
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, fresh)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_gamma_box"])
def test_cached_weights_equal_recomputed_ones_and_follow_every_update(cnn, composite):
    """Folded batch norms and modified weights are computed once (``reuse_weights``) and recomputed exactly when a
    parameter or buffer changes in place, is replaced, or is loaded from a state dict."""
    x, kw = x_batch(), {"low": -3.0, "high": 3.0} if "box" in composite else {}

    def both():
        cached = lrp_fx.attribute(cnn, x, target=1, composite=composite, **kw)
        fresh = lrp_fx.attribute(cnn, x, target=1, composite=composite, reuse_weights=False, **kw)
        torch.testing.assert_close(cached.relevance, fresh.relevance, rtol=0, atol=0)
        assert fresh.program.hoisted is None
        return cached

    first = both()
    program = first.program
    assert program.hoisted is not None and program.weight_cache.nbytes > 0  # the folded batch norm at least
    both()
    assert program.weight_cache.runs == 1  # unchanged weights: the prologue did not run again
    with torch.no_grad():
        cnn[1].running_var.mul_(2.0)  # a buffer, in place
    assert not torch.equal(both().relevance, first.relevance)
    assert program.weight_cache.runs == 2
    cnn[0].weight = nn.Parameter(cnn[0].weight.detach() * -1.0)  # a replaced parameter
    both()
    cnn.load_state_dict(small_cnn().state_dict())  # copied in place
    both()
    assert program.weight_cache.runs == 4
    other = lrp_fx.attribute(cnn, x_batch(5), target=1, composite=composite, **kw).program  # another batch size
    assert other is not program and other.weight_cache is program.weight_cache  # one cache: no copy, no recompute
    assert program.weight_cache.runs == 4


def test_model_state_is_untouched(cnn):
    cnn.train()
    cnn[1].train(False)
    flags = [m.training for m in cnn.modules()]
    state = copy.deepcopy(cnn.state_dict())
    lrp_fx.attribute(cnn, x_batch(), target=1, composite="epsilon_gamma_box", low=-3.0, high=3.0)
    with pytest.raises(lrp_fx.TargetError):
        lrp_fx.attribute(cnn, x_batch(), target=99)
    assert [m.training for m in cnn.modules()] == flags
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_targets_get_clear_errors(cnn):
    x = x_batch(3)
    with pytest.raises(lrp_fx.TargetError, match="out of range.*5 classes"):
        lrp_fx.attribute(cnn, x, target=5)
    with pytest.raises(lrp_fx.TargetError, match="one class index per sample"):
        lrp_fx.attribute(cnn, x, target=[1, 2])
    with pytest.raises(lrp_fx.TargetError, match="output's shape"):
        lrp_fx.attribute(cnn, x, target=torch.ones(3, 4, dtype=torch.float64))


def test_non_float_input_is_refused(cnn):
    with pytest.raises(lrp_fx.InputError, match="floating-point"):
        lrp_fx.attribute(cnn, torch.zeros(1, 3, 8, 8, dtype=torch.long))


def test_wrong_shape_is_a_capture_error_that_quotes_the_failure(cnn):
    with pytest.raises(lrp_fx.CaptureError, match="could not capture Sequential"):
        lrp_fx.attribute(cnn, torch.randn(2, 5, 8, 8, dtype=torch.float64))


def test_data_dependent_control_flow_is_explained():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(lrp_fx.CaptureError, match="What to try.*torch.where"):
        lrp_fx.attribute(Branchy(), torch.randn(2, 3))


@pytest.mark.parametrize("strict", [True, False])
def test_torch_cond_is_a_capture_error_naming_the_users_line(strict):
    """``torch.cond`` captures as an op that runs subgraphs: no rule (and no gradient fallback, which crashed with a
    KeyError) can take it; the error names the line and says what to do instead."""

    class Cond(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.g = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return torch.cond(x.sum() > 0, lambda t: self.f(t), lambda t: self.g(t), (x,))

    with pytest.raises(lrp_fx.CaptureError, match=r"runs subgraphs \(cond at .*test_api.py.*torch.where"):
        lrp_fx.attribute(Cond(), torch.randn(2, 4), target=0, strict=strict)


@pytest.mark.parametrize("op", [torch.ops.cond, torch.ops.higher_order.cond, 3])
def test_register_rule_refuses_what_is_not_an_op(op):
    """``torch.ops.cond`` is an (empty) namespace: registering it was accepted and did nothing."""
    with pytest.raises(TypeError, match="not an op|runs subgraphs"):
        lrp_fx.register_rule(op, group="g", accepts=(lrp_fx.rules.Pass,), default=lrp_fx.rules.Pass())


class Cumulative(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.logcumsumexp(x, dim=1))


def test_missing_rule_names_op_source_line_and_fix():
    with pytest.raises(lrp_fx.MissingRuleError) as info:
        lrp_fx.attribute(Cumulative(), torch.randn(2, 4))
    msg = str(info.value)
    assert "aten.logcumsumexp.default" in msg
    assert "test_api.py" in msg and "torch.logcumsumexp(x, dim=1)" in msg
    assert "register_rule" in msg and "strict=False" in msg


def test_permissive_mode_lists_every_fallback_node():
    res = lrp_fx.attribute(Cumulative(), torch.randn(2, 4), target=0, strict=False)
    assert len(res.fallback_nodes) == 1 and "logcumsumexp" in res.fallback_nodes[0]
    assert torch.isfinite(res.relevance).all()


def test_keep_and_recompute_give_identical_relevance(cnn):
    x = x_batch()
    kept = lrp_fx.attribute(cnn, x, target=1, composite="epsilon_plus_flat")
    recomputed = lrp_fx.attribute(cnn, x, target=1, composite="epsilon_plus_flat", memory_budget=0)
    assert recomputed.stats.recomputed > 0
    assert recomputed.stats.bytes_kept < kept.stats.bytes_kept
    torch.testing.assert_close(kept.relevance, recomputed.relevance, rtol=0, atol=0)


def test_whole_model_conservation_with_absorbed_shares(cnn):
    x = x_batch()
    res = lrp_fx.attribute(cnn, x, target=1, composite="epsilon", track_absorbed=True)
    total = res.relevance.sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, res.seed.sum(), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(res.seed.sum(), res.output[:, 1].sum())


def test_module_relevance_and_overrides(cnn):
    x = x_batch()
    res = lrp_fx.attribute(cnn, x, target=1, composite="epsilon", modules=["4", "6"], track_absorbed=True)
    assert res.modules["4"].shape == (3, 8, 4, 4)
    assert res.modules["6"].shape == (3, 8, 1, 1)
    flat = lrp_fx.attribute(cnn, x, target=1, composite="epsilon", overrides={"0": lrp_fx.rules.Flat()})
    assert not torch.allclose(flat.relevance, res.relevance)
    # the override touched only the first convolution: relevance entering it is the same
    again = lrp_fx.attribute(cnn, x, target=1, composite="epsilon", modules=["2"], overrides={"0": lrp_fx.rules.Flat()})
    ref = lrp_fx.attribute(cnn, x, target=1, composite="epsilon", modules=["2"])
    torch.testing.assert_close(again.modules["2"], ref.modules["2"])


def test_module_relevance_of_a_module_with_several_outputs_is_an_error():
    """``modules=["lstm"]`` where the LSTM's output and its last state are both used: one tensor would stand for one
    part (it was the last state's, silently); the error names the parts. Asking for one part's module works."""

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.a(x), self.b(x)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.two, self.head = nn.LSTM(4, 4, batch_first=True), Two(), nn.Linear(4, 2)

        def forward(self, x):
            out, (h, _) = self.lstm(x)
            a, b = self.two(out.mean(1))
            return self.head(torch.cat([a + b, h[0, :, :1]], -1))

    model, x = Model().eval(), torch.randn(2, 5, 4)
    for name in ("lstm", "two"):
        with pytest.raises(lrp_fx.RuleError, match=rf"module '{name}' passes 2 tensors on"):
            lrp_fx.attribute(model, x, target=0, modules=[name])
    res = lrp_fx.attribute(model, x, target=0, modules=["two.a"])
    assert res.modules["two.a"].shape == (2, 3)


def test_module_relevance_of_a_batch_norm_folded_into_its_convolution():
    """Canonicalisation folds the batch norm into the convolution before it: its output is the fused layer's, so
    ``modules=["1"]`` is that relevance (it was an error), equal to what the ReLU after it passes back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)).eval()
    res = lrp_fx.attribute(model, torch.randn(2, 3, 6, 6), target=0, composite="epsilon", modules=["1", "2"])
    assert res.modules["1"].shape == (2, 4, 4, 4)
    torch.testing.assert_close(res.modules["1"], res.modules["2"], rtol=0, atol=0)


def test_unknown_module_name_suggests_the_models_names(cnn):
    with pytest.raises(lrp_fx.RuleError, match=r"did you mean '4'.*named_modules"):
        lrp_fx.attribute(cnn, x_batch(), target=0, modules=["4x"])


def test_dict_and_tuple_outputs_with_selector():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return {"logits": self.a(x), "aux": self.b(x)}

    model = TwoHeads().double()
    x = torch.randn(2, 4, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=1, composite="epsilon")
    assert res.output.shape == (2, 3)
    aux = lrp_fx.attribute(model, x, target=1, composite="epsilon", output="aux")
    assert aux.output.shape == (2, 2)
    torch.testing.assert_close(aux.output, model(x)["aux"])
    with pytest.raises(lrp_fx.CaptureError, match=r"output='aux_logits' is not a key.*'logits', 'aux'"):
        lrp_fx.attribute(model, x, target=1, output="aux_logits")


def test_output_index_out_of_range_says_how_many_outputs_there_are():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    with pytest.raises(lrp_fx.CaptureError, match="out of range: the model returns tuple of 2 entries"):
        lrp_fx.attribute(Pair(), torch.randn(2, 3), target=0, output=2)


def test_unknown_preset_and_parameter():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="unknown composite"):
        lrp_fx.attribute(model, torch.randn(1, 3), composite="nope")
    with pytest.raises(TypeError, match="needs low"):
        lrp_fx.attribute(model, torch.randn(1, 3), composite="epsilon_gamma_box")


def test_inputs_marked_dynamic_for_torch_compile_are_attributed(cnn):
    """``torch._dynamo.mark_dynamic`` marks (set for a compiled model) do not leak into ``attribute``'s capture."""
    x = x_batch()
    marked = x.clone()
    torch._dynamo.mark_dynamic(marked, 0)
    lrp_fx.CACHE.clear()
    res = lrp_fx.attribute(cnn, marked, target=1, composite="epsilon")  # captured from the marked tensor
    lrp_fx.CACHE.clear()
    ref = lrp_fx.attribute(cnn, x, target=1, composite="epsilon")
    torch.testing.assert_close(res.relevance, ref.relevance)


def test_callable_target_of_a_wrong_shape_is_refused(cnn):
    """A callable's result that merely broadcasts (``o[0]``: sample 0's outputs for every sample) would mix samples;
    it is refused, as a tensor target of the wrong shape is."""
    x = x_batch(2)
    for bad in (lambda o: o[0], lambda o: o[:, :1], lambda o: o[:, 0].sum(), lambda o: o.argmax(1)):
        with pytest.raises(lrp_fx.TargetError, match=r"output's shape \(2, 5\)"):
            lrp_fx.attribute(cnn, x, target=bad)
    with pytest.raises(lrp_fx.TargetError, match="cannot use target='cat'"):
        lrp_fx.attribute(cnn, x, target="cat")


def test_none_target_needs_batch_by_classes_output():
    """``argmax(-1)`` of a ``[batch]`` score would pick one sample; of ``[batch, positions, vocab]`` every position."""
    torch.manual_seed(0)
    scores = nn.Sequential(nn.Linear(4, 1, bias=False), nn.Flatten(0)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(lrp_fx.TargetError, match=r"\[batch, classes\], got \(3,\)"):
        lrp_fx.attribute(scores, x)
    res = lrp_fx.attribute(scores, x, target=lambda o: o, composite="epsilon", epsilon=1e-12)
    torch.testing.assert_close(res.relevance.sum(1), res.output)  # every sample explained, not just the argmax
    seq = nn.Linear(4, 6).double()
    with pytest.raises(lrp_fx.TargetError, match="output="):
        lrp_fx.attribute(seq, torch.randn(2, 5, 4, dtype=torch.float64))


def test_channels_last_after_contiguous_input(cnn):
    """Same shape, other strides: a program traced on contiguous inputs must not be reused (its views would fail)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()
    x = x_batch(2)
    first = lrp_fx.attribute(model, x, target=1).relevance
    cl = lrp_fx.attribute(model, x.to(memory_format=torch.channels_last), target=1).relevance
    torch.testing.assert_close(cl, first)
    builds = lrp_fx.CACHE.builds
    lrp_fx.attribute(model, x.unsqueeze(0)[0], target=1)  # other strides of a size-1 dimension only: reused
    assert lrp_fx.CACHE.builds == builds


def test_namedtuple_inputs_get_namedtuple_relevance():
    import collections

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(5, 3)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    Pair = collections.namedtuple("Pair", "x y")
    torch.manual_seed(0)
    inputs = Pair(torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64))
    model = Two().double()
    res = lrp_fx.attribute(model, inputs, target=0)
    plain = lrp_fx.attribute(model, tuple(inputs), target=0)
    assert isinstance(res.relevance, Pair)
    torch.testing.assert_close(res.relevance.y, plain.relevance[1])


def test_relevance_never_aliases_a_tensor_target():
    """With every rule passing relevance through, the relevance would be the caller's target tensor itself."""
    model = nn.Tanh()
    x = torch.randn(2, 4, dtype=torch.float64)
    target = torch.ones(2, 4, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=target)
    res.relevance /= 4
    assert torch.equal(target, torch.ones(2, 4, dtype=torch.float64))


def test_module_relevance_of_a_module_and_its_last_child():
    """Both share one output node: each name gets that node's relevance (it raised a KeyError)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), nn.Linear(6, 3)).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    res = lrp_fx.attribute(model, x, target=0, composite="epsilon", modules=["0", "0.1", "0.0"])
    assert set(res.modules) == {"0", "0.1", "0.0"}
    torch.testing.assert_close(res.modules["0"], res.modules["0.1"], rtol=0, atol=0)
    tail = lrp_fx.attribute(model[1], model[0](x), target=res.seed, composite="epsilon")
    torch.testing.assert_close(res.modules["0"], tail.relevance)


def test_module_called_twice_needs_a_call_index():
    """One ``nn.ReLU`` applied twice: a plain name would silently be one of the calls; ``name@k`` picks call k."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.act = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 2), nn.ReLU()

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    torch.manual_seed(0)
    model = Twice().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(lrp_fx.RuleError, match="runs 2 times.*'act@0', 'act@1'"):
        lrp_fx.attribute(model, x, target=0, modules=["act"])
    res = lrp_fx.attribute(model, x, target=0, composite="epsilon", modules=["act@0", "act@1", "act@0"])
    assert res.modules["act@0"].shape == (3, 6) and res.modules["act@1"].shape == (3, 5)
    # the relevance leaving each call is what enters the next linear layer's rule
    head = lrp_fx.attribute(
        nn.Sequential(model.c), model.act(model.b(model.act(model.a(x)))), target=res.seed, composite="epsilon"
    )
    torch.testing.assert_close(res.modules["act@1"], head.relevance)
    with pytest.raises(lrp_fx.RuleError, match="not 2"):
        lrp_fx.attribute(model, x, target=0, modules=["act@2"])


def test_option_types_get_clear_errors(cnn):
    x = x_batch(2)
    one = lrp_fx.attribute(cnn, x, target=1, modules="4")  # a single name, not its characters
    assert set(one.modules) == {"4"}
    for bad in ("1GB", -5, 1.5e6, True):
        with pytest.raises(lrp_fx.InputError, match="memory_budget"):
            lrp_fx.attribute(cnn, x, target=1, memory_budget=bad)
        with pytest.raises(lrp_fx.InputError, match="memory_budget"):
            lrp_fx.export(cnn, x, memory_budget=bad)


def test_a_rule_that_returns_a_bare_tensor_or_none_gets_a_clear_error():
    from lrp_fx.rules.base import Epsilon, Pass
    from lrp_fx.rules.registry import _RULES

    op = torch.ops.aten.lgamma.default
    assert op not in _RULES

    class Lgamma(nn.Module):
        def forward(self, x):
            return torch.lgamma(x.abs() + 1)

    x = torch.rand(2, 3, dtype=torch.float64)
    for returned in (lambda r: r, lambda r: None):
        try:

            @lrp_fx.register_rule(op, group="activation", accepts=(Pass,), default=Pass())
            def bare(call, relevance, returned=returned):
                return returned(relevance)

            with pytest.raises(lrp_fx.RuleError, match=r"call\.first\(r\)"):
                lrp_fx.attribute(Lgamma(), x, target=torch.ones(2, 3, dtype=torch.float64))
        finally:
            _RULES.pop(op, None)
    with pytest.raises(TypeError, match="default=Pass.*accepted rule classes"):
        lrp_fx.register_rule(op, group="activation", accepts=(Epsilon,), default=Pass())
    assert op not in _RULES


def test_untying_a_tied_weight_builds_a_new_program():
    """The capture lifts a shared parameter once: after ``b.weight`` gets its own tensor, the cached program would
    still read ``a.weight`` for both layers."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.h = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.h(torch.relu(self.b(torch.relu(self.a(x)))))

    torch.manual_seed(0)
    model, x = Tied().eval(), torch.randn(2, 6)
    lrp_fx.attribute(model, x, composite="epsilon")
    model.b.weight = nn.Parameter(torch.randn(6, 6))
    res = lrp_fx.attribute(model, x, composite="epsilon")
    with torch.no_grad():
        torch.testing.assert_close(res.output, model(x))
    lrp_fx.CACHE.clear()
    torch.testing.assert_close(res.relevance, lrp_fx.attribute(model, x, composite="epsilon").relevance)


def test_bad_options_are_errors_that_say_what_to_pass():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    x = torch.randn(2, 3)
    with pytest.raises(lrp_fx.errors.InputError, match="names of submodules"):
        lrp_fx.attribute(model, x, modules=[0])
    with pytest.raises(lrp_fx.errors.CaptureError, match="returns one tensor"):
        lrp_fx.attribute(model, x, output="logits")
    with pytest.raises(ValueError, match="epsilon >= 0"):
        lrp_fx.attribute(model, x, composite="epsilon", epsilon=-1.0)
    with pytest.raises(ValueError, match="low <= high"):
        lrp_fx.attribute(model, x, composite="epsilon_gamma_box", low=1.0, high=-1.0)
    empty = lrp_fx.attribute(model, torch.randn(0, 3), target=[])  # an empty batch's targets
    assert empty.relevance.shape == (0, 3)


@pytest.mark.parametrize("value", ["OFF", "0", "false", "none"])
def test_a_misspelt_kernels_setting_is_an_error(value, monkeypatch):
    """Any value but 'auto'/'off' used to act as 'all' (the slower fused linear kernels on CUDA)."""
    monkeypatch.setenv("LRP_FX_KERNELS", value)
    with pytest.raises(lrp_fx.InputError, match="LRP_FX_KERNELS must be 'auto'"):
        lrp_fx.attribute(nn.Linear(3, 2), torch.randn(1, 3), target=0)
