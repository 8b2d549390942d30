"""Run independent jobs (e.g. one gradient-descent run per depth and dtype) on several cores."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from tqdm.std import tqdm  # text bars: no ipywidgets needed

Job = tuple[Callable[..., Any], Mapping[str, Any]]
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# Run by each worker (through the builtin ``exec``, so that it starts before the worker
# imports anything heavy): exit as soon as the process that started the worker is gone. A
# worker busy with a job, or blocked on its job queue, would otherwise outlive a killed
# kernel (and the run or build that started it) and keep a core busy.
_EXIT_WITH_PARENT = """
import os, threading, time

def _watch(parent={parent}):
    while os.getppid() == parent:
        time.sleep(0.25)
    os._exit(1)

threading.Thread(target=_watch, name="exit-with-parent", daemon=True).start()
"""


@contextmanager
def _blas_threads(threads: int):
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    os.environ.update({var: str(threads) for var in _THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def run_many(
    jobs: Sequence[Job],
    max_workers: int = 2,
    *,
    threads_per_worker: int = 1,
    progress: bool | str = False,
) -> list[Any]:
    """Evaluate ``func(**kwargs)`` for every ``(func, kwargs)`` in ``jobs``; results in order.

    With ``max_workers > 1`` the jobs run in fresh (spawned) worker processes whose BLAS uses
    ``threads_per_worker`` threads, so ``func`` must be importable (a module-level function,
    not one defined in a notebook) and its arguments and result picklable. Jobs start in the
    given order: list the longest first for a good balance. ``max_workers=1`` runs them here,
    one after the other. Results do not depend on ``max_workers``. The workers exit within
    half a second when this process dies (killed with its run or build).
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    label = progress if isinstance(progress, str) else "jobs"
    bar = tqdm(total=len(jobs), desc=label, leave=False) if progress else None
    results: list[Any] = [None] * len(jobs)
    if max_workers == 1 or len(jobs) <= 1:
        for i, (func, kwargs) in enumerate(jobs):
            results[i] = func(**kwargs)
            if bar is not None:
                bar.update()
    else:
        with (
            _blas_threads(threads_per_worker),
            ProcessPoolExecutor(
                max_workers,
                mp_context=get_context("spawn"),
                initializer=exec,
                initargs=(_EXIT_WITH_PARENT.format(parent=os.getpid()), {}),
            ) as pool,
        ):
            futures = {pool.submit(func, **kwargs): i for i, (func, kwargs) in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return results
