r"""Attention relevance (CP-LRP and AttnLRP) without the N x N matrix, flash-attention style.

Maths
=====
``q`` [B, H, Nq, d], ``k``, ``v`` [B, Hkv, Nk, d] (``Hkv`` divides ``H``; query head ``h`` reads kv head
``h // (H / Hkv)``), scale ``c = 1/sqrt(d)`` by default, optional causal mask (key ``j`` visible to query ``i`` iff
``j <= i``) and key padding mask [B, Nk] (True = keep). Forward:

.. math::

    L = c\, q k^T \ (\text{masked entries} \to -\infty), \qquad A = \mathrm{softmax}_{\text{keys}}(L), \qquad O = A v

(a query row with every key masked gets ``A = 0``, ``O = 0``). Given ``R_O`` [B, H, Nq, d] and
``stab(z) = z + eps sgn(z)`` (``sgn(0) = +1``):

.. math::

    S = R_O / \mathrm{stab}(O), \qquad D_i = \tfrac12 \textstyle\sum_d S_{id} O_{id}

* CP-LRP (attention weights treated as constants): ``R_v = v * (A^T S)``, ``R_q = R_k = 0``.
* AttnLRP: ``R_v = 0.5 v * (A^T S)``; ``dP = S v^T``;
  ``G_ij = A_ij (0.5 dP_ij - D_i)`` (``G = 0`` where masked);
  ``R_q = 0.5 c q * (G k)``, ``R_k = 0.5 c k * (G^T q)``.

``R_k``/``R_v`` of a kv head sum the contributions of every query head that reads it. Derivation: the epsilon rule
with a uniform split between the two factors of the products ``A v`` and ``q k^T`` gives
``R_A = 0.5 A * dP``; the softmax rule ``R_L = L * (R_A - A rowsum(R_A))`` with
``rowsum(R_A)_i = 0.5 sum_j A_ij dP_ij = 0.5 sum_d S_id O_id = D_i``; the epsilon rule on ``L = c q k^T`` divides
``R_L`` by ``L`` again, which is formed without the division (``G = R_L / L``, the eps -> 0 limit: exact, and no
division by a logit near 0), as in ``lrp_fx/rules/attention.py``.

Kernels (memory linear in N)
============================
* ``_attn_fwd_kernel`` (grid: query blocks x B*H): online-softmax forward; returns ``O`` and the per-row
  log-sum-exp ``lse`` (natural log, ``-inf`` for fully masked rows). With ``HAS_REL`` the epilogue instead turns
  ``O`` and ``R_O`` into ``S`` (stored in the input dtype: it only feeds dots) and ``D`` (fp32), so ``O`` is never
  written.
* ``_attn_rel_kv_kernel`` (grid: key blocks x B*Hkv): keeps a ``k``/``v`` block in registers, loops over the query
  heads of its kv group and the query blocks, recomputes ``A^T = exp(c k q^T - lse)`` block by block and accumulates
  ``A^T S`` (and ``G^T q`` for AttnLRP): no atomics, GQA sums done in registers.
* ``_attn_rel_q_kernel`` (AttnLRP only; grid: query blocks x B*H): recomputes ``A`` and ``dP`` per key block and
  accumulates ``G k``.

Dots take input-dtype operands (``A``, ``S``, ``G`` cast down for bf16/fp16) with fp32 accumulation, like
flash-attention's backward pass; softmax statistics, ``D`` and ``G`` are computed in fp32.
"""

import math

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    check_triton_inputs,
    compute_dtype,
    dot_flags,
    launcher,
    mma,
    smem_limit,
    stab,
    stab_tl,
    triton_op,
    use_triton,
)

__all__ = [
    "attention_forward",
    "attention_forward_triton",
    "attention_forward_ref",
    "attention_relevance",
    "attention_relevance_triton",
    "attention_relevance_ref",
]

RULES = ("attnlrp", "cp")
# the kernels compute exp(t) as exp2(t * 1.4426950408889634), 1.44... = log2(e)


# Autotune candidates: (BLOCK_M, BLOCK_N, num_warps, num_stages, largest head dim the config is meant for).
# BLOCK_M tiles queries, BLOCK_N keys. The head-dim limits come from compiling every config for sm_90 (ptxas -v):
# the listed configs for head dim 128 compile without (or with a few bytes of) register spills, the others spill
# heavily at 128 and are pruned there.
_FWD_SHAPES = [
    (128, 64, 8, 3, 128),
    (64, 64, 8, 2, 128),
    (64, 32, 4, 2, 128),
    (128, 128, 8, 3, 64),
]
_KV_SHAPES = [
    (64, 32, 8, 2, 128),
    (32, 32, 4, 2, 128),
    (64, 64, 8, 2, 64),
    (32, 128, 8, 2, 64),
]
_Q_SHAPES = [
    (64, 32, 8, 2, 128),
    (32, 64, 8, 2, 128),
    (32, 32, 4, 2, 128),
    (64, 64, 8, 2, 64),
]
_MAX_HEAD_DIM = {}  # (kind, BLOCK_M, BLOCK_N, num_warps, num_stages) -> largest head dim


def _configs(kind: str, shapes: list) -> list:
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    configs = []
    for bm, bn, w, st, max_d in shapes:
        _MAX_HEAD_DIM[(kind, bm, bn, w, st)] = max_d
        configs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st))
    return configs


def _attn_prune(kind: str):
    """``early_config_prune`` of the attention kernels.

    Keeps the configs meant for the head dim (see ``_*_SHAPES``) whose pipelined tiles fit the shared memory
    (estimate below, matters for float32 inputs).
    """

    def prune(configs, named_args, **kwargs):
        if len(configs) <= 1:
            return configs
        try:
            bd = int(kwargs["BLOCK_D"])
            es = named_args["q_ptr"].element_size()
            limit = smem_limit(named_args["q_ptr"].device)
        except Exception:  # pragma: no cover - e.g. symbolic arguments while tracing
            return configs
        keep = []
        for c in configs:
            bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages
            if kind == "fwd":  # q resident, k and v pipelined
                smem = st * 2 * bn * bd * es + bm * bd * es
            elif kind == "kv":  # k and v resident, q and S pipelined
                smem = st * 2 * bm * bd * es + 2 * bn * bd * es
            else:  # q and S resident, k and v pipelined
                smem = st * 2 * bn * bd * es + 2 * bm * bd * es
            max_d = _MAX_HEAD_DIM.get((kind, bm, bn, c.num_warps, st), 1 << 30)
            if smem <= limit and bd <= max_d:
                keep.append(c)
        return keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * c.num_stages)]

    return prune


_FWD_CONFIGS = _configs("fwd", _FWD_SHAPES)
_KV_CONFIGS = _configs("kv", _KV_SHAPES)
_Q_CONFIGS = _configs("q", _Q_SHAPES)


@triton.autotune(
    configs=_FWD_CONFIGS,
    key=["N_Q", "N_K", "BLOCK_D", "CAUSAL", "HAS_REL"],
    prune_configs_by={"early_config_prune": _attn_prune("fwd")},
)
@triton.jit
def _attn_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    r_ptr,
    o_ptr,
    lse_ptr,
    d_ptr,
    sm_scale,
    eps,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_rb,
    stride_rh,
    stride_rn,
    stride_rd,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    stride_mb,
    stride_mn,
    H,
    GROUP,
    N_Q,
    N_K,
    HEAD_DIM,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_REL: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N_Q
    mask_d = offs_d < HEAD_DIM
    mask_md = mask_m[:, None] & mask_d[None, :]

    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=mask_md, other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    hi = N_K
    if CAUSAL:
        hi = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N_K
        kt = tl.load(
            k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
            mask=mask_d[:, None] & mask_n[None, :],
            other=0.0,
        )
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
            mask=mask_n[:, None] & mask_d[None, :],
            other=0.0,
        )
        logits = mma(q, kt, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), DOT_FP32, ALLOW_TF32) * sm_scale
        valid = mask_n[None, :] & (offs_m[:, None] >= 0)
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        if HAS_MASK:
            keep = tl.load(mask_ptr + b * stride_mb + offs_n * stride_mn, mask=mask_n, other=0)
            valid = valid & (keep != 0)[None, :]
        logits = tl.where(valid, logits, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2((logits - m_use[:, None]) * 1.4426950408889634)
        corr = tl.exp2((m_i - m_use) * 1.4426950408889634)
        l_i = l_i * corr + tl.sum(p, 1)
        acc = mma(p.to(v.dtype), v, acc * corr[:, None], DOT_FP32, ALLOW_TF32)
        m_i = m_new

    nonempty = l_i > 0
    o = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, m_i + tl.log(tl.where(nonempty, l_i, 1.0)), float("-inf"))
    row = pid_bh.to(tl.int64) * N_Q + offs_m
    tl.store(lse_ptr + row, lse, mask=mask_m)
    out_off = b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    if HAS_REL:
        # epilogue: S = R_O / stab(O) (stored in o_ptr), D = 0.5 * rowsum(S * O)
        r = tl.load(
            r_ptr + b * stride_rb + h * stride_rh + offs_m[:, None] * stride_rn + offs_d[None, :] * stride_rd,
            mask=mask_md,
            other=0.0,
        ).to(tl.float32)
        s = r / stab_tl(o, eps)
        tl.store(d_ptr + row, 0.5 * tl.sum(s * o, 1), mask=mask_m)
        tl.store(o_ptr + out_off, s.to(o_ptr.dtype.element_ty), mask=mask_md)
    else:
        tl.store(o_ptr + out_off, o.to(o_ptr.dtype.element_ty), mask=mask_md)


@triton.autotune(
    configs=_KV_CONFIGS,
    key=["N_Q", "N_K", "BLOCK_D", "CAUSAL", "ATTNLRP"],
    prune_configs_by={"early_config_prune": _attn_prune("kv")},
)
@triton.jit
def _attn_rel_kv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    s_ptr,
    lse_ptr,
    d_ptr,
    rk_ptr,
    rv_ptr,
    sm_scale,
    eps,
    coef_v,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_sb,
    stride_sh,
    stride_sn,
    stride_sd,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    stride_mb,
    stride_mn,
    H,
    GROUP,
    N_Q,
    N_K,
    HEAD_DIM,
    ATTNLRP: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    HKV = H // GROUP
    b = (pid_bh // HKV).to(tl.int64)
    hk = pid_bh % HKV
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N_K
    mask_d = offs_d < HEAD_DIM
    mask_nd = mask_n[:, None] & mask_d[None, :]

    kv_off = offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    k = tl.load(k_ptr + b * stride_kb + hk * stride_kh + kv_off, mask=mask_nd, other=0.0)
    v = tl.load(
        v_ptr + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
        mask=mask_nd,
        other=0.0,
    )
    key_ok = mask_n
    if HAS_MASK:
        keep = tl.load(mask_ptr + b * stride_mb + offs_n * stride_mn, mask=mask_n, other=0)
        key_ok = key_ok & (keep != 0)

    acc_v = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    acc_k = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    lo = 0
    if CAUSAL:
        lo = ((pid_n * BLOCK_N) // BLOCK_M) * BLOCK_M
    for g in range(0, GROUP):
        h = hk * GROUP + g
        q_base = q_ptr + b * stride_qb + h * stride_qh
        s_base = s_ptr + b * stride_sb + h * stride_sh
        row_base = (b * H + h) * N_Q
        for start_m in range(lo, N_Q, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            mask_m = offs_m < N_Q
            mask_md = mask_m[:, None] & mask_d[None, :]
            q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=mask_md, other=0.0)
            s = tl.load(s_base + offs_m[:, None] * stride_sn + offs_d[None, :] * stride_sd, mask=mask_md, other=0.0)
            lse = tl.load(lse_ptr + row_base + offs_m, mask=mask_m, other=float("inf"))
            lse = tl.where(lse == float("-inf"), float("inf"), lse)  # fully masked rows: A = 0
            # transposed tiles [BLOCK_N, BLOCK_M]
            logits_t = mma(k, tl.trans(q), tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32), DOT_FP32, ALLOW_TF32)
            logits_t = logits_t * sm_scale
            valid = key_ok[:, None] & mask_m[None, :]
            if CAUSAL:
                valid = valid & (offs_n[:, None] <= offs_m[None, :])
            a_t = tl.where(valid, tl.exp2((logits_t - lse[None, :]) * 1.4426950408889634), 0.0)
            acc_v = mma(a_t.to(s.dtype), s, acc_v, DOT_FP32, ALLOW_TF32)
            if ATTNLRP:
                dd = tl.load(d_ptr + row_base + offs_m, mask=mask_m, other=0.0)
                dp_t = mma(v, tl.trans(s), tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32), DOT_FP32, ALLOW_TF32)
                g_t = a_t * (0.5 * dp_t - dd[None, :])
                acc_k = mma(g_t.to(q.dtype), q, acc_k, DOT_FP32, ALLOW_TF32)

    out_off = b * stride_ob + hk * stride_oh + offs_n[:, None] * stride_on + offs_d[None, :] * stride_od
    r_v = coef_v * v.to(tl.float32) * acc_v
    tl.store(rv_ptr + out_off, r_v.to(rv_ptr.dtype.element_ty), mask=mask_nd)
    if ATTNLRP:
        r_k = (0.5 * sm_scale) * k.to(tl.float32) * acc_k
        tl.store(rk_ptr + out_off, r_k.to(rk_ptr.dtype.element_ty), mask=mask_nd)


@triton.autotune(
    configs=_Q_CONFIGS,
    key=["N_Q", "N_K", "BLOCK_D", "CAUSAL"],
    prune_configs_by={"early_config_prune": _attn_prune("q")},
)
@triton.jit
def _attn_rel_q_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    mask_ptr,
    s_ptr,
    lse_ptr,
    d_ptr,
    rq_ptr,
    sm_scale,
    eps,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_sb,
    stride_sh,
    stride_sn,
    stride_sd,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    stride_mb,
    stride_mn,
    H,
    GROUP,
    N_Q,
    N_K,
    HEAD_DIM,
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_FP32: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N_Q
    mask_d = offs_d < HEAD_DIM
    mask_md = mask_m[:, None] & mask_d[None, :]

    q = tl.load(
        q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
        mask=mask_md,
        other=0.0,
    )
    s = tl.load(
        s_ptr + b * stride_sb + h * stride_sh + offs_m[:, None] * stride_sn + offs_d[None, :] * stride_sd,
        mask=mask_md,
        other=0.0,
    )
    row = pid_bh.to(tl.int64) * N_Q + offs_m
    lse = tl.load(lse_ptr + row, mask=mask_m, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)
    dd = tl.load(d_ptr + row, mask=mask_m, other=0.0)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh

    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    hi = N_K
    if CAUSAL:
        hi = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N_K
        mask_nd = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask_nd, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask_nd, other=0.0)
        logits = mma(q, tl.trans(k), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), DOT_FP32, ALLOW_TF32)
        logits = logits * sm_scale
        valid = mask_m[:, None] & mask_n[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        if HAS_MASK:
            keep = tl.load(mask_ptr + b * stride_mb + offs_n * stride_mn, mask=mask_n, other=0)
            valid = valid & (keep != 0)[None, :]
        a = tl.where(valid, tl.exp2((logits - lse[:, None]) * 1.4426950408889634), 0.0)
        dp = mma(s, tl.trans(v), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), DOT_FP32, ALLOW_TF32)
        g = a * (0.5 * dp - dd[:, None])
        acc = mma(g.to(k.dtype), k, acc, DOT_FP32, ALLOW_TF32)

    r_q = (0.5 * sm_scale) * q.to(tl.float32) * acc
    tl.store(
        rq_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
        r_q.to(rq_ptr.dtype.element_ty),
        mask=mask_md,
    )


def _check_attention(q, k, v, relevance, key_padding_mask):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("attention expects q [B, H, Nq, d], k and v [B, Hkv, Nk, d]")
    B, H, _, d = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != d:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] == 0 or H % k.shape[1]:
        raise ValueError(f"kv heads ({k.shape[1]}) must divide query heads ({H})")
    if relevance is not None and relevance.shape != q.shape:
        raise ValueError(f"relevance {tuple(relevance.shape)} must have q's shape {tuple(q.shape)}")
    if key_padding_mask is not None and key_padding_mask.shape != (B, k.shape[2]):
        raise ValueError(f"key_padding_mask must be [B, Nk] = [{B}, {k.shape[2]}], got {tuple(key_padding_mask.shape)}")


def _mask_args(key_padding_mask, q):
    if key_padding_mask is None:
        return q, 0, 0, False
    m = key_padding_mask.to(torch.uint8)
    return m, m.stride(0), m.stride(1), True


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _run_forward(q, k, v, relevance, causal, key_padding_mask, scale, eps, wrap):
    """Launch the forward kernel. relevance None: returns (O fp32, lse); else (S in q.dtype, lse, D)."""
    B, H, n_q, d = q.shape
    n_k = k.shape[2]
    has_rel = relevance is not None
    out = torch.empty((B, H, n_q, d), dtype=q.dtype if has_rel else torch.float32, device=q.device)
    lse = torch.empty((B, H, n_q), dtype=torch.float32, device=q.device)
    dd = torch.empty((B, H, n_q), dtype=torch.float32, device=q.device) if has_rel else lse
    r = relevance if has_rel else q
    m, smb, smn, has_mask = _mask_args(key_padding_mask, q)

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)

    launcher(_attn_fwd_kernel, wrap)[grid](
        q,
        k,
        v,
        m,
        r,
        out,
        lse,
        dd,
        float(scale),
        float(eps),
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *r.stride(),
        *out.stride(),
        smb,
        smn,
        H,
        H // k.shape[1],
        n_q,
        n_k,
        d,
        CAUSAL=bool(causal),
        HAS_MASK=has_mask,
        HAS_REL=has_rel,
        BLOCK_D=_block_d(d),
        **dot_flags(q.dtype),
    )
    return (out, lse, dd) if has_rel else (out, lse)


def attention_forward_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    _wrap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel: returns ``O`` (float32, [B, H, Nq, d]) and ``lse`` (float32, [B, H, Nq]).

    ``_wrap`` is internal (True inside the ``triton_op``: launch through ``torch.library.wrap_triton``).
    """
    _check_attention(q, k, v, None, key_padding_mask)
    check_triton_inputs(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _run_forward(q, k, v, None, causal, key_padding_mask, scale, 0.0, _wrap)


def attention_relevance_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    relevance: torch.Tensor,
    rule: str = "attnlrp",
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
    *,
    _wrap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch forward(+S, D) and the relevance kernels; returns ``(R_q, R_k, R_v)`` in ``q``'s dtype.

    ``_wrap`` is internal (True inside the ``triton_op``: launch through ``torch.library.wrap_triton``).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    _check_attention(q, k, v, relevance, key_padding_mask)
    check_triton_inputs(q, k, v, relevance)
    B, H, n_q, d = q.shape
    h_kv, n_k = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    attnlrp = rule == "attnlrp"
    s, lse, dd = _run_forward(q, k, v, relevance, causal, key_padding_mask, scale, eps, _wrap)
    m, smb, smn, has_mask = _mask_args(key_padding_mask, q)
    flags = dot_flags(q.dtype)
    r_v = torch.empty((B, h_kv, n_k, d), dtype=q.dtype, device=q.device)
    r_k = torch.empty_like(r_v) if attnlrp else torch.zeros((B, h_kv, n_k, d), dtype=q.dtype, device=q.device)
    common = (*q.stride(), *k.stride(), *v.stride(), *s.stride())

    def grid_kv(meta):
        return (triton.cdiv(n_k, meta["BLOCK_N"]), B * h_kv)

    launcher(_attn_rel_kv_kernel, _wrap)[grid_kv](
        q,
        k,
        v,
        m,
        s,
        lse,
        dd,
        r_k,
        r_v,
        scale,
        float(eps),
        0.5 if attnlrp else 1.0,
        *common,
        *r_v.stride(),
        smb,
        smn,
        H,
        H // h_kv,
        n_q,
        n_k,
        d,
        ATTNLRP=attnlrp,
        CAUSAL=bool(causal),
        HAS_MASK=has_mask,
        BLOCK_D=_block_d(d),
        **flags,
    )
    if not attnlrp:
        return torch.zeros((B, H, n_q, d), dtype=q.dtype, device=q.device), r_k, r_v

    r_q = torch.empty((B, H, n_q, d), dtype=q.dtype, device=q.device)

    def grid_q(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)

    launcher(_attn_rel_q_kernel, _wrap)[grid_q](
        q,
        k,
        v,
        m,
        s,
        lse,
        dd,
        r_q,
        scale,
        float(eps),
        *common,
        *r_q.stride(),
        smb,
        smn,
        H,
        H // h_kv,
        n_q,
        n_k,
        d,
        CAUSAL=bool(causal),
        HAS_MASK=has_mask,
        BLOCK_D=_block_d(d),
        **flags,
    )
    return r_q, r_k, r_v


def _valid_mask(q, k, causal, key_padding_mask):
    """Boolean [B, 1, Nq, Nk] (or broadcastable) mask of visible (query, key) pairs."""
    n_q, n_k = q.shape[2], k.shape[2]
    valid = torch.ones((1, 1, n_q, n_k), dtype=torch.bool, device=q.device)
    if causal:
        valid = valid & torch.ones((n_q, n_k), dtype=torch.bool, device=q.device).tril()
    if key_padding_mask is not None:
        valid = valid & key_padding_mask.to(torch.bool)[:, None, None, :]
    return valid


def attention_forward_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense torch forward: ``(O, lse)`` in the compute dtype (float32 for 16-bit inputs with ``upcast``)."""
    dt = compute_dtype(q.dtype) if upcast else q.dtype
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    group = q.shape[1] // k.shape[1]
    qf = q.to(dt)
    kf = k.to(dt).repeat_interleave(group, dim=1)
    vf = v.to(dt).repeat_interleave(group, dim=1)
    valid = _valid_mask(q, k, causal, key_padding_mask)
    logits = (scale * qf @ kf.transpose(-1, -2)).masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    a = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return a @ vf, lse


def attention_relevance_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    relevance: torch.Tensor,
    rule: str = "attnlrp",
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense N x N torch reference of CP-LRP / AttnLRP; returns ``(R_q, R_k, R_v)`` in ``q``'s dtype.

    Computes in float32 for 16-bit inputs with ``upcast`` (float64 stays float64).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    dt = compute_dtype(q.dtype) if upcast else q.dtype
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    B, H, n_q, d = q.shape
    h_kv, n_k = k.shape[1], k.shape[2]
    group = H // h_kv
    qf, rf = q.to(dt), relevance.to(dt)
    kf = k.to(dt).repeat_interleave(group, dim=1)
    vf = v.to(dt).repeat_interleave(group, dim=1)
    valid = _valid_mask(q, k, causal, key_padding_mask)
    logits = scale * qf @ kf.transpose(-1, -2)
    a = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)
    o = a @ vf
    s = rf / stab(o, eps)

    def fold(t):  # sum the query heads that share a kv head
        return t.reshape(B, h_kv, group, n_k, d).sum(2)

    ats = fold(a.transpose(-1, -2) @ s)
    if rule == "cp":
        r_v = v.to(dt) * ats
        return torch.zeros_like(q), torch.zeros_like(k), r_v.to(q.dtype)
    r_v = 0.5 * v.to(dt) * ats
    dd = 0.5 * (s * o).sum(-1, keepdim=True)
    dp = s @ vf.transpose(-1, -2)
    g = a * (0.5 * dp - dd)
    g = g.masked_fill(~valid, 0.0)
    r_q = 0.5 * scale * qf * (g @ kf)
    r_k = 0.5 * scale * k.to(dt) * fold(g.transpose(-1, -2) @ qf)
    return r_q.to(q.dtype), r_k.to(q.dtype), r_v.to(q.dtype)


@triton_op(
    "attention_relevance",
    schema=(
        "(Tensor q, Tensor k, Tensor v, Tensor relevance, str rule, bool causal, Tensor? key_padding_mask, "
        "float scale, float eps) -> (Tensor, Tensor, Tensor)"
    ),
)
def _attention_relevance_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    relevance: torch.Tensor,
    rule: str,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    scale: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ts = (q, k, v, relevance)
    if use_triton(*ts) and len({t.dtype for t in ts}) == 1:
        return attention_relevance_triton(q, k, v, relevance, rule, causal, key_padding_mask, scale, eps, _wrap=True)
    return attention_relevance_ref(q, k, v, relevance, rule, causal, key_padding_mask, scale, eps)


@triton_op(
    "attention_forward",
    schema="(Tensor q, Tensor k, Tensor v, bool causal, Tensor? key_padding_mask, float scale) -> (Tensor, Tensor)",
)
def _attention_forward_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    ts = (q, k, v)
    if use_triton(*ts) and len({t.dtype for t in ts}) == 1:
        return attention_forward_triton(q, k, v, causal, key_padding_mask, scale, _wrap=True)
    o, lse = attention_forward_ref(q, k, v, causal, key_padding_mask, scale)
    return o.float(), lse.float()


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention forward without the N x N matrix: ``(O, lse)``, both float32.

    q [B, H, Nq, d], k/v [B, Hkv, Nk, d] (Hkv divides H), causal: key j visible to query i iff j <= i,
    key_padding_mask [B, Nk] bool (True = keep), scale default 1/sqrt(d). ``lse`` [B, H, Nq] is the natural
    log-sum-exp of the scaled masked logits (-inf for fully masked rows, whose O is 0).
    """
    _check_attention(q, k, v, None, key_padding_mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return torch.ops.lrp_kernels.attention_forward(q, k, v, bool(causal), key_padding_mask, scale)


def attention_relevance(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    relevance: torch.Tensor,
    rule: str = "attnlrp",
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relevance of softmax attention ``softmax(scale q k^T) v`` (see the module docstring for the maths).

    Args:
        q: [B, H, Nq, d]; k, v: [B, Hkv, Nk, d] with Hkv dividing H (grouped-query attention);
        relevance: R_O [B, H, Nq, d]; rule: "attnlrp" or "cp" (CP-LRP: R_q = R_k = 0);
        causal: key j visible to query i iff j <= i; key_padding_mask: [B, Nk] bool, True = keep;
        scale: default 1/sqrt(d); eps: stabiliser.

    Returns ``(R_q, R_k, R_v)`` in ``q``'s dtype through ``torch.ops.lrp_kernels.attention_relevance``: Triton kernels
    with memory linear in N on CUDA, the dense torch reference otherwise.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    _check_attention(q, k, v, relevance, key_padding_mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return torch.ops.lrp_kernels.attention_relevance(
        q, k, v, relevance, rule, bool(causal), key_padding_mask, scale, float(eps)
    )
