"""The install cell: the first code cell of every chapter, for Colab and other bare kernels.

A chapter opened outside this repository's environment (a launch button to Colab, a
downloaded notebook) has no ``dlncore``: its first code cell pip-installs the requirement in
:data:`SOURCE_NAME`, ``dln-book[notebooks] @ git+<repository>@<commit>``, when the package is
missing, and does nothing where it is installed (``dln-book run``, the book build, Binder).
A commit cannot name itself, so the committed notebooks carry :data:`PLACEHOLDER`; the publish
workflow pins the download copies and the branch ``launch`` to the built commit with
``python -m dlnbook.installcell --git REPOSITORY COMMIT NOTEBOOK...`` (:func:`pin_notebook`).
The pin never enters a cache key: the build's own execution installs nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLACEHOLDER", "SOURCE_NAME", "install_cell_source", "is_install_cell", "pin_notebook"]

#: Name of the variable holding the pip requirement in the cell.
SOURCE_NAME = "DLN_BOOK_SOURCE"
#: The requirement of the committed notebooks: replaced when the notebooks are published.
PLACEHOLDER = "dln-book[notebooks] @ git+https://github.com/OWNER/dln-book@COMMIT"

_SOURCE_LINE = re.compile(rf'^{SOURCE_NAME} = "[^"\n]*"', re.MULTILINE)


def install_cell_source(source: str = PLACEHOLDER) -> str:
    """The code of the install cell (plain Python, so every tool that parses the chapters'
    code reads it), installing the pip requirement ``source``.

    Raises
    ------
    ValueError
        If ``source`` holds a quote or a newline.
    """
    if '"' in source or "\n" in source:
        raise ValueError(f"invalid package source {source!r}: no quotes or newlines")
    return (
        "# Installs the book's package where it is missing (Colab); does nothing where it is\n"
        "# installed. Pinned to the book's repository at the commit the book was built from.\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        f'{SOURCE_NAME} = "{source}"\n'
        'if importlib.util.find_spec("dlncore") is None:\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", '
        f"{SOURCE_NAME}], check=True)\n"
        "    importlib.invalidate_caches()"
    )


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def is_install_cell(cell: Mapping[str, Any]) -> bool:
    """Whether a notebook cell is the install cell (a code cell assigning :data:`SOURCE_NAME`)."""
    return cell.get("cell_type") == "code" and bool(_SOURCE_LINE.search(_source(cell)))


def pin_notebook(notebook: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of a notebook (nbformat 4 JSON) whose install cell installs the pip requirement
    ``source`` (a local wheel in the tests).

    Raises
    ------
    ValueError
        If the first code cell is not the install cell, or ``source`` is not a plain line.
    """
    nb = json.loads(json.dumps(notebook))
    code = [cell for cell in nb.get("cells", []) if cell.get("cell_type") == "code"]
    if not code or not is_install_cell(code[0]):
        raise ValueError(f"the first code cell does not assign {SOURCE_NAME}: no install cell")
    install_cell_source(source)  # validates the source
    line = f'{SOURCE_NAME} = "{source}"'
    code[0]["source"] = _SOURCE_LINE.sub(lambda _: line, _source(code[0]), count=1)
    return nb


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dlnbook.installcell``: pin the install cell of notebooks, in place; exit 2
    and nothing written if one of them cannot be pinned."""
    parser = argparse.ArgumentParser(
        prog="python -m dlnbook.installcell",
        description="Pin the install cell of chapter notebooks to a package source, in place.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--source", help="pip requirement, e.g. 'dln-book[notebooks] @ URL'")
    group.add_argument("--git", nargs=2, metavar=("REPOSITORY", "COMMIT"))
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    source = args.source
    if args.git and not all(args.git):
        parser.error("a repository URL and a commit are needed to pin the install cell")
    if args.git:
        source = f"dln-book[notebooks] @ git+{args.git[0].rstrip('/')}@{args.git[1]}"
    try:
        pinned = {p: pin_notebook(json.loads(p.read_text("utf-8")), source) for p in args.notebooks}
    except (OSError, ValueError) as exc:  # nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, nb in pinned.items():
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
