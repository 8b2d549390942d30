"""Which library code a chapter runs: the code part of its cache key.

A chapter's cached run is stale when the code it executes changes. That code is

- the **core**: the package's ``__init__.py`` (for ``dlncore``, ``dlncore/__init__.py``) and
  every module it imports, followed transitively. Any ``import dlncore...`` runs the package's
  ``__init__.py``, so every chapter that imports the package at all runs the core;
- the modules of the package that the chapter's code cells import (``import dlncore.plotting``,
  ``from dlncore.experiments import tracking``, ``from dlncore.experiments.stepsize import f``)
  or reach as attributes of an imported module (``import dlncore as dc`` then
  ``dc.saddles.escape_time(...)``), with every module those import, followed transitively
  (imports inside functions count), and the ``__init__.py`` of every package on the way
  (``import dlncore.experiments.tracking`` runs ``dlncore/experiments/__init__.py``).

Every other module of the package does not count: editing ``dlncore/experiments/tracking.py``
(only chapter 6 imports it) leaves the other chapters' keys alone. Modules count by their
syntax tree without docstrings (:func:`code_fingerprint`), so comments, docstrings and
formatting change no key. Imports are read from the source, never executed; an import spelled
as a string (``importlib.import_module("dlncore.x")``) is not followed (the package has none).

Package data counts by its bytes: the files below the sub-folders of a package that hold no
module (e.g. ``dlncore/experiments/data/published/*.csv``) count for every chapter
that runs a module of that package (``dlncore/experiments/__init__.py`` is then among its
modules). Other files (editor backups beside the modules, ``__pycache__``, hidden files) do not.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PACKAGE", "chapter_digest", "chapter_modules", "code_digest", "code_fingerprint"]

#: Import name of the library whose modules count (its sources may sit in a folder of another
#: name, e.g. a test's copy).
PACKAGE = "dlncore"


def _is_docstring(stmt: ast.stmt) -> bool:
    value = getattr(stmt, "value", None)
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(value, ast.Constant)
        and isinstance(value.value, str)
    )


@functools.lru_cache(maxsize=512)
def _parse_module(source: bytes) -> ast.Module | None:
    """Syntax tree of a module's source without docstrings (any statement that is only a
    string literal); None when it does not parse. Cached (every chapter reads the core);
    callers only read it."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(getattr(node, "body", None), list):
            node.body = [stmt for stmt in node.body if not _is_docstring(stmt)]
    return tree


def code_fingerprint(source: bytes) -> str:
    """What a Python module computes, as a text that two sources share exactly when they
    compute the same: its syntax tree without docstrings (comments, blank lines, formatting
    and docstrings do not count); a file that does not parse counts by its bytes."""
    tree = _parse_module(source)
    return hashlib.sha256(source).hexdigest() if tree is None else ast.dump(tree)


@functools.lru_cache(maxsize=512)
def _parse_cell(source: str) -> ast.Module | None:
    """Syntax tree of a notebook code cell (IPython magics such as ``%pip`` are translated
    to Python first); None when it does not parse. Cached; callers only read it."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return None


class _Package:
    """The modules of one package directory, by dotted name."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name

    def file(self, module: str) -> Path | None:
        """Source file of a dotted module name of this package, None if it has none."""
        parts = module.split(".")
        if parts[0] != self.name:
            return None
        base = self.root.joinpath(*parts[1:])
        for path in (base / "__init__.py", base.with_suffix(".py")):
            if path.is_file():
                return path
        return None

    def with_parents(self, module: str) -> list[str]:
        """The module and every package above it that exists in this package."""
        parts = module.split(".")
        names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return [n for n in names if self.file(n) is not None]

    def imports(self, tree: ast.AST, module: str | None) -> set[str]:
        """Modules of this package that ``tree`` imports or reaches by attribute.

        ``module`` is the dotted name of the module the tree belongs to (None for notebook
        cells); it resolves relative imports.
        """
        found: set[str] = set()
        aliases: dict[str, str] = {}  # bound name -> module of this package
        is_package = module is not None and self.file(module).name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.update(self.with_parents(alias.name))
                    bound = alias.asname or alias.name.split(".")[0]
                    target = alias.name if alias.asname else alias.name.split(".")[0]
                    if self.file(target) is not None:
                        aliases[bound] = target
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level and module is not None:
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                found.update(self.with_parents(base))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if self.file(sub) is not None:
                        found.add(sub)
                        aliases[alias.asname or alias.name] = sub
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain: list[str] = []
                cur: ast.expr = node
                while isinstance(cur, ast.Attribute):
                    chain.insert(0, cur.attr)
                    cur = cur.value
                if isinstance(cur, ast.Name) and cur.id in aliases:
                    name = aliases[cur.id]
                    for attr in chain:
                        name = f"{name}.{attr}"
                        if self.file(name) is None:
                            break
                        found.add(name)
        return found

    def data_files(self, module: str) -> list[Path]:
        """Files of the data folders of a package: everything below its sub-folders that hold
        no module (no ``*.py``: not packages, not namespace packages), but hidden files and
        ``__pycache__``; empty for a module that is not a package."""
        path = self.file(module)
        if path is None or path.name != "__init__.py":
            return []
        files = []
        for folder in sorted(path.parent.iterdir()):
            skip = folder.name.startswith(".") or folder.name == "__pycache__"
            if not folder.is_dir() or skip or any(folder.glob("*.py")):
                continue
            for file in sorted(folder.rglob("*")):
                rel = file.relative_to(folder).parts
                if file.is_file() and not any(p.startswith(".") or p == "__pycache__" for p in rel):
                    files.append(file)
        return files

    def closure(self, start: Iterable[str]) -> set[str]:
        """``start`` with every module of this package they import, transitively."""
        todo = [m for name in start for m in self.with_parents(name)]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            tree = _parse_module(self.file(name).read_bytes())
            if tree is not None:  # one that does not parse counts by its bytes in the digest
                todo.extend(self.imports(tree, name) - seen)
        return seen


def chapter_modules(
    code_cells: Iterable[str], core_dir: str | Path, package: str = PACKAGE
) -> list[str]:
    """Sorted dotted names of the package modules a chapter runs (the core and what its
    code cells import, see the module docstring), e.g. ``["dlncore", "dlncore.bounds", ...]``.

    Parameters
    ----------
    code_cells : iterable of str
        Sources of the chapter's code cells.
    core_dir : str or Path
        Directory of the package's sources (e.g. ``.../dlncore``).
    package : str
        The package's import name.
    """
    package = _Package(Path(core_dir), package)
    trees = [tree for tree in map(_parse_cell, code_cells) if tree is not None]
    # one namespace: a module imported in one cell is used in the next ones
    chapter = ast.Module(body=[stmt for tree in trees for stmt in tree.body], type_ignores=[])
    start = {package.name} | package.imports(chapter, None)  # the core, and the chapter's
    return sorted(package.closure(start))


def code_digest(code_cells: Iterable[str], core_dir: str | Path, package: str = PACKAGE) -> str:
    """Hex SHA-256 of the package code a chapter runs (arguments as :func:`chapter_modules`):
    each module's path relative to ``core_dir`` and its :func:`code_fingerprint`, and the
    bytes of the package data of its packages."""
    lib = _Package(Path(core_dir), package)
    digest = hashlib.sha256()
    for name in chapter_modules(code_cells, core_dir, package):
        path = lib.file(name)
        digest.update(path.relative_to(lib.root).as_posix().encode() + b"\0")
        digest.update(code_fingerprint(path.read_bytes()).encode() + b"\0")
        for data in lib.data_files(name):  # package data, by its bytes
            digest.update(b"data\0" + data.relative_to(lib.root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(data.read_bytes()).hexdigest().encode() + b"\0")
    return digest.hexdigest()


def chapter_digest(notebook: str | Path, core_dir: str | Path) -> str:
    """:func:`code_digest` of the code cells of a chapter notebook (an ``.ipynb`` file) for the
    package sources in ``core_dir``."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    return code_digest(("".join(c.get("source", "")) for c in code), core_dir)
