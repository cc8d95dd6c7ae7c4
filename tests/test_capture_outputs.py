"""What the capture explains and how it is called: the model's output, not its in-place buffer updates (which
``torch.export`` lists first among the graph's outputs); keyword inputs in ``lrp_fx.export``; custom objects."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lrp_fx
from lrp_fx.errors import CaptureError


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeatureStats(Plain):
    """Keeps a running mean of its input features, also in eval mode; the output does not read it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.feat_mean.mul_(0.9).add_(0.1 * x.mean(0))
        return self.body(x)


class Counter(Plain):
    """Counts its calls in a buffer: the update does not depend on any input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.body(x)


class Centred(Plain):
    """Updates a buffer, then reads the updated value."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.full((6,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.feat_mean.mul_(0.5).add_(0.5 * x.mean(0))
        return self.body(x - self.feat_mean)


def _with_weights(cls: type[Plain], like: Plain) -> Plain:
    model = cls()
    model.body.load_state_dict(like.body.state_dict())
    return model.double().eval()


def _models() -> tuple[Plain, Plain, Plain]:
    plain = Plain().double().eval()
    return plain, _with_weights(FeatureStats, plain), _with_weights(Counter, plain)


# -- attribute -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FeatureStats, Counter])
def test_attribute_explains_the_output_not_the_buffer_update(cls):
    plain = Plain().double().eval()
    model = _with_weights(cls, plain)
    x = torch.randn(4, 6, dtype=torch.double)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = copy.deepcopy(model)(x)
    res = lrp_fx.attribute(model, x, target=1, composite="epsilon", track_absorbed=True)
    torch.testing.assert_close(res.output, expected)
    ref = lrp_fx.attribute(plain, x, target=1, composite="epsilon")
    torch.testing.assert_close(res.relevance, ref.relevance)
    # conservation: the relevance of the explained logit, up to the shares biases and stabilisers absorbed
    total = res.relevance.sum() + sum(res.absorbed.values())
    torch.testing.assert_close(total, res.seed.sum(), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(res.seed.sum(), expected[:, 1].sum())
    # the user's model is not modified: its buffers keep their values (also on the cached program's second call)
    lrp_fx.attribute(model, x, target=1, composite="epsilon", track_absorbed=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_attribute_reads_the_updated_buffer_like_the_model():
    model = Centred().double().eval()
    x = torch.randn(3, 6, dtype=torch.double)
    before = model.feat_mean.clone()
    expected = copy.deepcopy(model)(x)
    res = lrp_fx.attribute(model, x, target=0, composite="epsilon")
    torch.testing.assert_close(res.output, expected)
    assert res.relevance.shape == x.shape
    assert torch.equal(model.feat_mean, before)


# -- export ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FeatureStats, Counter, Centred])
def test_export_explains_the_output_not_the_buffer_update(cls):
    plain = Plain().double().eval()
    model = _with_weights(cls, plain)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prog = lrp_fx.export(model, torch.randn(2, 6, dtype=torch.double), composite="epsilon")
    assert [s.kind.name for s in prog.graph_signature.output_specs] == ["USER_OUTPUT"] * 2  # no buffer update
    run = prog.module()
    x, seed = torch.randn(5, 6, dtype=torch.double), torch.randn(5, 3, dtype=torch.double)
    for _ in range(2):  # each call from the buffers as exported
        out, rel = run(x, seed)
        torch.testing.assert_close(out, copy.deepcopy(model)(x))
        torch.testing.assert_close(rel, lrp_fx.attribute(model, x, target=seed, composite="epsilon").relevance)
        if cls is not Centred:
            torch.testing.assert_close(rel, lrp_fx.attribute(plain, x, target=seed, composite="epsilon").relevance)
    for k, v in model.state_dict().items():  # exporting and running the program leave the model as it was
        assert torch.equal(v, state[k]), k


# -- torch.compile(backend="lrp") ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FeatureStats, Counter, Centred])
def test_compiled_model_returns_the_output_and_applies_the_buffer_update(cls):
    plain = Plain().double().eval()
    model = _with_weights(cls, plain)
    twin = copy.deepcopy(model)  # runs eagerly next to the compiled model
    buffers = dict(model.named_buffers())
    cmodel = torch.compile(model, backend=lrp_fx.backend("epsilon", inductor=False), fullgraph=True)
    for _ in range(2):
        x = torch.randn(4, 6, dtype=torch.double)
        before = copy.deepcopy(model)
        xr = x.clone().requires_grad_()
        out = cmodel(xr)
        torch.testing.assert_close(out, twin(x))
        for (k, v), (_, w) in zip(model.state_dict().items(), twin.state_dict().items()):
            torch.testing.assert_close(v, w, msg=k)  # the buffer update applied, as the model applies it
        seed = torch.randn_like(out)
        (rel,) = torch.autograd.grad(out, xr, grad_outputs=seed)
        ref = lrp_fx.attribute(before, x, target=seed, composite="epsilon")  # the state the call started from
        torch.testing.assert_close(rel, ref.relevance)
        if cls is not Centred:
            torch.testing.assert_close(rel, lrp_fx.attribute(plain, x, target=seed, composite="epsilon").relevance)
    with torch.no_grad():  # the inference path updates too
        cmodel(x)
        twin(x)
    for name, buf in model.named_buffers():  # updated in place: the same tensors, still plain buffers
        assert buf is buffers[name] and buf.grad_fn is None and not buf.requires_grad, name
    for (k, v), (_, w) in zip(model.state_dict().items(), twin.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)


# -- keyword inputs in lrp_fx.export ---------------------------------------------------------------------------------
class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(10, 8), nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1).to(self.emb.weight.dtype)
        return self.head(h.sum(1))


def test_export_keyword_inputs_match_attribute():
    model = TwoInputs().double().eval()
    prog = lrp_fx.export(
        model, {"x": torch.randn(2, 4, dtype=torch.double), "y": torch.randn(2, 5, dtype=torch.double)}, "epsilon"
    )
    assert list(prog.graph_signature.user_inputs) == ["args_0", "x", "y"]  # the seed, then the keyword inputs
    run = prog.module()
    for batch in (2, 5):
        inputs = {"x": torch.randn(batch, 4, dtype=torch.double), "y": torch.randn(batch, 5, dtype=torch.double)}
        seed = torch.randn(batch, 3, dtype=torch.double)
        out, rel_x, rel_y = run(seed, **inputs)
        ref = lrp_fx.attribute(model, inputs, target=seed, composite="epsilon")
        torch.testing.assert_close(out, ref.output)
        torch.testing.assert_close(rel_x, ref.relevance["x"])
        torch.testing.assert_close(rel_y, ref.relevance["y"])
        torch.testing.assert_close(run(seed, y=inputs["y"], x=inputs["x"])[1], rel_x)  # by name, in any order


def test_export_hugging_face_style_token_inputs():
    model = Tokens().double().eval()
    example = {"input_ids": torch.randint(0, 10, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    prog = lrp_fx.export(model, example, "epsilon")
    inputs = {"input_ids": torch.randint(0, 10, (3, 5)), "attention_mask": torch.ones(3, 5, dtype=torch.long)}
    inputs["attention_mask"][0, 3:] = 0
    seed = torch.randn(3, 2, dtype=torch.double)
    out, rel_ids = prog.module()(seed, **inputs)
    ref = lrp_fx.attribute(model, inputs, target=seed, composite="epsilon")
    torch.testing.assert_close(out, ref.output)
    torch.testing.assert_close(rel_ids, ref.relevance["input_ids"])
    assert ref.relevance["attention_mask"] is None


# -- custom objects --------------------------------------------------------------------------------------------------
class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return self.lin(x + 0.01 * torch.randn(x.shape, generator=g))


def test_generator_created_in_forward_is_an_explained_capture_error():
    with pytest.raises(CaptureError) as info:
        lrp_fx.attribute(Noisy().eval(), torch.randn(2, 4), target=0)
    text = str(info.value)
    assert "Noisy" in text and "Generator" in text
    assert "test_capture_outputs.py" in text and "torch.randn(x.shape, generator=g)" in text  # where it is used
    assert "What to try" in text and "as an input" in text
    assert "InputKind" not in text
