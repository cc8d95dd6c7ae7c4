"""Test setup for the Triton kernels.

Without CUDA the kernels run in Triton's interpreter on CPU tensors: ``TRITON_INTERPRET=1`` has to be set before
``triton.jit`` decorates the kernels, i.e. before ``kernels`` is imported, which this conftest does first.
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

import kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CAN_LAUNCH = torch.cuda.is_available() or kernels.INTERPRET


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device():
    """Where the Triton launchers run: CUDA if present, else CPU under the interpreter."""
    if not CAN_LAUNCH:
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 set before `kernels` is imported")
    return DEVICE


@pytest.fixture(autouse=True)
def _exact_fp32():
    """Full fp32 matmuls/convolutions on GPU while testing (the references are compared at fp32 tolerances)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
