"""Helpers shared by the LRP Triton kernels.

* ``INTERPRET``: whether Triton runs in interpreter mode (``TRITON_INTERPRET=1``, read at import time, like
  ``triton.jit`` does). Under the interpreter the kernels use one small fixed block configuration instead of
  autotuning, and upcast ``tl.dot`` operands to float32 (the interpreter's bfloat16 ``tl.dot`` is wrong).
* ``stab``/``stab_tl``: the stabiliser ``stab(z) = z + eps * sgn(z)`` with ``sgn(0) = +1``, in torch and in Triton.
* ``mma``: ``tl.dot`` with an explicit input precision (TF32 follows ``torch.backends.cuda.matmul.allow_tf32``).
* ``launcher``: ``torch.library.wrap_triton`` inside a ``torch.library.triton_op`` so that ``torch.compile`` and
  ``torch.export`` can see the kernels; direct calls and interpreted kernels launch the bare kernel.
"""

import os

import torch
import triton
import triton.language as tl

LIB = "lrp_kernels"
"""``torch.library`` namespace of the operators: ``torch.ops.lrp_kernels.<name>``."""

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# the sign-split rules and their codes in the Triton kernels, shared by the linear and convolution kernels
# (gamma+: gamma's positive half alone, for a layer before a ReLU)
RULES = {"zplus": 0, "alphabeta": 1, "gamma": 2, "gamma+": 4}
GAMMAS = ("gamma", "gamma+")  # rules with gamma's weights and the output's sign masks: they read the output z


def linear_impl() -> str:
    """Which implementation the linear operators launch on CUDA: ``"fused"`` (the Triton GEMMs of
    ``linear_epsilon.py`` / ``linear_signsplit.py``, the default), ``"stacked"`` (cuBLAS GEMMs + fused elementwise
    kernels, ``linear_stacked.py``) or ``"folded"`` (the sign-split rules with fewer GEMMs, ``signsplit_folded.py``;
    epsilon as ``"stacked"``), from ``$LRP_FX_LINEAR_KERNEL`` (read per call, so a benchmark can switch)."""
    return _impl("LRP_FX_LINEAR_KERNEL", "fused", ("fused", "stacked", "folded"))


def conv_impl() -> str:
    """Which pipeline the sign-split convolution operator launches on CUDA: ``"stacked"`` (``conv2d.py``, the
    default) or ``"folded"`` (``signsplit_folded.py``), from ``$LRP_FX_CONV_KERNEL`` (read per call)."""
    return _impl("LRP_FX_CONV_KERNEL", "stacked", ("stacked", "folded"))


def _impl(variable: str, default: str, choices: tuple) -> str:
    impl = os.environ.get(variable, default).strip().lower()
    if impl not in choices:
        raise ValueError(f"{variable} must be one of {', '.join(repr(c) for c in choices)}, got {impl!r}")
    return impl


"""Dtypes the Triton kernels accept; anything else (float64, ...) runs the torch reference."""


def stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sgn(z)`` with ``sgn(0) = +1``, computed in ``z``'s dtype (bitwise equal to the written formula)."""
    return torch.where(z >= 0, z + eps, z - eps)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a torch reference computes in: 16-bit floats are upcast to float32, float64 stays."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """True when the Triton path applies: every given tensor is on CUDA with a kernel dtype."""
    ts = [t for t in tensors if t is not None]
    return all(t.is_cuda and t.dtype in KERNEL_DTYPES for t in ts)


def check_triton_inputs(*tensors: torch.Tensor | None) -> None:
    """Raise unless the tensors can go to a Triton launcher (CUDA, or CPU under the interpreter)."""
    ts = [t for t in tensors if t is not None]
    dtype = ts[0].dtype
    if dtype not in KERNEL_DTYPES:
        raise TypeError(f"Triton LRP kernels take float32/float16/bfloat16 tensors, got {dtype}")
    for t in ts:
        if t.dtype != dtype:
            raise TypeError(f"all tensors must share one dtype, got {dtype} and {t.dtype}")
        if not (t.is_cuda or INTERPRET):
            raise RuntimeError("Triton LRP kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")


def dot_flags(dtype: torch.dtype) -> dict:
    """Constexprs of ``mma`` for inputs of ``dtype``."""
    allow_tf32 = dtype != torch.float32 or bool(torch.backends.cuda.matmul.allow_tf32)
    return {"DOT_FP32": INTERPRET, "ALLOW_TF32": allow_tf32}


def launcher(kernel, wrap: bool):
    """The kernel to launch.

    ``wrap=True`` (inside a ``triton_op``): ``torch.library.wrap_triton(kernel)``, so that fake-tensor tracing,
    ``torch.compile`` and ``torch.export`` see the launch (eagerly it is the bare kernel). ``wrap=False`` (direct
    ``*_triton`` calls) and under the interpreter: the bare kernel.
    """
    if wrap and not INTERPRET:
        return torch.library.wrap_triton(kernel)
    return kernel


_SMEM_CACHE: dict = {}


def triton_op(name: str, schema: str):
    """``torch.library.triton_op(f"lrp_kernels::{name}", mutates_args=(), schema=schema)``.

    Falls back to the schema inferred from the type annotations if this torch's ``triton_op`` has no ``schema``
    argument.
    """
    try:
        return torch.library.triton_op(f"{LIB}::{name}", mutates_args=(), schema=schema)
    except TypeError:  # pragma: no cover - older torch
        return torch.library.triton_op(f"{LIB}::{name}", mutates_args=())


def smem_limit(device: torch.device) -> int:
    """Opt-in shared memory per block of ``device`` in bytes (cached; a conservative default if unknown)."""
    if device not in _SMEM_CACHE:
        try:
            props = torch.cuda.get_device_properties(device)
            _SMEM_CACHE[device] = int(getattr(props, "shared_memory_per_block_optin", 0) or 101376)
        except Exception:  # pragma: no cover - only without a working CUDA device
            _SMEM_CACHE[device] = 101376
    return _SMEM_CACHE[device]


def gemm_configs(out_name: str, red_name: str) -> list:
    """Autotune configs of the linear-layer GEMM kernels.

    ``out_name`` is the block constexpr of the output columns, ``red_name`` the one of the reduction dimension.
    Under the interpreter: a single 16x16x16 configuration (no autotuning, fast and exercising the masks).
    """
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, out_name: 16, red_name: 16, "GROUP_M": 2}, num_warps=4, num_stages=1)]
    # Chosen by compiling every kernel variant for sm_90 (ptxas -v): the sign-split kernels form x+/x- and W1/W2 in
    # registers and keep up to two accumulators, so 64-row tiles are the ones that compile without register spills;
    # 128x128 stays in the list for the single-accumulator variants on large problems.
    shapes = [
        # BLOCK_M, out, red, warps, stages
        (64, 128, 64, 8, 2),
        (64, 64, 64, 4, 2),
        (64, 64, 32, 4, 3),
        (128, 128, 32, 8, 2),
    ]
    return [
        triton.Config({"BLOCK_M": bm, out_name: bo, red_name: br, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bo, br, w, s in shapes
    ]


@triton.jit
def stab_tl(z, eps):
    """``z + eps * sgn(z)`` with ``sgn(0) = +1``."""
    return z + tl.where(z >= 0, eps, -eps)


@triton.jit
def mma(a, b, acc, DOT_FP32: tl.constexpr, ALLOW_TF32: tl.constexpr):
    """``acc + a @ b`` with an fp32 accumulator; operands upcast to fp32 when ``DOT_FP32`` (interpreter)."""
    if DOT_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if ALLOW_TF32:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    else:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def swizzle_2d(pid, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped program ordering of a 2-D output grid (as in the Triton matmul tutorial) for L2 reuse."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_c = tl.cdiv(C, BLOCK_C)
    num_pid_in_group = GROUP_M * num_pid_c
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_c = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_c


def gemm_prune(a_names: tuple, b_name: str, out_name: str, red_name: str):
    """``early_config_prune`` dropping configs whose pipelined operand tiles exceed the shared memory.

    Estimate per config: ``num_stages * (BLOCK_M * RED * bytes(A operands) + RED * OUT * bytes(B))``, where the A
    operands are the tensors named in ``a_names`` (tiles [BLOCK_M, RED]) and B the one named ``b_name``.
    """

    def prune(configs, named_args, **kwargs):
        if len(configs) <= 1:
            return configs
        try:
            limit = smem_limit(named_args[b_name].device)
            a_bytes = sum(named_args[n].element_size() for n in a_names)
            b_bytes = named_args[b_name].element_size()
        except Exception:  # pragma: no cover - e.g. symbolic arguments while tracing
            return configs
        keep = []
        for c in configs:
            bm, bo, br = c.kwargs["BLOCK_M"], c.kwargs[out_name], c.kwargs[red_name]
            if c.num_stages * (bm * br * a_bytes + br * bo * b_bytes) <= limit:
                keep.append(c)
        return keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs[out_name] * c.kwargs[red_name])]

    return prune
