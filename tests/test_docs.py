"""The runnable examples in docs/ run."""

from __future__ import annotations

import pathlib
import re

import torch

from lrp_fx.rules.registry import _RULES

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_add_a_rule_example_runs_and_conserves():
    text = (DOCS / "rules.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "register_rule" in b)
    scope: dict = {}
    op = torch.ops.aten.col2im.default
    assert op not in _RULES  # the example registers a rule for an op that has none (nothing is replaced)
    try:
        exec(compile(example, "docs/rules.md", "exec"), scope)
    finally:
        _RULES.pop(op, None)
    res = scope["res"]
    torch.testing.assert_close(res.relevance.sum((1, 2)), torch.ones(2), rtol=1e-4, atol=1e-4)
