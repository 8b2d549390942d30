"""Chapter 7's GD jobs one by one: CPU seconds per job at the chapter's defaults, before and
after session 5's tanh step, and the makespan of the jobs on the chapter's 2 workers.

Run with ``.venv/bin/python benchmarks/bench_ch7_jobs.py [STEPS]`` (default 20 000 steps per
job, about 1.5 minutes; each job's CPU time is scaled to the chapter's 10⁶ steps, which is
exact up to the per-record work of its 250 records; STEPS = 10⁶ runs the chapter's own jobs).
BLAS is pinned to one thread, as in the chapter's worker processes. "before" runs the same
``tanh_gd`` with the session-4 step (``benchmarks/bench_tanh.py``: loss summed in float64 every
step, ``a @ b.T``, identity products); the linear jobs did not change. The makespan is the
chapter's longest-first order (its ``costs``) on 2 workers, each job taking its measured time.
For each tanh job it also prints how far the recorded losses of the two codes differ. Not part
of the test suite.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import dataclasses  # noqa: E402
import heapq  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from bench_tanh import before_hidden, before_output  # noqa: E402

from dlncore.experiments import journal, tanh  # noqa: E402

PUBLISHED_STEPS = 1_000_000


def _scaled(before):
    """A session-4 loss-and-gradients function in the new signature (``eta * g`` after)."""

    def loss_and_gradients(weights, X, Y, scale=1.0, XT=None):
        loss, grads = before(weights, X, Y)
        return loss, [scale * g for g in grads]

    return loss_and_gradients


BEFORE = {
    "hidden": (tanh.tanh_loss, _scaled(before_hidden)),
    "output": (tanh.output_tanh_loss, _scaled(before_output)),
}


def cpu_seconds(func, kwargs):
    """CPU seconds of ``func(**kwargs)``, and its result."""
    began = time.process_time()
    run = func(**kwargs)
    return time.process_time() - began, run


def makespan(durations, workers: int = 2) -> float:
    """Finish time of jobs started in the given order, each on the first free worker."""
    free = [0.0] * workers
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def main(steps: int) -> None:
    e = journal.Experiment(70, 200, 35, "flat", 1.0, 3.4, 0, 35, 2, 1.0, 3e-5, steps, 250)
    e = dataclasses.replace(e, init="orthogonal")
    t = dataclasses.replace(e, rank=25)
    scale = PUBLISHED_STEPS / steps
    rows = []  # (chapter's cost, name, before, after)
    for depth in (2, 3, 5):
        for dtype, weight in (("float64", 1.0), ("float32", 0.7)):
            kwargs = dict(experiment=e, depth=depth, dtype=dtype)
            sec = scale * cpu_seconds(journal.linear_run, kwargs)[0]
            cost = PUBLISHED_STEPS * (depth + 1) * weight
            rows.append((cost, f"linear N={depth} {dtype}", sec, sec))
        for reading in ("hidden", "output"):
            kwargs = dict(experiment=t, depth=depth, dtype="float32", reading=reading)
            after, new = cpu_seconds(journal.tanh_run, kwargs)
            saved = tanh.READINGS[reading]
            tanh.READINGS[reading] = BEFORE[reading]
            try:
                before, old = cpu_seconds(journal.tanh_run, kwargs)
            finally:
                tanh.READINGS[reading] = saved
            change = float(np.max(np.abs(new.loss / old.loss - 1)))
            cost = PUBLISHED_STEPS * (depth + 1) * 200 / 70
            name = f"tanh-{reading} N={depth} float32"
            rows.append((cost, name, scale * before, scale * after))
            print(f"  {name}: recorded losses before and after differ by {change:.1e} (relative)")
    rows.sort(key=lambda r: -r[0])  # the chapter's longest-first order
    print(f"CPU seconds per job at {PUBLISHED_STEPS:.0e} steps (measured at {steps} steps):")
    for _, name, before, after in rows:
        print(f"  {name:26s} before {before:6.0f} s | after {after:6.0f} s | {before / after:.2f}x")
    for label, col in (("before", 2), ("after", 3)):
        total = sum(r[col] for r in rows)
        span = makespan([r[col] for r in rows])
        print(
            f"{label}: total {total:.0f} s,"
            f" makespan on 2 workers {span:.0f} s ({span / 60:.1f} min)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
