"""Where chapters execute: papermill kernels driven by threads here, or a Dask cluster.

A worker gets the notebook's bytes and parameters and sends the run's files back as bytes; it
opens no path of the client. Every kernel loads :mod:`dlnbook.kernel_guard`; on an exception
in the client (Ctrl-C included) the local kernels are killed at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
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
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCHEDULER_ENV", "ExecutorError", "Outcome", "describe_error", "scheduler_address"]
__all__ += ["available_cores", "execute_task", "open_executor"]

#: Environment variable naming the scheduler of an existing Dask cluster.
SCHEDULER_ENV = "DLNBOOK_SCHEDULER"
#: Seconds to wait for the first worker of a cluster before saying it has none.
NO_WORKERS_TIMEOUT = 10.0
_CONNECT_TIMEOUT = 4.0
#: The kernel's own log in its scratch folder; quoted in the traceback of a failed run.
KERNEL_LOG = "kernel.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDRESS = re.compile(r"(?:(tcp|tls|ws|wss|ucx|inproc)://)?([^\s:/]+|\[[0-9a-fA-F:]+\]):(\d+)/?")


class ExecutorError(RuntimeError):
    """The executor cannot start (bad or unreachable scheduler, a cluster without workers)."""


@functools.cache
def _quiet_kernel_manager() -> type:
    """A kernel manager whose kernel writes its own log (ipykernel's warnings, a traceback
    while it shuts down) to ``kernel.log`` beside its working folder, not to this process's
    stderr; the cells' output still comes back as Jupyter messages."""
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            with open(Path(kw["cwd"]).parent / KERNEL_LOG, "ab") as log:  # the child keeps it
                await super().start_kernel(**kw, stdout=log, stderr=log)

    return QuietKernelManager


@dataclass
class Outcome:
    """What became of one run: the worker fills ``files`` (relative path -> bytes; on failure
    the partial notebook), ``seconds``, ``worker``, ``error`` (one line) and ``traceback``;
    the client adds ``plan`` and, for a failure, the ``partial`` notebook and ``log``."""

    files: dict[str, bytes]
    seconds: float
    worker: str
    error: str | None = None
    traceback: str | None = None
    plan: Any = field(default=None, repr=False)
    partial: Path | None = None
    log: Path | None = None

    def summary(self) -> str:
        where = [f"partial notebook {self.partial}"] * bool(self.partial)
        where += [f"traceback in {self.log}"] * bool(self.log)
        tail = f" ({'; '.join(where)})" if where else ""
        return f"chapter {self.plan.chapter.name} failed {self.error}{tail}"


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``("in cell [3]: ValueError: ...", full text)`` of an exception, papermill's included."""
    if (ename := getattr(exc, "ename", None)) is not None:
        evalue = _ANSI.sub("", str(getattr(exc, "evalue", ""))).strip()
        count = getattr(exc, "exec_count", None)
        where = f"in cell [{count}]: " if count is not None else ""
        full = f"{ename}: {evalue}\n" + "\n".join(getattr(exc, "traceback", []) or [])
        first = evalue.splitlines()[0] if evalue else ""
    else:
        ename, where, full = type(exc).__name__, "", "".join(traceback.format_exception(exc))
        first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{where}{ename}: {first}".rstrip(": "), _ANSI.sub("", full).strip()


def execute_task(
    name: str,
    notebook: bytes,
    parameters: dict[str, Any],
    timeout: float | None = None,
    stream_stderr: bool = False,
) -> Outcome:
    """Execute a chapter with papermill in a scratch folder (deleted after) and return its
    files, the executed notebook as ``<name>.ipynb``; the chapter's exceptions come back as a
    failed outcome. ``stream_stderr`` copies the kernel's stderr (progress bars) here."""
    import papermill

    worker = "local"
    if "distributed" in sys.modules:  # on a Dask worker
        with contextlib.suppress(ValueError):
            worker = sys.modules["distributed"].get_worker().address
    # papermill would warn about parameters its parser does not see; the client validated them
    logging.getLogger("papermill").setLevel(logging.ERROR)
    # one BLAS thread: results do not depend on the machine or on how many chapters run
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    scratch = Path(tempfile.mkdtemp(prefix="dlnbook-run-"))
    run, output = scratch / "run", scratch / "run" / f"{name}.ipynb"
    run.mkdir()
    (scratch / "source.ipynb").write_bytes(notebook)
    start = time.monotonic()
    try:
        papermill.execute_notebook(
            str(scratch / "source.ipynb"),
            str(output),
            parameters=parameters,
            resources={"metadata": {"path": str(run)}},  # the kernel's cwd, without a chdir here
            progress_bar=False,
            log_output=False,
            execution_timeout=None if timeout is None else math.ceil(timeout),
            extra_arguments=[  # CRITICAL: kernel.log without TCP-transport or Ctrl-C notices
                "--IPKernelApp.log_level=CRITICAL",
                "--IPKernelApp.exec_lines=__import__('dlnbook.kernel_guard')",
            ],
            stderr_file=sys.stderr if stream_stderr else None,
            kernel_manager_class=_quiet_kernel_manager(),
        )
        files = {
            p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()
        }
        return Outcome(dict(sorted(files.items())), time.monotonic() - start, worker)
    except Exception as exc:  # noqa: BLE001 - reported to the client, never cached
        partial = {output.name: output.read_bytes()} if output.is_file() else {}
        error, text = describe_error(exc)
        log = scratch / KERNEL_LOG
        if log.is_file() and log.stat().st_size:
            text += f"\n\nThe kernel's own log:\n{log.read_text(errors='replace')}"
        return Outcome(partial, time.monotonic() - start, worker, error, text)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class Executor:
    """Runs :func:`execute_task` calls: ``submit(*args, index) -> future``, ``wait`` as
    :func:`concurrent.futures.wait`, ``capacity()`` at once; ``where`` for the log."""

    where: str
    submit: Callable[..., Any]
    wait: Callable[..., Any]
    capacity: Callable[[], int]

    def run(
        self,
        tasks: Sequence[tuple[Any, ...]],
        poll: float = 1.0,
        on_tick: Callable[[list[int]], None] | None = None,
    ) -> Iterator[tuple[int, Outcome]]:
        """Execute the tasks (arguments of :func:`execute_task`) in order, at most the
        capacity at once; yield ``(index, outcome)`` as each finishes (failed if its worker
        died). ``on_tick`` gets the running indices every ``poll`` seconds."""
        todo, pending = deque(range(len(tasks))), {}
        while todo or pending:
            while todo and len(pending) < self.capacity():
                i = todo.popleft()
                pending[self.submit(*tasks[i], index=i)] = i
            try:
                done = self.wait(list(pending), timeout=poll, return_when="FIRST_COMPLETED")[0]
            except TimeoutError:  # distributed's wait
                done = set()
            for future in done:
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker
                    summary, full = describe_error(exc)
                    outcome = Outcome({}, 0.0, "", f"not executed: {summary}", full)
                yield pending.pop(future), outcome
            if on_tick is not None:
                on_tick(sorted(pending.values()))


def _thread(*args: Any, index: int) -> concurrent.futures.Future:
    """:func:`execute_task` in a daemon thread (it dies with us)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def work() -> None:
        try:
            future.set_result(execute_task(*args))
        except BaseException as exc:  # e.g. no scratch folder: the run fails, not the driver
            future.set_exception(exc)

    threading.Thread(target=work, name="dlnbook-chapter", daemon=True).start()
    return future


def _kill_kernels() -> None:
    """Kill the process groups led by our children, the kernels; a second Ctrl-C exits."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: os._exit(130)) if main else None
    try:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[1:3]
                if int(ppid) == os.getpid() and int(pgrp) == int(stat.parent.name):
                    os.killpg(int(pgrp), signal.SIGKILL)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def scheduler_address(address: str | None) -> str | None:
    """``address`` (else ``$DLNBOOK_SCHEDULER``) as ``scheme://host:port``, None for this
    machine; :class:`ExecutorError` if it is not a scheduler address."""
    address = address if address is not None else os.environ.get(SCHEDULER_ENV) or None
    if address is None:
        return None
    match = _ADDRESS.fullmatch(address.strip())
    if match is None or not 0 < int(match[3]) < 65536:
        raise ExecutorError(
            f"bad scheduler address {address!r}: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)"
        )
    return f"{match[1] or 'tcp'}://{match[2]}:{match[3]}"


def _connect(address: str, wait_for_workers: bool, log: Callable[[str], None]) -> Any:
    """A client of the cluster at ``address`` with a worker, or :class:`ExecutorError`."""
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.ERROR)
    try:
        client = Client(address, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(
            f"cannot reach the Dask scheduler at {address} within {_CONNECT_TIMEOUT:g} s"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. tls:// without certificates
        raise ExecutorError(
            f"cannot connect to the Dask scheduler at {address}: {describe_error(exc)[0]}"
        ) from exc
    try:
        client.wait_for_workers(1, timeout=NO_WORKERS_TIMEOUT)
    except TimeoutError:
        if not wait_for_workers:
            client.close()
            raise ExecutorError(
                f"the cluster at {address} has no workers (waited {NO_WORKERS_TIMEOUT:g} s); "
                "start workers, or pass --wait-for-workers"
            ) from None
        log(f"the cluster at {address} has no workers yet; waiting for one")
        client.wait_for_workers(1)
    return client


@contextlib.contextmanager
def open_executor(
    scheduler: str | None = None,
    workers: int | None = None,
    wait_for_workers: bool = False,
    log: Callable[[str], None] = print,
) -> Iterator[Executor]:
    """The cluster at :func:`scheduler_address` (``wait_for_workers``: wait for its first
    worker), else this machine with ``workers`` threads (default: the cores)."""
    address = scheduler_address(scheduler)
    if address is None:
        slots = max(1, workers or available_cores())
        try:
            yield Executor("on this machine", _thread, concurrent.futures.wait, lambda: slots)
        except BaseException:
            _kill_kernels()
            raise
        return
    from distributed import wait

    client, failed = _connect(address, wait_for_workers, log), False

    def submit(*args: Any, index: int) -> Any:
        key = f"{args[0]}-{index}-{os.urandom(4).hex()}"
        return client.submit(execute_task, *args, key=key, pure=False)

    try:
        yield Executor(
            f"on {address}", submit, wait, lambda: max(1, sum(client.nthreads().values()))
        )
    except BaseException:
        failed = True
        raise
    finally:
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            client.close(timeout=2 if failed else 10)


def available_cores() -> int:
    """Number of CPU cores this process may use."""
    return len(os.sched_getaffinity(0))
