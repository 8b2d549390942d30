"""The one stepping loop of gradient descent: iterates ``W(k+1) = W(k) − M(k)``, batched.

``M(k) = η_k ∇L(W(k))`` is the *move* of step ``k``. :class:`Iterates` owns the loop: it
evaluates the loss and the moves, freezes starts whose loss blows up, accumulates the time
``t_k = Σ_{i<k} η_i`` (and, on request, the path length ``Σ_{i<k} ‖M(i)‖`` and the descent
margin of every step) and hands itself to the caller only at the iterations the caller asks
for. :func:`dlncore.gd`, the escape-time scan and the tanh network's descent are thin layers
over it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from dlncore.network import Weights, batch_size

#: ``step(weights, eta) -> (loss, moves)``: the loss at ``weights`` (a number, or ``(B,)``)
#: and the moves ``η ∇_{W_j} L`` (``eta`` is a number or has shape ``(B, 1, 1)``).
StepFunction = Callable[[Weights, np.ndarray], tuple[np.ndarray, Weights]]


def move_length(moves: Sequence[np.ndarray]) -> np.ndarray:
    """``‖M‖ = (Σ_j ‖M_j‖_F²)^{1/2}`` in float64, one value per start."""
    return np.sqrt(sum(np.sum(m.astype(np.float64) ** 2, axis=(-2, -1)) for m in moves))


class Iterates:
    """Gradient-descent iterates from ``weights``, visited at chosen iterations.

    Parameters
    ----------
    step : StepFunction
        Loss and moves at the current weights.
    weights : list of arrays
        ``W(0)``, single ``(d_j, d_{j−1})`` or batched ``(B, d_j, d_{j−1})``; updated in place.
    step_sizes : callable
        ``k -> η_k``, a number or shape ``(B, 1, 1)``, for ``k < steps``. At ``k = steps`` no
        step follows and the moves are the plain gradients (``η = 1``).
    steps : int
        Last iteration.
    threshold : float or array (B,)
        A start *diverges* at the first ``k`` whose loss is not ``≤ threshold`` (this includes
        NaN): from then on it is frozen (its moves are zero).
    track_path : bool
        Accumulate the path length ``Σ_{i<k} ‖M(i)‖`` (one more reduction per step).
    track_descent : bool
        Compute the descent margin of every step (:attr:`descent`, :attr:`descent_min`);
        the steps then run one at a time (the compiled loop is entered for one step).
    compiled : callable, optional
        ``compiled(self, target)``: advance to iteration ``target`` (or to an earlier
        divergence) and :meth:`settle` there; replaces the numpy loop between two visits
        (see :mod:`dlncore.compiled`).

    Attributes (valid when the iteration hands the object out)
    ----------------------------------------------------------
    k : int
    weights : list of arrays
        ``W(k)``.
    loss : array, shape () or (B,)
        The step function's loss at ``W(k)``.
    moves : list of arrays
        ``M(k)`` (zero for frozen starts; the gradient itself at ``k = steps``).
    eta : array, shape () or (B, 1, 1)
        ``η_k`` as applied (0 for frozen starts, 1 at ``k = steps``).
    time : array, shape () or (B, 1, 1)
        ``t_k = Σ_{i<k} η_i``.
    path : array, shape () or (B,)
        ``Σ_{i<k} ‖M(i)‖`` (zeros unless ``track_path``).
    descent : array, shape () or (B,)
        Descent margin of the step into ``k``,
        ``L(k−1) − L(k) − (η_{k−1}/2)‖∇L(k−1)‖² = L(k−1) − L(k) − ‖M(k−1)‖²/(2η_{k−1})``
        (``≥ 0``: the step satisfies the descent condition); NaN at ``k = 0``, for starts
        frozen before the step, and unless ``track_descent``.
    descent_min : array, shape () or (B,)
        Smallest :attr:`descent` over the steps ``1..k`` (NaN ignored; ``+inf`` before any).
    active : bool array, shape () or (B,)
        Starts that have not diverged.
    diverged_at, diverged_loss : arrays, shape () or (B,)
        Iteration and loss (``inf`` on overflow) of each start's divergence (−1 and NaN if none).
    last : bool
        ``k = steps`` or every start has diverged: the iteration ends after this visit.
    """

    def __init__(
        self,
        step: StepFunction,
        weights: Weights,
        step_sizes: Callable[[int], np.ndarray],
        steps: int,
        threshold: float | np.ndarray,
        *,
        track_path: bool = False,
        track_descent: bool = False,
        compiled: Callable[[Iterates, int], None] | None = None,
    ):
        self.step = step
        self.weights = weights
        self.step_sizes = step_sizes
        self.steps = steps
        self.threshold = threshold
        self.track_path = track_path
        self.track_descent = track_descent
        self.compiled = compiled
        self.batch = batch_size(weights)
        bshape = () if self.batch is None else (self.batch,)
        self.k = 0
        self.time = np.zeros(() if self.batch is None else (self.batch, 1, 1))
        self.path = np.zeros(bshape)
        self.descent = np.full(bshape, np.nan)
        self.descent_min = np.full(bshape, np.inf)
        self.active = np.ones(bshape, dtype=bool)
        self.diverged_at = np.full(bshape, -1, dtype=np.int64)
        self.diverged_loss = np.full(bshape, np.nan)
        self.last = False
        self._all_diverged = False
        self.one = np.ones((), dtype=weights[0].dtype)

    def visit(self, stops: Sequence[int] | None = None) -> Iterator[Iterates]:
        """Yield ``self`` at every iteration in ``stops`` (all when ``None``) and at the last.

        Between two visits the steps run without returning to the caller.
        """
        todo = None if stops is None else sorted({int(s) for s in stops if 0 <= s <= self.steps})
        pending = iter(todo or [])
        with np.errstate(all="ignore"):
            self._evaluate(0)
            target = 0 if todo is None else next(pending, self.steps)
            while True:
                if self.last or self.k == target:
                    yield self
                    if self.last:
                        return
                    target = self.k + 1 if todo is None else next(pending, self.steps)
                if self.track_descent:
                    self._descend()
                elif self.compiled is not None:
                    self.compiled(self, target)
                else:
                    self._advance(target)

    def _evaluate(self, k: int) -> None:
        """Loss and moves at ``W(k)``."""
        eta = self.step_sizes(k) if k < self.steps else self.one
        if self.batch is not None and not self.active.all():
            eta = eta * self.active.reshape(-1, 1, 1)
        loss, moves = self.step(self.weights, eta)
        ok = loss <= self.threshold
        if ok if self.batch is None else ok.all():  # the common case: no start diverges
            self.k, self.loss, self.moves, self.eta = k, loss, moves, eta
            self.last = k == self.steps
        else:
            self.settle(k, loss, moves, eta)

    def settle(self, k: int, loss: np.ndarray, moves: Weights, eta: np.ndarray) -> None:
        """Take the loss and moves at ``W(k)``; freeze the starts that diverge there."""
        ok = loss <= self.threshold
        if not (ok if self.batch is None else ok.all()):
            active = self.active
            newly = active & ~ok
            self.diverged_at[newly] = k
            self.diverged_loss[newly] = np.where(np.isfinite(loss), loss, np.inf)[newly]
            self.active = active = active & ok
            self._all_diverged = not active.any()
            for move in moves:  # frozen starts do not move (even if their gradient overflowed)
                move[~active] = 0.0
        self.k, self.loss, self.moves, self.eta = k, loss, moves, eta
        self.last = k == self.steps or self._all_diverged

    def _descend(self) -> None:
        """Take one step and measure its descent margin."""
        loss, live = np.asarray(self.loss, dtype=np.float64), self.active
        eta = np.broadcast_to(np.asarray(self.eta, dtype=np.float64), (*loss.shape, 1, 1))
        eta = np.where(live, eta[..., 0, 0], np.inf)  # one per start
        half_sq = 0.5 * move_length(self.moves) ** 2
        if self.compiled is not None:
            self.compiled(self, self.k + 1)
        else:
            self._advance(self.k + 1)
        self.descent = np.where(live, loss - self.loss - half_sq / eta, np.nan)
        self.descent_min = np.fmin(self.descent_min, self.descent)

    def _advance(self, target: int) -> None:
        """Take steps until iteration ``target`` (or the last one) is evaluated."""
        ws, moves, k = self.weights, self.moves, self.k
        while k < target and not self.last:
            for w, move in zip(ws, moves, strict=True):
                w -= move
            self.time += self.eta
            if self.track_path:
                self.path += move_length(moves)
            k += 1
            self._evaluate(k)
            moves = self.moves
