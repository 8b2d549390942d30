"""`dln-book list CHAPTER` lists that chapter only."""

from __future__ import annotations

from pathlib import Path

from dlnbook.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_list_one_chapter_by_number_or_name(capsys):
    assert main(["--book", str(REPO), "list", "2"]) == 0
    by_number = capsys.readouterr().out
    titles = [line for line in by_number.splitlines() if line and not line.startswith(" ")]
    assert titles[0].startswith("02_boundedness: ") and len(titles) == 2  # and the closing hint
    assert "seed_init" in by_number
    assert main(["--book", str(REPO), "list", "02_boundedness"]) == 0
    assert capsys.readouterr().out == by_number


def test_list_unknown_chapter_exits_2(capsys):
    assert main(["--book", str(REPO), "list", "12"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "unknown chapter '12'" in captured.err
