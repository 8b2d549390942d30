"""The install cell, every chapter's first code cell: pip-installs :data:`PLACEHOLDER`'s
package where ``dlncore`` is missing (Colab), nothing elsewhere. The publish workflow pins it
to the built commit: ``python -m dlnbook.installcell --git REPOSITORY COMMIT NOTEBOOK...``.
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
    """The code of the install cell (plain Python) installing the pip requirement ``source``
    (``ValueError`` if it holds a quote or a newline)."""
    if '"' in source or "\n" in source:
        raise ValueError(f"invalid package source {source!r}: no quotes or newlines")
    return (
        "# Installs the book's package where it is missing (Colab); does nothing where it is\n"
        "# installed. A published book pins it to its repository at the commit it was built\n"
        "# from; a local build keeps the placeholders OWNER and COMMIT.\n"
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


def is_install_cell(cell: Mapping[str, Any]) -> bool:
    """Whether a notebook cell is a code cell assigning :data:`SOURCE_NAME`."""
    return cell.get("cell_type") == "code" and bool(_SOURCE_LINE.search("".join(cell["source"])))


def pin_notebook(notebook: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of a notebook whose install cell installs ``source``; ``ValueError`` if the
    first code cell is not the install cell or ``source`` not a plain line."""
    nb = json.loads(json.dumps(notebook))
    code = [cell for cell in nb.get("cells", []) if cell.get("cell_type") == "code"]
    if not code or not is_install_cell(code[0]):
        raise ValueError(f"the first code cell does not assign {SOURCE_NAME}: no install cell")
    install_cell_source(source)  # validates the source
    line = f'{SOURCE_NAME} = "{source}"'
    code[0]["source"] = _SOURCE_LINE.sub(lambda _: line, "".join(code[0]["source"]), count=1)
    return nb


def main(argv: Sequence[str] | None = None) -> int:
    """Pin the install cell of notebooks in place; exit 2, nothing written, if one fails."""
    parser = argparse.ArgumentParser(
        prog="python -m dlnbook.installcell",
        description="Pin the install cell of chapter notebooks to a commit, in place.",
    )
    parser.add_argument("--git", nargs=2, metavar=("REPOSITORY", "COMMIT"), required=True)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if not all(args.git):
        parser.error("a repository URL and a commit are needed to pin the install cell")
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
