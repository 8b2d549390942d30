"""Calibrating the journal experiments' unpublished choices against the published curves.

The published loss and norm curves (digitized, package data
``dlncore/experiments/data/published/*.csv``, :func:`load_published`) are compared with ours
by a :func:`distance` on a fixed grid of iterations, and by the :func:`features` that a reader
sees (drop iteration, plateau, norm extremes, final loss). A candidate (an
:class:`~dlncore.experiments.journal.Experiment`) can be screened cheaply by :func:`scaled_run`:
gradient descent at step ``c η`` for ``steps / c`` steps follows the same gradient flow up to time
``η k``, and its records are reported at the iterations ``c k'`` of the published step.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from importlib.resources.abc import Traversable
from itertools import product
from pathlib import Path

import numpy as np

from dlncore.data import synthetic_data
from dlncore.experiments import prose
from dlncore.experiments.journal import (
    Experiment,
    journal_init,
    linear_run,
    preconditioner_eigenvalues,
)
from dlncore.fitting import first_crossing_loglog

#: Iterations at which curves are compared: 41 log-spaced points from 10 to 10⁶.
GRID = np.geomspace(1e1, 1e6, 41)
#: Weight of the norm part of the distance: an RMS norm error of 0.01 counts as 0.1 decade.
NORM_WEIGHT = 10.0


@dataclass(frozen=True)
class Curve:
    """A loss and a norm curve of one depth, each at its own iterations (ascending)."""

    loss_k: np.ndarray
    loss: np.ndarray
    norm_k: np.ndarray
    norm: np.ndarray

    def loss_at(self, k: np.ndarray | float) -> np.ndarray:
        """Loss at iterations ``k`` (interpolated linearly in log k, log loss; ``nan`` for a
        curve without records after ``k = 0``)."""
        if self.loss_k.size == 0:
            return np.full(np.shape(k), np.nan)
        log_loss = np.log10(np.maximum(self.loss, np.finfo(np.float64).tiny))  # a loss of 0
        return 10.0 ** np.interp(np.log10(k), np.log10(self.loss_k), log_loss)

    def norm_at(self, k: np.ndarray | float) -> np.ndarray:
        """Norm at iterations ``k`` (interpolated linearly in log k; ``nan`` without records)."""
        if self.norm_k.size == 0:
            return np.full(np.shape(k), np.nan)
        return np.interp(np.log10(k), np.log10(self.norm_k), self.norm)


def curve_of_run(iterations: np.ndarray, loss: np.ndarray, norm: np.ndarray) -> Curve:
    """A :class:`Curve` from recorded iterations (the record at ``k = 0`` is dropped: log axis)."""
    k = np.asarray(iterations, dtype=np.float64)
    keep = k > 0
    loss = np.asarray(loss, dtype=np.float64)[keep]
    norm = np.asarray(norm, dtype=np.float64)[keep]
    return Curve(k[keep], loss, k[keep], norm)


def _read_tidy(path: str | Path | Traversable) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out: dict[int, list[tuple[float, float]]] = {}
    with _open(path) as f:
        rows = csv.reader(line for line in f if not line.startswith("#"))
        header = next(rows)
        if header != ["curve", "x", "y"]:
            raise ValueError(f"{path}: expected columns curve,x,y, got {header}")
        for name, x, y in rows:
            out.setdefault(int(name), []).append((float(x), float(y)))
    result = {}
    for depth, points in out.items():
        xy = np.array(sorted(points))
        result[depth] = (xy[:, 0], xy[:, 1])
    return result


def _open(path: str | Path | Traversable):
    """Open a file or a package resource for reading text."""
    return path.open() if isinstance(path, Traversable) else open(path)


def data_files() -> Traversable:
    """The package data of the calibration (``dlncore/experiments/data``): ``published/``
    (the digitized published curves) and ``calibration/search.csv`` (the stored search).

    Read with :mod:`importlib.resources`, so it works from an editable install, a wheel, a
    Dask worker or Colab alike.
    """
    return resources.files("dlncore.experiments") / "data"


def load_published(
    directory: str | Path | Traversable | None = None, kind: str = "linear"
) -> dict[int, Curve]:
    """The digitized published curves, ``{depth: Curve}``, from ``{kind}_loss.csv`` and
    ``{kind}_norms.csv`` in ``directory`` (default: the package data ``published/``; written by
    ``python -m dlncore.experiments.digitize``). ``kind``: ``"linear"`` or ``"tanh"``."""
    if directory is None:
        directory = data_files() / "published"
    elif not isinstance(directory, Traversable):
        directory = Path(directory)
    loss = _read_tidy(directory / f"{kind}_loss.csv")
    norms = _read_tidy(directory / f"{kind}_norms.csv")
    if set(loss) != set(norms):
        raise ValueError(f"{directory}: loss and norm files have different depths")
    return {n: Curve(*loss[n], *norms[n]) for n in sorted(loss)}


def stored_search() -> tuple[list[dict], dict]:
    """Rows and parameters of the stored calibration search (package data
    ``calibration/search.csv``; :func:`read_table`)."""
    return read_table(data_files() / "calibration" / "search.csv")


def stored_families() -> tuple[list[dict], dict]:
    """Rows and parameters of the stored family screen (package data
    ``calibration/families.csv``, written from :func:`screen_families`; :func:`read_table`)."""
    return read_table(data_files() / "calibration" / "families.csv")


def distance(ours: Curve, published: Curve, grid: np.ndarray = GRID, floor: float = 1e-3):
    """``(loss part, norm part)`` of the distance between two curves on ``grid``.

    Loss part: RMS difference of ``log10 max(L, floor)`` (decades; the floor leaves out the
    round-off floors, compared separately). Norm part: RMS difference of the norms.
    The total used for ranking is ``loss part + NORM_WEIGHT · norm part``.
    """
    a = np.log10(np.maximum(ours.loss_at(grid), floor))
    b = np.log10(np.maximum(published.loss_at(grid), floor))
    d_loss = float(np.sqrt(np.mean((a - b) ** 2)))
    d_norm = float(np.sqrt(np.mean((ours.norm_at(grid) - published.norm_at(grid)) ** 2)))
    return d_loss, d_norm


def total_distance(parts: Mapping[int, tuple[float, float]]) -> float:
    """Mean over depths of ``loss part + NORM_WEIGHT · norm part``."""
    return float(np.mean([a + NORM_WEIGHT * b for a, b in parts.values()]))


def first_crossing(curve: Curve, level: float) -> float:
    """First iteration where the loss falls below ``level``, interpolated in log–log between
    the neighbouring points (``nan`` if never)."""
    return first_crossing_loglog(curve.loss_k, curve.loss, level)


def features(curve: Curve, drop_level: float = 1e-3) -> dict[str, float]:
    """The quantities a reader compares (``nan`` where undefined).

    ``drop``: first iteration with loss below ``drop_level``; ``loss_1e3/1e4/1e5``: loss at
    those iterations; ``plateau``: the loss where the curve is flattest (smallest
    ``|d log L / d log k|``, on 60 log-spaced points) in the decade before the drop, and
    ``plateau_slope`` that slope; ``norm_min``/``norm_max`` and their iterations
    ``norm_min_k``/``norm_max_k`` (the maximum after the minimum); ``bump``: the largest rise
    of the norm above its running minimum within a factor 3 of the drop; ``final``: the
    last loss; ``norm_start``: the first recorded norm (the norm has no dip where
    ``norm_start − norm_min`` is below :data:`NO_DIP`, and ``norm_min_k`` then means nothing).
    """
    keys = ("drop", "loss_1e3", "loss_1e4", "loss_1e5", "plateau", "plateau_slope")
    keys += ("norm_min", "norm_min_k", "norm_max", "norm_max_k", "bump", "final", "norm_start")
    if curve.loss_k.size == 0 or curve.norm_k.size == 0:  # no record after k = 0
        return dict.fromkeys(keys, float("nan"))
    out: dict[str, float] = {}
    drop = first_crossing(curve, drop_level)
    out["drop"] = drop
    for k in (1e3, 1e4, 1e5):
        out[f"loss_{k:.0e}".replace("+0", "")] = float(curve.loss_at(k))
    out["plateau"] = out["plateau_slope"] = float("nan")
    if np.isfinite(drop) and drop > 10 * curve.loss_k[0]:
        ks = np.geomspace(drop / 10, drop / 1.05, 60)
        logl = np.log10(curve.loss_at(ks))
        slope = np.abs(np.gradient(logl, np.log10(ks)))
        i = int(np.argmin(slope))
        out["plateau"], out["plateau_slope"] = float(10.0 ** logl[i]), float(slope[i])
    k, norm = curve.norm_k, curve.norm
    i_min = int(np.argmin(norm))
    i_max = i_min + int(np.argmax(norm[i_min:]))
    out.update(
        norm_min=float(norm[i_min]),
        norm_min_k=float(k[i_min]),
        norm_max=float(norm[i_max]),
        norm_max_k=float(k[i_max]),
    )
    out["bump"] = float("nan")
    if np.isfinite(drop):
        ks = np.geomspace(drop / 3, min(3 * drop, k[-1]), 80)
        values = curve.norm_at(ks)
        out["bump"] = float(np.max(values - np.minimum.accumulate(values)))
    out["final"] = float(curve.loss[-1])
    out["norm_start"] = float(norm[0])
    return out


def scaled_run(experiment: Experiment, depth: int, factor: float = 1.0, dtype: str = "float64"):
    """GD at step ``factor · η`` for ``steps / factor`` steps: ``(curve, loss at k = 0,
    seconds, diverged at)``.

    The :class:`Curve` is at the iterations of step ``η`` (``k = factor · k'``), and so is the
    iteration where the run diverged (``nan`` if it did not; a larger step can diverge where
    the published one does not). ``factor = 1`` is the run itself. Module-level and
    picklable, for :func:`dlncore.experiments.parallel.run_many`.
    """
    if not factor >= 1:
        raise ValueError(f"factor must be at least 1, got {factor!r}")
    steps = int(round(experiment.steps / factor))
    e = replace(experiment, step_size=experiment.step_size * factor, steps=steps)
    run = linear_run(e, depth, dtype)
    curve = curve_of_run(
        np.asarray(run.iterations) * factor, run.loss, run.metrics["end_to_end_norm"]
    )
    diverged_at = float(run.diverged_at) * factor if bool(run.diverged) else float("nan")
    return curve, float(run.loss[0]), float(run.info["seconds"]), diverged_at


def evaluate(
    experiments: Sequence[Experiment],
    published: Mapping[int, Curve],
    factor: float,
    run_many_func,
    dtype: str = "float64",
) -> list[dict]:
    """Distance and features of each experiment against the published curves, one row per
    experiment: ``distance`` (total), ``d_loss_N``/``d_norm_N`` and ``loss0_N``, ``drop_N``,
    ``plateau_N``, ``norm_min_N``, ``norm_max_N``, ..., ``diverged_N`` (iteration, ``nan`` if
    the run did not diverge) for every published depth ``N``. A candidate with a diverged run
    has ``distance`` ``nan`` (ranked last).

    ``run_many_func(jobs)`` evaluates the :func:`scaled_run` jobs (e.g. a
    :func:`dlncore.experiments.parallel.run_many` with chosen workers).
    """
    depths = sorted(published)
    jobs = [
        (scaled_run, dict(experiment=e, depth=n, factor=factor, dtype=dtype))
        for e in experiments
        for n in depths
    ]
    results = run_many_func(jobs)
    rows = []
    for i, _ in enumerate(experiments):
        row: dict = {}
        parts = {}
        for j, n in enumerate(depths):
            curve, loss0, _, diverged_at = results[i * len(depths) + j]
            parts[n] = distance(curve, published[n])
            row[f"d_loss_{n}"], row[f"d_norm_{n}"] = parts[n]
            row[f"loss0_{n}"] = loss0
            row[f"diverged_{n}"] = diverged_at
            for key, value in features(curve).items():
                row[f"{key}_{n}"] = value
        diverged = any(np.isfinite(row[f"diverged_{n}"]) for n in depths)
        row["distance"] = float("nan") if diverged else total_distance(parts)
        rows.append(row)
    return rows


#: The choices a candidate sets (columns of the search table, in order).
CHOICES = (
    "spectrum",
    "init",
    "init_norm",
    "input_scale",
    "samples",
    "width",
    "data_seed",
    "init_seed",
)


def parse_spectrum(text: str) -> tuple[str, float]:
    """``"power:0.5"`` -> ``("power", 0.5)``; other kinds -> ``(kind, 0.5)`` (exponent unused)."""
    kind, _, exponent = text.partition(":")
    return kind, float(exponent) if exponent else 0.5


def candidate(base: Experiment, choice: Mapping) -> Experiment:
    """``base`` with the choices of one candidate (keys of :data:`CHOICES`)."""
    kind, exponent = parse_spectrum(str(choice["spectrum"]))
    return replace(
        base,
        spectrum=kind,
        exponent=exponent,
        init=str(choice["init"]),
        init_norm=float(choice["init_norm"]),
        input_scale=float(choice["input_scale"]),
        samples=int(choice["samples"]),
        width=int(choice["width"]),
        data_seed=int(choice["data_seed"]),
        init_seed=int(choice["init_seed"]),
    )


def search(
    base: Experiment,
    published: Mapping[int, Curve],
    grid: Mapping[str, Sequence],
    factor: float,
    run_many_func,
) -> list[dict]:
    """Screen every combination of ``grid`` (all :data:`CHOICES` keys, lists of values) with
    :func:`evaluate` at step ``factor · η``. Rows: the choices, ``stage = "grid"``, ``factor``
    and the :func:`evaluate` columns, sorted by distance (NaN, e.g. a diverged run, last)."""
    keys = list(CHOICES)
    combos = [dict(zip(keys, values, strict=True)) for values in product(*(grid[k] for k in keys))]
    return _evaluated(base, published, combos, "grid", factor, run_many_func)


def refine(
    base: Experiment,
    published: Mapping[int, Curve],
    rows: Sequence[Mapping],
    values: Mapping[str, Sequence],
    factor: float,
    run_many_func,
) -> list[dict]:
    """Add candidates that change one choice of the best row (``values``: choice -> values to
    try; combinations already in ``rows`` are skipped), ``stage = "refine"``; all rows sorted."""
    keys = list(CHOICES)
    best = min(rows, key=_rank)
    seen = {tuple(r[k] for k in keys) for r in rows}
    extra = []
    for key, options in values.items():
        for value in options:
            c = {k: best[k] for k in keys} | {key: value}
            if tuple(c[k] for k in keys) not in seen:
                seen.add(tuple(c[k] for k in keys))
                extra.append(c)
    new = _evaluated(base, published, extra, "refine", factor, run_many_func)
    return sorted([*rows, *new], key=_rank)


def confirm(
    base: Experiment,
    published: Mapping[int, Curve],
    rows: Sequence[Mapping],
    count: int,
    factor: float,
    run_many_func,
) -> list[dict]:
    """Rerun the ``count`` best rows at step ``factor · η`` (``stage = "confirm"``), added to
    the rows; all rows sorted."""
    keys = list(CHOICES)
    best = sorted(rows, key=_rank)[:count]
    new = _evaluated(
        base, published, [{k: r[k] for k in keys} for r in best], "confirm", factor, run_many_func
    )
    return sorted([*rows, *new], key=_rank)


def _evaluated(base, published, choices, stage, factor, run_many_func) -> list[dict]:
    results = evaluate([candidate(base, c) for c in choices], published, factor, run_many_func)
    rows = [
        {**c, "stage": stage, "factor": factor, **r} for c, r in zip(choices, results, strict=True)
    ]
    return sorted(rows, key=_rank)


def _rank(row: Mapping) -> float:
    d = row["distance"]
    return d if np.isfinite(d) else np.inf


def write_table(path: str | Path, rows: Sequence[Mapping], parameters: Mapping) -> None:
    """CSV of ``rows`` after a ``# parameters: {json}`` line recording how they were made."""
    path = Path(path)
    columns = list(rows[0])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(f"# parameters: {json.dumps(parameters, sort_keys=True)}\n")
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_table(path: str | Path | Traversable) -> tuple[list[dict], dict]:
    """Rows (numbers as float where they parse) and parameters of :func:`write_table`."""
    with _open(path) as f:
        first = f.readline()
        if not first.startswith("# parameters: "):
            raise ValueError(f"{path}: no '# parameters:' line")
        parameters = json.loads(first.removeprefix("# parameters: "))
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows, parameters


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


#: Axis ranges of the published figures (iterations, loss, norm), from the digitizer's
#: calibration of their frames; iteration 0 is drawn at the left edge there.
PUBLISHED_AXES = {"k": (0.5, 2e6), "loss": (1.5e-8, 3.1e2), "norm": (0.916, 1.083)}


def draw_published(ax, curves: Mapping[int, Curve], at_loss: float | None = None) -> None:
    """Draw the published ``curves`` (depth -> :class:`Curve`) on the matplotlib axes ``ax``
    in grey, each labelled with its depth: the loss curves, labelled where they cross
    ``at_loss``, or (``at_loss`` None) the norm curves, labelled at their maximum."""
    for depth, curve in curves.items():
        label = "published, digitized" if depth == min(curves) else None
        k, y = (curve.loss_k, curve.loss) if at_loss else (curve.norm_k, curve.norm)
        ax.plot(k, y, color="0.65", linewidth=2.5, zorder=1, label=label)
        i = int(np.argmax(y))
        xy = (first_crossing(curve, at_loss), at_loss) if at_loss else (k[i], y[i])
        ax.annotate(f"{depth}", xy, xytext=(4, -3), textcoords="offset points", color="0.5")


def raised_top(
    published: tuple[float, float], values, margin: float, log: bool = False
) -> tuple[float, float]:
    """The published figure's axis range ``published = (low, high)`` with its top raised where
    the largest finite value of ``values`` does not fit below it with ``margin`` to spare (a
    factor on a ``log`` axis, an absolute difference on a linear one): our curves are drawn in
    full at the top (a starting loss above the published frame, a peak on the frame); the
    bottom stays, as in the published figure."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    if v.size == 0:
        return published
    top = v.max() * margin if log else v.max() + margin
    return (published[0], float(max(published[1], top)))


def error_text(err: float, kind: str, missing: str = "n/a") -> str:
    """An error as the comparison tables show it: a factor as ``"×4.34"`` (3 significant
    digits), an absolute difference (``kind`` ``"abs"``: norms) as ``"0.023"`` (3 decimals);
    ``missing`` where nothing was measured (nan, inf)."""
    if not np.isfinite(err):
        return missing
    return f"×{err:.3g}" if kind == "factor" else f"{err:.3f}"


def factor_error(ours: float, published: float) -> float:
    """``max(ours/published, published/ours)`` (``inf`` if either is not a positive number)."""
    if not (np.isfinite(ours) and np.isfinite(published) and ours > 0 and published > 0):
        return float("inf")
    return float(max(ours / published, published / ours))


#: Targets of the feature comparison with the published curves, set before the runs:
#: ``(quantity, feature, kind, tolerance)``; kind ``"factor"``: within a factor ``tolerance``,
#: ``"abs"``: within ``± tolerance``, ``None``: shown without a target.
TARGETS = (
    ("loss at k = 0", "loss0", None, None),
    ("first k with loss below the drop level", "drop", "factor", 1.5),
    ("loss at k = 1e3", "loss_1e3", "factor", 2.0),
    ("loss at k = 1e3 relative to L(0)", "rel_1e3", None, None),
    ("loss at k = 1e4", "loss_1e4", "factor", 2.0),
    ("loss at k = 1e5", "loss_1e5", "factor", 2.0),
    ("plateau before the drop (flattest loss in the decade before it)", "plateau", "factor", 2.0),
    ("norm minimum", "norm_min", "abs", 0.015),
    ("iteration of the norm minimum", "norm_min_k", "factor", 2.0),
    ("norm maximum (after the minimum)", "norm_max", "abs", 0.015),
    ("iteration of the norm maximum", "norm_max_k", "factor", 2.0),
    ("rise of the norm near the drop", "bump", None, None),
    ("final loss, float32 run", "final32", "factor", 10.0),
    # shown without a target: a float64 run that drops ends at its rounding floor (about 1e-23
    # at the book's defaults), which says nothing about agreement with a published loss that
    # stops decades above it; the published final loss is compared with the float32 run only
    ("final loss, float64 run", "final", None, None),
)
#: The same targets for runs without a float32 twin (the tanh runs): one final-loss row.
SINGLE_RUN_TARGETS = tuple(t for t in TARGETS if not t[1].startswith("final")) + (
    ("final loss", "final", "factor", 10.0),
)
#: A curve has a plateau before its drop where the flattest slope |d log L / d log k| there
#: is below this.
PLATEAU_SLOPE = 0.5


def compare(
    ours: Mapping[int, Mapping[str, float]],
    published: Mapping[int, Mapping[str, float]],
    drop_level: float,
    targets: Sequence[tuple] = TARGETS,
) -> tuple[list[dict], list[tuple[int, str, bool, float]]]:
    """Feature-by-feature comparison of our curves with the published ones, per depth.

    ``ours[N]``/``published[N]``: :func:`features` plus ``loss0`` (the loss at ``k = 0``; for a
    published curve read at ``k = 1``) and, for ours, ``final32`` (the final loss of the float32
    run; compared with the published ``final``). A target applies to the losses at fixed
    iterations only where the published loss is above ``drop_level``, to the plateau only
    where the published curve has one (slope below :data:`PLATEAU_SLOPE`; ours without one is
    a miss) and to the iteration of the norm minimum only where the published norm dips (by
    :data:`NO_DIP` or more below ``norm_start``; ours without a dip is a miss). Returns the
    table rows (``N, quantity, published, ours, off by, target, held?``; norms to 3 decimals,
    a missing plateau as ``"none (slope …)"``, a missing drop as ``"not reached"``, the
    iteration of a minimum that is no dip as ``"n/a (no dip)"``; ``held?`` is ``"n/a"`` where
    no target applies) and the applied targets ``(N, quantity, held, error)``, the error a
    factor or an absolute difference.
    """
    rows, held = [], []
    for n in sorted(set(ours) & set(published)):
        p = dict(published[n], rel_1e3=_relative(published[n]["loss_1e3"], published[n]["loss0"]))
        p["final32"] = p["final"]
        o = dict(ours[n], rel_1e3=_relative(ours[n]["loss_1e3"], ours[n]["loss0"]))
        for quantity, key, kind, tol in targets:
            pv, ov = p[key], o.get(key, float("nan"))
            ps, os_ = _shown_feature(p, key), _shown_feature(o, key)
            applies = kind is not None
            if key.startswith("loss_1e"):
                applies = applies and pv > drop_level
            if key == "plateau":
                applies = applies and p["plateau_slope"] < PLATEAU_SLOPE
                ov = ov if o["plateau_slope"] < PLATEAU_SLOPE else float("nan")
            if key == "norm_min_k":
                applies = applies and has_dip(p)
                ov = ov if has_dip(o) else float("nan")
            off = "—"
            if applies:
                err = factor_error(ov, pv) if kind == "factor" else abs(ov - pv)
                ok = bool(err <= tol)  # nan (not measured) is a miss
                held.append((n, quantity, ok, err))
                target = f"within a factor {tol:g}" if kind == "factor" else f"within ±{tol:g}"
                verdict = "yes" if ok else "no"
                off = error_text(err, kind, missing="—")
            else:
                target, verdict = ("—" if kind is None else "n/a here"), "n/a"
            row = dict(N=n, quantity=quantity, published=ps, ours=os_, **{"off by": off})
            rows.append(row | {"target": target, "held?": verdict})
    return rows, held


#: A norm curve dips where its minimum lies at least this far below its first recorded value:
#: the accuracy to which the published norms were digitized (about 0.001, chapter 7; a smaller
#: dip cannot be told from the digitizing error, and its iteration means nothing).
NO_DIP = 1e-3


def has_dip(feats: Mapping[str, float]) -> bool:
    """Whether the norm of a curve dips (:data:`NO_DIP`); ``True`` where ``norm_start`` is not
    known (rows of a stored search: their starts are ``init_norm``, see
    :func:`screen_error_table`)."""
    start = feats.get("norm_start", float("nan"))
    return not np.isfinite(start) or bool(start - feats["norm_min"] >= NO_DIP)


#: Features that are norms: shown to 3 decimals (the targets on them are ``± 0.015``).
NORM_FEATURES = ("norm_min", "norm_max")


def feature_text(value: float, key: str) -> str:
    """A feature value as the appendix's tables show it: a norm (:data:`NORM_FEATURES`) to 3
    decimals, as :func:`compare` shows it (``"1.075"``), anything else to 3 significant
    digits; ``"n/a"`` where nothing was measured."""
    return prose.number(value, ".3f", "n/a") if key in NORM_FEATURES else _shown(value)


def _shown_feature(feats: Mapping[str, float], key: str) -> str:
    """The table text of one feature: norms to 3 decimals, a plateau that is none as
    ``"none (slope 1.34)"``, the iteration of a norm minimum without a dip as ``"n/a (no
    dip)"``, a drop that never came as ``"not reached"``, otherwise :func:`feature_text`."""
    value = feats.get(key, float("nan"))
    if key == "drop":
        return prose.number(value, missing="not reached")
    if key == "plateau" and not feats.get("plateau_slope", np.nan) < PLATEAU_SLOPE:
        if not np.isfinite(feats.get("drop", np.nan)):
            return "none (no drop)"
        slope = feats.get("plateau_slope", np.nan)
        return f"none (slope {slope:.2f})" if np.isfinite(slope) else "none"
    if key == "norm_min_k" and "norm_min" in feats and not has_dip(feats):
        return "n/a (no dip)"
    return feature_text(value, key)


def _relative(value: float, reference: float) -> float:
    """``value / reference``, ``nan`` where ``reference`` is 0 (a run that starts at zero loss)."""
    return value / reference if reference != 0 else float("nan")


def _shown(value: float) -> str:
    """A table value: 3 significant digits, ``"n/a"`` where nothing was measured (nan, inf)."""
    return f"{value:.3g}" if np.isfinite(value) else "n/a"


#: How the sentence of :func:`standing` names the stages of the search.
_STAGES = {"grid": "grid screen", "refine": "refinement", "confirm": "confirmation"}


def standing(search_rows: Sequence[Mapping], choice: Mapping) -> str:
    """One sentence: where ``choice`` (values of :data:`CHOICES`) ranks in a stored search
    (Markdown: the step is ``$\\eta$``)."""
    same = [r for r in search_rows if all(str(r[k]) == str(v) for k, v in choice.items())]
    screened = sorted((r for r in search_rows if r["stage"] != "confirm"), key=_rank)
    if not same:
        return f"These parameters are not among the {len(screened)} candidates of the search."
    runs = [
        f"{float(r['distance']):.3f} "
        + prose.step_phrase(r["factor"])
        + f" ({_STAGES.get(r['stage'], r['stage'])})"
        for r in same
    ]
    sentence = f"In the stored search these parameters have distance {prose.listing(runs)}"
    finalists = sorted((r for r in search_rows if r["stage"] == "confirm"), key=_rank)
    ranks = []
    for group, name in ((screened, "screened candidates"), (finalists, "finalists")):
        places = [i + 1 for i, r in enumerate(group) if r in same]
        if places:
            ranks.append(f"{prose.ordinal(places[0])} of the {len(group)} {name}")
    if ranks:
        sentence += "; they rank " + prose.listing(ranks)
    return sentence + "."


def search_sentences(
    screened: int, worst: float, diverged: int, rerun: int, gap: float, same_order: bool | None
) -> str:
    """What the appendix says about the search after naming the final choice.

    Parameters
    ----------
    screened : int
        Screened candidates (grid and refinement).
    worst : float
        Their largest finite distance.
    diverged : int
        How many of them diverged at the screening step (distance ``nan``).
    rerun : int
        Finalists rerun at the confirmation step.
    gap : float
        Largest change of a finalist's distance between the two steps (``nan`` if none).
    same_order : bool or None
        Whether the confirmation ranks the finalists as the screening does; ``None`` with
        fewer than two finalists (no order to compare).

    Returns
    -------
    str
        Sentences that say only what applies, e.g. "none of them diverged" rather than "0 of
        them diverged (… listed last …)".
    """
    text = f"The {screened} screened candidates range up to distance {prose.number(worst)}"
    if diverged == 0:
        text += "; none of them diverged at the larger screening step."
    else:
        text += (
            f'; {diverged} of them diverged at the larger screening step (distance "nan", '
            "listed last, with the iteration of the divergence in the columns `diverged_N`)."
        )
    if rerun == 0 or not np.isfinite(gap):
        return text + " No finalist was rerun at the confirmation step."
    finalists = "the finalist" if rerun == 1 else f"the {rerun} finalists"
    text += (
        f" Rerunning {finalists} at the confirmation step changed "
        f"{'its' if rerun == 1 else 'their'} distance by at most {gap:.2g}"
    )
    if same_order is None:
        return text + "."
    return (
        text + f", and the confirmation ranks them {prose.order_phrase(same_order)} the screening."
    )


#: Features that are iterations: a screening run cannot resolve one below its first record.
ITERATION_FEATURES = ("drop", "norm_min_k", "norm_max_k")
#: Features that mean something only where the norm dips (:func:`has_dip`).
DIP_FEATURES = ("norm_min_k", "norm_max", "norm_max_k")


def missed_evidence(
    held: Sequence[tuple[int, str, bool, float]],
    search_rows: Sequence[Mapping],
    published: Mapping[int, Mapping[str, float]],
    targets: Sequence[tuple] = TARGETS,
) -> list[dict]:
    """For every missed target: our error and how many screened candidates of the search met
    it (and the best error among them).

    ``our error`` and ``best`` are texts of :func:`error_text` (``"×4.34"``, ``"0.023"``, as
    in the table of :func:`compare`); ``our error`` is ``"n/a"`` where our run does not have
    the feature (no drop, no plateau). Final losses were not screened (their floors depend on
    the step and the precision): ``"not screened"``, ``best`` ``"n/a"``. An iteration
    (:data:`ITERATION_FEATURES`) whose published value lies below the first record of the
    screening runs (``k = c``, the screening factor: their first step) cannot be resolved by
    them: ``"not resolved (first screening record k = 300)"``, ``best`` ``"n/a"``. The
    iteration of the norm minimum and the maximum after it (:data:`DIP_FEATURES`) count only
    the candidates whose norm dips at that depth (by :data:`NO_DIP` below their start
    ``init_norm``): ``"0 of 79 that dip"``.
    """
    spec = {q: (key, kind, tol) for q, key, kind, tol in targets}
    screened = [r for r in search_rows if r["stage"] != "confirm"]
    first_record = min((float(r["factor"]) for r in screened), default=float("nan"))
    out = []
    for n, quantity, ok, err in held:
        if ok:
            continue
        key, kind, tol = spec[quantity]
        column = f"{key}_{n}"
        row = {"N": n, "quantity": quantity, "our error": error_text(err, kind)}
        if key.startswith("final") or not screened or column not in screened[0]:
            out.append(row | {"screened candidates meeting it": "not screened", "best": "n/a"})
            continue
        ref = published[n][key]
        if key in ITERATION_FEATURES and ref < first_record:
            count = f"not resolved (first screening record k = {first_record:g})"
            out.append(row | {"screened candidates meeting it": count, "best": "n/a"})
            continue
        pool, that = screened, ""
        if key in DIP_FEATURES:
            pool = [
                r
                for r in screened
                if has_dip(
                    {"norm_start": float(r["init_norm"]), "norm_min": float(r[f"norm_min_{n}"])}
                )
            ]
            that = " that dip"
        errs = [
            factor_error(r[column], ref) if kind == "factor" else abs(r[column] - ref) for r in pool
        ]
        hits = sum(e <= tol for e in errs)
        count = f"{hits} of {len(errs)}{that}" if errs else "n/a (no candidate dips)"
        best = error_text(float(min(errs)), kind) if errs else "n/a"
        out.append(row | {"screened candidates meeting it": count, "best": best})
    return out


def run_search(
    base: Experiment,
    published: Mapping[int, Curve],
    grid: Mapping[str, Sequence],
    refine_values: Mapping[str, Sequence],
    scale_factors: Sequence[float],
    finalists: int,
    screen_factor: float,
    confirm_factor: float,
    run_many_func,
) -> list[dict]:
    """The whole calibration search: :func:`search` over ``grid`` at step ``screen_factor · η``,
    :func:`refine` around its best row (``refine_values``, plus the best input scale times each
    of ``scale_factors``, rounded to 3 decimals), then :func:`confirm` of the ``finalists``
    best at step ``confirm_factor · η``. All rows, sorted by distance."""
    rows = search(base, published, grid, screen_factor, run_many_func)
    scales = [round(rows[0]["input_scale"] * f, 3) for f in scale_factors]
    values = {"input_scale": scales, **refine_values}
    rows = refine(base, published, rows, values, screen_factor, run_many_func)
    return confirm(base, published, rows, finalists, confirm_factor, run_many_func)


#: Features compared between a screening run and its confirmation, with the kind of error.
SCREEN_FEATURES = (
    ("drop", "factor"),
    ("loss_1e3", "factor"),
    ("loss_1e4", "factor"),
    ("loss_1e5", "factor"),
    ("plateau", "factor"),
    ("norm_min", "abs"),
    ("norm_min_k", "factor"),
    ("norm_max", "abs"),
    ("norm_max_k", "factor"),
)


def screen_errors(rows: Sequence[Mapping], depths: Sequence[int]) -> list[dict]:
    """How far screening (step ``c η``) is from the confirmation (step ``confirm_factor · η``)
    for the same candidates: for every feature of :data:`SCREEN_FEATURES` and every depth, the
    largest error over the confirmed candidates (a factor, or an absolute difference for the
    norms), plus the largest difference of the distance parts ``d_loss_N`` and ``d_norm_N``.
    A pair whose two runs both lack the feature (neither drops, say) agrees and is left out
    (:func:`screen_neither` names them); ``inf`` where exactly one of the two lacks it,
    ``nan`` where every pair is left out. Rows: ``{"feature", "error", N: ...}``. Empty if
    nothing was confirmed."""
    pairs = _screen_pairs(rows)
    if not pairs:
        return []
    out = []
    for key, kind in (*SCREEN_FEATURES, ("d_loss", "abs"), ("d_norm", "abs")):
        row: dict = {"feature": key, "error": "factor" if kind == "factor" else "difference"}
        row |= {n: _worst_error(pairs, f"{key}_{n}", kind) for n in depths}
        out.append(row)
    return out


def _worst_error(pairs: Sequence[tuple[Mapping, Mapping]], key: str, kind: str) -> float:
    """The largest error of ``key`` over ``(confirmation, screening)`` pairs: a factor
    (:func:`factor_error`) or, for ``kind="abs"``, an absolute difference (``inf`` if one
    value is not finite); pairs lacking it in both runs are left out, ``nan`` if none is left."""
    errors = []
    for c, s in pairs:
        a, b = float(c[key]), float(s[key])
        if np.isnan(a) and np.isnan(b):
            continue  # both runs lack it: the two steps agree
        if kind == "factor":
            errors.append(factor_error(b, a))
        else:
            errors.append(abs(a - b) if np.isfinite(a) and np.isfinite(b) else np.inf)
    return float(max(errors)) if errors else float("nan")


def screen_neither(
    rows: Sequence[Mapping], depths: Sequence[int], key: str = "drop"
) -> list[tuple[str, list[int]]]:
    """The finalists whose screening run and confirmation both lack ``key`` (``nan`` in both;
    for ``"drop"``: neither run drops), with the depths where they do: ``[(name, depths)]``,
    the name ``"the finalist with width 50"`` from the choices (:data:`CHOICES`) that set it
    apart from the other confirmed candidates (all the choices that vary if none does)."""
    pairs = _screen_pairs(rows)
    varying = [k for k in CHOICES if len({str(c[k]) for c, _ in pairs}) > 1]
    out = []
    for c, s in pairs:
        missing = [
            n
            for n in depths
            if np.isnan(float(c[f"{key}_{n}"])) and np.isnan(float(s[f"{key}_{n}"]))
        ]
        if not missing:
            continue
        unique = [k for k in varying if sum(str(o[k]) == str(c[k]) for o, _ in pairs) == 1]
        named = unique[:1] or varying
        text = ", ".join(f"{k.replace('_', ' ')} {c[k]}" for k in named)
        out.append((f"the finalist with {text}" if text else "the finalist", missing))
    return out


def neither_drops_phrase(rows: Sequence[Mapping], depths: Sequence[int]) -> str:
    """``"the finalist with width 50 drops at neither step at N = 3 and 5"`` (one clause per
    such finalist, from :func:`screen_neither`); ``""`` if every finalist drops at some step
    at every depth."""
    clauses = [
        f"{name} drops at neither step at N = {prose.listing([str(n) for n in missing])}"
        for name, missing in screen_neither(rows, depths, "drop")
    ]
    return "; ".join(clauses)


def screen_drop_texts(rows: Sequence[Mapping], depths: Sequence[int]) -> tuple[str, str]:
    """What the appendix says of the drops at the screening step against the confirmation.

    Parameters
    ----------
    rows : sequence of mapping
        The search rows (:func:`run_search`, :func:`stored_search`).
    depths : sequence of int
        The depths compared.

    Returns
    -------
    tuple of (str, str)
        The measured cell of the check (``"1.1 over the pairs that drop; the finalist with
        width 50 drops at neither step at N = 3 and 5"``) and the rest of the sentence
        "The drop iterations of the screening runs …" (``"are off by factors up to 1.1 against
        the confirmation over the pairs that drop (…)"``). A pair of which exactly one run
        drops makes the factor unbounded; pairs of which neither run drops agree and are named
        (:func:`neither_drops_phrase`), not counted.
    """
    errors = [r for r in screen_errors(rows, depths) if r["feature"] == "drop"]
    if not errors:
        return "n/a (nothing confirmed)", "have no confirmation to compare with"
    worst = max((e for e in (errors[0][n] for n in depths) if not np.isnan(e)), default=np.nan)
    neither = neither_drops_phrase(rows, depths)
    if np.isnan(worst):
        return f"n/a ({neither})", f"cannot be compared ({neither})"
    over = " over the pairs that drop" if neither else ""
    if np.isfinite(worst):
        measured, off = f"{worst:.3g}{over}", f"by factors up to {worst:.3g}"
    else:
        never = "one run of a pair drops, the other never does"
        measured, off = f"unbounded ({never})", f"by an unbounded factor ({never})"
    sentence = f"are off {off} against the confirmation{over}"
    return (
        (f"{measured}; {neither}", f"{sentence} ({neither})") if neither else (measured, sentence)
    )


#: How the tables of the appendix name the features of :func:`features` and the distance parts.
FEATURE_NAMES = {
    "drop": "first k with loss < 1e-3",
    "loss_1e3": "loss at k = 1e3",
    "loss_1e4": "loss at k = 1e4",
    "loss_1e5": "loss at k = 1e5",
    "plateau": "flattest loss in the decade before the drop",
    "plateau_slope": "its slope |d log L / d log k|",
    "norm_min": "norm minimum",
    "norm_min_k": "iteration of the norm minimum",
    "norm_max": "norm maximum (after the minimum)",
    "norm_max_k": "iteration of the norm maximum",
    "bump": "norm rise near the drop",
    "final": "final loss",
    "d_loss": "loss part of the distance",
    "d_norm": "norm part of the distance",
}


def screen_error_table(rows: Sequence[Mapping], depths: Sequence[int]) -> list[dict]:
    """:func:`screen_errors` for the page: readable feature names (:data:`FEATURE_NAMES`),
    numbers to 3 significant digits (``"inf"``: one run of a pair lacks the feature, ``"n/a
    (no pair has it)"``: no pair has it at either step; pairs without it at both steps are
    left out, :func:`screen_errors`). The
    iteration of the norm minimum, and the norm maximum after it, are taken only over the
    pairs whose two runs dip (by :data:`NO_DIP` or more below their start ``init_norm``, the
    product norm at ``k = 0``): without a dip the "minimum" is a point of a flat curve and
    both mean nothing; ``"n/a (no dip)"`` where no pair dips. Rows: ``{"feature", "error",
    "N = …": text}``; empty if nothing was confirmed."""
    kinds = dict(SCREEN_FEATURES)
    out = []
    for row in screen_errors(rows, depths):
        key = row["feature"]
        shown = {"feature": FEATURE_NAMES.get(key, key), "error": row["error"]}
        for n in depths:
            value = row[n]
            if key in ("norm_min_k", "norm_max", "norm_max_k"):
                dipping = [
                    (c, s)
                    for c, s in _screen_pairs(rows)
                    if all(
                        float(r["init_norm"]) - float(r[f"norm_min_{n}"]) >= NO_DIP for r in (c, s)
                    )
                ]
                value = _worst_error(dipping, f"{key}_{n}", kinds[key]) if dipping else None
            if value is None:
                shown[f"N = {n}"] = "n/a (no dip)"
            elif np.isnan(value):
                shown[f"N = {n}"] = "n/a (no pair has it)"
            else:
                shown[f"N = {n}"] = f"{value:.3g}"
        out.append(shown)
    return out


def _screen_pairs(rows: Sequence[Mapping]) -> list[tuple[Mapping, Mapping]]:
    """``(confirmation row, screening row)`` of every confirmed candidate that was screened."""
    keys = list(CHOICES)
    screened = {tuple(str(r[k]) for k in keys): r for r in rows if r["stage"] != "confirm"}
    return [
        (c, screened[tuple(str(c[k]) for k in keys)])
        for c in rows
        if c["stage"] == "confirm" and tuple(str(c[k]) for k in keys) in screened
    ]


def probe(
    anchor: Experiment,
    variants: Mapping[str, Mapping],
    published: Mapping[int, Curve],
    factor: float,
    run_many_func,
) -> list[dict]:
    """:func:`evaluate` variants of ``anchor`` (name -> fields of
    :class:`~dlncore.experiments.journal.Experiment` to replace) at step ``factor · η``; rows
    carry ``variant`` and ``distance_N`` (loss part + :data:`NORM_WEIGHT` · norm part) per
    depth besides the :func:`evaluate` columns."""
    experiments = [replace(anchor, **fields) for fields in variants.values()]
    rows = evaluate(experiments, published, factor, run_many_func)
    for name, row in zip(variants, rows, strict=True):
        row["variant"] = name
        for n in published:
            row[f"distance_{n}"] = row[f"d_loss_{n}"] + NORM_WEIGHT * row[f"d_norm_{n}"]
    return rows


#: The continuous choices :func:`optimize` can vary: name -> how a coordinate sets the
#: :class:`~dlncore.experiments.journal.Experiment` field (``samples`` in ``log10``).
CONTINUOUS = {
    "input_scale": ("input_scale", float),
    "log10_samples": ("samples", lambda x: int(round(10.0**x))),
    "imbalance": ("imbalance", float),
    "spread": ("spread", float),
}


def _at(anchor: Experiment, names: Sequence[str], x: np.ndarray) -> Experiment:
    """``anchor`` with the continuous choices ``names`` set to the coordinates ``x``."""
    fields = {CONTINUOUS[n][0]: CONTINUOUS[n][1](v) for n, v in zip(names, x, strict=True)}
    return replace(anchor, **fields)


def _coordinates(anchor: Experiment, names: Sequence[str]) -> np.ndarray:
    """The coordinates of ``anchor`` itself (the inverse of :func:`_at`, up to rounding)."""
    values = [getattr(anchor, CONTINUOUS[n][0]) for n in names]
    return np.array(
        [np.log10(v) if n == "log10_samples" else v for n, v in zip(names, values, strict=True)]
    )


def initial_simplex(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Nelder–Mead's first simplex around ``x``, shape ``(n + 1, n)``: ``x`` and ``x`` moved
    by a tenth of the box along each coordinate, inwards at the upper bound (scipy's default
    moves a coordinate that is 0 by only 2.5e-4)."""
    vertices = [np.asarray(x, dtype=np.float64)]
    for i, step in enumerate(0.1 * (high - low)):
        v = vertices[0].copy()
        v[i] = v[i] + step if v[i] + step <= high[i] else v[i] - step
        vertices.append(v)
    return np.array(vertices)


def optimize(
    anchor: Experiment,
    published: Mapping[int, Curve],
    bounds: Mapping[str, tuple[float, float]],
    factor: float,
    run_many_func,
    random_points: int = 12,
    local_evals: int = 24,
    seed: int = 0,
) -> list[dict]:
    """Seeded random search, then Nelder–Mead, over continuous choices of ``anchor``.

    ``bounds``: keys of :data:`CONTINUOUS` -> ``(low, high)``. Stage ``"start"``: ``anchor``
    itself; ``"random"``: that many points uniform in the box (``default_rng(seed)``);
    ``"local"``: :func:`scipy.optimize.minimize` (``"Nelder-Mead"``, the box as bounds,
    :func:`initial_simplex`) from the best of them, at most ``local_evals`` evaluations. Each
    evaluation is :func:`evaluate` at step ``factor · η`` (a diverged candidate counts as
    ``1e3``). Rows: the coordinates, the stage and the :func:`evaluate` columns, by distance.
    """
    from scipy.optimize import minimize

    names = list(bounds)
    if set(names) - set(CONTINUOUS):
        unknown = sorted(set(names) - set(CONTINUOUS))
        raise ValueError(f"unknown continuous choices {unknown}; use {list(CONTINUOUS)}")
    if "log10_samples" in bounds and 10.0 ** bounds["log10_samples"][0] < anchor.d:
        raise ValueError(f"samples must be at least d = {anchor.d}: X Xᵀ must be invertible")
    low, high = (np.array([bounds[n][i] for n in names], dtype=np.float64) for i in (0, 1))

    def rows_of(points: np.ndarray, stage: str) -> list[dict]:
        found = evaluate([_at(anchor, names, x) for x in points], published, factor, run_many_func)
        return [
            dict(zip(names, map(float, x), strict=True)) | {"stage": stage} | r
            for x, r in zip(points, found, strict=True)
        ]

    points = low + (high - low) * np.random.default_rng(seed).random((random_points, len(names)))
    rows = rows_of(_coordinates(anchor, names)[None, :], "start") + rows_of(points, "random")
    local: list[dict] = []

    def objective(x: np.ndarray) -> float:
        local.extend(rows_of(np.asarray(x)[None, :], "local"))
        return local[-1]["distance"] if np.isfinite(local[-1]["distance"]) else 1e3

    if local_evals > 0:
        # the anchor may lie outside the box: start from its nearest point inside
        x_best = np.clip([min(rows, key=_rank)[n] for n in names], low, high)
        options = dict(maxfev=local_evals, xatol=1e-3, fatol=1e-4)
        options["initial_simplex"] = initial_simplex(x_best, low, high)
        minimize(
            objective,
            x_best,
            method="Nelder-Mead",
            bounds=list(zip(low, high, strict=True)),
            options=options,
        )
    return sorted([*rows, *local], key=_rank)


def balanced_final_rate(
    teacher: np.ndarray, sxx: np.ndarray, depth: int, step_size: float, tol: float = 1e-9
) -> float:
    """Final-phase loss rate per iteration of GD near ``W = teacher`` for balanced factors.

    Under gradient flow the end-to-end matrix of balanced factors moves as
    ``Ẇ = −P_W(∇L¹(W))`` with the preconditioner
    ``P_W(F) = Σ_{a=0}^{N−1} (WWᵀ)^{a/N} F (WᵀW)^{(N−1−a)/N}`` (Arora, Cohen and Hazan 2018,
    ``arora2018optimization``). Linearized at the minimum ``A`` (the book's step, not the
    paper's), the error ``E = W − A`` moves as ``Ė = −P_A(E Σxx)``, so the loss decays like
    ``e^{−2ημk}`` with ``μ`` the smallest nonzero eigenvalue of ``E ↦ P_A(E Σxx)`` (the
    book's rate). With
    ``A = U diag(σ) Vᵀ`` (full ``U``, ``V``) the operator acts on each row ``c = u_iᵀ E V``
    separately as ``c ↦ c S D_i`` (``S = Vᵀ Σxx V``, ``D_i = diag_j Σ_a σ_i^{2a/N}
    σ_j^{2(N−1−a)/N}``, ``0⁰ = 1``): ``d`` symmetric eigenproblems ``D_i^{1/2} S D_i^{1/2}``.
    Unlike :func:`dlncore.experiments.journal.local_rate` (``p_min λ_min(Σxx)``, a bound) this
    is the rate of the linearized flow itself.

    Parameters
    ----------
    teacher : numpy.ndarray, shape (d, d)
        The minimizer ``A`` (e.g. ``Σyx Σxx⁻¹`` for noiseless targets ``Y = AX``).
    sxx : numpy.ndarray, shape (d, d)
        ``X Xᵀ`` (symmetric positive definite).
    depth : int
        ``N``.
    step_size : float
        ``η``.
    tol : float
        Singular values below ``tol · σ_1`` count as 0; eigenvalues below ``tol`` times the
        largest of their row as 0.

    Returns
    -------
    float
        ``2 η μ``, per iteration.
    """
    _, sigma, vt = np.linalg.svd(np.asarray(teacher, dtype=np.float64))
    sigma = np.where(sigma < tol * sigma.max(), 0.0, sigma)
    p = np.sqrt(preconditioner_eigenvalues(sigma, depth))  # p[i, j]: roots of the D_i entries
    s = vt @ np.asarray(sxx, dtype=np.float64) @ vt.T
    smallest = []
    for row in p:
        eig = np.linalg.eigvalsh(row[:, None] * s * row[None, :])
        positive = eig[eig > tol * max(eig.max(), 0.0)]
        if positive.size:
            smallest.append(positive.min())
    return 2.0 * step_size * float(min(smallest))


@dataclass(frozen=True)
class Variant(Experiment):
    """An :class:`~dlncore.experiments.journal.Experiment` with two choices the book's recipe
    does not have, for probes only.

    ``ratio > 0``: the teacher's singular values are ``top · ratio^i``, ``i = 0..rank−1``
    (geometric with that ratio; ``spectrum`` and ``exponent`` are then unused).
    ``raw_depths``: depths whose start is PyTorch's ``nn.Linear`` default *not* rescaled
    (``journal_init("pytorch-raw")``), the other depths as ``init`` says: a convention that
    changes with depth (a hypothesis, never the book's default).
    """

    ratio: float = 0.0
    raw_depths: tuple[int, ...] = ()

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """``X`` and ``Y`` as the base recipe, with the geometric teacher if ``ratio > 0``."""
        if self.ratio <= 0:
            return super().data()
        values = self.top * self.ratio ** np.arange(self.rank, dtype=np.float64)
        X, Y, _ = synthetic_data(
            self.d, self.d, self.samples, values, self.data_seed, input_scale=self.input_scale
        )
        return X, Y

    def start(self, depth: int) -> list[np.ndarray]:
        """The base start, or the unscaled PyTorch default for a depth in ``raw_depths``."""
        if depth not in self.raw_depths:
            return super().start(depth)
        dims = [self.d] + [self.width] * (depth - 1) + [self.d]
        return journal_init("pytorch-raw", dims, self.init_seed)


def closed_form(experiment: Experiment, depths: Sequence[int]) -> dict[str, float]:
    """What the data and the start fix before any GD step: ``loss0_N`` (the loss at ``k = 0``
    for each depth), ``lstar`` (``L*_{r−1}``, the last critical value above the minimum, where a
    plateau before the final drop sits), ``rate_N`` (:func:`balanced_final_rate` at the
    teacher ``A = Σyx Σxx⁻¹`` and the published step) and ``loss0_per_rate`` (``loss0`` of the
    first depth over its rate: independent of the input scale, since both grow like ``s²``)."""
    problem = experiment.problem()
    sxx = problem.sxx.astype(np.float64)
    teacher = np.linalg.solve(sxx, problem.syx.astype(np.float64).T).T
    out = {"lstar": float(problem.optimal_loss(experiment.rank - 1))}
    for n in depths:
        out[f"loss0_{n}"] = float(problem.loss(experiment.start(n)))
        out[f"rate_{n}"] = balanced_final_rate(teacher, sxx, n, experiment.step_size)
    first = depths[0]
    out["loss0_per_rate"] = out[f"loss0_{first}"] / out[f"rate_{first}"]
    return out


def held_per_depth(
    row: Mapping, published: Mapping[int, Mapping[str, float]], drop_level: float = 1e-3
) -> dict[int, tuple[int, int]]:
    """``{N: (held, applied)}``: the targets of :data:`TARGETS` without the final losses (not
    screened) that an :func:`evaluate` row meets, per depth (``published[N]``: :func:`features`
    plus ``loss0``)."""
    depths = [n for n in published if f"drop_{n}" in row]
    ours = {
        n: {k.removesuffix(f"_{n}"): v for k, v in row.items() if k.endswith(f"_{n}")}
        for n in depths
    }
    screened = [t for t in TARGETS if not t[1].startswith("final")]
    _, held = compare(ours, {n: published[n] for n in depths}, drop_level, screened)
    return {n: (sum(h[2] for h in held if h[0] == n), sum(h[0] == n for h in held)) for n in depths}


#: The families screened against the final choice in the appendix, ``(family, variant name,
#: fields of a :class:`Variant` to replace, time scale c)``: ``c ≠ 1`` runs at step ``c η``
#: (the hypothesis that the published curves move faster than their labelled step says), and
#: is screened at ``1/c`` of the screening factor, so that the step actually run is the same.
FAMILIES = (
    *(
        ("lead: geometric teacher", f"ratio {q:g}, s = {s:g}", {"ratio": q, "input_scale": s}, 1)
        for q in (0.95, 0.9, 0.86)
        for s in (1.7, 3.4, 6.0)
    ),
    *(
        (
            "PyTorch default, rescaled",
            f"s = {s:g}, m = {m}",
            {"init": "pytorch", "input_scale": s, "samples": m},
            1,
        )
        for s in (1.7, 2.2, 2.8, 3.4)
        for m in (200, 1000)
    ),
    *(
        (
            "PyTorch raw at N = 2 only (hypothesis)",
            f"s = {s:g}",
            {"init": "pytorch", "input_scale": s, "raw_depths": (2,)},
            1,
        )
        for s in (1.7, 2.2, 2.8, 3.4)
    ),
    *(
        ("spread start", f"u = {u:g}, s = {s:g}", {"spread": u, "input_scale": s}, 1)
        for u in (1.5, 3.0, 4.5)
        for s in (1.7, 2.4, 3.4)
    ),
    *(
        ("imbalanced factors", f"t = {t:g}, s = {s:g}", {"imbalance": t, "input_scale": s}, 1)
        for t in (0.3, 0.5, 1.0)
        for s in (1.7, 3.4)
    ),
    *(
        ("more samples", f"m = {m}, s = {s:g}", {"samples": m, "input_scale": s}, 1)
        for m in (1000, 5000)
        for s in (1.7, 2.4, 3.4, 4.5)
    ),
    *(
        ("time scale c (hypothesis)", f"c = {c:g}, s = 1.7", {"input_scale": 1.7}, c)
        for c in (2, 4, 8)
    ),
)


def screen_families(
    anchor: Variant,
    families: Sequence[tuple[str, str, Mapping, float]],
    published: Mapping[int, Curve],
    factor: float,
    run_many_func,
) -> list[dict]:
    """:func:`probe` every variant of ``families`` (see :data:`FAMILIES`) around ``anchor``
    at step ``factor · η`` (a time scale ``c`` at step ``c η``, screened at
    ``max(factor / c, 1)``: the same step as the others unless ``factor < c``),
    plus ``anchor`` itself (family ``"final choice"``). Rows add ``family``, ``c``,
    ``factor`` and ``held_N``/``applied_N`` (:func:`held_per_depth`), in the order given."""
    features_of = {n: features(c) | {"loss0": float(c.loss_at(1.0))} for n, c in published.items()}
    todo = [("final choice", "as chapter 7", {}, 1.0), *families]
    rows = []
    for c in sorted({float(t[3]) for t in todo}):
        group = [t for t in todo if float(t[3]) == c]
        variants = {
            name: {**fields, "step_size": anchor.step_size * c} for _, name, fields, _ in group
        }
        if len(variants) < len(group):
            raise ValueError(f"variant names repeat among the variants at time scale {c:g}")
        scaled = max(factor / c, 1.0)
        found = probe(anchor, variants, published, scaled, run_many_func)
        for (family, *_), row in zip(group, found, strict=True):
            row.update(family=family, c=c, factor=scaled)
            for n, (held, applied) in held_per_depth(row, features_of).items():
                row[f"held_{n}"], row[f"applied_{n}"] = held, applied
            rows.append(row)
    order = {(t[0], t[1]): i for i, t in enumerate(todo)}
    return sorted(rows, key=lambda r: order[(r["family"], r["variant"])])


def screenable_targets(
    published: Mapping[int, Curve], first_record: float, drop_level: float = 1e-3
) -> tuple[int, str]:
    """How many targets of :data:`TARGETS` a screening run can measure, over the depths of
    ``published``, and which it cannot resolve.

    A target counts where it applies to the published curve (as in :func:`compare`), it is
    not a final loss (not screened), and, for an iteration (:data:`ITERATION_FEATURES`), the
    published iteration is not before ``first_record``, the first record of a screening run
    (``k = c``, the screening factor), which therefore cannot show it. Returns the count and
    the unresolved ones as text (``"the iteration of the norm minimum at N = 2 (published
    k = 115) lies before the first screening record k = 300"``; ``"no published iteration lies
    before …"`` if none)."""
    feats = {n: features(c) | {"loss0": float(c.loss_at(1.0))} for n, c in published.items()}
    screened = [t for t in TARGETS if not t[1].startswith("final")]
    _, applied = compare(feats, feats, drop_level, screened)
    key_of = {t[0]: t[1] for t in screened}
    early = [
        (n, q, feats[n][key_of[q]])
        for n, q, *_ in applied
        if key_of[q] in ITERATION_FEATURES and feats[n][key_of[q]] < first_record
    ]
    record = f"the first screening record k = {first_record:g}"
    if not early:
        return len(applied), f"no published iteration lies before {record}"
    named = [f"the {q} at N = {n} (published k = {k:.3g})" for n, q, k in early]
    verb = "lies" if len(named) == 1 else "lie"
    return len(applied) - len(early), f"{prose.listing(named)} {verb} before {record}"


def smallest_of(values: Mapping[str, float], prefix: str = "") -> tuple[str, float]:
    """The name and value of the smallest finite value among the names that start with
    ``prefix`` (``("none", nan)`` if there is none)."""
    kept = {k: float(v) for k, v in values.items() if k.startswith(prefix) and np.isfinite(v)}
    if not kept:
        return "none", float("nan")
    name = min(kept, key=kept.__getitem__)
    return name, kept[name]


def rate_ratios_text(ours: Mapping[int, float], published: Mapping[int, float]) -> str:
    """``"2/5: 17.7 (published 18.4), 2/3: 4.91 (published 6.74)"``: the rate of the smallest
    depth over that of each other depth (deepest first), ours beside the published; ``"n/a"``
    with fewer than two depths in both."""
    depths = sorted(set(ours) & set(published))
    if len(depths) < 2:
        return "n/a"
    first = depths[0]
    return ", ".join(
        f"{first}/{n}: {prose.number(ours[first] / ours[n])} "
        f"(published {prose.number(published[first] / published[n])})"
        for n in depths[:0:-1]
    )
