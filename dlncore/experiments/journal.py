"""The journal version's experiments (chapter 7): problem, initialization and one run per job.

The published runs fix ``d = 70``, the target rank, the depths, ``η = 3·10⁻⁵`` and ``10⁶``
iterations; everything else (samples, distributions, scales, widths) is the book's choice and
enters here through explicit arguments. Every job rebuilds its data from seeds, so jobs can run
in separate processes (:func:`dlncore.experiments.parallel.run_many`) with identical results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlncore.data import synthetic_data, teacher_spectrum
from dlncore.descent import gd
from dlncore.experiments.tanh import tanh_gd
from dlncore.fitting import first_crossing_loglog
from dlncore.init import identity, normalized_gaussian, orthogonal
from dlncore.network import Weights, end_to_end
from dlncore.problem import Problem
from dlncore.results import Run

#: The initializations of :func:`journal_init`.
INITS = ("gaussian", "orthogonal", "identity", "pytorch", "pytorch-raw")


def journal_init(kind: str, dims: Sequence[int], seed: int, norm: float = 1.0) -> Weights:
    """Initial factors with ``‖W_N⋯W_1‖_op = norm``.

    ``"gaussian"``: :func:`normalized_gaussian` (i.i.d. Gaussian factors, one common rescaling);
    ``"orthogonal"``: Haar-random semi-orthogonal factors, each scaled by ``norm^{1/N}`` (with
    non-increasing-then-non-decreasing widths every non-zero singular value of the product is
    ``norm``); ``"identity"``: rectangular identities ``I_{d_j × d_{j−1}}``, each scaled by
    ``norm^{1/N}`` (deterministic: ``seed`` is unused); ``"pytorch"``: the default of PyTorch's
    ``nn.Linear``, entries i.i.d. ``U(±1/√d_{j−1})``, all factors then scaled by one common
    factor to product norm ``norm``; ``"pytorch-raw"``: the same draw, not rescaled (``norm``
    is unused; the product norm then shrinks with depth). A small ``norm`` gives a small start.
    """
    if kind == "gaussian":
        return normalized_gaussian(dims, seed, norm)
    if kind not in INITS:
        raise ValueError(f"unknown initialization {kind!r}; use one of {', '.join(INITS)}")
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"norm must be positive and finite, got {norm!r}")
    if kind.startswith("pytorch"):
        rng = np.random.default_rng(seed)
        pairs = zip(dims[:-1], dims[1:], strict=True)
        ws = [rng.uniform(-1, 1, (b, a)) / np.sqrt(a) for a, b in pairs]
        if kind == "pytorch-raw":
            return ws
        scale = (norm / float(np.linalg.norm(end_to_end(ws), 2))) ** (1.0 / len(ws))
        return [scale * w for w in ws]
    scale = norm ** (1.0 / (len(dims) - 1))
    if kind == "orthogonal":
        return orthogonal(dims, seed, scale=scale)
    return identity(dims, scale=scale)


def teacher_values(
    rank: int, spectrum: str, top: float, seed: int, d: int, exponent: float = 0.5
) -> np.ndarray:
    """Singular values (descending, largest ``top``) of a rank-``rank`` teacher.

    ``"flat"``, ``"linear"``, ``"geometric"``: :func:`dlncore.teacher_spectrum`;
    ``"power"``: ``top · i^{−exponent}`` for ``i = 1..rank``;
    ``"gaussian"``: those of a ``d × rank`` matrix with i.i.d. standard normal entries
    (generator ``seed``), rescaled to largest value ``top``.
    """
    if spectrum == "power":
        return top * np.arange(1, rank + 1, dtype=np.float64) ** -float(exponent)
    if spectrum != "gaussian":
        return teacher_spectrum(rank, spectrum, top)
    rng = np.random.default_rng(seed)
    values = np.linalg.svd(rng.standard_normal((d, rank)), compute_uv=False)
    return top * values / values[0]


@dataclass(frozen=True)
class Experiment:
    """One journal experiment's recipe: data, initialization and GD settings (not the depth).

    ``X`` (``d × samples``) has entries ``N(0, input_scale²/samples)``; the targets are
    ``Y = A X`` for a Haar-random rank-``rank`` teacher ``A`` with
    :func:`teacher_values` (``spectrum``, ``top``, ``exponent``; seeded by ``data_seed + 1``);
    hidden widths are
    ``width``; the start is :func:`journal_init` (``init``, ``init_seed``, ``init_norm``),
    given a spread spectrum by ``spread`` and made imbalanced by ``imbalance`` (:meth:`start`).
    Picklable, so runs can go to :func:`dlncore.experiments.parallel.run_many`.
    """

    d: int
    samples: int
    rank: int
    spectrum: str
    top: float
    input_scale: float
    data_seed: int
    width: int
    init_seed: int
    init_norm: float
    step_size: float
    steps: int
    record: int = 200
    init: str = "gaussian"
    exponent: float = 0.5
    imbalance: float = 0.0
    spread: float = 0.0

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``X`` and targets ``Y``, rebuilt from ``data_seed``."""
        values = teacher_values(
            self.rank, self.spectrum, self.top, self.data_seed + 1, self.d, self.exponent
        )
        X, Y, _ = synthetic_data(
            self.d, self.d, self.samples, values, self.data_seed, input_scale=self.input_scale
        )
        return X, Y

    def problem(self, dtype: str = "float64") -> Problem:
        """The linear regression problem of :meth:`data` in ``dtype``."""
        return Problem(*self.data(), dtype=np.dtype(dtype))

    def start(self, depth: int) -> Weights:
        """Initial factors of the network ``[d, width, ..., width, d]`` of the given depth.

        With ``spread = u > 0`` the first factor is multiplied on the right by
        ``diag(e^{−u i/(d−1)})``, ``i = 0..d−1``, and all factors then by one common factor that
        restores ``‖W_N⋯W_1‖_op = init_norm``: a start whose product has a spread spectrum
        (values within a factor ``e^u``). With ``imbalance = t`` the factor ``W_j`` is then
        multiplied by ``e^{t (j − (N+1)/2)}``: the product is unchanged, the later factors larger
        than the earlier ones (``t > 0``).
        """
        dims = [self.d] + [self.width] * (depth - 1) + [self.d]
        ws = journal_init(self.init, dims, self.init_seed, self.init_norm)
        if self.spread:
            ws[0] = ws[0] * np.exp(-self.spread * np.arange(self.d) / max(self.d - 1, 1))
            top = float(np.linalg.norm(end_to_end(ws), 2))
            ws = [w * (self.init_norm / top) ** (1.0 / depth) for w in ws]
        centre = (depth + 1) / 2
        return [np.exp(self.imbalance * (j - centre)) * w for j, w in enumerate(ws, start=1)]


def linear_run(experiment: Experiment, depth: int, dtype: str = "float64") -> Run:
    """GD on the deep linear network of the given depth; records the loss, ``‖W_N⋯W_1‖_op``
    and the gradient norm."""
    e = experiment
    metrics = ("end_to_end_norm", "grad_norm")
    run = gd(
        e.problem(dtype), e.start(depth), e.step_size, e.steps, record=e.record, metrics=metrics
    )
    run.info.update(depth=depth, step_size=e.step_size, samples=e.samples)
    return run


def tanh_run(
    experiment: Experiment, depth: int, dtype: str = "float64", reading: str = "hidden"
) -> Run:
    """GD on ``W_N tanh(⋯ tanh(W_1 X))`` (``reading="hidden"``) or on ``tanh(W_N⋯W_1X)``
    (``"output"``) with the same data and initialization recipe, in ``dtype`` (data and start
    are built in float64, then converted)."""
    e = experiment
    X, Y = e.data()
    run = tanh_gd(
        X, Y, e.start(depth), e.step_size, e.steps, record=e.record, dtype=dtype, reading=reading
    )
    run.info.update(depth=depth)
    return run


def first_below(iterations: np.ndarray, values: np.ndarray, level: float) -> float:
    """First recorded iteration with ``values < level`` (``nan`` if never): e.g. when a loss
    curve drops below a level under all its plateaus."""
    below = np.flatnonzero(np.asarray(values) < level)
    return float(np.asarray(iterations)[below[0]]) if below.size else float("nan")


def moving_fraction(problem: Problem, weights: Sequence[np.ndarray], step_size: float) -> float:
    """Fraction of weight entries that one more GD step (in the problem's dtype) changes.

    In floating point an entry ``w`` only moves when ``|η g|`` exceeds about half a unit in
    the last place of ``w``; a fraction near 0 means GD has stalled at a round-off floor.
    """
    ws = problem.check(weights)
    grads = problem.gradients(ws)
    eta = problem.dtype.type(step_size)
    changed = sum(int(np.count_nonzero(w - eta * g != w)) for w, g in zip(ws, grads, strict=True))
    return changed / sum(w.size for w in ws)


def stall_gradient_norm(weights: Sequence[np.ndarray], step_size: float, eps: float) -> float:
    """``eps ‖θ‖_F / (2η)``: if every entry satisfies ``|η g| < eps |w| / 2`` (no entry moves),
    then ``‖∇L‖_F`` is below this value. Used to place the round-off floor of GD."""
    norm = float(np.sqrt(sum(np.sum(np.asarray(w, dtype=np.float64) ** 2) for w in weights)))
    return eps * norm / (2.0 * step_size)


def loss_at_gradient(run: Run, gradient_norm: float) -> float:
    """Loss of ``run`` where its recorded ``grad_norm`` first falls below ``gradient_norm``,
    interpolated log-linearly between the two neighbouring records (``nan`` if never)."""
    return first_crossing_loglog(run.loss, run.metrics["grad_norm"], gradient_norm)


def relative_updates(
    problem: Problem, weights: Sequence[np.ndarray], step_size: float
) -> np.ndarray:
    """Relative size of the next GD update of every layer, ``η‖∇W_j‖_F / ‖W_j‖_F``, shape ``(N,)``.

    Computed in float64 from the gradients in the problem's dtype. Set against the spacing of
    the floating-point type (``ε = 2⁻²³`` for float32): a stored entry ``w`` only moves when
    ``|η g|`` exceeds about ``ε |w| / 2``, so a layer whose relative update is far below
    ``ε / 2`` has (mostly) stopped moving.
    """
    ws = problem.check(weights)
    grads = problem.gradients(ws)
    out = []
    for w, g in zip(ws, grads, strict=True):
        g64, w64 = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        out.append(step_size * np.linalg.norm(g64) / np.linalg.norm(w64))
    return np.array(out)


def loss_rate(iterations: np.ndarray, loss: np.ndarray, high: float, low: float) -> float:
    """Fitted rate ``r`` of a linear (geometric) loss decay ``L(k) ∝ e^{−r k}``, per iteration.

    Least squares of ``ln L`` against ``k`` over the records with ``low < L < high`` (at least
    3 records, else ``nan``): the final phase of a converging run, between the drop and the
    round-off floor.
    """
    k = np.asarray(iterations, dtype=np.float64)
    value = np.asarray(loss, dtype=np.float64)
    keep = (value > low) & (value < high)
    if np.count_nonzero(keep) < 3:
        return float("nan")
    slope = np.polyfit(k[keep], np.log(value[keep]), 1)[0]
    return float(-slope)


def preconditioner_eigenvalues(singular_values: np.ndarray, depth: int) -> np.ndarray:
    """The eigenvalues ``Σ_a σ_i^{2a/N} σ_j^{2(N−1−a)/N}`` (``0⁰ = 1``), shape ``(r, r)``.

    For balanced factors the end-to-end matrix ``W = U diag(σ) Vᵀ`` moves (under gradient flow)
    as ``Ẇ = −P(∇L¹(W))`` with ``P(E) = Σ_{a=0}^{N−1} (WWᵀ)^{a/N} E (WᵀW)^{(N−1−a)/N}``; ``P`` has
    the eigenvectors ``u_i v_jᵀ`` with these eigenvalues (entry ``[i, j]``). ``singular_values``:
    the ``r`` values ``σ`` (zeros included, exactly 0). The book's derivation, not the paper's.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    a = np.arange(depth)[:, None, None]
    with np.errstate(divide="ignore"):
        left = np.where(a == 0, 1.0, s[None, :, None] ** (2.0 * a / depth))
        right = np.where(a == depth - 1, 1.0, s[None, None, :] ** (2.0 * (depth - 1 - a) / depth))
    return np.sum(left * right, axis=0)


def preconditioner_min_eigenvalue(
    singular_values: np.ndarray, depth: int, tol: float = 1e-6
) -> float:
    """Smallest nonzero eigenvalue of the end-to-end preconditioner of a balanced network.

    :func:`preconditioner_eigenvalues` of ``singular_values`` (all ``min(d_y, d_x)`` values of
    ``W``; those below ``tol · max σ`` count as 0), its smallest above ``tol`` times the largest.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    eig = preconditioner_eigenvalues(np.where(s < tol * s.max(), 0.0, s), depth)
    positive = eig[eig > tol * eig.max()]
    return float(positive.min())


def local_rate(problem: Problem, product: np.ndarray, depth: int, step_size: float) -> float:
    """Predicted final-phase loss rate per iteration, ``2 η p_min λ_min(Σxx)``.

    ``p_min`` is :func:`preconditioner_min_eigenvalue` at the end-to-end matrix ``product``
    (``d_y × d_x``, e.g. the end of a balanced run): near a minimum ``L`` decays like
    ``e^{−2ημk}`` along the slowest direction, and ``p_min λ_min(Σxx)`` is the book's estimate
    of ``μ`` (exact where the slowest directions of ``P`` and of ``Σxx`` meet). The book's
    derivation, not the paper's.
    """
    sigma = np.linalg.svd(np.asarray(product, dtype=np.float64), compute_uv=False)
    lam = float(np.linalg.eigvalsh(problem.sxx.astype(np.float64))[0])
    return 2.0 * step_size * preconditioner_min_eigenvalue(sigma, depth) * lam
