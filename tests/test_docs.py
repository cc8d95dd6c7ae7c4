"""The runnable examples in docs/ run."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest
import torch

import lrp_fx
from lrp_fx.rules.registry import _RULES

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_add_a_rule_example_runs_and_conserves():
    text = (DOCS / "rules.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "register_rule" in b)
    scope: dict = {}
    op = torch.ops.aten.logcumsumexp.default
    assert op not in _RULES  # the example registers a rule for an op that has none (nothing is replaced)
    try:
        exec(compile(example, "docs/rules.md", "exec"), scope)
    finally:
        _RULES.pop(op, None)
    res, x = scope["res"], scope["x"]
    torch.testing.assert_close(res.relevance.sum(1), torch.ones(2), rtol=1e-4, atol=1e-4)
    # the registered rule is what ran: without it the op is a missing rule; with it, R_x[i] = sum_{t >= i} R_t
    # exp(x_i - y_t), where the mean hands each step R_t = y_t / sum_t y_t
    with pytest.raises(lrp_fx.MissingRuleError, match="logcumsumexp"):
        lrp_fx.attribute(scope["Model"](), x, target=torch.ones(2, 1))
    y = torch.logcumsumexp(x.double(), 1)
    R_t = y / y.sum(1, keepdim=True)
    weights = torch.exp(x.double()[:, None, :] - y[:, :, None]).tril()  # [sample, t, i]
    torch.testing.assert_close(res.relevance.double(), (R_t[:, :, None] * weights).sum(1), rtol=1e-4, atol=1e-6)


def test_python_examples_of_the_api_and_explain_pages_run(tmp_path, monkeypatch):
    """The composite example of docs/api.md and the Python version of ``lrp-fx explain`` (docs/cli_explain.md)."""
    monkeypatch.chdir(tmp_path)
    for page in ("api.md", "cli_explain.md"):
        blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
        assert blocks, page
        for block in blocks:
            exec(compile(textwrap.dedent(block), f"docs/{page}", "exec"), {})
    assert (tmp_path / "chelsea_resnet18.png").is_file()
