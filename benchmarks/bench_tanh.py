"""Cost of a tanh GD step in float32 against float64, in one process (chapter 7's tanh runs).

Run with ``.venv/bin/python benchmarks/bench_tanh.py`` (about 20 s). BLAS is pinned to one
thread; times are CPU time per step of ``tanh_loss_and_gradients`` plus the update, best of 5,
at chapter 7's sizes (``d = 70``, widths 35, ``m = 200``). Not part of the test suite.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

from dlncore.experiments.tanh import tanh_loss_and_gradients  # noqa: E402
from dlncore.init import orthogonal  # noqa: E402


def per_step(depth: int, dtype: type, d: int = 70, width: int = 35, m: int = 200) -> float:
    """Best-of-5 CPU seconds of one tanh GD step."""
    rng = np.random.default_rng(0)
    X = (3.4 * rng.standard_normal((d, m)) / np.sqrt(m)).astype(dtype)
    Y = (rng.standard_normal((d, m)) / np.sqrt(m)).astype(dtype)
    ws = [w.astype(dtype) for w in orthogonal([d] + [width] * (depth - 1) + [d], 1)]
    eta = dtype(3e-5)
    best = np.inf
    for _ in range(5):
        began = time.process_time()
        for _ in range(200):
            _, grads = tanh_loss_and_gradients(ws, X, Y)
            ws = [w - eta * g for w, g in zip(ws, grads, strict=True)]
        assert all(w.dtype == dtype for w in ws)
        best = min(best, (time.process_time() - began) / 200)
    return best


if __name__ == "__main__":
    for depth in (2, 3, 5):
        t64, t32 = per_step(depth, np.float64), per_step(depth, np.float32)
        print(
            f"N={depth}: float64 {t64 * 1e6:7.1f} us/step | float32 {t32 * 1e6:7.1f} us/step"
            f" | ratio float32/float64 {t32 / t64:.2f}"
        )
