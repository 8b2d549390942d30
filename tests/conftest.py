import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import dlncore as dc
from dlnbook.export import SHARED_DIR


@pytest.fixture
def problem() -> dc.Problem:
    """A small generic problem: d_x = 5, d_y = 4, m = 30, noisy rank-3 teacher."""
    return dc.synthetic_problem(5, 4, 30, 3, seed=11, noise=0.1)


@pytest.fixture
def small() -> dc.Problem:
    """Random data: d_x = 4, d_y = 3, m = 20 (seed 0)."""
    rng = np.random.default_rng(0)
    return dc.Problem(rng.standard_normal((4, 20)), rng.standard_normal((3, 20)))


def naive_gradients(X, Y, weights):
    """Backpropagation through the samples, written independently of dlncore."""
    acts = [X]
    for w in weights:
        acts.append(w @ acts[-1])
    delta = acts[-1] - Y
    grads = [None] * len(weights)
    for j in reversed(range(len(weights))):
        grads[j] = delta @ acts[j].T
        delta = weights[j].T @ delta
    return grads


def naive_loss(X, Y, weights):
    out = X
    for w in weights:
        out = w @ out
    return 0.5 * np.sum((out - Y) ** 2)


def central_differences(loss, weights, h=1e-6):
    """Central-difference gradients of ``loss(weights)`` with respect to every factor."""
    grads = []
    for j, w in enumerate(weights):
        fd = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            plus = [v.copy() for v in weights]
            minus = [v.copy() for v in weights]
            plus[j][idx] += h
            minus[j][idx] -= h
            fd[idx] = (loss(plus) - loss(minus)) / (2 * h)
        grads.append(fd)
    return grads


def chapter_notebook(intro: str, parameters: str, *cells) -> nbformat.NotebookNode:
    """A chapter as the book's conventions want it: a markdown cell ``intro`` (the title), the
    ``parameters``-tagged cell, then ``cells`` (code sources, or ready-made nbformat cells)."""
    return new_notebook(
        cells=[
            new_markdown_cell(intro),
            new_code_cell(parameters, metadata={"tags": ["parameters"]}),
            *(new_code_cell(c) if isinstance(c, str) else c for c in cells),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )


def one_chapter_book(root: Path, name: str, notebook: nbformat.NotebookNode) -> Path:
    """``root`` as a book folder holding ``chapters/<name>.ipynb``; returns ``root``."""
    (root / "chapters").mkdir()
    nbformat.write(notebook, root / "chapters" / f"{name}.ipynb")
    return root


# --- shared by the command-line, sweep and fault tests ---------------------------------

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def published(runs: Path) -> list[str]:
    """Names in a runs folder (hidden ones included), sorted; empty when it does not exist.
    The pages' shared theme and MathJax (``runs/_static``) are not a run."""
    if not runs.exists():
        return []
    return sorted(p.name for p in runs.iterdir() if p.name != SHARED_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dask_cluster(workers: int = 2) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [
        subprocess.Popen(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            **quiet,
        )
    ]
    try:
        for i in range(workers):
            procs.append(
                subprocess.Popen(
                    [BIN / "dask", "worker", address, "--nthreads", "1", "--no-nanny"]
                    + ["--no-dashboard", "--name", f"w{i}"],
                    **quiet,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            if workers:
                client.wait_for_workers(workers, timeout=90)
        yield address, procs[1:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


# --- built once per test session, shared by the pytest-xdist workers ----------------------


@contextmanager
def once_per_session(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """The folder ``name`` in the session's temporary folder, which is shared by every
    pytest-xdist worker of the session (``make test``), held under a file lock: the first
    worker to get here builds into it while the others wait, and then read what it built.
    The caller tells a finished build by a file it writes last."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield root / name


#: Chapter 1 at small parameters (as ``dln-book run 1 -p steps=30 -p bottleneck_steps=30``).
SMALL_1 = {"steps": 30, "bottleneck_steps": 30}


@pytest.fixture(scope="session")
def chapter1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dln-book run 1 -p steps=30 -p bottleneck_steps=30 --runs-dir RUNS`` (a real chapter
    through the command line, page included), then ``dln-book sweep`` of that one point with
    ``--sweeps-dir SWEEPS`` (RUNS and SWEEPS siblings; the sweep reuses the run). Executed once
    per session for every test that reads it (the run's page, its prose, a local sweep to
    compare a cluster's with); tests must not write into it. Returns the run folder."""
    with once_per_session(tmp_path_factory, "chapter-1") as root:
        done = root / "run-folder.txt"
        if not done.is_file():
            root.mkdir(exist_ok=True)
            dirs = ["--runs-dir", str(root / "runs")]
            params = [f"-p{name}={value}" for name, value in SMALL_1.items()]
            for command in (["run", "1", *params], ["sweep", "1", *params, "--workers", "1"]):
                proc = subprocess.run(
                    [str(BIN / "dln-book"), *command, *dirs]
                    + (["--sweeps-dir", str(root / "sweeps")] if command[0] == "sweep" else []),
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    env={k: v for k, v in os.environ.items() if k != "DLNBOOK_SCHEDULER"},
                )
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            (run_dir,) = published(root / "runs")
            done.write_text(run_dir)
        return root / "runs" / done.read_text()


# --- numba's cache, filled once before the chapters run -------------------------------------

#: Compiles the kernels of ``dlncore.compiled`` (what every chapter's gradient descent on a
#: narrow chain calls), which numba caches in ``dlncore/__pycache__``.
_COMPILE = """
import dlncore as dc
problem = dc.synthetic_problem(4, 3, 10, 2, seed=0)
dc.gd(problem, dc.init.gaussian([4, 2, 3], 0.5, seed=0), 0.01, 5)
"""


_warm_up: list[subprocess.Popen] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fill numba's cache of ``dlncore.compiled`` once, in the main process, while the tests
    are collected (it only loads the cache when that is filled already): otherwise, on a fresh
    clone, every kernel started before one of them has written it compiles the same kernels
    again (about 6 s of CPU each, several at once under pytest-xdist). No test starts before it
    ended (:func:`_compiled`)."""
    if not hasattr(session.config, "workerinput"):  # not in a pytest-xdist worker
        _warm_up.append(subprocess.Popen([sys.executable, "-c", _COMPILE], cwd=REPO))


def _compiled() -> None:
    while _warm_up:
        if _warm_up.pop().wait() != 0:
            pytest.exit("compiling dlncore.compiled failed (see above)", returncode=1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without pytest-xdist: the tests start after the collection."""
    _compiled()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """Under pytest-xdist: the main process hands out tests once every worker collected."""
    _compiled()


# --- parallel runs (pytest-xdist) ----------------------------------------------------------

#: Session- or module-scoped fixtures that are expensive to build: under ``pytest -n N
#: --dist loadgroup`` (``make test``), every test that uses one of them runs on the same worker,
#: which builds it once. Other tests go to whichever worker is free. Every test that opens
#: Chromium is in one group: one browser for the session, not one per worker. (The smoke book
#: and ``chapter1_run`` are built once for all workers: :func:`once_per_session`.)
SHARED_FIXTURES = {
    "browser": "browser",  # headless Chromium (tests/book/conftest.py)
    "site_pages": "browser",  # every page of the smoke book over HTTP, visited once
    "file_pages": "browser",  # every page of the smoke book from disk, visited once
    "published_book": "browser",  # a mini book with its public addresses
    "loaded_modules": "chapter-imports",  # tests/test_cache_key.py: one interpreter, forked
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test that uses a fixture of :data:`SHARED_FIXTURES` with its
    ``xdist_group`` (without pytest-xdist, or without ``--dist loadgroup``, the mark is
    inert). Under pytest-xdist the workers take tests in the order of ``items`` (a group as
    one unit, the largest groups first), which is sorted here: the ``slow`` and ``waits``
    tests first, so that the quick ones fill the end of the run instead of a chapter execution
    starting last, and what mostly waits (a timeout, a killed worker) overlaps the chapters'
    computing rather than leaving a core idle; among them those that wait for the smoke book
    last, so that the other workers compute while the first one builds it."""
    for item in items:
        used = [
            SHARED_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SHARED_FIXTURES
        ]
        if used and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(used[0]))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike: the sort is stable
        items.sort(key=_order)


#: The longest tests (each executes several chapters, or chapters in new environments),
#: handed out before the other slow ones so that none of them ends the run. Only the order
#: depends on these names.
LONGEST = {
    "test_a_sweep_on_a_worker_without_the_checkout_matches_a_local_sweep",
    "test_each_chapter_has_a_parameter_set_that_breaks_a_claim",
    "test_each_chapter_runs_at_the_cheap_extremes_of_its_ranges",
    "test_colab_install_cell_installs_the_pinned_package_into_a_bare_environment",
}


def _order(item: pytest.Item) -> tuple[bool, bool, bool, bool]:
    """Slow and waiting tests first (the longest first, then those that wait), those that
    need the smoke book last."""
    fixtures = getattr(item, "fixturenames", ())
    waits = item.get_closest_marker("waits") is not None
    early = waits or item.get_closest_marker("slow") is not None
    return not early, "smoke_book" in fixtures, item.originalname not in LONGEST, not waits
