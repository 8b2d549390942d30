"""Fault injection: Ctrl-C (once, twice), SIGTERM and SIGKILL (to the process group and to the
main process) at chosen moments of ``dln-book run``, ``sweep`` and ``jupyter-book build``.

Each command runs in a session of its own, as from a terminal, with a tag in its environment
that every process it starts inherits (Dask workers, Jupyter kernels, chapter 7's worker
processes), so that "no process of ours survives" is checked over every process of the
machine, not only over the tree (a leaked process has lost its parent). A chapter signals
the chosen moment by creating a marker file while it runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
import pytest

from tests.conftest import chapter_notebook, one_chapter_book

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TAG = "DLNBOOK_FAULT_TEST"

WAITING_PARAMETERS = """\
seed = 0  # seed of the data [>= 0]
pause = 0.0  # seconds to wait [>= 0]
marker = ''  # file created when the chapter runs
"""

WAITING_CODE = """\
import time
from pathlib import Path

import numpy as np

if marker:
    Path(marker).touch()
x = np.random.default_rng(seed).standard_normal(4)
time.sleep(pause)
np.savez("results.npz", x=x)
"""


def waiting_chapter() -> nbformat.NotebookNode:
    """A chapter that waits ``pause`` seconds after touching ``marker``."""
    return chapter_notebook(
        "# Waiting chapter\n\nWaits, then saves four numbers.", WAITING_PARAMETERS, WAITING_CODE
    )


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    return one_chapter_book(tmp_path_factory.mktemp("fault-book"), "01_wait", waiting_chapter())


def ours(tag: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``tag``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@dataclass
class Stopped:
    """What happened after the signals."""

    returncode: int | None
    seconds: float  # from the first signal to the exit of the main process
    output: str
    survivors: list[str]  # our processes still alive ``grace`` s after the first signal
    before: list[str]  # our processes when the first signal was sent


def _restore_sigint() -> None:  # a background shell may have started us with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(
    cmd: list[str],
    moment: Path | Callable[[str], bool],
    signals: list[tuple[float, int, bool]],
    tmp: Path,
    env: dict[str, str] | None = None,
    settle: float = 0.0,
    grace: float = 10.0,
) -> Stopped:
    """Run ``cmd`` until ``moment`` exists (or ``moment(tag)`` is true; plus ``settle`` s),
    then send ``signals``.

    Each signal is ``(delay after the previous one, signal, to the whole group?)``.
    """
    tag = uuid.uuid4().hex
    log = tmp / f"out-{tag[:8]}.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), TAG: tag},
            start_new_session=True,
            preexec_fn=_restore_sigint,
        )
    deadline = time.monotonic() + 180
    while not (moment(tag) if callable(moment) else moment.exists()):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the chosen moment never came"
        time.sleep(0.1)
    time.sleep(settle)
    before = [" ".join(p.cmdline())[:120] for p in ours(tag)]
    first = time.monotonic()
    for delay, sig, group in signals:
        time.sleep(delay)
        if proc.poll() is None:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    seconds = time.monotonic() - first
    left = ours(tag)
    while left and time.monotonic() - first < grace:
        time.sleep(0.2)
        left = ours(tag)
    survivors = []
    for p in left:
        try:
            survivors.append(" ".join(p.cmdline())[:120])
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return Stopped(proc.wait(), seconds, log.read_text(), survivors, before)


def run_cmd(book: Path, runs: Path, *params: str) -> list[str]:
    return [BIN / "dln-book", "--book", book, "run", "1", "-p", *params, "--runs-dir", runs]


def published(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


@pytest.mark.parametrize(
    ("name", "signals", "exit_code", "within"),
    [
        ("ctrl-c", [(0, signal.SIGINT, True)], 130, 5),
        # the second Ctrl-C ends the process at once if the first has not already
        ("ctrl-c twice", [(0, signal.SIGINT, True), (0.2, signal.SIGINT, True)], -2, 5),
        ("sigint to the main process", [(0, signal.SIGINT, False)], 130, 5),
        ("sigterm", [(0, signal.SIGTERM, False)], 143, 5),
        ("kill -9 of the group", [(0, signal.SIGKILL, True)], -9, 1),
        ("kill -9 of the main process", [(0, signal.SIGKILL, False)], -9, 1),
    ],
)
def test_stopping_a_run(book, tmp_path, name, signals, exit_code, within):
    runs = tmp_path / "runs"
    marker = tmp_path / "running"
    cmd = run_cmd(book, runs, "pause=60", f"marker={str(marker)!r}")
    stopped = stop(cmd, marker, signals, tmp_path)
    assert sum("ipykernel" in p for p in stopped.before) == 1, stopped.before  # a real check
    assert stopped.returncode in {exit_code, 130}, stopped.output
    assert stopped.seconds < within, stopped
    assert stopped.survivors == [], stopped.survivors
    assert published(runs) == []  # nothing half-published, no hidden folder left
    if stopped.returncode > 0:
        no_traceback(stopped.output)
        (line,) = [x for x in stopped.output.splitlines() if x.startswith("interrupted")]
        assert line.startswith("interrupted: kept 0 finished run(s), stopped 1 unfinished")


def test_killed_forced_rerun_keeps_the_previous_run_and_the_next_run_works(book, tmp_path):
    runs = tmp_path / "runs"
    marker = tmp_path / "running"
    cmd = run_cmd(book, runs, "seed=4", "pause=3", f"marker={str(marker)!r}")
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "KeyboardInterrupt" not in first.stdout + first.stderr  # kernel shut down quietly
    (folder,) = runs.iterdir()
    record = (folder / "run.json").read_text()
    marker.unlink()
    stopped = stop([*cmd, "--force"], marker, [(0, signal.SIGKILL, True)], tmp_path)
    assert stopped.survivors == []
    assert (folder / "run.json").read_text() == record  # the previous run, untouched
    again = subprocess.run([*cmd, "--force"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (folder / "run.json").read_text() != record
    assert published(runs) == [folder.name]  # what the kill left was pruned


def test_ctrl_c_in_a_sweep_keeps_finished_points(book, tmp_path):
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    cmd = [BIN / "dln-book", "--book", book, "sweep", "1", "-p", "pause=0,60", "--workers", "1"]
    cmd += ["--runs-dir", runs, "--sweeps-dir", sweeps]
    # the moment: the first point is published (its folder appears), the second one runs

    def first_published(tag: str) -> bool:
        return any(not name.startswith(".") for name in published(runs))

    stopped = stop(cmd, first_published, [(0, signal.SIGINT, True)], tmp_path, settle=1.0)
    assert stopped.returncode == 130, stopped.output
    assert stopped.seconds < 5 and stopped.survivors == []
    no_traceback(stopped.output)
    assert "interrupted: kept 1 finished point(s)" in stopped.output
    (name,) = published(runs)
    assert re.fullmatch(r"01_wait-[0-9a-f]{12}", name) and (runs / name / "run.json").is_file()
    assert not sweeps.exists()


@pytest.mark.slow
def test_ctrl_c_stops_jupyter_book_build(tmp_path):
    from tests.book.conftest import jupyter_book_exe, make_mini_book

    marker = tmp_path / "running"
    nb = waiting_chapter()
    nb.cells[1].source = (
        nb.cells[1]
        .source.replace("pause = 0.0", "pause = 60.0")
        .replace("marker = ''", f"marker = {str(marker)!r}")
    )
    root = make_mini_book(tmp_path / "book", {"01_wait": nb})
    cmd = [jupyter_book_exe(), "build", root, "--path-output", tmp_path / "out"]
    stopped = stop(cmd, marker, [(0, signal.SIGINT, True)], tmp_path)
    assert stopped.returncode != 0 and stopped.seconds < 5, stopped
    assert stopped.survivors == []
    assert "interrupted: kept 0 finished run(s)" in stopped.output
    executed = tmp_path / "out" / "_build" / "executed"
    assert published(executed) == []


@pytest.mark.slow
def test_killing_dln_book_build_while_it_renders_ends_jupyter_book(tmp_path):
    from tests.book.conftest import make_mini_book

    root = make_mini_book(tmp_path / "book", {"01_wait": waiting_chapter()})
    params = tmp_path / "p.yml"
    params.write_text("01_wait:\n  seed: 3\n")
    cmd = [BIN / "dln-book", "--book", root, "build", "--params", params]

    def rendering(tag: str) -> bool:
        return any("jupyter-book" in " ".join(p.cmdline()) for p in ours(tag))

    # jupyter-book would finish the book on its own after a while: it must die at once
    stopped = stop(cmd, rendering, [(0, signal.SIGKILL, False)], tmp_path, grace=2)
    assert stopped.survivors == [], stopped.survivors


@pytest.mark.slow
def test_killing_a_run_of_chapter_7_ends_its_worker_processes(tmp_path):
    """Chapter 7 computes in worker processes of its kernel: they end with the run."""
    runs = tmp_path / "runs"
    cmd = [BIN / "dln-book", "--book", REPO, "run", "7", "-p", "workers=2", "steps=60000"]
    cmd += ["tanh_steps=100", "samples=500", "record=40", "--runs-dir", runs]
    tag_file = tmp_path / "workers-up"

    # the moment: the kernel has started its two worker processes
    import threading

    def watch() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if "ipykernel" in cmdline:
                    try:
                        children = proc.children()
                        env = proc.environ()
                    except psutil.Error:
                        continue
                    if (
                        TAG in env
                        and len([c for c in children if "spawn_main" in " ".join(c.cmdline())]) >= 2
                    ):
                        tag_file.touch()
                        return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    stopped = stop(cmd, tag_file, [(0, signal.SIGKILL, True)], tmp_path, settle=1.0)
    assert stopped.survivors == [], stopped.survivors
    assert published(runs) == []


def test_list_into_a_closed_pipe_is_quiet():
    proc = subprocess.run(
        f"'{BIN / 'dln-book'}' --book '{REPO}' list | head -1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.startswith("01_") and proc.stderr == ""
