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
    registered = _RULES.get(torch.ops.aten.cumsum.default)
    try:
        exec(compile(example, "docs/rules.md", "exec"), scope)
    finally:  # the example replaces the built-in cumsum rule: put it back
        if registered is None:
            _RULES.pop(torch.ops.aten.cumsum.default, None)
        else:
            _RULES[torch.ops.aten.cumsum.default] = registered
    res = scope["res"]
    torch.testing.assert_close(res.relevance.sum(1), torch.ones(2), rtol=1e-4, atol=1e-4)
