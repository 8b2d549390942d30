"""Fault injection: Ctrl-C (once, twice), SIGTERM and SIGKILL (to the process group and to the
main process) at chosen moments of ``dln-book run``, ``sweep`` and ``jupyter-book build``.

Each command runs in a session of its own, as from a terminal, with a tag in its environment
that every process it starts inherits (Dask workers, Jupyter kernels, chapter 7's worker
processes), so that "no process of ours survives" is checked over every process of the
machine, not only over the tree (a leaked process has lost its parent). A chapter signals
the chosen moment by creating a marker file while it runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
import pytest

from dlnbook.export import SHARED_DIR
from tests.conftest import (
    BIN,
    REPO,
    chapter_notebook,
    dask_cluster,
    free_port,
    one_chapter_book,
    published,
)

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


@pytest.mark.waits
def test_killed_forced_rerun_keeps_the_previous_run_and_the_next_run_works(book, tmp_path):
    runs = tmp_path / "runs"
    marker = tmp_path / "running"
    cmd = run_cmd(book, runs, "seed=4", "pause=3", f"marker={str(marker)!r}")
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "KeyboardInterrupt" not in first.stdout + first.stderr  # kernel shut down quietly
    (folder,) = [runs / name for name in published(runs)]
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


# --- damaged run folders (issue 22.1) ---------------------------------------------------


def _delete_notebook(folder: Path) -> None:
    (folder / "01_wait.ipynb").unlink()


def _empty_record(folder: Path) -> None:
    (folder / "run.json").write_text("")


def _truncate_results(folder: Path) -> None:
    path = folder / "results.npz"
    path.write_bytes(path.read_bytes()[:40])


@pytest.mark.parametrize("damage", [_delete_notebook, _empty_record, _truncate_results])
def test_a_damaged_run_is_set_aside_and_executed_again(book, tmp_path, capfd, damage):
    from dlnbook.cli import main
    from dlnbook.rundirs import check_run

    runs = tmp_path / "runs"
    args = ["--book", str(book), "run", "1", "-p", "seed=8", "--runs-dir", str(runs)]
    assert main(args) == 0
    (folder,) = [p for p in runs.iterdir() if p.name != SHARED_DIR]
    capfd.readouterr()
    damage(folder)
    assert check_run(folder) is not None
    assert main(args) == 0
    out = capfd.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("01_wait: run folder damaged")]
    assert re.fullmatch(r"01_wait: run folder damaged \(.+\); set aside as .+", line), line
    assert "01_wait: started" in out and "up to date" not in out
    assert check_run(folder) is None  # executed again, complete
    (aside,) = [p for p in runs.iterdir() if p not in (folder, runs / SHARED_DIR)]
    assert re.fullmatch(rf"{folder.name}\.damaged-\d{{8}}T\d{{6}}Z", aside.name)
    assert main(args) == 0 and "01_wait: up to date" in capfd.readouterr().out


def test_a_truncated_notebook_in_the_book_cache_is_executed_again(book, tmp_path):
    """The book build's cache (``_build/executed``) goes through the same driver."""
    from dlnbook.chapters import discover_chapters
    from dlnbook.runner import plan_runs, run_plans
    from dlnbook.sphinx_ext import render_executed

    cache = tmp_path / "_build" / "executed"
    (plan,) = plan_runs(discover_chapters(book / "chapters"), {}, cache)
    lines: list[str] = []
    assert len(run_plans([plan], log=lines.append)) == 1
    notebook = plan.executed_notebook
    notebook.write_bytes(notebook.read_bytes()[:100])
    assert not plan.is_cached
    assert len(run_plans([plan], log=lines.append)) == 1  # executed again
    assert any("run folder damaged (01_wait.ipynb:" in x for x in lines), lines
    assert json.loads(render_executed(plan))["cells"]  # renders again


# --- full disk, runs folder replaced (issue 22.4) ----------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (root only); skipped where mounting is refused."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _kept(output: str) -> Path:
    (kept,) = re.findall(r"its files are kept in (\S+);", output)
    return Path(kept)


def test_a_full_disk_is_one_line_and_exit_1(book, tmp_path, tiny_disk):
    (tiny_disk / "filler").write_bytes(b"\0" * 1_900_000)  # leaves about 100 kB
    proc = subprocess.run(
        [str(c) for c in run_cmd(book, tiny_disk / "runs", "seed=9")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_traceback(proc.stdout + proc.stderr)
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("dln-book:")]
    assert re.match(
        rf"dln-book: error: no space left in {tiny_disk / 'runs'}: 01_wait-[0-9a-f]{{12}} needs "
        r"[\d.]+ MB \([\d.]+ MB free\)",
        line,
    ), line
    kept = _kept(line)
    assert (kept / "01_wait.ipynb").is_file() and (kept / "results.npz").is_file()
    shutil.rmtree(kept)
    assert published(tiny_disk / "runs") == []  # nothing half-written


def test_a_full_disk_mid_sweep_keeps_the_finished_points(book, tmp_path, capfd, monkeypatch):
    import errno

    from dlnbook.cli import main
    from dlnbook.runner import publish_run

    calls = []

    def fill_up(run_dir, files, replace=False, finalize=None):
        calls.append(run_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return publish_run(run_dir, files, replace, finalize)

    monkeypatch.setattr("dlnbook.runner.publish_run", fill_up)
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    args = ["--book", str(book), "sweep", "1", "-p", "seed=1,2,3", "--workers", "1"]
    assert main([*args, "--runs-dir", str(runs), "--sweeps-dir", str(sweeps)]) == 1
    err = [x for x in capfd.readouterr().err.splitlines() if x.startswith("dln-book:")]
    assert len(err) == 1 and f"no space left in {runs.resolve()}" in err[-1], err
    shutil.rmtree(_kept(err[-1]))
    assert published(runs) == [calls[0].name]  # the finished point is kept


def test_runs_replaced_by_a_file_mid_run_is_one_line_and_keeps_the_run(book, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    marker = tmp_path / "running"
    cmd = run_cmd(book, runs, "seed=10", "pause=2", f"marker={str(marker)!r}")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not marker.exists():
        assert proc.poll() is None
        time.sleep(0.1)
    runs.rmdir()
    runs.write_text("not a folder")
    out, err = (x.decode() for x in proc.communicate(timeout=120))
    assert proc.returncode == 1, out + err
    no_traceback(out + err)
    (line,) = [x for x in err.splitlines() if x.startswith("dln-book:")]
    assert line.startswith(f"dln-book: error: cannot write {runs.resolve()}/01_wait-"), line
    kept = _kept(line)
    assert (kept / "01_wait.ipynb").is_file() and (kept / "run.json").is_file()
    shutil.rmtree(kept)


# --- scheduler addresses, a cluster without workers, ports (issue 22.6, 22.8a) ----------


@pytest.mark.parametrize("address", ["localhost", "garbage", " ", "tcp://host", "tcp://h:0"])
def test_a_bad_scheduler_address_exits_2_with_one_line(book, tmp_path, capfd, address):
    from dlnbook.cli import main

    runs = tmp_path / "runs"
    args = ["--book", str(book), "sweep", "1", "-p", "seed=1,2", "--scheduler", address]
    assert main([*args, "--runs-dir", str(runs)]) == 2
    captured = capfd.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line == f"dln-book: error: bad scheduler address {address!r}: expected " + (
        "tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)"
    )
    assert not runs.exists()


def test_tls_without_certificates_exits_2_with_one_line(book, tmp_path):
    address = f"tls://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [BIN / "dln-book", "--book", book, "sweep", "1", "-p", "seed=1,2", "--scheduler", address]
        + ["--runs-dir", tmp_path / "runs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("dln-book: error: cannot ") and address in line, line


@pytest.mark.waits
def test_a_cluster_without_workers_is_reported_within_10_s(book, tmp_path):
    with dask_cluster(workers=0) as (address, _):
        cmd = [BIN / "dln-book", "--book", book, "sweep", "1", "-p", "seed=1,2"]
        cmd += ["--scheduler", address, "--runs-dir", tmp_path / "runs"]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    # 10 s of waiting, plus the start of dln-book and of its Dask client on a busy machine
    assert time.monotonic() - start < 20
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"dln-book: error: the cluster at {address} has no workers (waited 10 s); start "
        "workers, or pass --wait-for-workers"
    ]


def test_two_identical_runs_at_once_share_no_port(book, tmp_path):
    runs = tmp_path / "runs"
    cmds = [[str(c) for c in run_cmd(book, runs, "seed=12", "pause=1")] for _ in range(2)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in cmds]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for output in outputs:
        assert "already in use" not in output and "Traceback" not in output, output
    (folder,) = published(runs)
    from dlnbook.rundirs import check_run

    assert check_run(runs / folder) is None


def test_ctrl_c_right_after_the_start_stops_the_run(book, tmp_path):
    """Issue 18.7: no local cluster starts any more; a Ctrl-C as soon as execution begins
    stops the run at once, as in the middle of a chapter."""
    runs = tmp_path / "runs"

    def executing(tag: str) -> bool:
        log = tmp_path / f"out-{tag[:8]}.txt"
        return log.exists() and "executing 1 chapter run(s)" in log.read_text()

    cmd = run_cmd(book, runs, "seed=13", "pause=60")
    stopped = stop(cmd, executing, [(0, signal.SIGINT, True)], tmp_path)
    assert stopped.returncode == 130 and stopped.seconds < 5, stopped
    assert stopped.survivors == []
    no_traceback(stopped.output)
    assert "interrupted: kept 0 finished run(s), stopped 1 unfinished" in stopped.output
    assert published(runs) == []


def test_a_run_published_first_by_another_process_is_the_one_reported(tmp_path):
    """Issue 22.8: two identical runs at once; the outcome (and a sweep's points.csv row)
    describes the folder that stays, not the run that lost the race."""
    from dlnbook.chapters import discover_chapters
    from dlnbook.executor import Outcome
    from dlnbook.runner import _publish, plan_runs

    (tmp_path / "book").mkdir()
    book = one_chapter_book(tmp_path / "book", "01_wait", waiting_chapter())
    (plan,) = plan_runs(discover_chapters(book / "chapters"), {}, tmp_path / "runs")
    first = _publish(plan, Outcome({"01_wait.ipynb": b"{}"}, 1.5, "tcp://a:1"), None, False)
    second = _publish(plan, Outcome({"01_wait.ipynb": b"{}"}, 9.0, "tcp://b:2"), None, False)
    assert (first.seconds, first.worker) == (1.5, "tcp://a:1")
    assert (second.seconds, second.worker) == (1.5, "tcp://a:1")


def test_a_chapter_that_cannot_start_fails_instead_of_hanging(tmp_path, monkeypatch):
    """No scratch folder for the kernel (e.g. a full /tmp): the run fails in one line and the
    driver goes on; the thread that raised used to leave the driver waiting for ever."""
    import errno
    import threading

    from dlnbook.chapters import discover_chapters
    from dlnbook.runner import ChapterFailure, plan_runs, run_plans

    (tmp_path / "book").mkdir()
    book = one_chapter_book(tmp_path / "book", "01_wait", waiting_chapter())
    plans = plan_runs(discover_chapters(book / "chapters"), {}, tmp_path / "runs")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dlnbook.executor.tempfile.mkdtemp", full)
    failures = []

    def drive() -> None:
        try:
            run_plans(plans, log=lambda line: None)
        except ChapterFailure as exc:
            failures.extend(exc.failures)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the driver is still waiting"
    (failure,) = failures
    assert failure.error.startswith("not executed: OSError: [Errno 28] No space left"), failure
    assert failure.log.read_text().startswith("Traceback") and not plans[0].is_cached
