"""Where chapters execute: papermill kernels driven by threads here, or Dask workers elsewhere.

A :class:`Task` carries everything a worker needs (the notebook's bytes, the parameters, the
per-cell timeout) and :func:`execute_task` brings back what the run produced (the executed
notebook, its figures and result files) as bytes. A worker opens no path of the client; the
client alone writes run folders and renders pages (:mod:`dlnbook.runner`).

:class:`LocalExecutor` runs tasks on this machine: one thread per chapter executed at once,
each driving its own Jupyter kernel (the work runs in the kernel, a process of its own, so no
worker process is needed). :class:`DaskExecutor` runs them on an existing Dask cluster, given
by the address of its scheduler (``--scheduler`` or the environment variable
``DLNBOOK_SCHEDULER``); the workers need the package installed and nothing else.

Stopping. Every kernel imports :mod:`dlnbook.kernel_guard`: it kills its process group (the
kernel and the processes it started) as soon as the process that started it is gone. On an
exception in the client (Ctrl-C included) :meth:`LocalExecutor.close` kills the kernels' groups
at once; a second Ctrl-C during that cleanup exits immediately.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEDULER_ENV",
    "DaskExecutor",
    "ExecutorError",
    "LocalExecutor",
    "Task",
    "TaskResult",
    "check_address",
    "describe_error",
    "execute_task",
    "open_executor",
]

#: Environment variable naming the scheduler of an existing Dask cluster.
SCHEDULER_ENV = "DLNBOOK_SCHEDULER"
_CONNECT_TIMEOUT = 4.0
#: Seconds to wait for the first worker of a cluster before saying it has none.
NO_WORKERS_TIMEOUT = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_ADDRESS = re.compile(r"(?:(tcp|tls|ws|wss|ucx|inproc)://)?([^\s:/]+|\[[0-9a-fA-F:]+\]):(\d+)/?")


class ExecutorError(RuntimeError):
    """The executor cannot start (bad or unreachable scheduler, a cluster without workers)."""


@dataclass(frozen=True)
class Task:
    """One chapter execution, as sent to a worker.

    Attributes
    ----------
    name : str
        Chapter name (file stem); the executed notebook is ``<name>.ipynb``.
    notebook : bytes
        Contents of the chapter notebook.
    parameters : dict
        Effective (validated) parameters, injected by papermill.
    key : str
        Run key (hex SHA-256): names the task.
    timeout : float or None
        Per-cell timeout in seconds.
    stream_stderr : bool
        Copy the kernel's stderr (progress bars) to this process's stderr as it arrives.
    """

    name: str
    notebook: bytes
    parameters: dict[str, Any]
    key: str
    timeout: float | None = None
    stream_stderr: bool = False


@dataclass
class TaskResult:
    """What a worker brings back.

    Attributes
    ----------
    files : dict of str to bytes
        Relative path -> contents: everything the run wrote, the executed notebook
        ``<name>.ipynb`` included; on failure only the partial notebook (if any).
    seconds : float
        Duration of the execution on the worker.
    worker : str
        Where it ran (``local`` or the Dask worker's address).
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


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def execute_task(task: Task) -> TaskResult:
    """Execute a chapter with papermill in a scratch folder and return its files.

    Runs on a Dask worker or in a thread of this process; it reads and writes only its
    scratch folder (``<tmp>/dlnbook-run-*``, deleted before returning), which is the working
    directory of the kernel. Exceptions of the chapter come back as a failed result.
    """
    import papermill

    worker = _worker_name()
    # papermill's parser trips over comments that ours accepts and would warn about
    # "unknown" parameters; the parameters were validated by the client.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    # one BLAS thread: results do not depend on the machine or on how many chapters run at
    # once (a threaded reduction may sum in another order); kernels inherit the environment
    os.environ.update({var: "1" for var in _THREAD_VARS})
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    scratch = Path(tempfile.mkdtemp(prefix="dlnbook-run-"))
    run = scratch / "run"
    run.mkdir()
    (scratch / "source.ipynb").write_bytes(task.notebook)
    output = run / f"{task.name}.ipynb"
    start = time.monotonic()
    try:
        papermill.execute_notebook(
            str(scratch / "source.ipynb"),
            str(output),
            parameters=task.parameters,
            # the kernel's working directory, without papermill's process-wide chdir
            resources={"metadata": {"path": str(run)}},
            progress_bar=False,
            log_output=False,
            execution_timeout=None if task.timeout is None else math.ceil(task.timeout),
            # CRITICAL: no TCP-transport warning, no "KeyboardInterrupt caught in kernel"
            extra_arguments=[
                "--IPKernelApp.log_level=CRITICAL",
                "--IPKernelApp.exec_lines=__import__('dlnbook.kernel_guard')",
            ],
            stderr_file=sys.stderr if task.stream_stderr else None,
        )
        return TaskResult(_read_tree(run), time.monotonic() - start, worker)
    except Exception as exc:  # noqa: BLE001 - reported to the client, never cached
        summary, full = describe_error(exc)
        partial = {output.name: output.read_bytes()} if output.is_file() else {}
        return TaskResult(partial, time.monotonic() - start, worker, summary, full)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- on this machine: threads ----------------------------------------------------------


def _kernel_groups() -> list[int]:
    """Process groups led by direct children of this process: the kernels (Linux)."""
    groups = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        if int(fields[1]) == os.getpid() and int(fields[2]) == pid:
            groups.append(pid)
    return groups


class LocalExecutor:
    """Chapters executed by threads of this process, each driving a papermill kernel.

    Parameters
    ----------
    workers : int, optional
        Chapters executed at once (default: the available cores).
    """

    is_local = True
    where = "on this machine"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or available_cores())

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.close_on_error()

    @staticmethod
    def close_on_error() -> None:
        """Kill the kernels (and what they started) at once; a second Ctrl-C exits."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, _exit_now) if main else None
        try:
            for group in _kernel_groups():
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def run(
        self,
        tasks: Iterable[Task],
        poll: float = 1.0,
        on_tick: Callable[[list[int]], None] | None = None,
    ) -> Iterator[tuple[int, TaskResult]]:
        """Execute tasks in order of priority; yield ``(index, result)`` as each finishes.

        ``on_tick`` receives the indices of the running tasks every ``poll`` seconds and
        whenever a task starts or ends.
        """
        tasks = list(tasks)
        todo = deque(range(len(tasks)))
        running: set[int] = set()
        results: queue.Queue[tuple[int, TaskResult]] = queue.Queue()

        def work() -> None:
            while True:
                try:
                    index = todo.popleft()
                except IndexError:
                    return
                running.add(index)
                results.put((index, execute_task(tasks[index])))

        for _ in range(min(self.workers, len(tasks))):  # daemons: they die with us
            threading.Thread(target=work, name="dlnbook-chapter", daemon=True).start()
        for _ in tasks:
            while True:
                try:
                    index, result = results.get(timeout=poll)
                    break
                except queue.Empty:
                    if on_tick is not None:
                        on_tick(sorted(running))
            running.discard(index)
            yield index, result


# --- elsewhere: an existing Dask cluster -----------------------------------------------


def check_address(address: str) -> str:
    """A Dask scheduler address as ``scheme://host:port``, or :class:`ExecutorError`.

    Accepts ``tcp://host:port`` (and the other Dask schemes) or ``host:port``.
    """
    match = _ADDRESS.fullmatch(address.strip())
    if not address.strip() or match is None or not 0 < int(match[3]) < 65536:
        raise ExecutorError(
            f"bad scheduler address {address!r}: expected tcp://HOST:PORT (e.g. "
            "tcp://127.0.0.1:8786)"
        )
    return f"{match[1] or 'tcp'}://{match[2]}:{match[3]}"


class DaskExecutor:
    """Chapter executions on an existing Dask cluster.

    Parameters
    ----------
    address : str
        Address of its scheduler (``tcp://host:8786``).
    wait_for_workers : bool
        Keep waiting when the cluster has no workers (else an error after
        :data:`NO_WORKERS_TIMEOUT` seconds).
    log : callable
        Receives one line when the cluster has no workers yet.
    """

    is_local = False

    def __init__(
        self, address: str, wait_for_workers: bool = False, log: Callable[[str], None] = print
    ) -> None:
        self.address = check_address(address)
        self.where = f"on {self.address}"
        self.wait, self.log = wait_for_workers, log
        self.client: Any = None

    def __enter__(self) -> DaskExecutor:
        from distributed import Client

        logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            self.client = Client(self.address, timeout=_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {self.address} within {_CONNECT_TIMEOUT:g} s"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - e.g. tls:// without certificates
            raise ExecutorError(
                f"cannot connect to the Dask scheduler at {self.address}: {describe_error(exc)[0]}"
            ) from exc
        self._wait_for_workers()
        return self

    def _wait_for_workers(self) -> None:
        try:
            self.client.wait_for_workers(1, timeout=NO_WORKERS_TIMEOUT)
            return
        except TimeoutError:
            if not self.wait:
                self.client.close()
                raise ExecutorError(
                    f"the cluster at {self.address} has no workers (waited "
                    f"{NO_WORKERS_TIMEOUT:g} s); start workers, or pass --wait-for-workers"
                ) from None
        self.log(f"the cluster at {self.address} has no workers yet; waiting for one")
        self.client.wait_for_workers(1)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.client.close(timeout=2 if exc_type else 10)
        except (OSError, TimeoutError, RuntimeError):  # pragma: no cover - best effort
            pass

    def run(
        self,
        tasks: Iterable[Task],
        poll: float = 1.0,
        on_tick: Callable[[list[int]], None] | None = None,
    ) -> Iterator[tuple[int, TaskResult]]:
        """Submit tasks (no more at once than the cluster has threads, so that a long one
        does not hold others queued behind it on a busy worker); yield ``(index, result)``
        as each finishes. A task whose workers died comes back as a failed result."""
        from distributed import wait

        tasks = list(tasks)
        futures: dict[Any, int] = {}
        todo, pending = deque(range(len(tasks))), set()
        while todo or pending:
            capacity = max(1, sum(self.client.nthreads().values()))
            while todo and len(pending) < capacity:
                i = todo.popleft()
                key = f"{tasks[i].name}-{tasks[i].key[:12]}-{i}"
                future = self.client.submit(execute_task, tasks[i], key=key, pure=False)
                futures[future] = i
                pending.add(future)
            try:
                done, not_done = wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
                pending = set(not_done)
            except TimeoutError:
                done = set()
            for future in done:
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker
                    summary, full = describe_error(exc)
                    result = TaskResult({}, 0.0, "", f"not executed: {summary}", full)
                yield futures[future], result
            if on_tick is not None:
                on_tick(sorted(futures[f] for f in pending))


def open_executor(
    scheduler: str | None = None,
    workers: int | None = None,
    wait_for_workers: bool = False,
    log: Callable[[str], None] = print,
) -> LocalExecutor | DaskExecutor:
    """The cluster at ``scheduler`` (or ``$DLNBOOK_SCHEDULER``), else this machine."""
    address = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None
    if address is None:
        return LocalExecutor(workers)
    return DaskExecutor(address, wait_for_workers, log)


def _exit_now(signum: int, frame: Any) -> None:
    """Second Ctrl-C while stopping: exit at once (the kernels die with this process)."""
    os._exit(130)


def available_cores() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
