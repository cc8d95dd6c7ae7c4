"""The eager runner (weight hoisting + in-place buffer reuse) computes exactly what the functional program computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

import lrp_fx
from lrp_fx.inplace import copy_graph_module, reuse_buffers

D = torch.float64


def _functional(res, model, x, seed):
    program = res.program
    with torch.no_grad():
        outs = program.graph_module(*program.placeholder_values(model, [x]), seed)
    return program.unpack(outs)


class Residual(nn.Module):
    """Conv-BN-ReLU, a residual sum, a sign-unknown convolution, a classifier: every kind of buffer the rules use."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.c2, self.b2 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(h + self.b2(self.c2(h)))
        return self.head(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_runner_equals_functional_program(composite):
    torch.manual_seed(0)
    model = Residual().to(D).eval()
    with torch.no_grad():
        for bn in (model.b1, model.b2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8, dtype=D)
    seed = torch.randn(2, 4, dtype=D)
    kw = {"low": -3.0, "high": 3.0} if "box" in composite else {}
    res = lrp_fx.attribute(model, x, target=seed, composite=composite, **kw)
    assert res.program.inplace_ops > 0 and res.program.hoisted is not None
    ref = _functional(res, model, x, seed)
    torch.testing.assert_close(res.relevance, ref["relevance"][0], rtol=0, atol=0)
    torch.testing.assert_close(res.output, ref["output"], rtol=0, atol=0)
    assert torch.equal(x, x.clone())  # inputs are placeholders: never written


def test_inputs_and_live_values_are_never_overwritten():
    """A temporary with a later user or a live view, and every placeholder, keep their values."""

    def f(x, y):
        a = x * 2.0  # fresh; read again below: its mul must not write into it
        b = a + y
        v = a.view(-1)  # a view of a: nothing may write into a afterwards
        c = a * 3.0
        d = torch.relu(b)  # b dies here: may become relu_
        return c, v.sum(), d + x  # x is a placeholder: never written

    x, y = torch.randn(4, 4), torch.randn(4, 4)
    gm = make_fx(f)(x, y)
    runner = copy_graph_module(gm)
    reuse_buffers(runner)
    targets = {n.name: n.target for n in runner.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.relu_.default in targets.values()  # b dies in relu
    assert torch.ops.aten.mul_.Tensor not in targets.values()  # a has a later user and a view
    x0, y0 = x.clone(), y.clone()
    for got, want in zip(runner(x, y), gm(x, y)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_add_with_alpha_keeps_its_operand_order():
    """``add(a, b, alpha=c)`` is ``a + c b``: writing it into a dying ``b`` must not swap the operands."""

    def f(x, y):
        b = y * 2.0  # dies in the add, the only reusable operand
        return torch.add(x, b, alpha=0.25)

    x, y = torch.randn(3, 5), torch.randn(3, 5)
    gm = make_fx(f)(x, y)
    runner = copy_graph_module(gm)
    reuse_buffers(runner)
    torch.testing.assert_close(runner(x, y), gm(x, y), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("rule", "per_call"),
    [
        (lrp_fx.rules.Flat(), 1),  # J(1)^T s; f(1; 1) is a constant
        (lrp_fx.rules.WSquare(), 1),
        (lrp_fx.rules.ZBox(-3.0, 3.0), 2),  # (x - l) J(W+)^T s + (x - h) J(W-)^T s; z = o - constants
        (lrp_fx.rules.ZBox(torch.tensor([-1.0, 0.0, -2.0], dtype=D).view(1, 3, 1, 1), 3.0), 2),  # tensor bounds
    ],
    ids=["flat", "wsquare", "zbox", "zbox-tensor-bounds"],
)
def test_products_of_constant_inputs_are_hoisted(rule, per_call):
    """Flat's ones and ZBox's bounds are constants: their products with the weights run once, in the prologue, and
    each call runs the model's own product and the rule's transposed ones only. Relevance as the functional
    program's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4)).to(D).eval()
    x = torch.randn(2, 3, 6, 6, dtype=D)
    seed = torch.randn(2, 4, dtype=D)
    res = lrp_fx.attribute(model, x, target=seed, composite="epsilon", overrides={nn.Conv2d: rule})
    conv = ("aten.convolution.default", "aten.convolution_backward.default")
    main = res.program.hoisted.main.graph.nodes
    assert sum(1 for n in main if n.op == "call_function" and str(n.target) in conv) == 1 + per_call
    ref = _functional(res, model, x, seed)
    torch.testing.assert_close(res.relevance, ref["relevance"][0], rtol=0, atol=0)


class _MaxAggregation(nn.Module):
    """Messages max-aggregated per node (``scatter_reduce`` amax: graph networks), whose rule fills ``torch.zeros``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("dst", torch.tensor([0, 1, 1, 2, 0, 2]))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        idx = self.dst.view(-1, 1).expand(-1, x.shape[1])
        out = torch.zeros(3, x.shape[1], dtype=x.dtype).scatter_reduce(0, idx, x, "amax", include_self=False)
        return self.head(out.reshape(1, -1)[:, :4])


def test_tensors_built_from_nothing_are_not_cached_between_calls():
    """A ``torch.zeros`` of a fixed shape depends on no input, so weight hoisting cached it: the amax rule filled
    and returned the same tensor in every call (the first result overwritten by the second), and a target callable
    that adds into ``torch.zeros`` summed its seeds over calls."""
    model = _MaxAggregation().double().eval()
    x1, x2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    r1 = lrp_fx.attribute(model, x1, target=0, composite="epsilon")
    first = r1.relevance.clone()
    lrp_fx.attribute(model, x2, target=0, composite="epsilon")
    torch.testing.assert_close(r1.relevance, first, rtol=0, atol=0)
    again = lrp_fx.attribute(model, x1, target=0, composite="epsilon", reuse_weights=False)
    torch.testing.assert_close(first, again.relevance)

    def target(o):
        seed = torch.zeros(o.shape, dtype=o.dtype)
        seed[:, 1] += o[:, 1]
        return seed

    net = nn.Sequential(nn.Linear(4, 3)).double()
    for _ in range(3):
        x = torch.randn(2, 4, dtype=torch.float64)
        res = lrp_fx.attribute(net, x, target=target, composite="epsilon")
        torch.testing.assert_close(res.relevance, lrp_fx.attribute(net, x, target=1, composite="epsilon").relevance)
