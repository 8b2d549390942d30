"""Write what a worker brought back: run folders appear complete or not at all.

A run folder ``<runs>/<chapter>-<hash>/`` is written as a hidden sibling
``.<chapter>-<hash>.tmp-<pid>-<random>`` and renamed into place in one step. Replacing an
existing run (``--force``) swaps the two folders atomically (``renameat2`` with
``RENAME_EXCHANGE`` on Linux), so the previous run stays in place until the new one is
complete. Hidden folders left behind by a killed process are removed (or, for a previous
run set aside by the fallback swap, put back) by :func:`prune_stale` at the next start.

Every published folder ends with ``manifest.json`` (the size and SHA-256 of every other file),
written last; :func:`check_run` verifies it before a folder is reused, and
:func:`set_aside` renames a folder that fails the check to ``<name>.damaged-<time>``.

A failed run leaves ``<runs>/failed/<chapter>-<hash>.ipynb`` (the partial notebook, when the
kernel got that far) and ``<runs>/failed/<chapter>-<hash>.log`` (the full traceback).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "MANIFEST",
    "check_run",
    "failed_paths",
    "pid_alive",
    "prune_stale",
    "publish_failure",
    "publish_run",
    "set_aside",
    "write_manifest",
]

#: The file written last into a run folder: ``{"files": {path: {"size", "sha256"}}}``.
MANIFEST = "manifest.json"

_STALE = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _hidden(run_dir: Path, kind: str) -> Path:
    return run_dir.with_name(f".{run_dir.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        if root.resolve() not in path.resolve().parents:
            raise ValueError(f"refusing to write {rel!r} outside the run folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """Write ``manifest.json``: size and SHA-256 of every other file below ``folder``."""
    entries = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _digest(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    }
    text = json.dumps({"files": entries}, indent=1, sort_keys=True) + "\n"
    (folder / MANIFEST).write_text(text, encoding="utf-8")


def check_run(folder: Path) -> str | None:
    """What is wrong with a published run folder, or None when its manifest holds.

    Returns
    -------
    str or None
        ``"no manifest.json"``, ``"results.npz: 10 bytes, expected 830"``, ... (the first
        problem found); None when every listed file has its size and hash.
    """
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        items = [(rel, int(e["size"]), str(e["sha256"])) for rel, e in files.items()]
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"unreadable {MANIFEST}"
    for rel, size, sha in items:
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel}: {path.stat().st_size} bytes, expected {size}"
        if _digest(path) != sha:
            return f"{rel} was changed"
    return None


def set_aside(folder: Path) -> Path:
    """Rename a damaged run folder to ``<name>.damaged-<UTC time>`` beside it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = folder.with_name(f"{folder.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.damaged-{stamp}-{n}")
    folder.rename(aside)
    return aside


def publish_run(
    run_dir: Path,
    files: dict[str, bytes],
    replace: bool = False,
    finalize: Callable[[Path], None] | None = None,
) -> bool:
    """Make ``run_dir`` hold exactly ``files`` (plus what ``finalize`` adds and the
    manifest), in one atomic step.

    Parameters
    ----------
    run_dir : Path
        The run folder to create.
    files : dict of str to bytes
        Relative path -> contents.
    replace : bool
        Replace an existing ``run_dir`` (its old contents stay until the swap).
    finalize : callable, optional
        ``finalize(folder)`` adds files to the hidden folder before the manifest is
        written (e.g. the standalone page); if it raises, nothing is published.

    Returns
    -------
    bool
        True if ``files`` were published, False if ``run_dir`` already existed and
        ``replace`` was not asked (a concurrent run produced the same folder).
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden(run_dir, "tmp")
    try:
        tmp.mkdir()
        _write_tree(tmp, files)
        if finalize is not None:
            finalize(tmp)
        write_manifest(tmp)
        if not run_dir.exists():
            try:
                tmp.rename(run_dir)
                return True
            except OSError:  # appeared meanwhile (or a non-empty folder): keep that one
                if not replace:
                    return False
        elif not replace:
            return False
        if not _exchange(tmp, run_dir):
            aside = _hidden(run_dir, "old")
            run_dir.rename(aside)
            tmp.rename(run_dir)
            shutil.rmtree(aside, ignore_errors=True)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failed_paths(run_dir: Path) -> tuple[Path, Path]:
    """Partial notebook and traceback log of a failed run of ``run_dir``."""
    failed = run_dir.parent / "failed"
    return failed / f"{run_dir.name}.ipynb", failed / f"{run_dir.name}.log"


def publish_failure(
    run_dir: Path, notebook: bytes | None, traceback: str
) -> tuple[Path | None, Path]:
    """Write the partial notebook (if any) and the traceback of a failed run.

    Files of an earlier failure of the same run are replaced; without a partial notebook
    an earlier one is removed, so that no stale notebook is taken for this failure.

    Returns
    -------
    tuple of (Path or None, Path)
        The partial notebook (None when the kernel did not get that far) and the log.
    """
    partial, log = failed_paths(run_dir)
    partial.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(log, traceback.rstrip() + "\n")
    if notebook is None:
        partial.unlink(missing_ok=True)
        return None, log
    _atomic_write(partial, notebook)
    return partial, log


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def prune_stale(folder: Path) -> list[Path]:
    """Clean up hidden folders left in ``folder`` by processes that were killed.

    A temporary folder (``.<run>.tmp-<pid>-*``) of a process that no longer runs is deleted;
    a previous run set aside during a replacement (``.<run>.old-<pid>-*``) is put back if
    its run folder is missing, deleted otherwise. Folders of running processes are kept.

    Returns
    -------
    list of Path
        The folders deleted or restored.
    """
    cleaned = []
    if not folder.is_dir():
        return cleaned
    for path in [*folder.iterdir(), *(folder / "failed").glob(".*")]:
        match = _STALE.fullmatch(path.name)
        if not match or (match["pid"] and pid_alive(int(match["pid"]))):
            continue
        final = path.parent / match["name"]
        if match["kind"] == "old" and path.is_dir() and not final.exists():
            with contextlib.suppress(OSError):
                path.rename(final)
                cleaned.append(path)
                continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        cleaned.append(path)
    return cleaned
