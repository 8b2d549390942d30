"""The code part of a chapter's cache key: the ``dlncore`` modules it runs.

That is the package's ``__init__.py`` and what it imports, and every module the chapter's cells
import or reach as attributes (``dc.saddles.f``), followed transitively, with the packages on
the way and their data folders; modules count by their syntax tree without docstrings.
Imports are read from the source, never executed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PACKAGE", "chapter_digest", "chapter_modules", "code_digest", "code_fingerprint"]

#: Import name of the package whose modules count (its folder may be named otherwise).
PACKAGE = "dlncore"


@functools.lru_cache(maxsize=512)
def _parse_module(source: bytes) -> ast.Module | None:
    """Syntax tree without docstrings (statements that are only a string); None if it does
    not parse. Cached: callers only read it."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(getattr(node, "body", None), list):
            node.body = [
                s
                for s in node.body
                if not (isinstance(s, ast.Expr) and isinstance(getattr(s.value, "value", 0), str))
            ]
    return tree


@functools.lru_cache(maxsize=512)
def code_fingerprint(source: bytes) -> str:
    """What a module computes: its syntax tree without docstrings (by its bytes if it does
    not parse). Cached: every chapter of a book fingerprints the same modules."""
    tree = _parse_module(source)
    return hashlib.sha256(source).hexdigest() if tree is None else ast.dump(tree)


@functools.lru_cache(maxsize=512)
def _parse_cell(source: str) -> ast.Module | None:
    """Syntax tree of a code cell, IPython magics translated; None if it does not parse."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return None


def _hidden(parts: Iterable[str]) -> bool:
    return any(p.startswith(".") or p == "__pycache__" for p in parts)


@dataclass(frozen=True)
class _Package:
    """The modules of the package ``name`` whose sources are in ``root``, by dotted name;
    ``layout``: the paths of its ``*.py`` files below ``root``."""

    root: Path
    name: str
    layout: frozenset[str]

    @classmethod
    def at(cls, root: Path, name: str) -> _Package:
        files = root.rglob("*.py") if root.is_dir() else ()
        return cls(root, name, frozenset(p.relative_to(root).as_posix() for p in files))

    def file(self, module: str) -> Path | None:
        parts = module.split(".")
        if parts[0] == self.name:
            for path in ("/".join([*parts[1:], "__init__.py"]), "/".join(parts[1:]) + ".py"):
                if path in self.layout:
                    return self.root / path
        return None

    def with_parents(self, module: str) -> list[str]:
        """The module and the packages above it that exist."""
        parts = module.split(".")
        names = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return [n for n in names if self.file(n) is not None]

    def imports(self, tree: ast.AST, module: str | None) -> set[str]:
        """Modules that ``tree`` (of ``module``; None for cells) imports or reaches by
        attribute."""
        found: set[str] = set()
        aliases: dict[str, str] = {}  # bound name -> module of this package
        is_package = module is not None and self.file(module).name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.update(self.with_parents(alias.name))
                    target = alias.name if alias.asname else alias.name.split(".")[0]
                    if self.file(target) is not None:
                        aliases[alias.asname or target] = target
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level and module is not None:
                    anchor = module.split(".")
                    anchor = anchor[: len(anchor) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                found.update(self.with_parents(base))
                for alias in node.names:
                    if self.file(sub := f"{base}.{alias.name}") is not None:
                        found.add(sub)
                        aliases[alias.asname or alias.name] = sub
        for node in ast.walk(tree):
            chain: list[str] = []
            while isinstance(node, ast.Attribute):
                chain.insert(0, node.attr)
                node = node.value
            if chain and isinstance(node, ast.Name) and node.id in aliases:
                name = aliases[node.id]
                for attr in chain:
                    if self.file(name := f"{name}.{attr}") is None:
                        break
                    found.add(name)
        return found

    def data_files(self, module: str) -> list[Path]:
        """Files below the sub-folders of a package that hold no ``*.py`` (hidden files and
        ``__pycache__`` excepted)."""
        path = self.file(module)
        if path is None or path.name != "__init__.py":
            return []
        return [
            file
            for folder in sorted(path.parent.iterdir())
            if folder.is_dir() and not _hidden([folder.name]) and not any(folder.glob("*.py"))
            for file in sorted(folder.rglob("*"))
            if file.is_file() and not _hidden(file.relative_to(folder).parts)
        ]

    def closure(self, start: Iterable[str]) -> set[str]:
        """``start`` with every module they import, transitively."""
        todo, seen = [m for name in start for m in self.with_parents(name)], set()
        while todo:
            if (name := todo.pop()) not in seen:
                seen.add(name)
                todo.extend(_module_imports(self, name, self.file(name).read_bytes()) - seen)
        return seen

    def chapter_modules(self, code_cells: Iterable[str]) -> list[str]:
        """:func:`chapter_modules` of this package."""
        trees = [tree for tree in map(_parse_cell, code_cells) if tree is not None]
        # one namespace: a module imported in one cell is used in the next ones
        chapter = ast.Module(body=[stmt for tree in trees for stmt in tree.body], type_ignores=[])
        return sorted(self.closure({self.name} | self.imports(chapter, None)))


@functools.lru_cache(maxsize=1024)
def _module_imports(lib: _Package, module: str, source: bytes) -> frozenset[str]:
    """:meth:`_Package.imports` of a module's source (cached: each chapter of a book walks
    the same modules)."""
    tree = _parse_module(source)
    return frozenset(() if tree is None else lib.imports(tree, module))


def chapter_modules(
    code_cells: Iterable[str], core_dir: str | Path, package: str = PACKAGE
) -> list[str]:
    """Sorted dotted names of the modules of ``package`` (sources in ``core_dir``) that a
    chapter with these code cells runs: the package's core and what the cells import."""
    return _Package.at(Path(core_dir), package).chapter_modules(code_cells)


def code_digest(code_cells: Iterable[str], core_dir: str | Path, package: str = PACKAGE) -> str:
    """SHA-256 of the modules :func:`chapter_modules` finds (path and fingerprint) and of
    their packages' data files (path and bytes)."""
    lib = _Package.at(Path(core_dir), package)
    digest = hashlib.sha256()
    for name in lib.chapter_modules(code_cells):
        path = lib.file(name)
        digest.update(path.relative_to(lib.root).as_posix().encode() + b"\0")
        digest.update(code_fingerprint(path.read_bytes()).encode() + b"\0")
        for data in lib.data_files(name):
            digest.update(b"data\0" + data.relative_to(lib.root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(data.read_bytes()).hexdigest().encode() + b"\0")
    return digest.hexdigest()


def chapter_digest(notebook: str | Path, core_dir: str | Path) -> str:
    """:func:`code_digest` of the code cells of a notebook file."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    return code_digest(("".join(c.get("source", "")) for c in code), core_dir)
