"""Attention relevance kernels: Triton vs dense torch reference, reference vs explicit contribution tensors."""

import math

import pytest
import torch
from _kernel_test_utils import EPS, TOL, assert_close_rel

from kernels import (
    attention_forward,
    attention_forward_ref,
    attention_forward_triton,
    attention_relevance,
    attention_relevance_ref,
    attention_relevance_triton,
)

ATTN_TOL = {torch.float32: 1e-4, torch.bfloat16: 4e-2, torch.float16: 6e-3}

# (B, H, Hkv, Nq, Nk, d, causal, padding)
CASES = [
    pytest.param((1, 2, 2, 17, 17, 16, False, False), id="N17"),
    pytest.param((2, 4, 2, 33, 33, 16, True, True), id="N33-causal-pad-gqa"),
    pytest.param((1, 3, 1, 33, 33, 24, False, True), id="N33-pad-mqa-d24"),
    pytest.param((1, 2, 2, 17, 17, 32, True, False), id="N17-causal"),
    pytest.param((1, 2, 1, 9, 21, 16, False, True), id="cross-9x21"),
]


def make_attention(case, dtype, device="cpu", seed=0):
    B, H, Hkv, n_q, n_k, d, causal, padding = case
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, n_q, d, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, n_k, d, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, n_k, d, generator=g, dtype=torch.float64)
    r = torch.randn(B, H, n_q, d, generator=g, dtype=torch.float64)
    mask = None
    if padding:
        mask = torch.ones(B, n_k, dtype=torch.bool)
        mask[0, n_k - 5 :] = False
        if B > 1:
            mask[1, 1:3] = False
        mask = mask.to(device)
    # relevance that scales with the output (as relevance coming from upstream LRP does): keeps S = R_O / stab(O)
    # well-conditioned where O is close to 0, so low-precision runs can be compared with the reference
    o, _ = attention_forward_ref(q, k, v, causal, None if mask is None else mask.cpu())
    r = r * o
    q, k, v, r = (t.to(device=device, dtype=dtype) for t in (q, k, v, r))
    return q, k, v, r, causal, mask


def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def dense_contributions(q, k, v, r, rule, causal, mask, eps):
    """Independent float64 formula from explicit contribution tensors (small N only).

    A v: terms T[i, j, d] = A_ij v_jd, each term's share of R_O[i, d] is T / stab(O); AttnLRP splits every term
    uniformly between A_ij and v_jd; softmax rule R_L = L * g, g = R_A - A rowsum R_A; q k^T: terms
    U[i, j, d] = c q_id k_jd share R_L_ij in proportion U / L (no stabiliser needed: R_L / L = g exactly), split
    uniformly between q and k.
    """
    B, H, n_q, d = q.shape
    h_kv, n_k = k.shape[1], k.shape[2]
    group = H // h_kv
    scale = 1.0 / math.sqrt(d)
    r_q = torch.zeros_like(q)
    r_k = torch.zeros_like(k)
    r_v = torch.zeros_like(v)
    for b in range(B):
        for h in range(H):
            hk = h // group
            qq, kk, vv, rr = q[b, h], k[b, hk], v[b, hk], r[b, h]
            u = scale * torch.einsum("id,jd->ijd", qq, kk)
            logits = u.sum(-1)
            valid = torch.ones(n_q, n_k, dtype=torch.bool)
            if causal:
                valid &= torch.arange(n_k)[None, :] <= torch.arange(n_q)[:, None]
            if mask is not None:
                valid &= mask[b].cpu()[None, :]
            a = torch.zeros_like(logits)
            for i in range(n_q):
                if valid[i].any():
                    a[i, valid[i]] = torch.softmax(logits[i, valid[i]], 0)
            t = torch.einsum("ij,jd->ijd", a, vv)
            o = t.sum(1)
            rt = t * (rr / _stab(o, eps))[:, None, :]
            if rule == "cp":
                r_v[b, hk] += rt.sum(0)
                continue
            r_v[b, hk] += 0.5 * rt.sum(0)
            r_a = 0.5 * rt.sum(-1)
            g = torch.where(valid, r_a - a * r_a.sum(1, keepdim=True), 0.0)  # R_L = L * g
            ru = u * g[..., None]  # each term's share of R_L, u / L, in the eps -> 0 limit: R_L / L = g
            r_q[b, h] += 0.5 * ru.sum(1)
            r_k[b, hk] += 0.5 * ru.sum(0)
    return r_q, r_k, r_v


@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
@pytest.mark.parametrize("case", CASES[:3] + CASES[4:])
def test_reference_matches_contributions(case, rule):
    q, k, v, r, causal, mask = make_attention(case, torch.float64)
    ref = attention_relevance_ref(q, k, v, r, rule, causal, mask, eps=1e-3)
    dense = dense_contributions(q, k, v, r, rule, causal, mask, eps=1e-3)
    for a, b in zip(ref, dense):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_reference_conservation():
    q, k, v, r, causal, mask = make_attention(CASES[1].values[0], torch.float64)
    _, _, r_v = attention_relevance_ref(q, k, v, r, "cp", causal, mask, eps=1e-12)
    torch.testing.assert_close(r_v.sum(), r.sum(), rtol=1e-9, atol=1e-9)
    _, _, r_v = attention_relevance_ref(q, k, v, r, "attnlrp", causal, mask, eps=1e-12)
    torch.testing.assert_close(r_v.sum(), 0.5 * r.sum(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_forward_triton(device, case, dtype):
    q, k, v, r, causal, mask = make_attention(case, dtype, device)
    o, lse = attention_forward_triton(q, k, v, causal, mask)
    o_ref, lse_ref = attention_forward_ref(q, k, v, causal, mask)
    assert o.dtype == torch.float32 and lse.shape == q.shape[:3]
    assert_close_rel(o, o_ref, ATTN_TOL[dtype])
    torch.testing.assert_close(lse, lse_ref.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_relevance_triton(device, case, dtype, rule):
    q, k, v, r, causal, mask = make_attention(case, dtype, device, seed=1)
    out = attention_relevance_triton(q, k, v, r, rule, causal, mask, eps=EPS[dtype])
    ref = attention_relevance_ref(q, k, v, r, rule, causal, mask, eps=EPS[dtype])
    for name, a, b in zip(("R_q", "R_k", "R_v"), out, ref):
        assert a.dtype == dtype and a.shape == b.shape, name
        if rule == "cp" and name != "R_v":
            assert (a == 0).all()
        else:
            assert_close_rel(a, b, ATTN_TOL[dtype])


def test_relevance_triton_fully_masked_row_and_scale(device):
    q, k, v, r, _, _ = make_attention((2, 2, 2, 17, 17, 16, False, False), torch.float32, device, seed=2)
    mask = torch.ones(2, 17, dtype=torch.bool, device=device)
    mask[1] = False  # batch 1 sees no key: A = 0, O = 0, no relevance
    out = attention_relevance_triton(q, k, v, r, "attnlrp", False, mask, scale=0.3, eps=1e-3)
    ref = attention_relevance_ref(q, k, v, r, "attnlrp", False, mask, scale=0.3, eps=1e-3)
    for a, b in zip(out, ref):
        assert torch.isfinite(a).all()
        assert (a[1] == 0).all()
        assert_close_rel(a, b, TOL[torch.float32] * 5)
    o, lse = attention_forward_triton(q, k, v, False, mask)
    assert (o[1] == 0).all() and torch.isneginf(lse[1]).all()


def test_relevance_triton_strided(device):
    # [B, N, H, d] layout viewed as [B, H, N, d]
    B, N, H, d = 1, 19, 2, 16
    g = torch.Generator().manual_seed(3)
    q, k, v, r = (torch.randn(B, N, H, d, generator=g).to(device).transpose(1, 2) for _ in range(4))
    r = (r * attention_forward_ref(q, k, v, True)[0]).transpose(1, 2).contiguous().transpose(1, 2)
    out = attention_relevance_triton(q, k, v, r, "attnlrp", True)
    ref = attention_relevance_ref(q, k, v, r, "attnlrp", True)
    for a, b in zip(out, ref):
        assert_close_rel(a, b, ATTN_TOL[torch.float32])


def test_ops_dispatch_cpu_to_reference():
    q, k, v, r, causal, mask = make_attention(CASES[1].values[0], torch.float64)
    for rule in ("attnlrp", "cp"):
        out = attention_relevance(q, k, v, r, rule, causal, mask)
        ref = attention_relevance_ref(q, k, v, r, rule, causal, mask)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b)
    o, lse = attention_forward(q, k, v, causal, mask)
    o_ref, lse_ref = attention_forward_ref(q, k, v, causal, mask)
    torch.testing.assert_close(o, o_ref.float())
    torch.testing.assert_close(lse, lse_ref.float())


def test_errors():
    q = torch.randn(1, 3, 5, 8)
    k = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError):
        attention_relevance(q, k, k, q)
    with pytest.raises(ValueError):
        attention_relevance(q, q, q, q, rule="nope")


@pytest.mark.gpu
@pytest.mark.parametrize("rule", ["attnlrp", "cp"])
def test_relevance_cuda_bf16(rule):
    q, k, v, r, causal, mask = make_attention((2, 8, 2, 300, 300, 64, True, True), torch.bfloat16, "cuda")
    out = attention_relevance(q, k, v, r, rule, causal, mask, eps=1e-2)
    ref = attention_relevance_ref(q, k, v, r, rule, causal, mask, eps=1e-2)
    for a, b in zip(out, ref):
        if b.abs().sum() > 0:
            assert_close_rel(a, b, ATTN_TOL[torch.bfloat16])
