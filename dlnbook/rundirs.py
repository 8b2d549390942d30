"""Run folders that appear complete or not at all: written as a hidden sibling, renamed (or,
with ``--force``, swapped) into place with ``manifest.json`` written last, checked before
reuse; a failed run leaves ``<runs>/failed/<chapter>-<hash>.ipynb|.log``.
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

import psutil

__all__ = ["MANIFEST", "check_run", "prune_stale", "publish_failure", "publish_run", "set_aside"]

#: The file written last into a run folder: ``{"files": {path: {"size", "sha256"}}}``.
MANIFEST = "manifest.json"
_STALE = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}")


def _hidden(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_run(folder: Path) -> str | None:
    """The first problem of a run folder (``"no manifest.json"``, ``"x.npz is missing"``,
    ...), or None when every listed file has its size and hash."""
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
    """Rename a damaged run folder to ``<name>.damaged-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = folder.with_name(f"{folder.name}.damaged-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.damaged-{stamp}-{n}")
    return folder.rename(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False when the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    return renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0  # AT_FDCWD, EXCHANGE


def publish_run(
    run_dir: Path,
    files: dict[str, bytes],
    replace: bool = False,
    finalize: Callable[[Path], None] | None = None,
) -> bool:
    """Make ``run_dir`` hold ``files`` (path -> bytes), what ``finalize(folder)`` adds and
    the manifest, in one step (nothing if ``finalize`` raises); False if ``run_dir`` exists
    and not ``replace``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden(run_dir, "tmp")
    try:
        tmp.mkdir()
        for rel, data in files.items():
            if tmp.resolve() not in (tmp / rel).resolve().parents:
                raise ValueError(f"refusing to write {rel!r} outside the run folder")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        if finalize is not None:
            finalize(tmp)
        entries = {
            p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": _digest(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        text = json.dumps({"files": entries}, indent=1, sort_keys=True) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        if not run_dir.exists():
            with contextlib.suppress(OSError):  # else it appeared meanwhile: keep that one
                tmp.rename(run_dir)
                return True
        if not replace:
            return False
        if not _exchange(tmp, run_dir):
            aside = _hidden(run_dir, "old")
            run_dir.rename(aside)
            tmp.rename(run_dir)
            shutil.rmtree(aside, ignore_errors=True)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_failure(
    run_dir: Path, notebook: bytes | None, traceback: str
) -> tuple[Path | None, Path]:
    """Write (or, if None, remove) the partial notebook and write the traceback of a failed
    run; return their paths (the notebook None if there is none)."""
    failed = run_dir.parent / "failed"
    partial, log = failed / f"{run_dir.name}.ipynb", failed / f"{run_dir.name}.log"
    failed.mkdir(parents=True, exist_ok=True)
    for path, data in ((log, (traceback.rstrip() + "\n").encode()), (partial, notebook)):
        if data is None:
            path.unlink(missing_ok=True)
        else:
            tmp = _hidden(path, "tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
    return (partial if notebook is not None else None), log


def prune_stale(folder: Path) -> list[Path]:
    """Remove the hidden files of dead processes in ``folder`` (and ``failed/``); put back a
    previous run set aside during a swap if its folder is missing. Return what was cleaned."""
    cleaned = []
    for path in [*folder.iterdir(), *(folder / "failed").glob(".*")] if folder.is_dir() else []:
        match = _STALE.fullmatch(path.name)
        if not match or (match["pid"] and psutil.pid_exists(int(match["pid"]))):
            continue
        final = path.parent / match["name"]
        if match["kind"] == "old" and path.is_dir() and not final.exists():
            with contextlib.suppress(OSError):
                cleaned.append(path.rename(final) and path)
                continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        cleaned.append(path)
    return cleaned
