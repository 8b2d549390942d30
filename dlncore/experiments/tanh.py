"""Two tanh readings of the journal's tanh experiment, and gradient descent on them.

``"hidden"`` (the book's prediction): ``f(X) = W_N tanh(W_{N−1} ⋯ tanh(W_1 X))``, tanh between
the layers. ``"output"`` (the second reading of the published axis label
``½‖Y − σ(W_N⋯W_1X)‖_F²``, tested after seeing the figure): ``f(X) = tanh(W_N ⋯ W_1 X)``, tanh
once at the output of the linear network.

No theory of the paper covers either model. Unlike the linear case the data do not reduce to
covariances: a step costs ``O(m d² N)`` between the layers, ``O(m d² + N d³)`` at the output
(two products with ``X``, then the chain of weights as in the linear network).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from dlncore.iterates import Iterates
from dlncore.metrics import end_to_end_norm
from dlncore.network import Weights, check_weights, end_to_end, prefix_products
from dlncore.recorder import Recorder, geometric_grid
from dlncore.results import Run


def tanh_forward(
    weights: Sequence[np.ndarray], X: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Hidden activations ``[H_0 = X, H_1, ..., H_{N−1}]`` (``H_j = tanh(W_j H_{j−1})``) and
    the output ``W_N H_{N−1}``."""
    hidden = [X]
    for w in weights[:-1]:
        hidden.append(np.tanh(w @ hidden[-1]))
    return hidden, weights[-1] @ hidden[-1]


def _half_squared(r: np.ndarray) -> float:
    """``½‖r‖_F²`` summed in float64 (the recorded loss)."""
    r = r.astype(np.float64)
    return 0.5 * float(np.sum(r * r))


def _times_transpose(a: np.ndarray, b: np.ndarray, b_t: np.ndarray | None = None) -> np.ndarray:
    """``a bᵀ`` for C-ordered ``a`` (``p × m``) and ``b`` (``q × m``), ``p × q``.

    numpy's ``a @ b.T`` with ``m = 200`` takes about twice as long as the product with a
    contiguous copy of ``bᵀ`` (``benchmarks/bench_tanh.py``), so the copy is made first;
    ``b_t``: that copy, when the caller has it.
    """
    return a @ (np.ascontiguousarray(b.T) if b_t is None else b_t)


def tanh_loss(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
    """``½‖W_N tanh(⋯ tanh(W_1 X)) − Y‖_F²`` (sum over samples, no ``1/m``, in float64)."""
    return _half_squared(tanh_forward(weights, X)[1] - Y)


def tanh_loss_and_gradients(
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    scale: float = 1.0,
    XT: np.ndarray | None = None,
) -> tuple[float, Weights]:
    """The loss and its gradients ``[∂L/∂W_1, ..., ∂L/∂W_N]`` by backpropagation.

    With ``E = f(X) − Y``: ``∂L/∂W_N = E H_{N−1}ᵀ``; ``Δ_{N−1} = (W_Nᵀ E) ⊙ (1 − H_{N−1}²)``,
    ``∂L/∂W_j = Δ_j H_{j−1}ᵀ`` and ``Δ_{j−1} = (W_jᵀ Δ_j) ⊙ (1 − H_{j−1}²)``. The gradients
    come multiplied by ``scale`` (gradient descent passes its step ``η``); the loss is
    ``½ EᵀE`` by one dot product in the dtype of ``X`` (:func:`tanh_loss` sums in float64).
    ``XT``: ``Xᵀ`` as a C-ordered array, if the caller keeps one (saves a copy per call).
    """
    hidden, E = tanh_forward(weights, X)
    E -= Y
    n = len(weights)
    grads: Weights = [None] * n  # type: ignore[list-item]
    grads[-1] = _times_transpose(E, hidden[-1], XT if n == 1 else None)
    delta = weights[-1].T @ E
    for j in range(n - 2, -1, -1):  # 0-based index of W_{j+1}
        slope = hidden[j + 1] * hidden[j + 1]  # 1 − H², in place
        np.subtract(1, slope, out=slope)
        delta *= slope
        grads[j] = _times_transpose(delta, hidden[j], None if j else XT)
        if j > 0:
            delta = weights[j].T @ delta
    for g in grads:
        g *= scale
    return 0.5 * float(np.vdot(E, E)), grads


def output_tanh_loss(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
    """``½‖tanh(W_N ⋯ W_1 X) − Y‖_F²`` (sum over samples, no ``1/m``, in float64)."""
    return _half_squared(np.tanh(end_to_end(weights) @ X) - Y)


def output_tanh_loss_and_gradients(
    weights: Sequence[np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    scale: float = 1.0,
    XT: np.ndarray | None = None,
) -> tuple[float, Weights]:
    """The loss of :func:`output_tanh_loss` and its gradients ``[∂L/∂W_1, ..., ∂L/∂W_N]``.

    With ``T = tanh(W X)``, ``W = W_N ⋯ W_1`` and ``G = ((T − Y) ⊙ (1 − T²)) Xᵀ``
    (``d_y × d_x``): ``∂L/∂W_j = A_jᵀ G B_jᵀ``, ``A_j = W_N ⋯ W_{j+1}``, ``B_j = W_{j−1} ⋯ W_1``,
    evaluated as a linear network's backward pass from ``G`` (``3N − 2`` products of weight
    sizes besides the two with ``X``). Gradients multiplied by ``scale``; loss and ``XT`` as in
    :func:`tanh_loss_and_gradients`.
    """
    prefix = prefix_products(weights)  # B_{j+1} = W_j ⋯ W_1
    T = np.tanh(prefix[-1] @ X)
    E = T - Y
    T *= T  # 1 − T², in place
    np.subtract(1, T, out=T)
    T *= E
    G = _times_transpose(T, X, XT) * scale
    grads: Weights = [None] * len(weights)  # type: ignore[list-item]
    for j in range(len(weights) - 1, 0, -1):
        grads[j] = G @ prefix[j - 1].T
        G = weights[j].T @ G
    grads[0] = G
    return 0.5 * float(np.vdot(E, E)), grads


def _step(
    loss_and_gradients: Callable[..., tuple[float, Weights]],
    X: np.ndarray,
    Y: np.ndarray,
    XT: np.ndarray,
    weights: Weights,
    eta: np.ndarray,
) -> tuple[float, Weights]:
    """The step of :class:`~dlncore.iterates.Iterates`: loss and moves ``η ∇L``."""
    loss, moves = loss_and_gradients(weights, X, Y, eta, XT)
    return np.float64(loss), moves


#: The two readings of the tanh experiment: loss and loss-and-gradients functions.
READINGS = {
    "hidden": (tanh_loss, tanh_loss_and_gradients),
    "output": (output_tanh_loss, output_tanh_loss_and_gradients),
}


def tanh_gd(
    X: np.ndarray,
    Y: np.ndarray,
    weights: Sequence[np.ndarray],
    step_size: float,
    steps: int,
    *,
    record: int = 200,
    dtype: np.dtype | type = np.float64,
    blowup: float = 1e6,
    progress: bool | str = False,
    reading: str = "hidden",
) -> Run:
    """Gradient descent with a constant step on a tanh network's loss (single start).

    ``reading``: ``"hidden"`` (tanh between the layers, :func:`tanh_loss`) or ``"output"``
    (tanh once at the output, :func:`output_tanh_loss`).

    Records the loss (summed in float64) and ``end_to_end_norm`` (``‖W_N ⋯ W_1‖_op``, the
    product of the weight matrices without the activations) on a geometric grid of iterations.
    The run stops early (and is flagged diverged) when the loss exceeds ``blowup · L(0)`` or is
    not finite (checked at every step with the step's own loss, one dot product in ``dtype``).

    Returns
    -------
    Run
        Same container as :func:`dlncore.gd` (``info["kind"] = "tanh-gd"``).
    """
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; use 'hidden' or 'output'")
    loss_func, loss_and_gradients = READINGS[reading]
    dtype = np.dtype(dtype)
    X, Y = np.asarray(X, dtype=dtype), np.asarray(Y, dtype=dtype)
    ws = check_weights(weights, X.shape[0], Y.shape[0], dtype)
    if ws[0].ndim != 2:
        raise ValueError("tanh_gd takes a single (unbatched) start")
    if not (np.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step size must be positive and finite, got {step_size!r}")
    eta = dtype.type(step_size)
    threshold = blowup * loss_func(ws, X, Y)
    recorder = Recorder(
        geometric_grid(steps, record),
        {"end_to_end_norm": end_to_end_norm},
        ws,
        loss=lambda ws: np.float64(loss_func(ws, X, Y)),  # recorded in float64
        progress=progress,
        label="tanh gd",
    )
    step = partial(_step, loss_and_gradients, X, Y, np.ascontiguousarray(X.T))  # Xᵀ kept
    it = recorder.follow(Iterates(step, ws, lambda k: eta, steps, threshold))
    run = recorder.run(
        it,
        "tanh-gd",
        step_size=float(step_size),
        samples=int(X.shape[1]),
        dtype=str(dtype),
        reading=reading,
    )
    run.time = run.iterations * float(step_size)  # exact multiples of the constant step
    return run
