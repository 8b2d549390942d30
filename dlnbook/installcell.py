"""The install cell: the first code cell of every chapter, for Colab and other bare kernels.

A chapter opened outside this repository's environment (a "launch" button to Colab, a
downloaded notebook) has no ``dlncore``. Its first code cell installs the book's package when
it is missing and does nothing when it is present (``dln-book run``, the book build, Binder,
whose ``binder/postBuild`` installs the checkout). This is the QuantEcon lectures' convention,
with the difference that the package is pinned: the cell installs the pip requirement in
:data:`SOURCE_NAME`, ``dln-book[notebooks] @ git+<repository>@<commit>``.

A commit cannot name itself, so the committed notebooks carry the placeholder
:data:`PLACEHOLDER`, and whoever publishes the notebooks pins them to the built commit with
:func:`pin_notebook` (``python -m dlnbook.installcell --git REPOSITORY COMMIT NOTEBOOK...``):
the publish workflow pins the copies the book offers for download and the branch ``launch``
(the built commit plus the pinned notebooks) that the launch buttons open. The build's own
execution never installs anything (the package is there), so the pin does not enter any cache
key. The tests pin a chapter to a local wheel (``dln-book[notebooks] @ file:///...whl``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PLACEHOLDER",
    "SOURCE_NAME",
    "TAGS",
    "git_source",
    "install_cell_source",
    "is_install_cell",
    "main",
    "pin_notebook",
]

#: Name of the variable holding the pip requirement in the cell.
SOURCE_NAME = "DLN_BOOK_SOURCE"
#: The requirement of the committed notebooks: replaced when the notebooks are published.
PLACEHOLDER = "dln-book[notebooks] @ git+https://github.com/OWNER/dln-book@COMMIT"
#: Cell tags: folded in the book (the reader can unfold it).
TAGS = ("hide-input",)

_SOURCE_LINE = re.compile(rf'^{SOURCE_NAME} = "[^"\n]*"', re.MULTILINE)


def install_cell_source(source: str = PLACEHOLDER) -> str:
    """The code of the install cell, installing the pip requirement ``source``.

    Parameters
    ----------
    source : str
        A pip requirement naming the book's package, e.g.
        ``dln-book[notebooks] @ git+https://github.com/OWNER/dln-book@<commit>``.

    Returns
    -------
    str
        Cell source: plain Python (pip of the kernel's interpreter), so that every tool that
        parses the chapters' code reads it.
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


def git_source(repository: str, commit: str) -> str:
    """The pip requirement of the package at ``commit`` of the git ``repository`` URL.

    Parameters
    ----------
    repository : str
        E.g. ``https://github.com/OWNER/dln-book`` (``repository.url`` of ``_config.yml``).
    commit : str
        A commit hash (or any git ref).

    Returns
    -------
    str
        ``dln-book[notebooks] @ git+<repository>@<commit>``.
    """
    if not repository or not commit:
        raise ValueError("a repository URL and a commit are needed to pin the install cell")
    return f"dln-book[notebooks] @ git+{repository.rstrip('/')}@{commit}"


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def is_install_cell(cell: Mapping[str, Any]) -> bool:
    """Whether a notebook cell is the install cell (a code cell assigning :data:`SOURCE_NAME`)."""
    return cell.get("cell_type") == "code" and bool(_SOURCE_LINE.search(_source(cell)))


def pin_notebook(notebook: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of a notebook whose install cell installs ``source``.

    Parameters
    ----------
    notebook : mapping
        The notebook (nbformat 4 JSON).
    source : str
        The pip requirement (see :func:`git_source`; a local wheel in the tests).

    Returns
    -------
    dict
        The notebook with the requirement of its install cell replaced.

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
    """``python -m dlnbook.installcell``: pin the install cell of notebooks, in place."""
    parser = argparse.ArgumentParser(
        prog="python -m dlnbook.installcell",
        description="Pin the install cell of chapter notebooks to a package source, in place.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--source", help="pip requirement, e.g. 'dln-book[notebooks] @ URL'")
    group.add_argument("--git", nargs=2, metavar=("REPOSITORY", "COMMIT"))
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        source = args.source if args.source else git_source(*args.git)
        pinned = {}
        for path in args.notebooks:
            pinned[path] = pin_notebook(json.loads(path.read_text(encoding="utf-8")), source)
    except (OSError, ValueError) as exc:  # nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, nb in pinned.items():
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
