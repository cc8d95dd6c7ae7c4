"""The stabilised denominator shared by every division rule.

Convention (Zennit's): ``stab(z) = z + eps * sgn(z)`` with ``sgn(0) = +1``, so a zero denominator becomes ``+eps``
and no entry ever changes sign. Keeping the exact convention is what makes parity tests exact.
"""

from __future__ import annotations

import torch
from torch import Tensor


def stabilize(z: Tensor, eps: float = 1e-6, nonneg: bool = False) -> Tensor:
    """Return ``z + eps * sgn(z)`` with ``sgn(0) = +1``.

    ``nonneg=True`` is a promise by the caller that ``z >= 0`` everywhere (a ReLU output, the sum of positive
    contributions of z+): the result is then ``z + eps`` in one pass instead of three.
    """
    if nonneg:
        return z + eps
    # two passes instead of where(z >= 0, z + eps, z - eps)'s four. The one departure from the convention: at
    # z = -0.0 (an exact negative zero) this gives -eps where sgn(0) = +1 gives +eps; there the numerator of every
    # rule that divides by stab(z) is a multiple of z (R_x = x * ..., R_a = a * ...) and hence zero as well.
    return z + torch.copysign(z.new_full((), eps), z)  # new_full, not torch.tensor: traceable under fake modes


def safe_divide(numerator: Tensor, denominator: Tensor, eps: float = 1e-6) -> Tensor:
    """``numerator / stab(denominator)``."""
    return numerator / stabilize(denominator, eps)
