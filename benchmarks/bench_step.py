"""Speed of the compiled step (dlncore.compiled) against the numpy step, in one process.

Run with ``.venv/bin/python benchmarks/bench_step.py`` (about a minute, after the kernels are
compiled and cached once). BLAS is pinned to one thread. For each case it prints the CPU time
per step of ``dc.gd(..., engine="numpy")`` and of ``engine="auto"`` (the compiled step where it
applies: one float64 chain of width ``≤ COMPILED_MAX_WIDTH`` and a constant step) and their ratio.
Targets: one trajectory at ``d = 10, N = 3`` at least 4× the numpy step; batched starts and
``d = 70`` no slower (``auto`` takes the numpy step there). Not part of the test suite.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

import dlncore as dc  # noqa: E402
from dlncore.descent import COMPILED_MAX_WIDTH  # noqa: E402


def rate(func, repeats: int = 7) -> float:
    """Steps per CPU second of ``func(n)`` (which runs ``n`` steps), best of ``repeats``.

    CPU time (``time.process_time``) rather than wall time: on a shared machine other jobs
    inflate wall times but hardly the CPU time of this process (BLAS runs on one thread).
    """
    n = 16
    while True:
        began = time.process_time()
        func(n)
        if time.process_time() - began > 0.05:
            break
        n *= 4
    best = 0.0
    for _ in range(repeats):
        began = time.process_time()
        func(n)
        best = max(best, n / max(time.process_time() - began, 1e-9))
    return best


def case(d: int, depth: int, batch: int | None = None, m: int = 100, eta: float = 1e-3) -> None:
    problem = dc.synthetic_problem(d, d, m, d // 2, seed=0)
    weights = dc.init.gaussian([d] * (depth + 1), 1 / np.sqrt(d), seed=1, batch=batch)
    dc.gd(problem, weights, eta, 10)  # compile or load the cached kernels first
    rates = {
        engine: rate(lambda n, e=engine: dc.gd(problem, weights, eta, n, record=2, engine=e))
        for engine in ("numpy", "auto")
    }
    label = f"d={d:3d} N={depth}" + (f" batch={batch}" if batch else "")
    print(
        f"{label:24s} numpy {1e6 / rates['numpy']:8.2f} us/step | "
        f"auto {1e6 / rates['auto']:8.2f} us/step | ratio {rates['auto'] / rates['numpy']:5.2f}x"
    )


if __name__ == "__main__":
    print(f"numpy {np.__version__}; compiled step for widths <= {COMPILED_MAX_WIDTH}")
    case(10, 3)
    case(20, 3)
    case(32, 3)
    case(10, 3, batch=256)
    case(70, 5)
