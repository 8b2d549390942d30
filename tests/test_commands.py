"""Every ``dln-book`` command the book shows works as shown.

The commands are collected from README.md, rerunning.md, intro.md, chapters/README.md, the
chapters' markdown cells, the parameters box the book build adds to each chapter page (with
the default parameters and with the smoke profile) and the example in each subcommand's
``--help``. A command is a line of a code block, an inline code span with arguments
(```dln-book run``` alone names the subcommand) or the line ``example: dln-book ...`` of a
``--help``. Each runs in-process with ``--dry-run``
(``list`` as it is) from a folder holding the YAML files the text shows (a ```yaml`` block
whose first line is ``# NAME.yml``); it must exit 0, or the status its text announces with a
comment such as ``# exits 2``, and write nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from dlnbook.chapters import discover_chapters, load_profile
from dlnbook.cli import _parser, main
from dlnbook.pagerules import parameters_box
from dlnbook.runner import plan_runs

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "rerunning.md", "intro.md", "chapters/README.md"]
FENCE = re.compile(r"^(`{3,})(?!\{)[^\n]*\n(.*?)^\1\s*$", re.M | re.S)  # not ```{directive}
SPAN = re.compile(r"``?([^`\n]+?)``?")


def commands_in(text: str) -> list[str]:
    """The ``dln-book`` command lines of a markdown text (see the module docs)."""
    found = []
    for _, block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("dln-book "):
                found.append(line)
    for span in SPAN.findall(FENCE.sub("", text)):
        words = span.split()
        if words[:1] == ["dln-book"] and (len(words) > 2 or words[1:] == ["list"]):
            found.append(span)
    return found


def shown_files(texts: list[str]) -> dict[str, str]:
    """The YAML files the text shows: ```yaml blocks whose first line is ``# NAME.yml``."""
    blocks = re.findall(r"^```yaml\n# (\S+\.yml)\n(.*?)^```", "\n".join(texts), re.M | re.S)
    return dict(blocks)


def help_examples() -> dict[str, str]:
    """Subcommand -> the text of its ``--help`` epilog."""
    (sub,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: parser.format_help() for name, parser in sub.choices.items()}


def box_texts() -> list[tuple[str, str]]:
    """The parameters box of every chapter, run with its defaults and with the smoke values."""
    chapters = discover_chapters(REPO / "chapters")
    boxes = []
    for name, profile in [("defaults", {}), ("smoke", load_profile(REPO / "profiles/smoke.yml"))]:
        for plan in plan_runs(chapters, profile, REPO / "_build" / "executed"):
            boxes.append((f"box {plan.chapter.name} ({name})", parameters_box(plan, name)))
    return boxes


def collect() -> tuple[list[tuple[str, str]], dict[str, str]]:
    sources = [(doc, (REPO / doc).read_text(encoding="utf-8")) for doc in DOCUMENTS]
    for path in sorted((REPO / "chapters").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        sources.append((path.name, "\n\n".join(markdown)))
    sources += box_texts()
    commands = [(where, command) for where, text in sources for command in commands_in(text)]
    for name, text in help_examples().items():
        commands += [
            (f"{name} --help", c) for c in re.findall(r"^example: (dln-book .+)$", text, re.M)
        ]
    return commands, shown_files([text for _, text in sources])


COMMANDS, FILES = collect()


def test_the_collection_finds_the_commands_of_every_kind():
    places = {where.split(" ")[0] for where, _ in COMMANDS}
    assert {"README.md", "rerunning.md", "intro.md", "box", "run", "sweep", "build"} <= places
    assert set(FILES) == {"points.yml", "deeper.yml"}
    examples = help_examples()
    for name in ("list", "run", "sweep", "build"):
        assert len(re.findall(r"example: dln-book ", examples[name])) == 1, name
    assert ("intro.md", "dln-book run 04_two_layers -p seed_init=2") in COMMANDS


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_shown_command_works(where, command, tmp_path, monkeypatch, capfd):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "profiles").symlink_to(REPO / "profiles")
    monkeypatch.chdir(tmp_path)
    expected = re.search(r"#.*\bexits (\d+)", command)
    argv = shlex.split(command, comments=True)[1:]
    if argv[0] != "list":
        argv.append("--dry-run")
    before = sorted(REPO.iterdir()), sorted(tmp_path.iterdir())
    try:
        status = main(["--book", str(REPO), *argv])
    except SystemExit as exc:  # argparse
        status = exc.code
    captured = capfd.readouterr()
    assert status == (int(expected[1]) if expected else 0), captured.err
    assert (sorted(REPO.iterdir()), sorted(tmp_path.iterdir())) == before, "a dry run wrote"
    if status == 2:
        assert len(captured.err.strip().splitlines()) == 1, captured.err
