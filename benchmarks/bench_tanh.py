"""Cost of chapter 7's tanh GD step: the code before and after session 5, in one process.

Run with ``.venv/bin/python benchmarks/bench_tanh.py`` (about 1 minute). BLAS is pinned to one
thread; times are CPU time per step (best of 5 rounds of 200 steps) of a loss-and-gradients
call plus the update, at chapter 7's sizes (``d = 70``, widths 35, ``m = 200``, float32, as
``tanh_dtype``). "before" is the session-4 code, kept below verbatim as the reference: its loss
summed in float64 at every step, ``a @ b.T`` with ``m = 200`` (numpy's slow path), and for the
tanh-at-the-output reading products with identity matrices. The ratio before/after is the
speed-up; a column checks that both give the same weights after the 1000 steps; the last
compares the new step in float32 with the same step in float64 (chapter 7 quotes this ratio
for its choice of float32).
Not part of the test suite (``tests/test_journal.py`` tests the agreement).
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

from dlncore.experiments import tanh  # noqa: E402
from dlncore.init import orthogonal  # noqa: E402


def before_hidden(weights, X, Y):
    """Session 4's ``tanh_loss_and_gradients`` (verbatim)."""
    hidden, out = tanh.tanh_forward(weights, X)
    E = out - Y
    n = len(weights)
    grads = [None] * n
    grads[-1] = E @ hidden[-1].T
    delta = weights[-1].T @ E
    for j in range(n - 2, -1, -1):
        delta = delta * (1 - hidden[j + 1] ** 2)
        grads[j] = delta @ hidden[j].T
        if j > 0:
            delta = weights[j].T @ delta
    r = E.astype(np.float64)
    return 0.5 * float(np.sum(r * r)), grads


def before_output(weights, X, Y):
    """Session 4's ``output_tanh_loss_and_gradients`` (verbatim)."""
    n = len(weights)
    below = [np.eye(weights[0].shape[1], dtype=weights[0].dtype)]
    for w in weights:
        below.append(w @ below[-1])
    T = np.tanh(below[-1] @ X)
    E = T - Y
    G = (E * (1 - T * T)) @ X.T
    grads = [None] * n
    above = np.eye(weights[-1].shape[0], dtype=weights[-1].dtype)
    for j in range(n - 1, -1, -1):
        grads[j] = above.T @ G @ below[j].T
        above = above @ weights[j]
    r = E.astype(np.float64)
    return 0.5 * float(np.sum(r * r)), grads


def before_step(func, ws, X, Y, eta, XT):
    _, grads = func(ws, X, Y)
    return [w - eta * g for w, g in zip(ws, grads, strict=True)]


def after_step(func, ws, X, Y, eta, XT):
    _, moves = func(ws, X, Y, eta, XT)  # Xᵀ kept across steps, as tanh_gd does
    for w, m in zip(ws, moves, strict=True):
        w -= m  # as dlncore.iterates.Iterates does
    return ws


def per_step(step, func, depth, dtype=np.float32, d=70, width=35, m=200):
    """Best-of-5 CPU seconds of one GD step, and the weights after 1000 steps."""
    rng = np.random.default_rng(0)
    X = (3.4 * rng.standard_normal((d, m)) / np.sqrt(m)).astype(dtype)
    Y = (rng.standard_normal((d, m)) / np.sqrt(m)).astype(dtype)
    ws = [w.astype(dtype) for w in orthogonal([d] + [width] * (depth - 1) + [d], 1)]
    eta, XT = dtype(3e-5), np.ascontiguousarray(X.T)
    best = np.inf
    for _ in range(5):
        began = time.process_time()
        for _ in range(200):
            ws = step(func, ws, X, Y, eta, XT)
        best = min(best, (time.process_time() - began) / 200)
    assert all(w.dtype == dtype for w in ws)
    return best, ws


if __name__ == "__main__":
    for name, old, new in (
        ("hidden", before_hidden, tanh.tanh_loss_and_gradients),
        ("output", before_output, tanh.output_tanh_loss_and_gradients),
    ):
        for depth in (2, 3, 5):
            t_old, w_old = per_step(before_step, old, depth)
            t_new, w_new = per_step(after_step, new, depth)
            t_64, _ = per_step(after_step, new, depth, np.float64)
            diff = max(
                float(np.max(np.abs(a - b) / np.abs(a).max()))
                for a, b in zip(w_old, w_new, strict=True)
            )
            print(
                f"{name} N={depth}: float32 before {t_old * 1e6:6.1f} us/step | after"
                f" {t_new * 1e6:6.1f} us/step | before/after {t_old / t_new:.2f}"
                f" | weights after 1000 steps differ by {diff:.1e} (relative to max |w|)"
                f" | after, float64 {t_64 * 1e6:6.1f} us/step, float32/float64 {t_new / t_64:.2f}"
            )
