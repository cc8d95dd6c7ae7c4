"""Compile representative variants of every Triton kernel for sm_90 without a GPU (run as a script).

Used by ``test_kernels_sm90_compile.py`` in a subprocess without ``TRITON_INTERPRET``: the interpreter accepts code
that the real compiler rejects (layouts, dot shapes, dtypes), and ptxas ships with the triton wheel, so the full
TTIR -> TTGIR -> LLVM -> PTX -> cubin pipeline runs on a CPU-only machine. Exit code 77: this triton has a
different ``ASTSource`` API (the caller skips).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
os.environ.pop("TRITON_INTERPRET", None)

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.autotuner import Autotuner
except Exception:  # pragma: no cover - other triton versions
    sys.exit(77)

import kernels.attention as AT  # noqa: E402
import kernels.conv2d as CV  # noqa: E402
import kernels.linear_epsilon as LE  # noqa: E402
import kernels.linear_signsplit as LS  # noqa: E402
import kernels.signsplit_folded as SF  # noqa: E402
from kernels._common import gemm_configs  # noqa: E402

FLOATS = {"eps", "alpha", "beta", "gamma", "sm_scale", "coef_v"}
TARGET = GPUTarget("cuda", 90, 32)


def _jit(kernel):
    return kernel.fn if isinstance(kernel, Autotuner) else kernel  # autotuned kernels wrap the JITFunction


def compile_one(label, kernel, dtype, constexprs, config):
    fn = _jit(kernel)
    cx = {**constexprs, **config.kwargs}
    sig = {}
    for name in fn.arg_names:
        if name in cx:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*u8" if name == "mask_ptr" else ("*fp32" if name in ("lse_ptr", "d_ptr") else "*" + dtype)
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    try:
        src = ASTSource(fn, sig, cx)
    except TypeError:  # pragma: no cover - other triton versions
        sys.exit(77)
    k = triton.compile(src, target=TARGET, options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    assert "cubin" in k.asm, label
    print(f"ok {label} shared={k.metadata.shared}", flush=True)


def main():
    flags = {"DOT_FP32": False, "ALLOW_TF32": True}
    lin = gemm_configs("BLOCK_K", "BLOCK_N")[0]
    lin_fwd = gemm_configs("BLOCK_N", "BLOCK_K")[0]
    compile_one("epsilon_linear bf16", LE._epsilon_linear_kernel, "bf16", flags, lin)
    compile_one("epsilon_linear fp32 ieee", LE._epsilon_linear_kernel, "fp32", {**flags, "ALLOW_TF32": False}, lin)
    for dt, rule, nonneg in (("bf16", 2, False), ("fp32", 0, True), ("fp16", 1, False)):
        cx = {**flags, "RULE": rule, "X_NONNEG": nonneg}
        compile_one(
            f"signsplit fwd {dt} {rule}", LS._signsplit_linear_fwd_kernel, dt, {**cx, "HAS_BIAS": True}, lin_fwd
        )
        compile_one(f"signsplit bwd {dt} {rule}", LS._signsplit_linear_bwd_kernel, dt, cx, lin)
    ew = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1)
    compile_one("conv split bf16", CV._sign_split_kernel, "bf16", {}, ew)
    compile_one("conv scale bf16 gamma", CV._relevance_scale_kernel, "bf16", {"RULE": 2}, ew)
    compile_one("conv scale fp32 gamma+", CV._relevance_scale_kernel, "fp32", {"RULE": 4}, ew)
    compile_one("conv combine fp32", CV._combine_kernel, "fp32", {"TWO": True}, ew)
    folded = {"RULE": 2, "HAS_BIAS": True, "MIXED": True, "FOLD": True}
    compile_one("folded scale bf16 gamma", SF._folded_scale_kernel, "bf16", folded, ew)
    folded = {"RULE": 1, "HAS_BIAS": False, "MIXED": False, "FOLD": False}
    compile_one("folded scale fp32 alphabeta", SF._folded_scale_kernel, "fp32", folded, ew)
    compile_one("folded combine bf16", SF._combine_folded_kernel, "bf16", {}, ew)
    for dt, d, causal, mask, attnlrp in (("bf16", 128, True, True, True), ("fp32", 64, False, False, False)):
        cx = {**flags, "CAUSAL": causal, "HAS_MASK": mask, "BLOCK_D": d}
        compile_one(f"attn fwd {dt}", AT._attn_fwd_kernel, dt, {**cx, "HAS_REL": True}, AT._FWD_CONFIGS[1])
        compile_one(f"attn kv {dt}", AT._attn_rel_kv_kernel, dt, {**cx, "ATTNLRP": attnlrp}, AT._KV_CONFIGS[0])
        if attnlrp:
            compile_one(f"attn q {dt}", AT._attn_rel_q_kernel, dt, cx, AT._Q_CONFIGS[0])


if __name__ == "__main__":
    main()
