"""Triton kernels for the heavy LRP rules, each with a pure-torch reference of the same rule.

Every public rule function goes through a ``torch.library.triton_op`` (namespace ``lrp_kernels``): Triton kernels for
CUDA tensors in float32/float16/bfloat16, the torch reference otherwise, so that ``torch.compile`` and
``torch.export`` can trace through them. ``*_triton`` launch the kernels directly (CUDA, or CPU tensors under
``TRITON_INTERPRET=1``); ``*_ref`` are the references. See ``docs/kernels.md``.
"""

from ._common import INTERPRET, stab
from .attention import (
    attention_forward,
    attention_forward_ref,
    attention_forward_triton,
    attention_relevance,
    attention_relevance_ref,
    attention_relevance_triton,
)
from .conv2d import (
    epsilon_conv2d,
    epsilon_conv2d_ref,
    epsilon_conv2d_triton,
    signsplit_conv2d,
    signsplit_conv2d_ref,
    signsplit_conv2d_triton,
)
from .linear_epsilon import epsilon_linear, epsilon_linear_ref, epsilon_linear_triton
from .linear_signsplit import signsplit_linear, signsplit_linear_ref, signsplit_linear_triton
from .linear_stacked import epsilon_linear_stacked_triton, signsplit_linear_stacked_triton

__all__ = [
    "INTERPRET",
    "stab",
    "epsilon_linear",
    "epsilon_linear_ref",
    "epsilon_linear_triton",
    "signsplit_linear",
    "signsplit_linear_ref",
    "signsplit_linear_triton",
    "epsilon_linear_stacked_triton",
    "signsplit_linear_stacked_triton",
    "epsilon_conv2d",
    "epsilon_conv2d_ref",
    "epsilon_conv2d_triton",
    "signsplit_conv2d",
    "signsplit_conv2d_ref",
    "signsplit_conv2d_triton",
    "attention_forward",
    "attention_forward_ref",
    "attention_forward_triton",
    "attention_relevance",
    "attention_relevance_ref",
    "attention_relevance_triton",
]
