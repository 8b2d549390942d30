"""Two tanh readings of the journal's tanh experiment, and gradient descent on them.

``"hidden"`` (the book's prediction): ``f(X) = W_N tanh(W_{N−1} ⋯ tanh(W_1 X))``, tanh between
the layers. ``"output"`` (the second reading of the published axis label
``½‖Y − σ(W_N⋯W_1X)‖_F²``, tested after seeing the figure): ``f(X) = tanh(W_N ⋯ W_1 X)``, tanh
once at the output of the linear network.

No theory of the paper covers either model. Unlike the linear case the data do not reduce to
covariances: a step costs ``O(m d² N)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dlncore.iterates import Iterates
from dlncore.metrics import end_to_end_norm
from dlncore.network import Weights, check_weights, end_to_end
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


def tanh_loss(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
    """``½‖W_N tanh(⋯ tanh(W_1 X)) − Y‖_F²`` (sum over samples, no ``1/m``)."""
    _, out = tanh_forward(weights, X)
    r = (out - Y).astype(np.float64)
    return 0.5 * float(np.sum(r * r))


def tanh_loss_and_gradients(
    weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray
) -> tuple[float, Weights]:
    """The loss and its gradients ``[∂L/∂W_1, ..., ∂L/∂W_N]`` by backpropagation.

    With ``E = f(X) − Y``: ``∂L/∂W_N = E H_{N−1}ᵀ``; ``Δ_{N−1} = (W_Nᵀ E) ⊙ (1 − H_{N−1}²)``,
    ``∂L/∂W_j = Δ_j H_{j−1}ᵀ`` and ``Δ_{j−1} = (W_jᵀ Δ_j) ⊙ (1 − H_{j−1}²)``.
    """
    hidden, out = tanh_forward(weights, X)
    E = out - Y
    n = len(weights)
    grads: Weights = [None] * n  # type: ignore[list-item]
    grads[-1] = E @ hidden[-1].T
    delta = weights[-1].T @ E
    for j in range(n - 2, -1, -1):  # 0-based index of W_{j+1}
        delta = delta * (1 - hidden[j + 1] ** 2)
        grads[j] = delta @ hidden[j].T
        if j > 0:
            delta = weights[j].T @ delta
    r = E.astype(np.float64)
    return 0.5 * float(np.sum(r * r)), grads


def output_tanh_loss(weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray) -> float:
    """``½‖tanh(W_N ⋯ W_1 X) − Y‖_F²`` (sum over samples, no ``1/m``)."""
    r = (np.tanh(end_to_end(weights) @ X) - Y).astype(np.float64)
    return 0.5 * float(np.sum(r * r))


def output_tanh_loss_and_gradients(
    weights: Sequence[np.ndarray], X: np.ndarray, Y: np.ndarray
) -> tuple[float, Weights]:
    """The loss of :func:`output_tanh_loss` and its gradients ``[∂L/∂W_1, ..., ∂L/∂W_N]``.

    With ``T = tanh(W X)``, ``W = W_N ⋯ W_1`` and ``G = ((T − Y) ⊙ (1 − T²)) Xᵀ``
    (``d_y × d_x``): ``∂L/∂W_j = A_jᵀ G B_jᵀ``, ``A_j = W_N ⋯ W_{j+1}``, ``B_j = W_{j−1} ⋯ W_1``.
    """
    n = len(weights)
    below = [np.eye(weights[0].shape[1], dtype=weights[0].dtype)]  # B_j, j = 1..N+1
    for w in weights:
        below.append(w @ below[-1])
    T = np.tanh(below[-1] @ X)
    E = T - Y
    G = (E * (1 - T * T)) @ X.T
    grads: Weights = [None] * n  # type: ignore[list-item]
    above = np.eye(weights[-1].shape[0], dtype=weights[-1].dtype)  # A_j, from j = N down
    for j in range(n - 1, -1, -1):
        grads[j] = above.T @ G @ below[j].T
        above = above @ weights[j]
    r = E.astype(np.float64)
    return 0.5 * float(np.sum(r * r)), grads


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

    Records the loss and ``end_to_end_norm`` (``‖W_N ⋯ W_1‖_op``, the product of the weight
    matrices without the activations) on a geometric grid of iterations. The run stops early
    (and is flagged diverged) when the loss exceeds ``blowup · L(0)`` or is not finite.

    Returns
    -------
    Run
        Same container as :func:`dlncore.gd` (``info["kind"] = "tanh-gd"``).
    """
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; use 'hidden' or 'output'")
    loss_func, loss_and_gradients = READINGS[reading]
    dtype = np.dtype(dtype)
    X = np.asarray(X, dtype=dtype)
    Y = np.asarray(Y, dtype=dtype)
    ws = check_weights(weights, X.shape[0], Y.shape[0], dtype)
    if ws[0].ndim != 2:
        raise ValueError("tanh_gd takes a single (unbatched) start")
    if not (np.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step size must be positive and finite, got {step_size!r}")
    eta = dtype.type(step_size)

    def step(ws: Weights, eta: np.ndarray) -> tuple[np.ndarray, Weights]:
        loss, grads = loss_and_gradients(ws, X, Y)
        return np.float64(loss), [eta * g for g in grads]

    threshold = blowup * loss_func(ws, X, Y)
    recorder = Recorder(
        geometric_grid(steps, record),
        {"end_to_end_norm": end_to_end_norm},
        ws,
        progress=progress,
        label="tanh gd",
    )
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
