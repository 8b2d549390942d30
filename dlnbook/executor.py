"""The one way chapters are executed: papermill runs as Dask tasks.

A :class:`Task` carries everything a worker needs (the notebook's bytes, the parameters, the
per-cell timeout) and :func:`execute_task` brings back everything the run produced (the
executed notebook, its figures and result files) as bytes, so workers need the package
installed but no filesystem shared with the client. The client alone writes run folders
(:mod:`dlnbook.rundirs`), each in one atomic rename.

:class:`Executor` runs tasks on a ``dask.distributed`` cluster: by default a
``LocalCluster`` on this machine (one single-threaded worker process per chapter executed at
once), or an existing cluster given by the address of its scheduler (argument, or the
environment variable ``DLNBOOK_SCHEDULER``). Nothing is started before the first task is
submitted.

Stopping. Local workers ignore SIGINT (a Ctrl-C in the terminal reaches the whole process
group; only the client reacts). When the client stops on an exception (Ctrl-C included),
the local workers are killed at once and the Jupyter kernels they started follow within a
second (ipykernel exits when its parent changes); a second Ctrl-C during that cleanup exits
immediately. If the client itself is killed, Dask's worker processes exit as soon as their
parent is gone, and the kernels after them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnbook.rundirs import pid_alive

__all__ = [
    "SCHEDULER_ENV",
    "Executor",
    "ExecutorError",
    "Task",
    "TaskResult",
    "execute_task",
]

#: Environment variable naming the scheduler of an existing Dask cluster.
SCHEDULER_ENV = "DLNBOOK_SCHEDULER"
RUN_RECORD = "run.json"
_TOPIC = "dlnbook-started"
_CONNECT_TIMEOUT = 4.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# papermill changes the working directory of the whole process: one chapter at a time per
# worker process, even on a worker started with several threads.
_ONE_CHAPTER_AT_A_TIME = threading.Lock()


class ExecutorError(RuntimeError):
    """The executor cannot start (e.g. the scheduler is unreachable)."""


@dataclass(frozen=True)
class Task:
    """One chapter execution, as sent to a worker.

    Attributes
    ----------
    name : str
        Chapter name (file stem); the executed notebook is ``<name>.ipynb``.
    source : str
        Path of the chapter notebook on the client (recorded in ``run.json``).
    notebook : bytes
        Contents of the chapter notebook.
    parameters : dict
        Effective parameters, injected by papermill.
    key : str
        Run key (hex SHA-256), recorded in ``run.json``.
    timeout : float or None
        Per-cell timeout in seconds.
    finalize : callable or None
        Module-level ``finalize(directory, executed_notebook)`` run on the worker after a
        successful execution (e.g. the HTML export); if it raises, the run fails.
    stream_stderr : bool
        Copy the kernel's stderr (progress bars) to the worker's stderr as it arrives.
    """

    name: str
    source: str
    notebook: bytes
    parameters: dict[str, Any]
    key: str
    timeout: float | None = None
    finalize: Callable[[Path, Path], None] | None = None
    stream_stderr: bool = False


@dataclass
class TaskResult:
    """What a worker brings back.

    Attributes
    ----------
    files : dict of str to bytes
        Relative path -> contents: the whole run folder on success, the partial notebook
        (if any) on failure.
    seconds : float
        Duration of the execution on the worker.
    worker : str
        Address of the worker.
    error : str or None
        One-line summary of the failure (cell and exception), None on success.
    traceback : str or None
        Full error text with the cell's traceback, None on success.
    """

    files: dict[str, bytes]
    seconds: float
    worker: str
    error: str | None = None
    traceback: str | None = None


def _strip(text: str) -> str:
    return _ANSI.sub("", text).strip()


def describe_error(exc: BaseException) -> tuple[str, str]:
    """One-line summary and full text of an exception, papermill's cell error included.

    Returns
    -------
    tuple of str
        ``("in cell [3]: ValueError: ...", full text with the cell's traceback)``.
    """
    ename = getattr(exc, "ename", None)
    if ename is not None:
        evalue = _strip(str(getattr(exc, "evalue", "")))
        count = getattr(exc, "exec_count", None)
        where = f"in cell [{count}]: " if count is not None else ""
        lines = "\n".join(getattr(exc, "traceback", []) or [])
        first = evalue.splitlines()[0] if evalue else ""
        return f"{where}{ename}: {first}".rstrip(": "), _strip(f"{ename}: {evalue}\n{lines}")
    import traceback

    text = "".join(traceback.format_exception(exc))
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}".rstrip(": "), _strip(text)


def _read_tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _announce(task: Task) -> None:
    """Tell the client that ``task`` started, and where (shown as 'running')."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(_TOPIC, {"key": task.key, "worker": worker.address})


def prune_worker_temp(tmp_root: str | Path | None = None) -> None:
    """Delete the scratch folders of executions whose worker process no longer exists."""
    root = Path(tmp_root or tempfile.gettempdir())
    for folder in root.glob("dlnbook-run-*"):
        match = re.fullmatch(r"dlnbook-run-(\d+)-.*", folder.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


def execute_task(task: Task) -> TaskResult:
    """Execute a chapter with papermill in a scratch folder and return its files (worker side).

    The scratch folder (``<tmp>/dlnbook-run-<pid>-*``) is deleted before returning; folders
    left by killed workers are deleted by the next task on that machine.
    """
    import json
    from datetime import UTC, datetime

    import papermill

    _announce(task)
    prune_worker_temp()
    # papermill's parser trips over comments that ours accepts and would warn about
    # "unknown" parameters; the parameters were validated by the client.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    scratch = Path(tempfile.mkdtemp(prefix=f"dlnbook-run-{os.getpid()}-"))
    source = scratch / "source.ipynb"
    source.write_bytes(task.notebook)
    run = scratch / "run"
    run.mkdir()
    output = run / f"{task.name}.ipynb"
    start = time.monotonic()
    try:
        with _ONE_CHAPTER_AT_A_TIME:
            # one BLAS thread: results do not depend on the machine or on how many chapters
            # run at once (a threaded reduction may sum in another order); the chapters'
            # matrices are small, and chapter 7 runs worker processes of its own
            os.environ.update({var: "1" for var in _THREAD_VARS})
            os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
            try:
                papermill.execute_notebook(
                    str(source),
                    str(output),
                    parameters=task.parameters,
                    cwd=str(run),
                    progress_bar=False,
                    log_output=False,
                    # nbclient takes whole seconds
                    execution_timeout=None if task.timeout is None else math.ceil(task.timeout),
                    # CRITICAL: no TCP-transport warning, and no "KeyboardInterrupt caught
                    # in kernel" when jupyter_client interrupts the kernel to shut it down
                    extra_arguments=[
                        "--IPKernelApp.log_level=CRITICAL",
                        # the kernel's process group ends with this worker process
                        "--IPKernelApp.exec_lines=__import__('dlnbook.kernel_guard')",
                    ],
                    stderr_file=sys.stderr if task.stream_stderr else None,
                )
                record = {
                    "chapter": task.name,
                    "notebook": task.source,
                    "key": task.key,
                    "parameters": task.parameters,
                    "seconds": round(time.monotonic() - start, 3),
                    "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                    "worker": _worker_address(),
                }
                text = json.dumps(record, indent=2, default=repr) + "\n"
                (run / RUN_RECORD).write_text(text, encoding="utf-8")
                if task.finalize is not None:
                    task.finalize(run, output)
            except Exception as exc:  # noqa: BLE001 - reported to the client, never cached
                summary, full = describe_error(exc)
                partial = {output.name: output.read_bytes()} if output.is_file() else {}
                seconds = time.monotonic() - start
                return TaskResult(partial, seconds, _worker_address(), summary, full)
        return TaskResult(_read_tree(run), time.monotonic() - start, _worker_address())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class Executor:
    """Chapter executions on Dask: a lazily started ``LocalCluster`` or an existing cluster.

    Use as a context manager; :meth:`run` submits tasks and yields their results in
    completion order.

    Parameters
    ----------
    scheduler : str, optional
        Address of the scheduler of an existing cluster (``tcp://host:8786``); default
        ``$DLNBOOK_SCHEDULER``, else a ``LocalCluster``.
    workers : int, optional
        Worker processes of the ``LocalCluster`` (default: available cores); ignored with
        a scheduler.
    """

    scheduler: str | None = None
    workers: int | None = None
    _client: Any = field(default=None, init=False, repr=False)
    _cluster: Any = field(default=None, init=False, repr=False)
    _started: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.scheduler is None:
            self.scheduler = os.environ.get(SCHEDULER_ENV) or None

    @property
    def is_local(self) -> bool:
        """Whether tasks run on a ``LocalCluster`` started here."""
        return self.scheduler is None

    def slots_wanted(self) -> int:
        """Worker processes of the local cluster."""
        return max(1, self.workers or available_cores())

    # --- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(abort=exc_type is not None)

    def start(self, tasks: int) -> None:
        """Connect to the scheduler, or start a local cluster sized for ``tasks``."""
        if self._client is not None:
            return
        import dask
        from distributed import Client

        logging.getLogger("distributed").setLevel(logging.ERROR)
        if not self.is_local:
            try:
                self._client = Client(self.scheduler, timeout=_CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(
                    f"cannot reach the Dask scheduler at {self.scheduler} within "
                    f"{_CONNECT_TIMEOUT:g} s"
                ) from exc
        else:
            from distributed import LocalCluster

            n = max(1, min(self.slots_wanted(), tasks))
            # Worker processes inherit an ignored SIGINT; restarted ones get the plugin.
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
            try:
                with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
                    self._cluster = LocalCluster(
                        n_workers=n,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                        memory_limit=0,
                    )
                    self._client = Client(self._cluster)
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)
            from dlnbook.worker_plugin import IgnoreInterrupts

            self._client.register_plugin(IgnoreInterrupts())
        self._client.subscribe_topic(_TOPIC, self._on_started)

    def _on_started(self, event: tuple[float, dict[str, str]]) -> None:
        _, msg = event
        self._started[msg["key"]] = msg["worker"]

    def close(self, abort: bool = False) -> None:
        """Stop the client and the local cluster.

        Local worker processes are killed right away: every result they produced has been
        received (or, with ``abort``, is abandoned), and a clean shutdown would wait for
        the chapters they still run. With ``abort`` a second Ctrl-C exits immediately.
        """
        if self._client is None:
            return
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, _exit_now) if abort and main else None
        try:
            if self._cluster is not None:
                self._kill_local_workers()
            self._client.close(timeout=2 if abort else 10)
            if self._cluster is not None:
                self._cluster.close(timeout=5 if abort else 30)
        except (OSError, TimeoutError, RuntimeError):  # pragma: no cover - best effort
            pass
        finally:
            self._client = self._cluster = None
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _kill_local_workers(self) -> None:
        for nanny in list(self._cluster.workers.values()):
            nanny.auto_restart = False
            process = getattr(getattr(nanny, "process", None), "process", None)
            if process is not None and process.pid:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # --- running tasks -------------------------------------------------------------------

    def run(
        self,
        tasks: Iterable[Task],
        poll: float = 1.0,
        on_tick: Callable[[dict[str, str]], None] | None = None,
    ) -> Iterator[tuple[int, TaskResult]]:
        """Submit tasks and yield ``(index, result)`` as each finishes.

        A task whose workers all died (Dask retries it elsewhere up to
        ``distributed.scheduler.allowed-failures`` times) or that failed on the worker
        outside the chapter comes back as a failed :class:`TaskResult`.

        Parameters
        ----------
        tasks : iterable of Task
            What to run, in order of priority.
        poll : float
            Seconds between calls of ``on_tick``.
        on_tick : callable, optional
            Called with {task key: worker address} of the tasks currently running.

        Yields
        ------
        tuple of (int, TaskResult)
            Position of the task in ``tasks`` and its result.
        """
        from distributed import wait

        tasks = list(tasks)
        if not tasks:
            return
        self.start(len(tasks))
        futures: dict[Any, int] = {}
        queue = deque(range(len(tasks)))
        pending: set[Any] = set()
        while queue or pending:
            # Only as many tasks in flight as the cluster has threads: Dask assigns tasks of
            # different chapters to workers when they are submitted, and a long chapter
            # would hold the others queued behind it while another worker idles.
            capacity = max(1, sum(self._client.nthreads().values()))
            while queue and len(pending) < capacity:
                i = queue.popleft()
                key = f"{tasks[i].name}-{tasks[i].key[:12]}-{i}"
                future = self._client.submit(execute_task, tasks[i], key=key, pure=False)
                futures[future] = i
                pending.add(future)
            try:
                done, not_done = wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
                pending = set(not_done)
            except TimeoutError:
                done = set()
            for future in done:
                index = futures[future]
                task = tasks[index]
                self._started.pop(task.key, None)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker
                    summary, full = describe_error(exc)
                    result = TaskResult({}, 0.0, "", f"not executed: {summary}", full)
                yield index, result
            if on_tick is not None:
                keys = {tasks[futures[f]].key for f in pending}
                on_tick({k: w for k, w in self._started.items() if k in keys})


def _exit_now(signum: int, frame: Any) -> None:
    """Second Ctrl-C while stopping: exit at once (our workers die with this process)."""
    os._exit(130)


def available_cores() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
