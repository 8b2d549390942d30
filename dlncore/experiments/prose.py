"""Sentences that follow the run (chapters 1–6).

A chapter states its measured outcomes in sentences glued from the computation, so that a rerun
with other parameters never contradicts its own page: the verb follows the measurement ("reaches"
or "does not reach within 30 iterations"), and a value that was not measured is written "n/a" or
"not reached", never as a placeholder such as ``-1`` or ``nan``. The functions here build those
strings; the chapters glue them with ``myst_nb.glue`` and reference them without a format spec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

MISSING = "n/a"


def is_missing(value: object) -> bool:
    """True for ``None`` and for a float that is not finite (``nan``, ``±inf``)."""
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def number(value: float | int | None, spec: str = ".3g", missing: str = MISSING) -> str:
    """``value`` formatted with ``spec``, or ``missing`` when it was not measured.

    Parameters
    ----------
    value : float, int or None
        The measured value; ``None`` and non-finite floats count as not measured.
    spec : str
        A format specification, as in ``format(value, spec)``.
    missing : str
        The text written instead of a missing value.

    Returns
    -------
    str
        For example ``number(0.01234, ".2g") == "0.012"``, ``number(float("nan")) == "n/a"``.
    """
    return missing if is_missing(value) else format(value, spec)


def significant(value: float | int | None, digits: int = 2, missing: str = MISSING) -> str:
    """``value`` to ``digits`` significant digits, keeping trailing zeros: ``"1.0"`` rather than
    the ``"1"`` of ``".2g"`` (a ratio next to ``1.2`` reads as measured to the same digit),
    ``"18"`` (no trailing point), ``"0.00016"``; ``missing`` when it was not measured."""
    if is_missing(value):
        return missing
    return format(value, f"#.{digits}g").rstrip(".").replace(".e", "e")


def extremes(values: Iterable[float]) -> tuple[float, float]:
    """The smallest and the largest finite value; ``(nan, nan)`` when none was measured.

    ``extremes([2.0, nan, 0.5]) == (0.5, 2.0)``; unlike ``np.nanmin`` it does not warn.
    """
    finite = [float(v) for v in values if not is_missing(float(v))]
    return (min(finite), max(finite)) if finite else (math.nan, math.nan)


def held_up_to(values: Sequence[float], held: Sequence[bool]) -> float:
    """The largest of ``values`` such that ``held`` is true there and at every smaller value:
    what "for every value up to x" may say; ``nan`` when it fails at the smallest.

    ``held_up_to([1, 2, 3, 4], [True, True, False, True]) == 2.0`` (not 4).
    """
    largest = math.nan
    for value, ok in sorted(zip(values, held, strict=True), key=lambda pair: pair[0]):
        if not ok:
            break
        largest = float(value)
    return largest


def listing(items: Iterable[str], conjunction: str = "and") -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``; ``"none"`` for no items."""
    items = list(items)
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ..., ``11th``, ``21st``."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def per_depth(values: Sequence[str], depths: Sequence[int]) -> str:
    """``"3 (N = 2), 5 (N = 3)"``: one already formatted value per depth, in order."""
    if len(values) != len(depths):
        raise ValueError(f"{len(values)} values for {len(depths)} depths")
    return ", ".join(f"{v} (N = {n})" for v, n in zip(values, depths, strict=True)) or "none"


def first_reached(iterations: Sequence[int], reached: Sequence[bool]) -> tuple[int | float, str]:
    """The first recorded iteration at which a condition holds, and how to say it.

    Parameters
    ----------
    iterations : sequence of int, shape (R,)
        Recorded iterations, increasing.
    reached : sequence of bool, shape (R,)
        Whether the condition holds at each recorded iteration.

    Returns
    -------
    tuple of (int or float, str)
        ``(17, "17")``, or ``(nan, "not reached")`` when the condition never held (the number
        is for sweep tables, the text for the page).
    """
    for k, ok in zip(iterations, reached, strict=True):
        if ok:
            return int(k), str(int(k))
    return math.nan, "not reached"


def verdict_text(verdict: str, yes: str, no: str, na: str) -> str:
    """The sentence that matches a computed verdict ``"yes"``, ``"no"`` or ``"n/a"``.

    Chapters glue ``verdict_text(held, "… reach …", "… do not reach …", "… not measured")`` so
    that the verb of an outcome sentence is the one the run measured.
    """
    if verdict == "yes":
        return yes
    if verdict == "no":
        return no
    if verdict == "n/a":
        return na
    raise ValueError(f"verdict must be 'yes', 'no' or 'n/a', got {verdict!r}")


COUNT_WORDS = tuple("zero one two three four five six seven eight nine ten".split())


def depths_outcome(depths: Sequence[int], reached: Sequence[bool], goal: str, budget: int) -> str:
    """One sentence saying which depths reached ``goal`` within ``budget`` iterations.

    Parameters
    ----------
    depths : sequence of int, shape (D,)
        The depths N that were run.
    reached : sequence of bool, shape (D,)
        Whether the run of each depth reached the goal.
    goal : str
        What is reached, e.g. ``"the global minimum of their network"`` (``their`` becomes
        ``its`` where a single depth is the subject).
    budget : int
        The iteration budget, named in the sentence when a depth fell short.

    Returns
    -------
    str
        E.g. ``"All three depths reach the global minimum of their network."`` or
        ``"N = 2 and N = 3 do not reach the global minimum of their network within 30
        iterations; N = 1 does."``
    """
    if len(depths) != len(reached) or not depths:
        raise ValueError(f"{len(reached)} outcomes for {len(depths)} depths")
    hit = [f"N = {n}" for n, ok in zip(depths, reached, strict=True) if ok]
    miss = [f"N = {n}" for n, ok in zip(depths, reached, strict=True) if not ok]
    within = f"within {budget} iteration{'s' if budget != 1 else ''}"
    if not miss:
        if len(hit) == 1:
            return f"The run with {hit[0]} reaches {goal.replace('their', 'its')}."
        count = COUNT_WORDS[len(hit)] if len(hit) < len(COUNT_WORDS) else str(len(hit))
        both = "Both" if len(hit) == 2 else f"All {count}"
        return f"{both} depths reach {goal}."
    if not hit:
        who = f"The run with {miss[0]} does" if len(miss) == 1 else "No depth"
        verb = "not reach" if len(miss) == 1 else "reaches"
        return f"{who} {verb} {goal.replace('their', 'its')} {within}."
    verb, own = ("does", goal.replace("their", "its")) if len(miss) == 1 else ("do", goal)
    rest = "does" if len(hit) == 1 else "do"
    return f"{listing(miss)} {verb} not reach {own} {within}; {listing(hit)} {rest}."


def step_phrase(factor: float) -> str:
    """Where a run's step sits against the published step η, in Markdown:
    ``"at the published step $\\eta$"`` for ``factor == 1``, else ``"at step 300 $\\eta$"``
    (chapters 7 and 8; glue it as :class:`Markdown`)."""
    if float(factor) == 1:
        return r"at the published step $\eta$"
    return rf"at step {float(factor):g} $\eta$"


def order_phrase(same: bool) -> str:
    """``"in the same order as"`` or ``"in a different order than"``: how one ranking
    compares with another, e.g. ``f"ranks them {order_phrase(same)} the screening"``."""
    return "in the same order as" if same else "in a different order than"


_HALF_Y2 = r"$\tfrac12\|Y\|_F^2$"
_ROUNDING = r"$\epsilon_{\mathrm{mach}} \cdot \tfrac12\|Y\|_F^2$"


def rounding_level(largest: float, tol: float, rounding: float, factor: float = 100.0) -> str:
    """How large the largest final excess loss is: at rounding, within ``tol``, or above it.

    "At the level of floating-point rounding" is said only when ``largest`` is at most
    ``factor`` times the rounding level ``rounding`` (machine epsilon ``ε_mach`` times
    ``½‖Y‖²``; ``ε`` alone is the chapters' initial scale); a value that only passes the looser
    ``tol`` is stated against the rounding level instead. Markdown: glue it as
    :class:`Markdown`.

    Parameters
    ----------
    largest : float
        The largest absolute final excess loss ``|L − L*|`` (``nan`` when a start diverged).
    tol : float
        The tolerance of the check (``excess_tol``).
    rounding : float
        Machine epsilon times ``½‖Y‖²``, the loss scale.
    factor : float
        How many rounding levels still count as rounding.

    Returns
    -------
    str
        A clause without a final period, e.g. ``"at the level of floating-point rounding of a
        loss of size $\\tfrac12\\|Y\\|_F^2$ ($\\epsilon_{\\mathrm{mach}} \\cdot …$ ≈ 3e-16)"``.
    """
    if is_missing(largest):
        return "not defined for every start: a start diverged"
    if abs(largest) <= factor * rounding:
        return (
            f"at the level of floating-point rounding of a loss of size {_HALF_Y2} "
            f"({_ROUNDING} $\\approx$ {rounding:.1g})"
        )
    if abs(largest) <= tol:
        return (
            f"within the tolerance `excess_tol` = {tol:g}, but {abs(largest) / rounding:.2g} times "
            f"the floating-point rounding level {_ROUNDING} $\\approx$ {rounding:.1g}"
        )
    return (
        f"above the tolerance `excess_tol` = {tol:g}: not every start has reached the global "
        "minimum within the budget"
    )


def escape_delay(
    k_near: float, k_far: float, scale_near: float, scale_far: float, slope: float
) -> tuple[float, str]:
    """How much longer starts near a strict saddle take, against the escape law's prediction.

    The escape law (chapter 4) says a start of scale ``ε`` near the origin needs ``slope``
    more iterations per unit of ``ln(1/ε)``, so a group of starts of typical scale
    ``scale_near`` should need ``slope * ln(scale_far / scale_near)`` more iterations than one
    of typical scale ``scale_far``. The sentence states the measured difference
    ``k_near - k_far`` and compares it with that prediction; it does not claim a cause.

    Parameters
    ----------
    k_near, k_far : float
        Median iteration to reach the tolerance of the near and the far group (``inf`` when
        half of a group did not reach it, ``nan`` when a group is empty).
    scale_near, scale_far : float
        Typical (median) initial scale of each group.
    slope : float
        Predicted iterations per unit of ``ln(1/ε)``, ``1/ln(1 + η s₁)``.

    Returns
    -------
    tuple of (float, str)
        The predicted difference (``nan`` when a scale is missing) and a clause without a
        final period, e.g. ``"the starts close to the origin need 64 more iterations, 5.1
        times the 12 more that the escape law predicts for these scales, so the escape law
        accounts for only part of the difference"``.
    """
    scales_ok = not (is_missing(scale_near) or is_missing(scale_far) or is_missing(slope))
    predicted = slope * math.log(scale_far / scale_near) if scales_ok else math.nan
    if is_missing(k_near) or is_missing(k_far) or is_missing(predicted):
        return predicted, "n/a (a group has no start, or half of it did not reach the tolerance)"
    diff = k_near - k_far
    law = f"the {predicted:.0f} more that the escape law predicts for these scales"
    if diff <= 0:
        return predicted, (
            f"the starts close to the origin are not slower (difference {diff:.0f} iterations), "
            f"against {law}"
        )
    ratio = diff / predicted if predicted > 0 else math.inf
    head = f"the starts close to the origin need {diff:.0f} more iterations"
    if ratio > 2:
        return predicted, (
            f"{head}, {ratio:.2g} times {law}, so the escape law accounts for only part of the "
            "difference"
        )
    if ratio < 0.5:
        return predicted, f"{head}, only {ratio:.2g} times {law}"
    return predicted, f"{head}, close to {law} (ratio {ratio:.2g})"


def per_layer_decay(
    factors: Sequence[float], mean: float, first: int, last: int, exponential: bool = False
) -> str:
    """How a quantity is multiplied per added layer, from depth ``first`` to ``last``.

    Parameters
    ----------
    factors : sequence of float
        Factor per layer between consecutive depths (``stepsize.per_layer_factors``).
    mean : float
        Geometric mean per layer from ``first`` to ``last``.
    first, last : int
        The smallest and the largest depth.
    exponential : bool
        Whether the decay was measured to be at least exponential
        (``stepsize.decays_at_least_exponentially``: every factor below 1 and no growth of
        the factor toward 1 from the shallower half of the depths to the deeper one). Factors
        below 1 alone do not show it: a polynomial decay has them too.

    Returns
    -------
    str
        A predicate without a final period (it follows "... and it"), e.g. ``"is multiplied
        by a factor between 0.0089 and 0.063 per added layer from N = 2 to N = 12 (0.018 per
        layer on average), a decay at least exponential in the depth over these depths (the
        factor per layer does not grow toward 1 with the depth)"``; the last clause only when
        ``exponential``.
    """
    low, high = extremes(factors)
    if is_missing(mean) or is_missing(low):
        return "cannot be compared across depths (fewer than two depths from N = 2 on)"
    span = f"per added layer from N = {first} to N = {last}"
    if len(factors) == 1:
        return f"is multiplied by {mean:.2g} {span}"
    text = (
        f"is multiplied by a factor between {low:.2g} and {high:.2g} {span} "
        f"({mean:.2g} per layer on average)"
    )
    clause = (
        ", a decay at least exponential in the depth over these depths (the factor per layer "
        "does not grow toward 1 with the depth)"
    )
    return text + clause * bool(exponential)


_ETA_MAX, _ETA_BOOK = r"$\eta_{\max}$", r"$\eta_{\mathrm{book}}$"


def threshold_decay_outcome(
    measured: float, book: float, first: int, last: int, count: int, book_exponential: bool
) -> str:
    """Sentences comparing how the measured threshold and the book's bound fall with depth.

    Parameters
    ----------
    measured, book : float
        Geometric mean factor per layer of ``η_max`` and of ``η_book`` from ``first`` to
        ``last`` (``measured`` is ``nan`` when a search found no convergent step).
    first, last : int
        The smallest and the largest depth searched.
    count : int
        The number of depths searched.
    book_exponential : bool
        Whether the decay of ``η_book`` was measured to be at least exponential over the
        depths of the figure (``stepsize.decays_at_least_exponentially``).

    Returns
    -------
    str
        One or two sentences in Markdown (glue them as :class:`Markdown`); they never call the
        decay of ``η_max`` polynomial, since a few depths cannot show it.
    """
    if count < 2:
        return (
            "With a single depth searched, the measurements do not show how the threshold "
            "depends on the depth."
        )
    if is_missing(measured) or is_missing(book):
        return (
            "The search found no convergent step size from some of these starts (within its "
            "grid and budget), so the measurements do not show how the threshold itself "
            "depends on the depth."
        )
    lead = (
        "So for imbalanced starts the book's own analysis gives a step size that decays "
        "exponentially in the depth. "
        if book_exponential
        else ""
    )
    rates = (
        f"from N = {first} to N = {last} it is multiplied by {measured:.2g} per layer on "
        f"average, against {book:.2g} for {_ETA_BOOK}"
    )
    if measured <= book:
        return f"{lead}The measured {_ETA_MAX} does not fall more slowly than {_ETA_BOOK}: {rates}."
    words = COUNT_WORDS[count] if count < len(COUNT_WORDS) else str(count)
    return (
        f"{lead}The measured {_ETA_MAX} falls more slowly: {rates}; {words} depths cannot tell a "
        "polynomial decay from a slow exponential one."
    )


def never_below(smallest: float, rounding: float) -> str:
    """Whether any run went below an optimal value, allowing for rounding.

    Parameters
    ----------
    smallest : float
        The smallest relative difference ``(L − L*) / L*`` over the runs.
    rounding : float
        How far below zero still counts as rounding (a relative size, e.g. ``1e-12``).

    Returns
    -------
    str
        ``"none goes below it"`` (no negative difference), ``"none goes below it beyond
        rounding"`` (negative differences, all within ``rounding``), or that some go below it.
    """
    if is_missing(smallest):
        return "n/a (no run finished)"
    if smallest >= 0:
        return "none goes below it"
    if smallest >= -rounding:
        return "none goes below it beyond rounding"
    return "some go below it, which the proposition excludes"


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``"1 start"``, ``"0 starts"``, ``"3 starts"``: a count with its noun, plural-aware.

    Parameters
    ----------
    n : int
        The count.
    singular : str
        The noun for one item.
    plural : str, optional
        The noun for any other count (default: ``singular + "s"``).

    Returns
    -------
    str
        The count in digits followed by the noun.
    """
    n = int(n)
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def guaranteed_steps(n_guaranteed: int, n_total: int) -> str:
    """How many step sizes of a grid the book's sufficient step size covers, and what is measured.

    Parameters
    ----------
    n_guaranteed : int
        The number of step sizes of the grid with ``η ≤ η_book``.
    n_total : int
        The number of step sizes of the grid.

    Returns
    -------
    str
        A clause that follows "... for every η ≤ η_book = 0.01:", without a final period, e.g.
        ``"3 of the 8 step sizes of the grid are that small; for the other 5 the descent
        condition is measured at every step below"``.
    """
    n_guaranteed, n_total = int(n_guaranteed), int(n_total)
    grid = f"the {counted(n_total, 'step size')} of the grid"
    measured = "the descent condition is measured at every step below"
    if n_guaranteed == 0:
        if n_total == 1:
            return f"the one step size of the grid is not that small, so for it {measured}"
        return f"none of {grid} is that small, so for all of them {measured}"
    if n_guaranteed == n_total:
        which = (
            "the one step size of the grid is"
            if n_total == 1
            else f"all {n_total} step sizes of the grid are"
        )
        return f"{which} that small ({measured} as well)"
    rest = n_total - n_guaranteed
    other = "the other one" if rest == 1 else f"the other {rest}"
    verb = "is" if n_guaranteed == 1 else "are"
    return f"{n_guaranteed} of {grid} {verb} that small; for {other} {measured}"


class Markdown(str):
    """A glued sentence with inline TeX math (``"… at $L^*_{4}$"``). Glued, it carries
    ``text/markdown`` besides ``text/plain``: a chapter shows it typeset with
    ``{glue:md}`key:myst```, while sweeps and checks read it as the text it is."""

    def _repr_markdown_(self) -> str:
        return str(self)


def optimum_symbol(k: int | str) -> str:
    """``"$L^*_{4}$"``: the optimal value of rank ``k`` in Markdown (glue as :class:`Markdown`)."""
    return f"$L^*_{{{k}}}$"
