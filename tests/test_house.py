"""House rules checked over the source: no function in harness/ grows past 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_LINES = 80
HARNESS = Path(__file__).resolve().parent.parent / "harness"


def function_lengths() -> dict[str, int]:
    """``file:function`` → its length in lines (decorators excluded), for every function."""
    lengths = {}
    for path in sorted(HARNESS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                where = f"{path.relative_to(HARNESS).as_posix()}:{node.lineno}:{node.name}"
                lengths[where] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_function_is_longer_than_80_lines() -> None:
    lengths = function_lengths()
    assert len(lengths) > 500, "the walk found too few functions: is HARNESS right?"
    too_long = {where: lines for where, lines in lengths.items() if lines > MAX_LINES}
    assert not too_long, f"functions over {MAX_LINES} lines (split them): {too_long}"
