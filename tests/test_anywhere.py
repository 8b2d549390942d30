"""Chapters run anywhere: from a wheel in a venv of their own, in Colab, on Binder, and on a Dask
worker that cannot see this checkout (issue 18).

The Colab and worker tests share one fixture, :func:`wheel`: the wheel of this checkout
(``pip wheel --no-deps`` of a copy of the sources, built once per session). Each slow test gets
a fresh venv of its own holding only the pinned requirements (``requirements.txt``), not the
package: a stand-in for Colab (the install cell brings the package), for Binder (``postBuild``
installs the checkout) and for a worker's environment (the wheel installed into it). Such a venv
is made in seconds by :func:`pinned_venv`, from the files that ``pip install -r
requirements.txt`` put into this checkout's venv, rather than in about two minutes by pip from
the package index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.utils import canonicalize_name

from dlnbook.chapters import discover_chapters, load_chapter
from dlnbook.installcell import (
    PLACEHOLDER,
    SOURCE_NAME,
    install_cell_source,
    is_install_cell,
    main,
    pin_notebook,
)
from dlnbook.sweep import glued_values
from tests.conftest import SMALL_1, once_per_session

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this checkout's venv: the client of the cluster
CHAPTER_1 = REPO / "chapters" / "01_setting.ipynb"


# -- The install cell (fast) ----------------------------------------------------------------


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", sorted((REPO / "chapters").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_chapter_starts_with_the_folded_install_cell(path):
    first, second = code_cells(read(path))[:2]
    assert "".join(first["source"]) == install_cell_source(PLACEHOLDER)
    assert first["metadata"]["tags"] == ["hide-input"]
    assert not first["outputs"]
    assert "parameters" in second["metadata"]["tags"]
    assert load_chapter(path).parameters  # the loader still finds the parameters cell


def test_discover_chapters_reads_every_chapter_with_its_install_cell():
    assert [c.name for c in discover_chapters(REPO / "chapters")] == sorted(
        p.stem for p in (REPO / "chapters").glob("*.ipynb")
    )


def test_pin_notebook_replaces_only_the_source_line():
    nb = read(CHAPTER_1)
    pinned = pin_notebook(nb, "dln-book[notebooks] @ git+https://example.org/o/r@abc123")
    first = "".join(code_cells(pinned)[0]["source"])
    assert f'{SOURCE_NAME} = "dln-book[notebooks] @ git+https://example.org/o/r@abc123"' in first
    assert first == install_cell_source("dln-book[notebooks] @ git+https://example.org/o/r@abc123")
    assert code_cells(pinned)[1:] == code_cells(nb)[1:]
    assert nb == read(CHAPTER_1)  # the input is not modified
    without = {**nb, "cells": [c for c in nb["cells"] if not is_install_cell(c)]}
    with pytest.raises(ValueError, match="no install cell"):
        pin_notebook(without, "x")
    with pytest.raises(ValueError, match="no quotes"):
        pin_notebook(nb, 'dln-book"; rm -rf /')


def test_pin_command_writes_in_place_or_nothing(tmp_path, capsys):
    good = tmp_path / "a.ipynb"
    shutil.copy(CHAPTER_1, good)
    bad = tmp_path / "b.ipynb"
    bad.write_text("{not json")
    assert main(["--git", "https://github.com/o/dln-book/", "c0ffee", str(good), str(bad)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert good.read_bytes() == CHAPTER_1.read_bytes()  # nothing written
    assert main(["--git", "https://github.com/o/dln-book/", "c0ffee", str(good)]) == 0
    first = "".join(code_cells(read(good))[0]["source"])
    assert '"dln-book[notebooks] @ git+https://github.com/o/dln-book@c0ffee"' in first


# -- Fresh environments (slow) --------------------------------------------------------------


def pip(venv: Path, *args: str, cwd: Path | None = None) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        cwd=cwd,
    )


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """The environment of a process that must not see this checkout's venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.pop("DLNBOOK_SCHEDULER", None)
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


#: What ``python -m venv`` puts into a venv besides the lock (``pip freeze`` leaves them out).
VENV_TOOLS = ("pip", "setuptools", "wheel")


def lock() -> dict[str, str]:
    """``requirements.txt``: canonical distribution name -> pinned version."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def pinned_venv(path: Path) -> Path:
    """A venv of this Python holding what ``python -m venv`` and ``pip install -r
    requirements.txt`` give it, and nothing else: the installed files of every pinned
    distribution (and of pip, setuptools and wheel) hard-linked (copied across file systems) from
    this checkout's venv, the console scripts copied with their ``#!`` line naming the new venv's
    interpreter. The package itself (installed editable here) is not in it. Fails when this venv
    does not hold exactly the pinned versions (``make env`` installs them)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    pins = lock()
    site = Path(sysconfig.get_path("purelib"))
    target = Path(sysconfig.get_path("purelib", vars={"base": str(path)}))
    found = {}
    for dist in metadata.distributions(path=[str(site)]):
        name = canonicalize_name(dist.metadata["Name"])
        if name not in pins and name not in VENV_TOOLS:
            continue
        found[name] = dist.version
        for file in dist.files or []:
            source = Path(os.path.normpath(site / file))
            if not source.is_file():
                continue
            if source.is_relative_to(site):
                dest = target / source.relative_to(site)
            else:  # console scripts and data files (share/jupyter/...) outside site-packages
                dest = path / source.relative_to(sys.prefix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            head = source.read_bytes()[:2] if source.parent.name == "bin" else b""
            if head == b"#!":
                script = source.read_bytes().split(b"\n", 1)
                shebang = f"#!{path / 'bin' / 'python'}".encode()
                dest.write_bytes(b"\n".join([shebang, *script[1:]]))
                shutil.copymode(source, dest)
            elif not dest.exists():
                try:
                    os.link(source, dest)
                except OSError:  # another file system: a copy
                    shutil.copy2(source, dest)
    wrong = {n: (v, found.get(n)) for n, v in pins.items() if found.get(n) != v}
    if wrong:
        pytest.fail(f"this venv does not hold requirements.txt (pinned, found): {wrong}; make env")
    return path


def copy_sources(target: Path) -> Path:
    """This checkout without its venv, builds and caches (what a clone of it holds)."""
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "_build",
        "runs",
        "sweeps",
        "__pycache__",
        "*.egg-info",
        "build",
        ".*cache",
        ".hypothesis",
    )
    shutil.copytree(REPO, target, ignore=ignore)
    return target


def module_file(venv: Path, module: str, cwd: Path) -> str | None:
    """Where the Python of ``venv`` finds ``module`` (None when it does not)."""
    code = f"import importlib.util as u; s = u.find_spec({module!r}); print(s and s.origin)"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return None if out == "None" else out


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources, built once for all pytest-xdist
    workers (:func:`~tests.conftest.once_per_session`)."""
    with once_per_session(tmp_path_factory, "wheel") as root:
        dist = root / "dist"
        if not dist.is_dir():
            source, tmp = copy_sources(root / "source"), root / "tmp"
            pip(Path(sys.prefix), "wheel", "--quiet", "--no-deps", "-w", str(tmp), str(source))
            tmp.rename(dist)  # whole or absent
        (found,) = dist.glob("dln_book-*.whl")
        return found


@pytest.fixture
def venv(tmp_path) -> Path:
    """A venv of its own holding only the pinned requirements (:func:`pinned_venv`)."""
    return pinned_venv(tmp_path / "venv")


def papermill(venv: Path, notebook: Path, output: Path, parameters: dict, cwd: Path) -> None:
    """Execute a notebook with the papermill (and kernel) of ``venv``, away from the checkout."""
    args = [str(venv / "bin" / "papermill"), str(notebook), str(output), "--cwd", str(cwd)]
    for name, value in parameters.items():
        args += ["-p", name, str(value)]
    proc = subprocess.run(args, cwd=cwd, env=clean_env(venv), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_colab_install_cell_installs_the_pinned_package_into_a_bare_environment(
    wheel, venv, tmp_path
):
    assert module_file(venv, "dlncore", tmp_path) is None  # as in Colab: no package
    assert module_file(venv, "numpy", tmp_path).startswith(str(venv))  # the venv's own
    pinned = tmp_path / "pinned.ipynb"
    own = Path(shutil.copy(wheel, tmp_path))
    source = f"dln-book[notebooks] @ {own.as_uri()}"  # stands in for git+URL@commit
    pinned.write_text(json.dumps(pin_notebook(read(CHAPTER_1), source)))
    output = tmp_path / "out.ipynb"
    papermill(venv, pinned, output, SMALL_1, tmp_path)

    where = module_file(venv, "dlncore", tmp_path)
    assert where is not None and Path(where).is_relative_to(venv)
    assert glued_values(output)["ch1-never-below"] in {"yes", "no"}  # ran to its last table
    # a second run finds the package: the install cell does nothing (the cell alone, in a
    # new kernel: what follows it does not depend on it); pip would fail without the wheel
    own.unlink()
    cell_only = read(pinned)
    cell_only["cells"] = code_cells(cell_only)[:1]
    (tmp_path / "cell.ipynb").write_text(json.dumps(cell_only))
    again = tmp_path / "again.ipynb"
    papermill(venv, tmp_path / "cell.ipynb", again, {}, tmp_path)
    assert code_cells(read(again))[0]["outputs"] == []


@pytest.mark.slow
def test_binder_environment_imports_the_checkout_and_its_install_cell_does_nothing(venv, tmp_path):
    # what Binder (repo2docker) does: runtime.txt's Python, `pip install -r
    # binder/requirements.txt`, then binder/postBuild from the repository's root
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == (
        f"python-{sys.version_info.major}.{sys.version_info.minor}"
    )
    source = copy_sources(tmp_path / "repo")
    # the venv holds the lock: binder/requirements.txt asks for nothing else
    report = tmp_path / "report.json"
    pip(
        venv,
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        str(report),
        "-r",
        str(source / "binder" / "requirements.txt"),
    )
    assert json.loads(report.read_text())["install"] == []
    subprocess.run(["bash", "binder/postBuild"], cwd=source, env=clean_env(venv), check=True)
    where = module_file(venv, "dlncore", tmp_path)
    assert where is not None and Path(where).is_relative_to(source)  # the checkout, editable
    # chapter 1 up to its imports (the install cell, the parameters, `import dlncore.plotting`
    # and the style): the rest runs in the checkout's own environment in many tests, and in a
    # fresh venv in the Colab test above
    start = read(source / "chapters" / "01_setting.ipynb")
    sources = ["".join(cell["source"]) for cell in start["cells"]]
    imports = next(i for i, text in enumerate(sources) if "import dlncore" in text)
    start["cells"] = start["cells"][: imports + 1]
    (tmp_path / "start.ipynb").write_text(json.dumps(start))
    output = tmp_path / "out.ipynb"
    papermill(venv, tmp_path / "start.ipynb", output, SMALL_1, tmp_path)
    install = code_cells(read(output))[0]
    assert install["outputs"] == [], "the install cell installed something on Binder"


# -- A worker that cannot see the checkout (slow) --------------------------------------------

#: Chapter 7 at its cheap extremes: tiny dimensions and step counts, one process.
SMALL_7 = {
    "d": 6,
    "target_rank": 3,
    "width": 3,
    "depths": [[2, 3]],
    "samples": 12,
    "record": 8,
    "tanh_target_rank": 3,
    "tanh_width": 3,
    "tanh_samples": 12,
    "tanh_steps": 20,
    "output_steps": 20,
    "workers": 1,
}
#: The swept point of chapter 7 (a `--params` file): one point (what is compared does not
#: depend on the number of points).
SWEEP_7 = {"steps": [20], **{k: v if isinstance(v, list) else [v] for k, v in SMALL_7.items()}}


def unshare_permitted() -> str | None:
    """Why a mount namespace with a tmpfs over the checkout cannot be made here (None: it can)."""
    if shutil.which("unshare") is None:
        return "no `unshare` command (util-linux)"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {REPO} && test ! -e {REPO}/Makefile"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"`unshare -m` + tmpfs not permitted here: {probe.stderr.strip()[:200]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd="/", env=env, start_new_session=True
        )


def stop(proc: subprocess.Popen) -> None:
    """End a process started by :func:`start` and its session (nanny, worker, kernels)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def isolated_cluster(wheel, venv, tmp_path) -> Iterator[str]:
    """A scheduler and one worker, the worker in its own mount namespace where a tmpfs hides
    this checkout, running from the wheel in its own venv. Yields the scheduler's address."""
    reason = unshare_permitted()
    if reason:
        pytest.skip(reason)
    pip(venv, "install", "--quiet", "--no-deps", str(wheel))
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = str(venv / "bin" / "dask")
    env = clean_env(venv)
    scheduler = start(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
        + ["--no-dashboard"],
        tmp_path / "scheduler.log",
        env,
    )
    worker_cmd = (
        f"mount -t tmpfs -o size=1m tmpfs {REPO} && cd / && exec {dask} worker {address}"
        " --nworkers 1 --nthreads 1 --no-dashboard"
    )
    worker = start(["unshare", "-m", "sh", "-c", worker_cmd], tmp_path / "worker.log", env)
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            # the worker sees neither this checkout nor its venv; it imports the wheel
            assert set(client.run(os.path.exists, str(REPO / "Makefile")).values()) == {False}
            origin = client.run(eval, "__import__('dlncore').__file__")
            (where,) = origin.values()
            assert Path(where).is_relative_to(venv), where
        yield address
    finally:
        stop(worker)
        stop(scheduler)


def sweep(out: Path, scheduler: str | None) -> subprocess.Popen:
    """``dln-book sweep 7`` of :data:`SWEEP_7` into ``out``, started (see :func:`finish`)."""
    out.mkdir(parents=True, exist_ok=True)
    params = out / "points.yml"
    params.write_text(yaml.safe_dump(SWEEP_7))
    args = [str(BIN / "dln-book"), "sweep", "7", "--params", str(params)]
    args += ["--runs-dir", str(out / "runs"), "--sweeps-dir", str(out / "sweeps")]
    args += ["--scheduler", scheduler] if scheduler else ["--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "DLNBOOK_SCHEDULER"}
    with (out / "sweep.log").open("w") as log:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, out: Path) -> None:
    """Wait for a sweep of :func:`sweep`; its output and failed points' logs if it failed."""
    assert proc.wait(timeout=900) == 0, f"sweep into {out} failed:\n" + "\n".join(
        p.read_text()[-3000:] for p in [out / "sweep.log", *(out / "runs").glob("failed/*.log")]
    )


def run_folders(out: Path) -> dict[str, Path]:
    return {p.name: p for p in (out / "runs").iterdir() if (p / "run.json").is_file()}


#: Glued values that are wall-clock times (they differ between any two runs).
WALL_CLOCK = re.compile(r"(^|-)seconds(-|$)")


def results(notebook: Path) -> dict:
    return {k: v for k, v in glued_values(notebook).items() if not WALL_CLOCK.search(k)}


def comparable(array: np.ndarray) -> object:
    """The array, or, for the JSON text a run stores (``info``), that text without the run's
    wall-clock time (``seconds``)."""
    if array.dtype.kind != "U" or array.ndim != 0:
        return array
    try:
        info = json.loads(str(array))
    except json.JSONDecodeError:
        return array
    if isinstance(info, dict):
        info = {k: v for k, v in info.items() if not WALL_CLOCK.search(k)}
    return np.array(json.dumps(info, sort_keys=True))


def assert_same_results(local: Path, remote: Path) -> None:
    """Every glued value (but wall-clock times) and every ``.npz`` array of each point is
    identical."""
    a, b = run_folders(local), run_folders(remote)
    assert sorted(a) == sorted(b)
    for name, folder in a.items():
        (nb_a,) = folder.glob("*.ipynb")
        (nb_b,) = b[name].glob("*.ipynb")
        glued = results(nb_a)
        assert glued and glued == results(nb_b), name
        npz = sorted(p.relative_to(folder) for p in folder.rglob("*.npz"))
        assert npz and npz == sorted(p.relative_to(b[name]) for p in b[name].rglob("*.npz"))
        for rel in npz:
            with np.load(folder / rel) as x, np.load(b[name] / rel) as y:
                assert sorted(x.files) == sorted(y.files), rel
                for key in x.files:
                    np.testing.assert_array_equal(
                        comparable(x[key]), comparable(y[key]), err_msg=f"{name}/{rel}:{key}"
                    )


@pytest.mark.slow
def test_a_sweep_on_a_worker_without_the_checkout_matches_a_local_sweep(isolated_cluster, tmp_path):
    """Chapter 7 (it reads the package's data files and starts processes of its own) swept on
    the isolated worker, and the same point on this machine at the same time."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    procs = {local: sweep(local, None), remote: sweep(remote, isolated_cluster)}
    for out, proc in procs.items():
        finish(proc, out)
    assert len(run_folders(local)) == 1
    assert_same_results(local, remote)
