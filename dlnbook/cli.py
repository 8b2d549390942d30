"""``dln-book``: list the chapters' parameters, rerun a chapter, sweep one, build the book.

Exit status: 0 success, 2 bad input (nothing written), 1 a chapter or the build failed, 130
after Ctrl-C, 143 after SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from dlnbook.chapters import (
    Chapter,
    ChapterError,
    check_profile,
    discover_chapters,
    load_profile,
    meaning_without_range,
    parse_override,
)
from dlnbook.executor import ExecutorError, scheduler_address
from dlnbook.export import PAGE_DIR, PARAMETERS_FILE, finalize_run
from dlnbook.runner import (
    PLANS_ENV,
    ChapterFailure,
    Plan,
    PublishError,
    dry_run,
    encode_plans,
    plan_points,
    plan_runs,
    run_plans,
)

__all__ = ["main", "resolve_chapter"]

PROG = "dln-book"


class UsageError(Exception):
    """Bad input on the command line: reported in one line, exit status 2."""


def _config(book: Path) -> dict[str, Any]:
    """The ``sphinx.config`` section of the book's ``_config.yml`` (empty without one)."""
    path = book / "_config.yml"
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None) or {}
    return dict((data.get("sphinx") or {}).get("config") or {})


def _chapters(book: Path) -> list[Chapter]:
    folder = book / _config(book).get("dlnbook_chapters_dir", "chapters")
    if not folder.is_dir():
        raise UsageError(
            f"no chapters folder {folder}: run {PROG} in the book's folder or pass --book DIR"
        )
    if not (chapters := discover_chapters(folder)):
        raise UsageError(f"no chapter notebooks in {folder}")
    return chapters


def resolve_chapter(chapters: Sequence[Chapter], text: str) -> Chapter:
    """The chapter named by its stem (``02_boundedness``), number (``2``, ``02``) or name
    without number (``boundedness``), a trailing ``.ipynb`` and folders ignored;
    :class:`UsageError` if none or several match."""
    key = Path(text).name.removesuffix(".ipynb")
    number = lambda c: c.name.split("_")[0]  # noqa: E731
    for test in (
        lambda c: c.name == key,
        lambda c: key.isdigit() and number(c).isdigit() and int(number(c)) == int(key),
        lambda c: c.name.partition("_")[2] == key,
    ):
        if len(found := [c for c in chapters if test(c)]) > 1:
            raise UsageError(f"chapter {text!r} is ambiguous: {', '.join(c.name for c in found)}")
        if found:
            return found[0]
    raise UsageError(f"unknown chapter {text!r} (chapters: {', '.join(c.name for c in chapters)})")


def _writable(path: Path, option: str) -> Path:
    """``path``, unless it is not a writable folder and cannot be created as one."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {existing} is not writable")
    return path


def _type_name(value: Any) -> str:
    if isinstance(value, list | tuple) and value:
        inner = {_type_name(v) for v in value}
        return f"{type(value).__name__}[{inner.pop() if len(inner) == 1 else 'any'}]"
    return "any" if value is None else type(value).__name__


def cmd_list(args: argparse.Namespace) -> int:
    """Print every chapter (or one) with its title, parameters (name, type, default, range,
    meaning) and the rules between them."""
    chapters = _chapters(args.book)
    for chapter in chapters if args.chapter is None else [resolve_chapter(chapters, args.chapter)]:
        if chapter.error:
            print(f"{chapter.name}: cannot be read: {chapter.error}\n")
            continue
        rows = [("parameter", "type", "default", "range", "meaning")]
        for p in chapter.parameters:
            kind, shown = _type_name(p.default), str(p.range or "any")
            rows.append((p.name, kind, repr(p.default), shown, meaning_without_range(p)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)] + [0]
        cells = json.loads(chapter.path.read_text(encoding="utf-8")).get("cells", [])
        text = next(("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"), "")
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
        print(chapter.name + (f": {title}" if title else ""))
        for row in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        for rule in chapter.rules:
            print(f"  rule: {rule.expression} ({rule.reason})")
        print()
    print(f"Rerun a chapter: {PROG} run CHAPTER -p NAME=VALUE (CHAPTER: name or number)")
    return 0


def _core(book: Path) -> Path | None:
    core = _config(book).get("dlnbook_core_dir")
    return book / core if core else None


def _plan(args: argparse.Namespace, chapter: Chapter, points: Any) -> tuple[list[Plan], str | None]:
    """The checked plans of ``points`` in the runs folder, and the checked scheduler."""
    runs = args.runs_dir if args.runs_dir is not None else args.book / "runs"
    plans = plan_points(chapter, points, runs, _core(args.book), args.allow_large)
    scheduler = scheduler_address(getattr(args, "scheduler", None))
    _writable(runs, "--runs-dir" if args.runs_dir is not None else "runs folder")
    return plans, scheduler


def cmd_run(args: argparse.Namespace) -> int:
    """Execute one chapter with overrides into ``runs/<chapter>-<hash>/``."""
    chapter = resolve_chapter(_chapters(args.book), args.chapter)
    overrides = dict(parse_override(item) for item in args.params)
    (plan,), scheduler = _plan(args, chapter, [overrides])
    if args.dry_run:
        return dry_run([plan], scheduler=scheduler, jobs=1)
    changed = [f"{k}={v!r}" for k, v in plan.parameters.items() if v != chapter.defaults[k]]
    print(f"{chapter.name} with {', '.join(changed) or 'its default parameters'}")
    driver = {"timeout": args.timeout, "scheduler": scheduler, "force": args.force}
    run_plans([plan], jobs=1, stream_stderr=True, finalize=finalize_run, **driver)
    folder = plan.run_dir
    figures = sorted({p.stem for p in folder.glob("figures/*")})
    results = ", ".join(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npz")))
    print(f"Run folder: {folder}")
    print(f"  notebook    {chapter.name}.ipynb\n  page        {PAGE_DIR}/{chapter.name}.html")
    print(f"  parameters  {PARAMETERS_FILE}")
    print("  figures     " + (", ".join(f"figures/{s}.png|svg" for s in figures) or "none"))
    print(f"  results     {results or 'none'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run one chapter over a grid of parameters; every point is a ``run``."""
    from dlnbook.sweep import Point, points_of, run_sweep, sweep_folder

    chapter = resolve_chapter(_chapters(args.book), args.chapter)
    overrides = points_of(chapter, args.params, args.points, args.yes)
    plans, scheduler = _plan(args, chapter, overrides)
    values = lambda n: {json.dumps(p.parameters[n], default=repr) for p in plans}  # noqa: E731
    swept = [n for n in chapter.defaults if len(values(n)) > 1]
    points: list[Point] = []
    for over, plan in zip(overrides, plans, strict=True):
        if plan.key not in {p.plan.key for p in points}:  # the same run once
            points.append(Point(len(points) + 1, over, plan))
    sweeps = args.sweeps_dir if args.sweeps_dir is not None else args.book / "sweeps"
    _writable(sweeps, "--sweeps-dir" if args.sweeps_dir else "sweeps folder")
    if args.dry_run:
        return dry_run([p.plan for p in points], swept, scheduler, args.workers, "point")
    print(f"{chapter.name}: {len(points)} point(s), swept: {', '.join(swept) or 'nothing'}")
    driver = {"timeout": args.timeout, "scheduler": scheduler, "force": args.force}
    driver |= {"jobs": args.workers, "wait_for_workers": args.wait_for_workers}
    folder = sweep_folder(sweeps, chapter, plans)
    return run_sweep(chapter, points, swept, folder, finalize=finalize_run, **driver)


def cmd_build(args: argparse.Namespace) -> int:
    """Execute the stale chapters of a profile once, then ``jupyter-book build`` them into
    their own folder (the plans handed over in :data:`~dlnbook.runner.PLANS_ENV`)."""
    book, chapters, profile = args.book, _chapters(args.book), load_profile(args.params)
    check_profile(profile, (c.name for c in chapters), str(args.params))
    digest = hashlib.sha256(json.dumps(profile, sort_keys=True, default=repr).encode()).hexdigest()
    out = (args.out or book / "_build" / f"params-{args.params.stem}-{digest[:8]}").resolve()
    cache_dir = _config(book).get("dlnbook_cache_dir")
    cache = book / cache_dir if cache_dir else out / "_build" / "executed"
    plans = plan_runs(chapters, profile, cache, _core(book), args.allow_large)
    if out in ((book / "_build").resolve(), book.resolve()):
        raise UsageError(f"--out {out} would overwrite the default book; pick another folder")
    _writable(out, "--out")
    scheduler = scheduler_address(None)
    if args.dry_run:
        return dry_run(plans, scheduler=scheduler, jobs=args.jobs)
    # progress bars only when chapters run one at a time; in parallel they would garble
    alone = args.jobs == 1 or sum(not p.is_cached for p in plans) == 1
    run_plans(plans, args.jobs, args.timeout, stream_stderr=alone, scheduler=scheduler)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book.resolve())]
    env = dict(os.environ, DLNBOOK_PARAMS_FILE=str(args.params.resolve()))
    env[PLANS_ENV] = encode_plans(plans)
    print(f"building the book into {out}")
    try:  # the child is killed when we die (Linux prctl PR_SET_PDEATHSIG)
        die = lambda: ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # noqa: E731
        code = subprocess.run([*cmd, "--path-output", str(out)], cwd=book, env=env, preexec_fn=die)
    except KeyboardInterrupt:
        print(f"interrupted: the executed chapters are kept in {cache}; the book was not built")
        raise
    if code.returncode != 0:
        print(f"{PROG}: jupyter-book build failed (exit {code.returncode})", file=sys.stderr)
        return 1
    print(f"Book built with {args.params}: file://{out / '_build' / 'html' / 'index.html'}")
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``dln-book: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _count(unit: str) -> Callable[[str], int]:
    """An argparse type: a whole number ``>= 1`` of ``unit``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1:
            got = f"at least 1 {unit}, got {value}" if value is not None else ""
            problem = got or f"a whole number of {unit}, got {text!r}"
            raise argparse.ArgumentTypeError(f"expected {problem}")
        return value

    return parse


class _Overrides(argparse.Action):
    """``-p NAME=VALUE ...``, repeatable; the same NAME twice is an error (exit 2)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        items = [*getattr(namespace, self.dest), *values]
        names = [item.partition("=")[0].strip() for item in items]
        if twice := next((n for n in names if names.count(n) > 1), None):
            parser.error(f"parameter {twice!r} is given twice (-p {twice}=...); give it once")
        setattr(namespace, self.dest, items)


_PARAM_HELP = {
    "run": "override a parameter; VALUE is a Python literal (3, 1e-3, True, [2, 3])",
    "sweep": "values of a parameter: V1,V2,... (Python literals), A:B:STEPS (evenly spaced) "
    "or A:B:STEPS:log (geometric); the sweep runs every combination",
}
_LARGE = "run even if the estimated memory exceeds this machine's or the estimated time exceeds "
_LARGE += "24 h (the estimates are written in each chapter's parameters cell)"
_DRY = "validate, then show what would run (cached or not, estimated time); execute and write "


def _command(sub: Any, func: Callable, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand running ``func``, its ``--help`` ending with a working ``example``."""
    name = func.__name__.removeprefix("cmd_")
    parser = sub.add_parser(name, help=help, epilog=f"example: {PROG} {name} {example}")
    parser.set_defaults(func=func)
    add = parser.add_argument
    if name == "list":
        add("chapter", nargs="?", help="only this chapter (number or name)")
        return parser
    if name in _PARAM_HELP:
        add("chapter", metavar="CHAPTER", help="name (02_boundedness) or number (2)")
        metavar = "NAME=VALUES" if name == "sweep" else "NAME=VALUE"
        opts = {"dest": "params", "action": _Overrides, "nargs": "+", "default": []}
        add("-p", "--param", metavar=metavar, help=_PARAM_HELP[name], **opts)
        force = "execute points that exist" if name == "sweep" else "execute even if the run exists"
        add("--force", action="store_true", help=force)
        add("--runs-dir", type=Path, help="where run folders go (default: BOOK/runs)")
    add("--timeout", type=_count("seconds"), help="per-cell timeout in whole seconds")
    add("--allow-large", action="store_true", help=_LARGE)
    add("--dry-run", action="store_true", help=_DRY + "nothing")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Rerun the chapters of the book with other parameters.")
    book = Path(os.environ.get("DLNBOOK_ROOT", "."))
    help = "folder of the book (_config.yml, chapters/); default: $DLNBOOK_ROOT or '.'"
    parser.add_argument("--book", type=Path, default=book, help=help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(sub, cmd_list, "every chapter (or one) with its parameters", "2")
    help = "execute one chapter with other parameters"
    _command(sub, cmd_run, help, "2 -p depth=4 -p eta_max=0.3")
    help = "run one chapter over a grid of parameters (here, or on a Dask cluster)"
    add = _command(sub, cmd_sweep, help, "2 -p depth=2,3,4 -p eta_max=0.1:0.5:5").add_argument
    help = "YAML: NAME: [values] entries (combined with -p), or 'points:' a list of points"
    add("--params", dest="points", type=Path, metavar="FILE.yml", help=help)
    help = "Dask scheduler of an existing cluster (tcp://host:8786); default "
    add("--scheduler", metavar="ADDRESS", help=help + "$DLNBOOK_SCHEDULER or this machine")
    help = "keep waiting when the cluster has no workers (default: exit 2 after 10 s)"
    add("--wait-for-workers", action="store_true", help=help)
    help = "points executed at once on this machine (default: cores)"
    add("--workers", type=_count("workers"), metavar="N", help=help)
    add("--yes", action="store_true", help="allow more than 10000 points")
    add("--sweeps-dir", type=Path, help="where sweep folders go (default: BOOK/sweeps)")
    help = "build the whole book with a parameter profile"
    add = _command(sub, cmd_build, help, "--params profiles/smoke.yml").add_argument
    help = "chapter -> {NAME: VALUE}"
    add("--params", type=Path, required=True, metavar="FILE.yml", help=help)
    add("--out", type=Path, help="output folder (default: BOOK/_build/params-<name>-<hash>)")
    add("--jobs", type=_count("jobs"), help="chapters executed at once (default: cores)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like on Ctrl-C (kernels stopped, finished runs kept)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dln-book`` on ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return args.func(args)
    except (UsageError, ChapterError, ExecutorError, PublishError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, PublishError) else 2
    except ChapterFailure as exc:  # one line per failed chapter
        for outcome in exc.failures:
            print(f"{PROG}: {outcome.summary()}", file=sys.stderr)
        return 1
    except Terminated:  # what was kept is said where it was stopped (run_plans, sweep)
        return 143
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `dln-book list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
