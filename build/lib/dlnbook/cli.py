"""``dln-book``: list the chapters' parameters, rerun a chapter, build the book with overrides.

Usage (from the book's folder, or with ``--book DIR``)::

    dln-book list
    dln-book run CHAPTER -p NAME=VALUE ... [--force]
    dln-book sweep CHAPTER -p NAME=V1,V2,... [-p NAME=A:B:STEPS[:log]] [--scheduler ADDRESS]
    dln-book build --params FILE.yml [--out DIR]

Exit status: 0 on success, 2 on bad input (nothing is written), 1 if a chapter fails or the
book build fails.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
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
    discover_chapters,
    load_profile,
    meaning_without_range,
    parse_override,
    validate_book,
)
from dlnbook.executor import ExecutorError, check_address
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
_PR_SET_PDEATHSIG = 1


class UsageError(Exception):
    """Bad input on the command line: reported in one line, exit status 2."""


# --- the book: its configuration and chapters ------------------------------------------


def _book_config(book: Path) -> dict[str, Any]:
    """The ``sphinx.config`` section of ``_config.yml`` (empty when there is none)."""
    path = book / "_config.yml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict((data.get("sphinx") or {}).get("config") or {})


def _chapters(book: Path) -> list[Chapter]:
    folder = book / _book_config(book).get("dlnbook_chapters_dir", "chapters")
    if not folder.is_dir():
        raise UsageError(
            f"no chapters folder {folder}: run {PROG} in the book's folder or pass --book DIR"
        )
    chapters = discover_chapters(folder)
    if not chapters:
        raise UsageError(f"no chapter notebooks in {folder}")
    return chapters


def _core_dir(book: Path) -> Path | None:
    configured = _book_config(book).get("dlnbook_core_dir")
    return (book / configured) if configured else None


def resolve_chapter(chapters: Sequence[Chapter], text: str) -> Chapter:
    """Find a chapter by file stem (``02_boundedness``), number (``2``, ``02``) or name
    without number (``boundedness``); a trailing ``.ipynb`` and folders are ignored.

    Parameters
    ----------
    chapters : sequence of Chapter
        The book's chapters.
    text : str
        What the user typed.

    Returns
    -------
    Chapter

    Raises
    ------
    UsageError
        If no chapter or more than one chapter matches.
    """
    key = Path(text).name.removesuffix(".ipynb")
    for test in (
        lambda c: c.name == key,
        lambda c: (
            key.isdigit()
            and c.name.split("_")[0].isdigit()
            and int(c.name.split("_")[0]) == int(key)
        ),
        lambda c: c.name.partition("_")[2] == key,
    ):
        found = [c for c in chapters if test(c)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(c.name for c in found)
            raise UsageError(f"chapter {text!r} is ambiguous: {names}")
    names = ", ".join(c.name for c in chapters)
    raise UsageError(f"unknown chapter {text!r} (chapters: {names})")


def _check_output_dir(path: Path, option: str) -> None:
    """Fail unless ``path`` is a writable folder or can be created as one."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {existing} is not writable")


# --- list ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "any"
    if isinstance(value, list | tuple) and value:
        inner = {_type_name(v) for v in value}
        return f"{type(value).__name__}[{inner.pop() if len(inner) == 1 else 'any'}]"
    return type(value).__name__


def _title(chapter: Chapter) -> str:
    """The first ``# heading`` of the notebook's first markdown cell, if any."""
    nb = json.loads(chapter.path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    return ""


def cmd_list(args: argparse.Namespace) -> int:
    """Print every chapter (or the one named by ``args.chapter``) with its parameters (name,
    type, default, range, meaning) and the rules between them."""
    chapters = _chapters(args.book)
    if args.chapter is not None:
        chapters = [resolve_chapter(chapters, args.chapter)]
    for chapter in chapters:
        if chapter.error:
            print(f"{chapter.name}: cannot be read: {chapter.error}\n")
            continue
        rows = [("parameter", "type", "default", "range", "meaning")]
        for param in chapter.parameters:
            rows.append(
                (
                    param.name,
                    _type_name(param.default),
                    repr(param.default),
                    str(param.range) if param.range else "any",
                    meaning_without_range(param),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        title = _title(chapter)
        print(f"{chapter.name}" + (f": {title}" if title else ""))
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            print("  " + "  ".join([*cells, row[4]]).rstrip())
        for rule in chapter.rules:
            print(f"  rule: {rule.expression} ({rule.reason})")
        print()
    print(f"Rerun a chapter: {PROG} run CHAPTER -p NAME=VALUE (CHAPTER: name or number)")
    return 0


# --- run -------------------------------------------------------------------------------


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        name, value = parse_override(item)
        overrides[name] = value
    return overrides


def _describe_run(run_dir: Path, name: str) -> None:
    """Print where the files of a finished run are."""
    figures = sorted((run_dir / "figures").glob("*")) if (run_dir / "figures").is_dir() else []
    results = sorted(p for p in run_dir.rglob("*.npz"))
    lines = [
        ("notebook", run_dir / f"{name}.ipynb"),
        ("page", run_dir / PAGE_DIR / f"{name}.html"),
        ("parameters", run_dir / PARAMETERS_FILE),
    ]
    print(f"Run folder: {run_dir}")
    for label, path in lines:
        print(f"  {label:<10}  {path.relative_to(run_dir)}")
    stems = sorted({p.stem for p in figures})
    print(f"  {'figures':<10}  " + (", ".join(f"figures/{s}.png|svg" for s in stems) or "none"))
    listed = ", ".join(p.relative_to(run_dir).as_posix() for p in results)
    print(f"  {'results':<10}  " + (listed or "none"))


def _report_failure(exc: ChapterFailure) -> int:
    """One line per failed chapter: cell, exception, partial notebook and traceback log."""
    for outcome in exc.failures:
        print(f"{PROG}: {outcome.summary()}", file=sys.stderr)
    return 1


def _runs_dir(args: argparse.Namespace) -> Path:
    """The runs folder (``--runs-dir`` or ``BOOK/runs``), checked writable."""
    runs_dir = args.runs_dir if args.runs_dir is not None else args.book / "runs"
    _check_output_dir(runs_dir, "--runs-dir" if args.runs_dir is not None else "runs folder")
    return runs_dir


def _scheduler(args: argparse.Namespace) -> str | None:
    """``--scheduler`` or ``$DLNBOOK_SCHEDULER``, checked (exit 2 on a bad address)."""
    address = getattr(args, "scheduler", None)
    address = address if address is not None else os.environ.get("DLNBOOK_SCHEDULER") or None
    return None if address is None else check_address(address)


def cmd_run(args: argparse.Namespace) -> int:
    """Execute one chapter with overrides into ``runs/<chapter>-<hash>/``."""
    chapter = resolve_chapter(_chapters(args.book), args.chapter)
    overrides = _parse_overrides(args.params)
    runs_dir = args.runs_dir if args.runs_dir is not None else args.book / "runs"
    (plan,) = plan_points(chapter, [overrides], runs_dir, _core_dir(args.book), args.allow_large)
    scheduler = _scheduler(args)
    _runs_dir(args)
    if args.dry_run:
        return dry_run([plan], scheduler=scheduler, jobs=1)
    changed = {k: v for k, v in plan.parameters.items() if v != chapter.defaults[k]}
    print(
        f"{chapter.name} with "
        + (", ".join(f"{k}={v!r}" for k, v in changed.items()) or "its default parameters")
    )
    try:
        run_plans(
            [plan],
            jobs=1,
            timeout=args.timeout,
            finalize=finalize_run,
            stream_stderr=True,
            scheduler=scheduler,
            force=args.force,
        )
    except ChapterFailure as exc:
        return _report_failure(exc)
    _describe_run(plan.run_dir, chapter.name)
    return 0


# --- sweep -----------------------------------------------------------------------------


def _sweep_overrides(args: argparse.Namespace, chapter: Chapter) -> list[dict[str, Any]]:
    """The overrides of every point of the grid (``-p`` axes and ``--params`` file)."""
    from dlnbook.sweep import MAX_POINTS, check_names, grid, load_points_file, parse_axis

    axes, explicit = load_points_file(args.points) if args.points else ({}, [])
    for item in args.params:
        name, values = parse_axis(item, chapter.defaults.get(item.partition("=")[0].strip()))
        if name in axes or any(name in point for point in explicit):
            raise UsageError(f"parameter {name!r} is given in {args.points} and with -p")
        axes[name] = values
    check_names(chapter, [*axes, *(n for p in explicit for n in p)])
    if not axes and not explicit:
        raise UsageError("nothing to sweep: give -p NAME=V1,V2,... or --params FILE.yml")
    size = math.prod(len(v) for v in axes.values()) * max(1, len(explicit))
    if size > MAX_POINTS and not args.yes:
        raise UsageError(
            f"the grid has {size} points (more than {MAX_POINTS}); pass --yes to run it"
        )
    return grid(axes, explicit)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run one chapter over a grid of parameters; every point is a ``run``."""
    from dlnbook.sweep import Point, run_sweep, sweep_folder

    chapter = resolve_chapter(_chapters(args.book), args.chapter)
    overrides = _sweep_overrides(args, chapter)
    runs_dir = args.runs_dir if args.runs_dir is not None else args.book / "runs"
    plans = plan_points(chapter, overrides, runs_dir, _core_dir(args.book), args.allow_large)
    scheduler = _scheduler(args)
    _runs_dir(args)
    swept = [
        name
        for name in chapter.defaults
        if len({json.dumps(p.parameters[name], default=repr) for p in plans}) > 1
    ]
    points: list[Point] = []
    keys: set[str] = set()
    for over, plan in zip(overrides, plans, strict=True):
        if plan.key not in keys:  # the same run once
            keys.add(plan.key)
            points.append(Point(len(points) + 1, over, plan))
    sweeps_dir = args.sweeps_dir if args.sweeps_dir is not None else args.book / "sweeps"
    _check_output_dir(sweeps_dir, "--sweeps-dir" if args.sweeps_dir else "sweeps folder")
    folder = sweep_folder(sweeps_dir, chapter, plans)
    if args.dry_run:
        return dry_run([p.plan for p in points], swept, scheduler, args.workers, "point")
    print(f"{chapter.name}: {len(points)} point(s), swept: {', '.join(swept) or 'nothing'}")
    return run_sweep(
        chapter,
        points,
        swept,
        folder,
        scheduler=scheduler,
        jobs=args.workers,
        force=args.force,
        timeout=args.timeout,
        finalize=finalize_run,
        wait_for_workers=args.wait_for_workers,
    )


# --- build -----------------------------------------------------------------------------


def _profile_digest(profile: dict[str, dict[str, Any]]) -> str:
    text = json.dumps(profile, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _die_with_parent() -> None:
    """In a child process, before it runs: be killed when ``dln-book`` dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def cmd_build(args: argparse.Namespace) -> int:
    """Build the whole book with a profile into its own output folder."""
    book: Path = args.book
    chapters = _chapters(book)
    profile = load_profile(args.params)
    validate_book(chapters, profile, str(args.params), args.allow_large)
    stem = args.params.stem
    out = args.out or book / "_build" / f"params-{stem}-{_profile_digest(profile)}"
    out = out.resolve()
    configured_cache = _book_config(book).get("dlnbook_cache_dir")
    cache = book / configured_cache if configured_cache else out / "_build" / "executed"
    plans = plan_runs(chapters, profile, cache, _core_dir(book), args.allow_large)
    if out == (book / "_build").resolve() or out == book.resolve():
        raise UsageError(f"--out {out} would overwrite the default book; pick another folder")
    _check_output_dir(out, "--out")
    scheduler = _scheduler(args)
    if args.dry_run:
        return dry_run(plans, scheduler=scheduler, jobs=args.jobs)
    try:
        # progress bars only when chapters run one at a time; in parallel they would garble
        one_at_a_time = args.jobs == 1 or sum(not p.is_cached for p in plans) == 1
        run_plans(
            plans,
            jobs=args.jobs,
            timeout=args.timeout,
            stream_stderr=one_at_a_time,
            scheduler=scheduler,
        )
    except ChapterFailure as exc:
        return _report_failure(exc)
    return _render_book(book, out, args.params, plans, cache)


def _render_book(book: Path, out: Path, params: Path, plans: Sequence[Plan], cache: Path) -> int:
    """``jupyter-book build`` of the executed chapters (handed over, not planned again)."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book.resolve())]
    env = dict(os.environ, DLNBOOK_PARAMS_FILE=str(params.resolve()))
    env[PLANS_ENV] = encode_plans(plans)
    print(f"building the book into {out}")
    try:
        proc = subprocess.run(
            [*cmd, "--path-output", str(out)],
            cwd=book,
            env=env,
            check=False,
            preexec_fn=_die_with_parent,
        )
    except KeyboardInterrupt:
        print(f"interrupted: the executed chapters are kept in {cache}; the book was not built")
        raise
    if proc.returncode != 0:
        print(f"{PROG}: jupyter-book build failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    print(f"Book built with {params}: file://{out / '_build' / 'html' / 'index.html'}")
    return 0


# --- entry point -----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``dln-book: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _count(minimum: int, unit: str) -> Callable[[str], int]:
    """An argparse type: a whole number ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of {unit}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum} {unit}, got {value}")
        return value

    return parse


_ALLOW_LARGE = (
    "run even if the estimated memory exceeds this machine's or the estimated time exceeds "
    "24 h (the estimates are written in each chapter's parameters cell)"
)


class _Overrides(argparse.Action):
    """``-p NAME=VALUE ...``, repeatable; the same NAME twice is an error (exit 2)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        items = [*getattr(namespace, self.dest), *values]
        names = [item.partition("=")[0].strip() for item in items]
        for name in names:
            if names.count(name) > 1:
                parser.error(f"parameter {name!r} is given twice (-p {name}=...); give it once")
        setattr(namespace, self.dest, items)


def _add_chapter(parser: argparse.ArgumentParser, values: str, help: str) -> None:
    """``CHAPTER`` and ``-p/--param NAME=VALUE(S)``, as ``run`` and ``sweep`` take them."""
    parser.add_argument("chapter", metavar="CHAPTER", help="name (02_boundedness) or number (2)")
    parser.add_argument(
        "-p",
        "--param",
        dest="params",
        action=_Overrides,
        nargs="+",
        default=[],
        metavar=f"NAME={values}",
        help=help,
    )


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """``--timeout``, ``--allow-large`` and ``--dry-run`` (``run``, ``sweep`` and ``build``)."""
    parser.add_argument(
        "--timeout", type=_count(1, "seconds"), help="per-cell timeout in whole seconds"
    )
    parser.add_argument("--allow-large", action="store_true", help=_ALLOW_LARGE)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, then show what would run (cached or not, estimated time); "
        "execute and write nothing",
    )


def _add_execution(parser: argparse.ArgumentParser, force_help: str) -> None:
    """``--force``, ``--runs-dir`` and the limits, as ``run`` and ``sweep`` take them."""
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--runs-dir", type=Path, help="where run folders go (default: BOOK/runs)")
    _add_limits(parser)


def _command(sub: Any, func: Callable, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand running ``func``; its ``--help`` ends with one working example (tested
    by ``tests/test_commands.py``)."""
    name = func.__name__.removeprefix("cmd_")
    parser = sub.add_parser(name, help=help, epilog=f"example: {PROG} {name} {example}".strip())
    parser.set_defaults(func=func)
    return parser


def _add_sweep(sub: Any) -> None:
    """The ``sweep`` subcommand and its options."""
    help = "run one chapter over a grid of parameters (here, or on a Dask cluster)"
    sweeper = _command(sub, cmd_sweep, help, "2 -p depth=2,3,4 -p eta_max=0.1:0.5:5")
    _add_chapter(
        sweeper,
        "VALUES",
        "values of a parameter: V1,V2,... (Python literals), A:B:STEPS (evenly spaced) "
        "or A:B:STEPS:log (geometric); the sweep runs every combination",
    )
    sweeper.add_argument(
        "--params",
        dest="points",
        type=Path,
        metavar="FILE.yml",
        help="YAML: NAME: [values] entries (combined with -p), or 'points:' a list of points",
    )
    sweeper.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler of an existing cluster (tcp://host:8786); default "
        "$DLNBOOK_SCHEDULER or this machine",
    )
    sweeper.add_argument(
        "--wait-for-workers",
        action="store_true",
        help="keep waiting when the cluster has no workers (default: exit 2 after 10 s)",
    )
    sweeper.add_argument(
        "--workers",
        type=_count(1, "workers"),
        metavar="N",
        help="points executed at once on this machine (default: cores)",
    )
    sweeper.add_argument("--yes", action="store_true", help="allow more than 10000 points")
    sweeper.add_argument(
        "--sweeps-dir", type=Path, help="where sweep folders go (default: BOOK/sweeps)"
    )
    _add_execution(sweeper, "execute points that exist")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Rerun the chapters of the book with other parameters.")
    parser.add_argument(
        "--book",
        type=Path,
        default=Path(os.environ.get("DLNBOOK_ROOT", ".")),
        help="folder of the book (_config.yml, chapters/); default: $DLNBOOK_ROOT or '.'",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lister = _command(sub, cmd_list, "every chapter (or one) with its parameters", "2")
    lister.add_argument("chapter", nargs="?", help="only this chapter (number or name)")
    runner = _command(
        sub, cmd_run, "execute one chapter with other parameters", "2 -p depth=4 -p eta_max=0.3"
    )
    _add_chapter(
        runner, "VALUE", "override a parameter; VALUE is a Python literal (3, 1e-3, True, [2, 3])"
    )
    _add_execution(runner, "execute even if the run exists")
    _add_sweep(sub)
    builder = _command(
        sub,
        cmd_build,
        "build the whole book with a parameter profile",
        "--params profiles/smoke.yml",
    )
    builder.add_argument(
        "--params", type=Path, required=True, metavar="FILE.yml", help="chapter -> {NAME: VALUE}"
    )
    builder.add_argument(
        "--out", type=Path, help="output folder (default: BOOK/_build/params-<name>-<hash>)"
    )
    builder.add_argument(
        "--jobs", type=_count(1, "jobs"), help="chapters executed at once (default: cores)"
    )
    _add_limits(builder)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like on Ctrl-C (workers stopped, finished runs kept)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dln-book`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 success, 1 a chapter or the build failed, 2 bad input, 130 after
        Ctrl-C, 143 after SIGTERM.
    """
    args = _parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return args.func(args)
    except (UsageError, ChapterError, ExecutorError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except PublishError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Terminated:  # what was kept is said where it was stopped (run_plans, sweep)
        return 143
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `dln-book list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
