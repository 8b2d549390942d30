"""The code reads in short pieces: no function over 60 lines, no chapter code cell over 60 lines.

A function counts from its ``def`` line to its last line, docstring included (decorators not).
Computation that would make a chapter cell long belongs in a tested ``dlncore`` function.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = 60
MODULES = sorted(
    path.relative_to(REPO).as_posix()
    for package in ("dlncore", "dlnbook")
    for path in (REPO / package).rglob("*.py")
)
CHAPTERS = sorted(path.name for path in (REPO / "chapters").glob("*.ipynb"))


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function in ``source`` longer than ``limit`` lines."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}."
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = child.end_lineno - child.lineno + 1
                if lines > limit:
                    found.append((name[:-1], lines))
            visit(child, name)

    visit(ast.parse(source), "")
    return found


def long_code_cells(notebook: dict, limit: int = LIMIT) -> list[tuple[int, int]]:
    """``(cell index, lines)`` of every code cell of ``notebook`` longer than ``limit`` lines."""
    out = []
    for index, cell in enumerate(notebook["cells"]):
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell["cell_type"] == "code" and len(text.splitlines()) > limit:
            out.append((index, len(text.splitlines())))
    return out


def test_long_functions_counts_from_def_to_last_line_and_names_nested_ones():
    body = ['"""doc"""', *(f"x{i} = {i}" for i in range(58))]
    lines = ["@decorator", "def fits():", *("    " + b for b in body)]  # def + 59 lines
    lines += ["class A:", "    def over(self):", *("        " + b for b in body)]
    lines += ["        def inner():", "            pass"]  # A.over: def + 61 lines
    source = "\n".join(lines)
    assert long_functions(source) == [("A.over", 62)]
    assert long_functions(source, limit=59) == [("fits", 60), ("A.over", 62)]


def test_long_code_cells_counts_code_lines_only():
    cells = [
        {"cell_type": "markdown", "source": "x\n" * 80},
        {"cell_type": "code", "source": ["a = 1\n"] * 60},
        {"cell_type": "code", "source": "b = 2\n" * 61},
    ]
    assert long_code_cells({"cells": cells}) == [(2, 61)]


@pytest.mark.parametrize("module", MODULES)
def test_no_function_over_60_lines(module):
    """Issue 19: every function of dlncore and dlnbook fits in 60 lines."""
    long = long_functions((REPO / module).read_text(encoding="utf-8"))
    assert not long, f"{module}: functions over {LIMIT} lines (name, lines): {long}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_no_code_cell_over_60_lines(name):
    """Chapters read as documents: computation lives in tested dlncore functions."""
    notebook = json.loads((REPO / "chapters" / name).read_text(encoding="utf-8"))
    long = long_code_cells(notebook)
    assert not long, f"{name}: code cells over {LIMIT} lines (index, lines): {long}"
