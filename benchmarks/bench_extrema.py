"""Cost of checking a quantity at EVERY gradient-descent step, measured in one process.

Run with ``.venv/bin/python benchmarks/bench_extrema.py`` (under a minute). The workload is
chapter 2's at its default sizes (15 step sizes in one batch, widths 8, depth 3) for
``STEPS`` steps: the descent margin of every step and the drift ratio
``max_j‖D_j(k) − D_j(0)‖_op / 2η(L(0) − L(k))`` at every iteration (where the descent
condition held before). Rows, each timed best of three:

- ``plain``: one run recording the figures' geometric grid only (no every-step check);
- ``record every step``: the plain run plus a second run recording loss, gradient norm and
  drift at every iteration, reduced afterwards (chapter 2 before ``gd(extrema=...)``);
- ``extrema``: one run with ``gd(extrema=...)`` (the margin and the drift ratio);
- ``extrema, margin only``: the cost of the descent margins alone.

Prints seconds and the ratio to ``record every step``. Not part of the test suite.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

import dlncore as dc  # noqa: E402
from dlncore import bounds  # noqa: E402

STEPS = 5000

problem = dc.synthetic_problem(8, 8, 200, rank=8, seed=0, noise=0.2)
start = dc.init.gaussian([8, 8, 8, 8], 0.15, seed=1)
etas = np.geomspace(0.004, 0.5, 15)
loss0 = float(problem.loss(start))
tol = -1e-12 * loss0
batch = [np.broadcast_to(w, (etas.size, *w.shape)).copy() for w in start]
grid_metrics = {
    "drift": lambda w: dc.metrics.imbalance_drift(w, batch),
    "imbalance": dc.metrics.imbalance,
    "factor_norm": dc.metrics.max_factor_norm,
    "end_to_end_norm": dc.metrics.end_to_end_norm,
}


def drift_over_bound(it):
    bound = bounds.drift_bound(etas, loss0, it.loss)
    ratio = grid_metrics["drift"](it.weights) / np.where(bound > 0, bound, np.inf)
    return np.where(it.active & (it.k > 0) & (it.descent_min >= tol), ratio, np.nan)


def plain():
    return dc.gd(problem, batch, etas[None], STEPS, metrics=grid_metrics)


def record_every_step():
    plain()
    every = dc.gd(
        problem,
        batch,
        etas[None],
        STEPS,
        record=np.arange(STEPS + 1),
        metrics={"grad_norm": None, "drift": grid_metrics["drift"]},
    )
    margin = every.loss[:-1] - every.loss[1:] - 0.5 * etas * every.metrics["grad_norm"][:-1] ** 2
    failed = np.cumsum(np.nan_to_num(margin) < tol, axis=0) > 0
    held = np.vstack([np.zeros((1, etas.size), bool), ~failed])
    bound = bounds.drift_bound(etas, loss0, every.loss)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(held, every.metrics["drift"] / bound, np.nan)
    return np.nanmin(margin, axis=0), np.fmax.reduce(ratio)


def extrema():
    every_step = {"margin": lambda it: it.descent, "drift_ratio": drift_over_bound}
    run = dc.gd(problem, batch, etas[None], STEPS, metrics=grid_metrics, extrema=every_step)
    return run.extrema["margin"][0], run.extrema["drift_ratio"][1]


def margin_only():
    every_step = {"margin": lambda it: it.descent}
    return dc.gd(problem, batch, etas[None], STEPS, metrics=grid_metrics, extrema=every_step)


def best_of_three(func) -> float:
    times = []
    for _ in range(3):
        began = time.perf_counter()
        func()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    (m_old, r_old), (m_new, r_new) = record_every_step(), extrema()
    print(f"agreement: drift ratio {np.nanmax(np.abs(r_new / r_old - 1)):.1e} (relative), ", end="")
    print(f"smallest margin {np.max(np.abs(m_new - m_old)) / loss0:.1e} (times L(0))")
    base = best_of_three(record_every_step)
    print(f"{STEPS} steps, 15 step sizes:")
    for name, func in [
        ("plain", plain),
        ("record every step", record_every_step),
        ("extrema", extrema),
        ("extrema, margin only", margin_only),
    ]:
        seconds = base if func is record_every_step else best_of_three(func)
        print(f"  {name:22s} {seconds:7.2f} s   {seconds / base:5.2f} x record every step")


if __name__ == "__main__":
    main()
