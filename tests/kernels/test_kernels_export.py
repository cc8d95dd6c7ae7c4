"""The rule functions are ``torch.library.triton_op``s: torch.export keeps them as operators, torch.compile traces."""

import pytest
import torch
import torch.nn.functional as F
from _kernel_test_utils import TOL, assert_close_rel

import kernels


def _flat(out):
    return [t for o in out for t in (o if isinstance(o, tuple) else (o,))]


class _AllRules(torch.nn.Module):
    def forward(self, x, w, z, r, q, k, v, r_o, xc, wc, zc, rc):
        return (
            kernels.epsilon_linear(x, w, z, r),
            kernels.signsplit_linear(x, w, None, z, r, "gamma"),
            kernels.attention_relevance(q, k, v, r_o, "attnlrp", causal=True),
            kernels.signsplit_conv2d(xc, wc, None, zc, rc, "alphabeta", padding=1),
            kernels.epsilon_conv2d(xc, wc, zc, rc, padding=1),
        )


def _inputs(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    x, w, r = rnd(3, 2, 5), rnd(4, 5), rnd(3, 2, 4)
    z = x @ w.T
    q, k, v, r_o = rnd(1, 2, 9, 16), rnd(1, 1, 9, 16), rnd(1, 1, 9, 16), rnd(1, 2, 9, 16)
    xc, wc = rnd(1, 3, 6, 6), rnd(4, 3, 3, 3)
    zc = F.conv2d(xc, wc, None, 1, 1)
    rc = torch.randn(zc.shape, generator=g).to(device=device, dtype=dtype)
    return x, w, z, r, q, k, v, r_o, xc, wc, zc, rc


def test_export_keeps_operators():
    args = _inputs()
    ep = torch.export.export(_AllRules(), args)
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    for name in ("epsilon_linear", "signsplit_linear", "attention_relevance", "signsplit_conv2d", "epsilon_conv2d"):
        assert f"lrp_kernels.{name}.default" in targets
    out, ref = ep.module()(*args), _AllRules()(*args)
    for a, b in zip(_flat(out), _flat(ref)):
        torch.testing.assert_close(a, b)


def test_compile_traces_through():
    args = _inputs()
    compiled = torch.compile(_AllRules(), backend="aot_eager", fullgraph=True)
    out, ref = compiled(*args), _AllRules()(*args)
    for a, b in zip(_flat(out), _flat(ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_inductor_compiles_triton_kernels_cuda():
    args = _inputs("cuda")
    compiled = torch.compile(_AllRules(), fullgraph=True)
    out, ref = compiled(*args), _AllRules()(*args)
    for a, b in zip(_flat(out), _flat(ref)):
        if b.abs().sum() > 0:
            assert_close_rel(a, b, TOL[torch.float32] * 10)
