"""Chapter 5 (three or more layers): escape-law fits, plateaus of the loss staircase, and the
table of final ranks.

The chapter calls these functions and draws their results; the functions compute exactly what
the chapter's cells used to compute inline, in the same order of floating-point operations, so
that its glued values and ``.npz`` files are unchanged. :func:`left_rank_sentence` builds the
sentence on the rank-deficient starts of depth 2 from what their runs measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dlncore.experiments import prose
from dlncore.results import Run
from dlncore.saddles import EscapeScan


def escape_fit(
    scan: EscapeScan, eps_grid: np.ndarray, depth: int, step_size: float, s1: float
) -> tuple[float, float, np.ndarray]:
    """Predicted and fitted escape law of the median escape iterations of one depth.

    For ``depth == 2`` the escape iteration is ``log(1/ε) / log(1 + η s_1) + c``: the predicted
    and fitted quantity is the slope in ``log(1/ε)``. For ``depth >= 3`` it is ``C ε^{-(N-2)}``:
    the predicted and fitted quantity is the exponent, ``C`` is fitted (log-mean over the scales
    whose median start escaped).

    Parameters
    ----------
    scan : EscapeScan
        The escape times of ``depth`` over the scales ``eps_grid``.
    eps_grid : array, shape (S,)
        The initial scales ε.
    depth : int
        The depth N (at least 2).
    step_size : float
        The constant step size η of the scan.
    s1 : float
        Largest singular value of ``Σ_yx`` (enters the prediction for ``N = 2``).

    Returns
    -------
    tuple of (float, float, array of shape (S,))
        ``(predicted, fitted, reference)``: the predicted and fitted slope or exponent, and the
        reference curve (prediction with the fitted constant) at ``eps_grid`` (NaN when no
        median escaped).
    """
    median = scan.median
    ok = np.isfinite(median)
    x, y = eps_grid[ok], median[ok]
    if depth == 2:
        pred = 1.0 / np.log1p(step_size * s1)
        got = scan.log_slope()
        c = np.mean(y - pred * np.log(1 / x)) if ok.sum() else np.nan
        ref = pred * np.log(1 / eps_grid) + c
    else:
        pred = -(depth - 2.0)
        got = scan.power()
        c = np.exp(np.mean(np.log(y) - pred * np.log(x))) if ok.sum() else np.nan
        ref = c * eps_grid**pred
    return pred, got, ref


def flat_stretches(
    iterations: np.ndarray, excess: np.ndarray, tol: float, dwell: float
) -> list[tuple[int, int]]:
    """Plateaus found from the loss alone, without the optimal values.

    A flat stretch is a run of records ``i..j`` (record 0, the start, is skipped) over at least
    ``dwell`` decades of iterations, ``log10(it[j] / it[i]) >= dwell``, on which the positive
    excess stays within a factor ``1 + 2 tol`` (a band of ``±tol`` around its middle). Stretches
    are found greedily from the left and do not overlap.

    Parameters
    ----------
    iterations : array of int, shape (R,)
        Recorded iterations, increasing, ``iterations[0] == 0``.
    excess : array, shape (R,)
        Excess loss ``L − L*_r`` at the records.
    tol : float
        Half-width of the band, relative.
    dwell : float
        Minimum length in decades of iterations.

    Returns
    -------
    list of (int, int)
        ``(first, last)`` record indices of each stretch.
    """
    found, i = [], 1
    while i < iterations.size:
        j = i
        while j + 1 < iterations.size:
            window = excess[i : j + 2]
            if not (window.min() > 0 and window.max() <= (1 + 2 * tol) * window.min()):
                break
            j += 1
        if excess[i] > 0 and np.log10(iterations[j] / iterations[i]) >= dwell:
            found.append((i, j))
            i = j + 1
        else:
            i += 1
    return found


def critical_excess(sigma_q: np.ndarray, r: int) -> dict[int, list[tuple[bool, float]]]:
    """Critical values of ``L^1`` on the rank-k matrices, as excess over ``L*_r``.

    The critical points with index set ``S`` (``|S| = k``) have
    ``L − L*_r = ½ Σ_{i ∉ S, i ≤ r} σ_i²`` (distinct singular values of ``Q``).

    Parameters
    ----------
    sigma_q : array, shape (p,)
        Singular values of ``Q = Σ_yx Σ_xx^{-1/2}``, decreasing, ``p >= r``.
    r : int
        The rank bound of the network.

    Returns
    -------
    dict
        ``k -> [(S == {1..k}, excess), ...]`` over all ``2^r`` index sets; the entry with
        ``True`` is ``L*_k − L*_r``.
    """
    sq = sigma_q[:r] ** 2
    critical: dict[int, list[tuple[bool, float]]] = {k: [] for k in range(r + 1)}
    for mask in range(2**r):
        in_s = np.array([mask >> i & 1 for i in range(r)], dtype=bool)
        k = int(in_s.sum())
        critical[k].append((bool(in_s[:k].all()), 0.5 * float(sq[~in_s].sum())))
    return critical


def plateau_checks(
    run: Run,
    opt: np.ndarray,
    critical: Mapping[int, Sequence[tuple[bool, float]]],
    tol: float,
    dwell: float,
) -> np.ndarray:
    """For each start and each line ``L*_k`` (``0 < k < r``) the loss crossed: does a plateau
    lie on the line rather than on another rank-k critical value?

    A line is crossed when the excess goes below ``(1 − tol)(L*_k − L*_r)`` within the run. The
    flat stretch (:func:`flat_stretches`) nearest to the line in log scale is compared with the
    line and with the nearest other critical value with ``|S| = k``.

    Parameters
    ----------
    run : Run
        A batched run of ``B`` starts (``run.loss`` of shape (R, B)).
    opt : array, shape (r + 1,)
        The optimal values ``L*_0, ..., L*_r``.
    critical : mapping
        :func:`critical_excess` for the same ``r``.
    tol, dwell : float
        As in :func:`flat_stretches`; ``tol`` also defines crossing.

    Returns
    -------
    array, shape (C, 4)
        One row per crossed line: start index, ``k``, ``|log|`` distance of the nearest
        plateau to the line, and to the nearest rival (``inf`` and 0 when no plateau exists).
    """
    r = opt.size - 1
    lines = opt - opt[r]
    it = run.iterations
    rows = []
    for b in range(run.loss.shape[1]):
        excess = run.loss[:, b] - opt[r]
        stretches = flat_stretches(it, excess, tol, dwell)
        levels = np.array([np.median(excess[i : j + 1]) for i, j in stretches])
        for k in range(1, r):
            if not np.nanmin(excess) < (1 - tol) * lines[k]:
                continue  # the budget did not take the loss across this line
            if levels.size == 0:
                rows.append((b, k, np.inf, 0.0))
                continue
            near = levels[np.argmin(np.abs(np.log(levels / lines[k])))]
            rival = min(abs(np.log(near / c)) for top, c in critical[k] if not top)
            rows.append((b, k, abs(np.log(near / lines[k])), rival))
    return np.array(rows, dtype=float).reshape(-1, 4)


def final_rank_rows(
    runs: Mapping[int, Run], budgets: Sequence[int], scales: np.ndarray
) -> np.ndarray:
    """The final-rank table: one row per depth, budget and start.

    Parameters
    ----------
    runs : mapping
        Depth N -> batched run of ``B`` starts recording the metrics ``rank``, ``excess`` and
        ``grad_norm`` at (at least) every budget.
    budgets : sequence of int
        The iterations at which the runs are read.
    scales : array, shape (B,)
        Initial scale of each start.

    Returns
    -------
    array, shape (len(runs) * len(budgets) * B, 6)
        Columns: depth, budget, numerical rank, excess loss over the optimum of that rank,
        gradient norm, initial scale. The three measured columns are NaN for a start that
        diverged at or before the budget.
    """
    rows = []
    for n, run in runs.items():
        for b in budgets:
            i = int(np.searchsorted(run.iterations, b))
            for j in range(scales.size):
                gone = run.diverged[j] and run.diverged_at[j] <= b  # nothing to read at b
                measured = (
                    np.nan if gone else run.metrics[key][i, j]
                    for key in ("rank", "excess", "grad_norm")
                )
                rows.append((n, b, *measured, scales[j]))
    return np.array(rows, dtype=float)


def left_rank_sentence(
    ranks: np.ndarray,
    q: np.ndarray,
    excess: np.ndarray,
    grad: np.ndarray,
    opt: np.ndarray,
    grad_tol: float,
    excess_tol: float,
    steps: int,
) -> str:
    """Where rank-deficient starts ended that could leave their invariant set (``N = 2``).

    The sentence says what was measured after ``steps`` iterations: how many starts left rank
    ``≤ q``, their numerical ranks, the optimal value ``L*_k`` their loss sits at, whether that
    is the global minimum ``L*_r``, and whether their gradient norms say they have converged.
    It never says "global minimum" for a start whose rank is below ``r``.

    Parameters
    ----------
    ranks : array of int, shape (B,)
        Final numerical rank of each start.
    q : array of int, shape (B,)
        Rank of each start.
    excess : array, shape (B,)
        Final ``L − L*_k`` for the start's own final rank ``k``.
    grad : array, shape (B,)
        Final gradient norm of each start.
    opt : array, shape (r + 1,)
        The optimal values ``L*_0, ..., L*_r``.
    grad_tol : float
        Gradient norm below which a start counts as converged.
    excess_tol : float
        ``|L − L*_k|`` up to which a loss is said to be at ``L*_k`` (else "within ... of").
    steps : int
        The iteration budget.

    Returns
    -------
    str
        A clause that follows "For N = 2," in the text, without a final period; Markdown
        with inline math (glue it as :class:`~dlncore.experiments.prose.Markdown`).
    """
    ranks, q, excess = np.asarray(ranks, dtype=int), np.asarray(q, dtype=int), np.asarray(excess)
    total, left = ranks.size, ranks > q
    if not left.any():
        who = "the one start does not leave" if total == 1 else f"none of the {total} starts leaves"
        return f"{who} the set of rank $≤ q$ within {steps} iterations"
    n_left = int(left.sum())
    if n_left == total:
        who, kept = f"all {total} starts", STRICT_SADDLES
        who = "the one start" if total == 1 else who
    else:
        rest = total - n_left
        who, kept = f"{n_left} of {total} starts", f" ({rest} keep{'s' * (rest == 1)} rank $≤ q$)"
    on = bool(np.max(np.abs(excess[left])) <= excess_tol)  # at L*_k, not only near it
    text = (
        f"{who} leave{'s' * (n_left == 1)} the set of rank $≤ q$ through rounding alone{kept}: "
        f"after {steps} iterations {_where_they_are(ranks[left], q[left], excess[left], opt, on)}"
    )
    return text + _gradient_clause(np.asarray(grad)[left], grad_tol, ranks[left], opt.size - 1, on)


#: Why every start leaving its rank-≤ q set is expected for ``N = 2`` (the paper's argument).
STRICT_SADDLES = (
    ", as expected for $N = 2$, where every critical point that is not a global minimum is a "
    "strict saddle (the paper's argument)"
)

#: Subject, verb, possessive and "are" of a sentence about several starts.
THEY = ("they", "have", "their", "are")


def _where_they_are(
    ranks: np.ndarray, q: np.ndarray, excess: np.ndarray, opt: np.ndarray, on: bool
) -> str:
    """The middle of :func:`left_rank_sentence`: the ranks of the starts that left, the
    ``L*_k`` their loss sits at, and how that compares with ``L*_q`` and the global minimum."""
    r, ks = opt.size - 1, sorted({int(k) for k in ranks})
    gap = prose.number(float(np.max(np.abs(excess))), ".2g")
    if len(ks) == 1:
        sym = prose.optimum_symbol(ks[0])
        level = f"{sym} up to {gap}" if on else f"within {gap} of {sym}"
    else:
        counts = ", ".join(f"{prose.optimum_symbol(k)}: {int(np.sum(ranks == k))}" for k in ks)
        own = "$L^*_k$ of their own rank $k$"
        level = f"{own} up to {gap} ({counts})" if on else f"within {gap} of {own} ({counts})"
    below = "below $L^*_q$" if np.all(opt[ranks] + excess < opt[q]) else "not all below $L^*_q$"
    below = below.replace("not all", "not") if ranks.size == 1 else below
    at_min = ranks == r
    glob = f"the global minimum {prose.optimum_symbol(r)} = {opt[r]:.3g}"
    they, have, their, are = ("it", "has", "its", "is") if ranks.size == 1 else THEY
    text = f"{they} {have} numerical rank {prose.listing(map(str, ks), 'or')} and {their} loss is"
    text += f" {level}"
    if not at_min.any():
        return text + f", {below} but above {glob}"
    n_min = int(at_min.sum())
    if on:  # "at" the global minimum only when the loss is there
        who = f"{they} {are}" if at_min.all() else f"{n_min} are"
        return text + f", {below}; {who} at {glob}"
    who = f"{they} {have}" if at_min.all() else f"{n_min} have"
    return text + f", {below}; {who} the rank {r} of {glob}"


def _gradient_clause(grad: np.ndarray, grad_tol: float, ranks: np.ndarray, r: int, on: bool) -> str:
    """The end of :func:`left_rank_sentence`: what the gradient norms of the starts that left
    (final ``ranks``; ``r``: the rank of the global minimum) say (converged, or still on the
    plateau of their rank)."""
    ks, any_at_min = sorted({int(k) for k in ranks}), bool(np.any(ranks == r))
    slow = grad > grad_tol
    largest = prose.number(float(np.max(grad)), ".2g")
    one = grad.size == 1
    norms = f"its gradient norm ({largest}" if one else f"their gradient norms (up to {largest}"
    if not slow.any():
        return f", and {'its gradient norm is' if one else 'all gradient norms are at most'} " + (
            f"{largest} (within `grad_tol`)"
        )
    plateau = prose.optimum_symbol(ks[0]) if len(ks) == 1 else "$L^*_k$"
    if not on:
        count = "it has" if one else f"{int(slow.sum())} {'has' if slow.sum() == 1 else 'have'}"
        return f"; {norms}) show{'s' * one} that {count} not converged"
    if not any_at_min and slow.all():
        return (
            f"; {norms}, above `grad_tol`) show{'s' * one} that {'it is' if one else 'they are'} "
            f"still on the plateau at {plateau} and {'has' if one else 'have'} not converged"
        )
    if not any_at_min:  # some pass grad_tol on a plateau below L*_r: a strict saddle for N = 2
        n_fast, n_slow = int(slow.size - slow.sum()), int(slow.sum())
        rest = "the other one is" if n_fast == 1 else f"the other {n_fast} are"
        above = "the one above it is" if n_slow == 1 else f"the {n_slow} above it are"
        return (
            f"; {norms}, {n_slow} of {slow.size} above `grad_tol`) show that {above} still on the "
            f"plateau at {plateau} and {'has' if n_slow == 1 else 'have'} not converged; {rest} "
            f"below `grad_tol` although {'it sits' if n_fast == 1 else 'they sit'} on the plateau "
            f"at {plateau} too, a strict saddle: a small gradient does not certify a limit"
        )
    return f"; {int(slow.sum())} have gradient norms above `grad_tol` (up to {largest})"


def signed_offset(excess: np.ndarray) -> str:
    """Where losses lie relative to their ``L*_k``, signed: ``"between 8.8e-05 below and 6.1e-07
    above"``, ``"up to 8.8e-05 below"``, ``"up to 6.1e-07 above"``, ``"exactly at"``.

    Completed by the caller with ``" L*_k"``. A loss below ``L*_k`` is possible although
    ``L*_k`` is the minimum over rank ``≤ k``: the numerical rank ``k`` then undercounts the rank
    (a singular value below the rank tolerance already lowers the loss). NaN entries (diverged
    starts) are ignored; ``"n/a (none)"`` when nothing is left.
    """
    e = np.asarray(excess, dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return "n/a (none)"
    low, high = float(e.min()), float(e.max())
    below, above = prose.number(-low, ".2g"), prose.number(high, ".2g")
    if low < 0 < high:
        return f"between {below} below and {above} above"
    if low < 0:
        return f"up to {below} below"
    return f"up to {above} above" if high > 0 else "exactly at"


def stalled_sentence(
    ranks: np.ndarray,
    excess: np.ndarray,
    opt: np.ndarray,
    plateau_tol: float,
    previous: np.ndarray | None = None,
) -> str:
    """What the runs that have not converged after the largest budget measured.

    Each run of numerical rank ``k < r`` is *on the plateau* at ``L*_k`` when
    ``|L − L*_k| ≤ plateau_tol (L*_k − L*_r)``, else *between plateaus* (below ``L*_k``) or
    *above* it; a run of rank ``r`` has nothing missing. The sentence gives their numbers, the
    signed offset of their loss from ``L*_k`` (:func:`signed_offset`) and, with ``previous``
    (their ranks at the budget before), how many showed another rank there. It never says a run
    is on a plateau that the measure puts off it. Markdown with inline math (glue it as
    :class:`~dlncore.experiments.prose.Markdown`).

    Parameters
    ----------
    ranks, excess : array, shape (B,)
        Numerical rank ``k`` and ``L − L*_k`` of each run that has not converged.
    opt : array, shape (r + 1,)
        The optimal values ``L*_0, ..., L*_r``.
    plateau_tol : float
        The chapter's relative plateau tolerance.
    previous : array, shape (B,), optional
        The ranks of the same runs at the previous budget.

    Returns
    -------
    str
        One or more sentences, ending with a period.
    """
    ranks, excess = np.asarray(ranks, dtype=int), np.asarray(excess, dtype=float)
    total = ranks.size
    if total == 0:
        return "No run has a gradient norm above `grad_tol` after the largest budget."
    one = total == 1
    states = _stalled_states(ranks, excess, opt, plateau_tol, one)
    they, their = ("it", "its") if one else ("they", "their")
    text = (
        f"{'The other run (open marker)' if one else f'The other {total} runs (open markers)'}, of "
        f"numerical "
        f"rank {prose.listing(map(str, sorted(set(ranks.tolist()))), 'or')}, "
        f"{'has' if one else 'have'} a gradient norm above `grad_tol`: {they} "
        f"{'has' if one else 'have'} not converged. {their.capitalize()} loss lies "
        f"{signed_offset(excess)} $L^*_k$ for {their} current rank $k$"
        f"{'; ' if one else '. Of them, '}{states}."
    )
    if previous is not None:
        moved = int(np.sum(np.asarray(previous) != ranks))
        text += f" {moved} of {total} showed another numerical rank at the previous budget."
    return text


def _stalled_states(
    ranks: np.ndarray, excess: np.ndarray, opt: np.ndarray, plateau_tol: float, one: bool
) -> str:
    """The end of :func:`stalled_sentence`: how many runs are on the plateau of their rank
    (by ``plateau_tol``), below it (between plateaus), above it, or at the full rank ``r``."""
    r = opt.size - 1
    low = ranks < r
    rel = excess[low] / (opt[ranks[low]] - opt[r])  # signed, in units of L*_k − L*_r
    tol, their = f"`plateau_tol` = {plateau_tol:g}", "its" if one else "their"
    below, above = rel[rel < -plateau_tol], rel[rel > plateau_tol]
    parts = [  # (count, verbs, what the runs are); a single run is "it"
        (
            int(np.sum(np.abs(rel) <= plateau_tol)),
            ("is", "are"),
            "on the plateau at $L^*_k$ of a rank $k < r$ "
            "($|L − L^*_k| ≤$ `plateau_tol` $(L^*_k − L^*_r)$)",
        ),
        (
            below.size,
            ("is", "are"),
            f"between plateaus, below $L^*_k$ of {their} rank by up to "
            f"{prose.number(-below.min() if below.size else np.nan, '.2g')} $(L^*_k − L^*_r)$, "
            f"beyond {tol}",
        ),
        (
            above.size,
            ("is", "are"),
            f"above $L^*_k$ of {their} rank by up to "
            f"{prose.number(above.max() if above.size else np.nan, '.2g')} $(L^*_k − L^*_r)$, "
            f"beyond {tol}",
        ),
        (int(np.sum(~low)), ("has", "have"), f"the full rank $r$ = {r}"),
    ]
    said = [f"{'it' if one else n} {verb[int(n != 1)]} {what}" for n, verb, what in parts if n]
    return "; ".join(said[:-1] + [f"and {said[-1]}"]) if len(said) > 1 else said[0]  # commas inside
