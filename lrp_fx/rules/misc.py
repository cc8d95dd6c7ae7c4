"""Rules for further ops met in the model zoo (added by the coverage sweep).

* ``aten.as_strided``: a linear selection op (every output element is a copy of one input element), so it joins the
  exact routing rule of ``routing.py``: ``R_x = J^T R``, an output position hands its relevance to the input element
  it was read from, and an input element read several times collects the relevance of all its copies. Conservative:
  ``sum R_x = sum R``. Met in ``convnext_*``, where the decomposition of ``adaptive_avg_pool2d`` on a channels-last
  tensor re-strides the pooled mean.
* ``topk``, ``sort``, ``max.dim``/``min.dim`` and the order statistics ``median``, ``nanmedian``, ``kthvalue``,
  ``mode``: every output value is a copy of one input element, so the same exact routing applies (the relevance of
  a median goes to the element that is the median).
"""

from __future__ import annotations

from .base import Route
from .registry import aten, register_rule
from .routing import route

MISC_ROUTING_OPS = [
    aten.as_strided.default,
    aten.topk.default,
    aten.sort.default,
    aten.sort.stable,
    aten.max.dim,
    aten.min.dim,
    # order statistics: each output value is a copy of one input element (``median`` over everything returns the
    # value only, and its gradient still picks one element), so they route exactly like ``max.dim``
    aten.median.dim,
    aten.median.default,
    aten.nanmedian.dim,
    aten.nanmedian.default,
    aten.kthvalue.default,
    aten.mode.default,
]

register_rule(MISC_ROUTING_OPS, group="routing", accepts=(Route,), default=Route())(route)
