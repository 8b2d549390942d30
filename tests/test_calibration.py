"""Tests of the calibration helpers: distance, features, scaled screening runs, published data."""

import shutil
import subprocess
import sys
import warnings
import zipfile
from dataclasses import replace
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import pytest

from dlncore.experiments import calibration as cal
from dlncore.experiments.journal import Experiment, linear_run, teacher_values

ROOT = Path(__file__).resolve().parents[1]


def _curve(k, loss, norm):
    return cal.Curve(np.asarray(k, float), np.asarray(loss), np.asarray(k, float), np.asarray(norm))


def _synthetic(drop=1e4, plateau=0.6):
    """Loss: 100 → plateau → drop (a steep power law); norm: dip to 0.95 at 100, peak 1.07
    at 1000."""
    k = np.geomspace(1, 1e6, 2000)
    loss = 100.0 / (1 + (k / 100) ** 2) + plateau
    loss = np.where(k < drop, loss, plateau * (k / drop) ** -20.0)
    lk = np.log10(k)
    norm = 1 - 0.05 * np.exp(-((lk - 2) ** 2) / 0.1) + 0.07 * np.exp(-((lk - 3) ** 2) / 0.1)
    return _curve(k, np.maximum(loss, 1e-9), norm)


def test_distance_is_zero_for_equal_curves_and_measures_shifts():
    c = _synthetic()
    assert cal.distance(c, c) == (0.0, 0.0)
    above = _curve(c.loss_k, 10 * c.loss, c.norm + 0.01)  # one decade up, norm +0.01
    d_loss, d_norm = cal.distance(above, c, floor=1e-12)
    assert d_loss == pytest.approx(1.0, abs=1e-9)
    assert d_norm == pytest.approx(0.01, abs=1e-12)
    # below the floor both curves count as the floor
    d_floor, _ = cal.distance(above, c, grid=np.array([1e5, 1e6]), floor=1e-3)
    assert d_floor == 0.0
    assert cal.total_distance({2: (0.5, 0.01), 3: (0.1, 0.03)}) == pytest.approx(0.5)


def test_a_loss_of_zero_is_read_as_zero_without_warning():
    c = _curve([1.0, 10.0, 100.0], [1.0, 0.0, 0.0], [1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log10(0) warned
        at = c.loss_at(np.array([1.0, 10.0, 50.0]))
    assert at[0] == pytest.approx(1.0) and 0 <= at[1] < 1e-300 and 0 <= at[2] < 1e-300


def test_first_crossing_interpolates_in_log_log():
    k = np.array([1.0, 10.0, 100.0])
    c = _curve(k, [1.0, 1e-2, 1e-4], [1, 1, 1])  # L = k^-2
    assert cal.first_crossing(c, 1e-3) == pytest.approx(10**1.5)
    assert np.isnan(cal.first_crossing(c, 1e-5))


def test_features_of_a_synthetic_curve():
    f = cal.features(_synthetic(drop=1e4, plateau=0.6))
    assert f["drop"] == pytest.approx(1e4 * (0.6e3) ** (1 / 20), rel=0.02)
    assert f["plateau"] == pytest.approx(0.6, rel=0.05) and f["plateau_slope"] < 0.1
    assert f["loss_1e3"] == pytest.approx(100 / 101 + 0.6, rel=0.01)
    assert f["norm_min"] == pytest.approx(0.95, abs=2e-3)
    assert f["norm_min_k"] == pytest.approx(100, rel=0.05)
    assert f["norm_max"] == pytest.approx(1.07, abs=2e-3)
    assert f["norm_max_k"] == pytest.approx(1000, rel=0.05)
    assert f["final"] == 1e-9  # the floor of the synthetic curve
    assert f["bump"] < 1e-3  # no rise of the norm near the drop


def test_scaled_run_follows_the_run_at_the_small_step():
    e = Experiment(
        d=6, samples=40, rank=3, spectrum="power", top=1.0, input_scale=2.0, data_seed=0,
        width=3, init_seed=1, init_norm=1.0, step_size=1e-3, steps=20_000, record=30,
    )  # fmt: skip
    exact, l0, _, diverged_at = cal.scaled_run(e, 3, factor=1.0)
    assert np.isnan(diverged_at)
    run = linear_run(e, 3)
    assert l0 == pytest.approx(float(run.loss[0]))
    assert np.allclose(exact.loss, run.loss[1:]) and exact.loss_k[0] == run.iterations[1]
    fast, _, _, _ = cal.scaled_run(e, 3, factor=10.0)
    k = np.geomspace(100, 2e4, 20)
    above = exact.loss_at(k) > 1e-3  # the part the distance sees (its floor)
    assert 5 < above.sum() < 20
    assert np.allclose(fast.loss_at(k[above]), exact.loss_at(k[above]), rtol=0.1)
    assert np.allclose(fast.norm_at(k), exact.norm_at(k), atol=1e-2)
    with pytest.raises(ValueError, match="factor"):
        cal.scaled_run(e, 2, factor=0.5)


def test_teacher_values():
    assert np.allclose(teacher_values(4, "power", 2.0, 0, 6, exponent=1.0), [2, 1, 2 / 3, 0.5])
    g = teacher_values(5, "gaussian", 1.0, 3, 8)
    assert g.shape == (5,) and g[0] == 1.0 and np.all(np.diff(g) <= 0) and g[-1] > 0
    assert np.allclose(g, teacher_values(5, "gaussian", 1.0, 3, 8))
    assert np.allclose(teacher_values(3, "flat", 0.5, 0, 4), 0.5)


def test_published_curves_have_the_features_read_off_the_figures():
    pub = cal.load_published()
    assert sorted(pub) == [2, 3, 5]
    drops = {n: cal.features(c)["drop"] for n, c in pub.items()}
    for n, want in {2: 1.4e4, 3: 6.5e4, 5: 7.4e5}.items():
        assert drops[n] == pytest.approx(want, rel=0.1)
    f5 = cal.features(pub[5])
    assert f5["plateau"] == pytest.approx(0.6, rel=0.15) and f5["plateau_slope"] < 0.1
    assert f5["norm_max"] == pytest.approx(1.075, abs=0.005)
    assert cal.features(pub[3])["norm_min"] == pytest.approx(0.92, abs=0.005)


def test_published_tanh_curves_have_the_features_read_off_the_figures():
    pub = cal.load_published(kind="tanh")
    assert sorted(pub) == [2, 3, 5]
    drops = {n: cal.features(c, 0.1)["drop"] for n, c in pub.items()}
    for n, want in {2: 3.3e3, 3: 3.4e4, 5: 4.6e5}.items():  # read off the figure by eye
        assert drops[n] == pytest.approx(want, rel=0.15)
    assert cal.features(pub[5], 0.1)["plateau"] == pytest.approx(0.7, rel=0.1)
    minima = {n: cal.features(c, 0.1)["norm_min"] for n, c in pub.items()}
    assert minima == pytest.approx({2: 0.88, 3: 0.85, 5: 0.81}, abs=0.01)
    assert all(1e-3 < c.loss[-1] < 2.5e-3 for c in pub.values())


def test_replace_keeps_experiments_picklable_records():
    e = Experiment(
        d=4, samples=10, rank=2, spectrum="flat", top=1.0, input_scale=1.0, data_seed=0,
        width=2, init_seed=0, init_norm=1.0, step_size=1e-2, steps=10,
    )  # fmt: skip
    assert replace(e, steps=5).steps == 5


def _serial(jobs):
    return [func(**kwargs) for func, kwargs in jobs]


#: A tiny search problem: the published curves are made by ``TRUTH`` itself.
BASE = Experiment(
    d=5, samples=30, rank=2, spectrum="flat", top=1.0, input_scale=1.5, data_seed=0,
    width=2, init_seed=1, init_norm=1.0, step_size=1e-3, steps=3000, record=25,
    init="orthogonal",
)  # fmt: skip
TRUTH = dict(spectrum="flat", init="orthogonal", init_norm=1.0, input_scale=1.5, samples=30,
             width=2, data_seed=0, init_seed=1)  # fmt: skip


def _published_by_truth():
    return {n: cal.scaled_run(cal.candidate(BASE, TRUTH), n)[0] for n in (2, 3)}


def test_search_finds_the_candidate_that_made_the_published_curves(tmp_path):
    base, truth = BASE, TRUTH
    published = _published_by_truth()
    grid = {k: [v] for k, v in truth.items()} | {"input_scale": [1.0, 1.5], "samples": [12, 30]}
    rows = cal.search(base, published, grid, 1.0, _serial)
    assert len(rows) == 4 and all(r["stage"] == "grid" for r in rows)
    assert {k: rows[0][k] for k in truth} == truth and rows[0]["distance"] == 0.0
    assert rows[1]["distance"] > 0.01
    rows = cal.refine(
        base, published, rows, {"init_seed": [1, 2], "samples": [30, 20]}, 1.0, _serial
    )
    refined = [r for r in rows if r["stage"] == "refine"]
    assert sorted((r["init_seed"], r["samples"]) for r in refined) == [(1, 20), (2, 30)]
    rows = cal.confirm(base, published, rows, 1, 1.0, _serial)
    confirmed = [r for r in rows if r["stage"] == "confirm"]
    assert len(confirmed) == 1 and confirmed[0]["distance"] == 0.0
    path = tmp_path / "search.csv"
    cal.write_table(path, rows, {"grid": grid})
    back, parameters = cal.read_table(path)
    assert parameters == {"grid": grid} and len(back) == len(rows)
    assert back[0]["init_norm"] == 1.0
    assert back[0]["samples"] == 30 and back[0]["spectrum"] == "flat"
    assert back[0]["distance"] == pytest.approx(rows[0]["distance"])


def test_factor_error():
    assert cal.factor_error(2.0, 1.0) == cal.factor_error(1.0, 2.0) == 2.0
    assert cal.factor_error(float("nan"), 1.0) == float("inf")
    assert cal.factor_error(0.0, 1.0) == float("inf")


def test_a_curve_without_records_after_0_reads_nan():
    from dlncore.experiments.calibration import curve_of_run

    curve = curve_of_run(np.array([0]), np.array([3.0]), np.array([1.0]))  # steps = 0
    assert np.isnan(curve.loss_at(1e3)) and np.isnan(curve.norm_at(1e3))
    assert np.isnan(curve.loss_at(np.array([10.0, 100.0]))).all()
    from dlncore.experiments.calibration import features

    empty = features(curve)
    full = features(curve_of_run(np.array([0, 10, 100]), np.ones(3), np.ones(3)))
    assert set(empty) == set(full) and all(np.isnan(v) for v in empty.values())


def test_a_candidate_that_diverges_is_flagged_and_ranked_last():
    # inputs 30 times larger: η λ_max(X Xᵀ) is far above 2 and GD blows up
    grid = {k: [v] for k, v in TRUTH.items()} | {"input_scale": [45.0, 1.5]}
    good, blown = cal.search(BASE, _published_by_truth(), grid, 1.0, _serial)
    assert blown["input_scale"] == 45.0 and np.isnan(blown["distance"])
    assert all(np.isfinite(blown[f"diverged_{n}"]) for n in (2, 3))
    assert good["distance"] == 0.0 and np.isnan(good["diverged_2"]) and np.isnan(good["diverged_3"])


def test_package_data_is_read_through_importlib_resources():
    files = cal.data_files()
    assert isinstance(files, Traversable)
    assert not hasattr(cal, "data_dir")  # no lookup of the source tree any more
    rows, parameters = cal.stored_search()
    assert parameters["d"] == 70 and parameters["step_size"] == 3e-5
    assert {r["stage"] for r in rows} == {"grid", "refine", "confirm"}
    # the default directory and an explicit one give the same curves
    explicit = cal.load_published(Path(str(files / "published")))
    default = cal.load_published()
    assert np.array_equal(explicit[5].loss, default[5].loss)


def test_the_wheel_ships_the_package_data(tmp_path):
    """A wheel built from the sources holds every data file (so a worker or Colab can read
    them without the source tree)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("dlncore", "dlnbook", "pyproject.toml"):
        target = src / name
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.write_bytes((ROOT / name).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = ROOT / "dlncore" / "experiments" / "data"
    wanted = {p.relative_to(ROOT).as_posix() for p in data.rglob("*.csv")}
    assert len(wanted) >= 3 and wanted <= names


def _feats(**over):
    f = dict(
        loss0=100.0, drop=1e4, loss_1e3=10.0, loss_1e4=1e-3, loss_1e5=1e-6, plateau=0.6,
        plateau_slope=0.05, norm_min=0.95, norm_min_k=100.0, norm_max=1.07, norm_max_k=1e3,
        bump=0.0, final=1e-8,
    )  # fmt: skip
    return f | over


def test_compare_applies_each_target_and_can_say_no():
    pub = {2: _feats()}
    same, held = cal.compare({2: _feats(final32=2e-8)}, pub, 1e-2)
    assert all(ok for _, _, ok, _ in held) and {r["held?"] for r in same} == {"yes", "n/a"}
    # loss at 1e4 and 1e5 are below the drop level: no target there
    applied = {q for _, q, _, _ in held}
    assert "loss at k = 1e4" not in applied and "loss at k = 1e3" in applied
    worse = _feats(drop=1.6e4, norm_max=1.09, plateau_slope=0.9, final32=1e-6)
    rows, held = cal.compare({2: worse}, pub, 1e-2)
    missed = {q for _, q, ok, _ in held if not ok}
    assert missed == {
        "first k with loss below the drop level",
        "norm maximum (after the minimum)",
        "plateau before the drop (flattest loss in the decade before it)",  # ours has none
        "final loss, float32 run",
    }
    assert {r["ours"] for r in rows if r["quantity"].startswith("plateau")} == {"none (slope 0.90)"}
    err = {q: e for _, q, _, e in held}
    assert err["first k with loss below the drop level"] == pytest.approx(1.6)
    assert err["norm maximum (after the minimum)"] == pytest.approx(0.02)
    # a target list without the float32 row (tanh runs) has no such row
    short = cal.SINGLE_RUN_TARGETS
    rows, held = cal.compare({2: _feats()}, pub, 1e-2, short)
    assert len(rows) == len(short) and all(ok for _, _, ok, _ in held)
    assert [r["quantity"] for r in rows if r["quantity"].startswith("final")] == ["final loss"]


def test_standing_and_missed_evidence_read_the_search():
    rows = [
        {"stage": "grid", "factor": 300.0, "distance": 0.5, "a": 1, "drop_2": 2e4},
        {"stage": "grid", "factor": 300.0, "distance": 0.2, "a": 2, "drop_2": 1.1e4},
        {"stage": "confirm", "factor": 1.0, "distance": 0.25, "a": 2, "drop_2": 1.2e4},
    ]
    text = cal.standing(rows, {"a": 2})
    assert text == (
        r"In the stored search these parameters have distance 0.200 at step 300 $\eta$ (grid "
        r"screen) and 0.250 at the published step $\eta$ (confirmation); they rank 1st of the 2 "
        "screened "
        "candidates and 1st of the 1 finalists."
    )
    assert "not among the 2" in cal.standing(rows, {"a": 3})
    held = [(2, "first k with loss below the drop level", False, 3.0), (2, "norm minimum", True, 0)]
    (ev,) = cal.missed_evidence(held, rows, {2: _feats()})
    assert ev["screened candidates meeting it"] == "1 of 2" and ev["best"] == "×1.1"
    assert ev["our error"] == "×3"  # as the comparison table writes a factor
    never = [(2, "first k with loss below the drop level", False, float("inf"))]
    assert cal.missed_evidence(never, rows, {2: _feats()})[0]["our error"] == "n/a"
    # a norm error is an absolute difference, to 3 decimals as in the comparison table
    norm = [(2, "norm minimum", False, 0.02291)]
    assert cal.missed_evidence(norm, rows, {2: _feats()})[0]["our error"] == "0.023"


def test_compare_sets_no_target_on_the_float64_final_loss():
    # a float64 run ends at its rounding floor: shown, not scored against the published loss
    rows, held = cal.compare({2: _feats(final32=2e-8, final=2.3e-23)}, {2: _feats()}, 1e-2)
    (row,) = [r for r in rows if r["quantity"] == "final loss, float64 run"]
    assert (row["ours"], row["target"], row["held?"]) == ("2.3e-23", "—", "n/a")
    assert "final loss, float64 run" not in {q for _, q, _, _ in held}
    assert all(ok for _, _, ok, _ in held)  # the float32 row (factor 2) held
    rows, held = cal.compare({2: _feats(final32=2e-6)}, {2: _feats()}, 1e-2)
    assert [q for _, q, ok, _ in held if not ok] == ["final loss, float32 run"]


def test_missed_evidence_says_what_screening_cannot_resolve_and_counts_only_dips():
    rows, _ = cal.stored_search()
    pub = {n: cal.features(c) for n, c in cal.load_published().items()}
    held = [
        (2, "iteration of the norm minimum", False, 6.21),  # published k = 115 < 300
        (5, "iteration of the norm minimum", False, 2.55),  # published k = 1727
        (2, "first k with loss below the drop level", False, 4.34),
    ]
    first, fifth, drop = cal.missed_evidence(held, rows, pub)
    assert (
        first["screened candidates meeting it"] == "not resolved (first screening record k = 300)"
    )
    assert first["best"] == "n/a"
    screened = [r for r in rows if r["stage"] != "confirm"]
    dips = [r for r in screened if float(r["init_norm"]) - float(r["norm_min_5"]) >= cal.NO_DIP]
    assert 0 < len(dips) < len(screened)
    assert fifth["screened candidates meeting it"].endswith(f" of {len(dips)} that dip")
    assert drop["screened candidates meeting it"] == f"0 of {len(screened)}"


def test_run_search_screens_refines_and_confirms_and_screen_errors_compare_them():
    published = _published_by_truth()
    grid = {k: [v] for k, v in TRUTH.items()} | {"input_scale": [1.0, 1.5]}
    rows = cal.run_search(BASE, published, grid, {"init_seed": [2]}, [1.1], 1, 3.0, 1.0, _serial)
    stages = [r["stage"] for r in rows]
    assert (
        stages.count("grid") == 2 and stages.count("refine") == 2 and stages.count("confirm") == 1
    )
    assert {r["input_scale"] for r in rows if r["stage"] == "refine"} == {1.5, 1.65}
    (best,) = [r for r in rows if r["stage"] == "confirm"]
    assert best["distance"] == 0.0  # the truth, at the step that made the published curves
    errors = {e["feature"]: e for e in cal.screen_errors(rows, [2, 3])}
    # screening at 3 η against the confirmation at η: the same numbers by hand
    (screen,) = [r for r in rows if r["stage"] == "grid" and r["input_scale"] == 1.5]
    want = cal.factor_error(screen["norm_min_k_3"], best["norm_min_k_3"])
    assert errors["norm_min_k"][3] == pytest.approx(want)
    assert errors["d_loss"][2] == pytest.approx(abs(screen["d_loss_2"] - best["d_loss_2"]))
    assert errors["d_loss"][2] > 0  # screening is not exact
    assert cal.screen_errors([r for r in rows if r["stage"] != "confirm"], [2, 3]) == []


def test_probe_runs_named_variants_of_an_anchor():
    published = _published_by_truth()
    anchor = cal.candidate(BASE, TRUTH)
    rows = cal.probe(anchor, {"as is": {}, "s = 1": {"input_scale": 1.0}}, published, 1.0, _serial)
    assert [r["variant"] for r in rows] == ["as is", "s = 1"]
    assert rows[0]["distance"] == 0.0 and rows[0]["distance_2"] == 0.0
    assert rows[1]["distance_3"] == pytest.approx(
        rows[1]["d_loss_3"] + cal.NORM_WEIGHT * rows[1]["d_norm_3"]
    )
    assert rows[1]["distance"] > 0.01


def test_optimize_finds_the_input_scale_that_made_the_published_curves():
    published = _published_by_truth()
    anchor = replace(cal.candidate(BASE, TRUTH), input_scale=1.2)
    bounds = {"input_scale": (1.0, 2.0), "imbalance": (-0.2, 0.2)}
    rows = cal.optimize(anchor, published, bounds, 1.0, _serial, random_points=4, local_evals=30)
    stages = [r["stage"] for r in rows]
    assert stages.count("start") == 1 and stages.count("random") == 4
    assert 0 < stages.count("local") <= 31
    best = rows[0]
    assert best["input_scale"] == pytest.approx(1.5, abs=0.05)
    # from a start at imbalance 0 the initial simplex moves it by a tenth of the box (0.04),
    # not by scipy's default 2.5e-4
    simplex = cal.optimize(anchor, published, bounds, 1.0, _serial, random_points=0, local_evals=3)
    assert max(abs(r["imbalance"]) for r in simplex) == pytest.approx(0.04)
    assert best["distance"] < min(r["distance"] for r in rows if r["stage"] != "local")
    again = cal.optimize(anchor, published, bounds, 1.0, _serial, random_points=4, local_evals=0)
    first = sorted(r["input_scale"] for r in rows if r["stage"] != "local")
    assert sorted(r["input_scale"] for r in again) == first  # seeded: the same random points
    with pytest.raises(ValueError, match="at least d"):
        cal.optimize(anchor, published, {"log10_samples": (0.0, 2.0)}, 1.0, _serial)
    # an anchor outside the box: the local search starts inside it (scipy warned, then clipped)
    outside = replace(anchor, input_scale=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clipped = cal.optimize(outside, published, bounds, 1.0, _serial, 0, local_evals=3)
    assert all(1.0 <= r["input_scale"] <= 2.0 for r in clipped if r["stage"] == "local")


def _psd_power(m: np.ndarray, power: float) -> np.ndarray:
    """``m^power`` of a symmetric PSD matrix (``m⁰ = I``, also on the null space)."""
    if power == 0:
        return np.eye(len(m))
    w, v = np.linalg.eigh(m)
    w = np.where(w > 1e-12 * w.max(), w, 0.0)  # round-off around the null space is 0
    return (v * w**power) @ v.T


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_balanced_final_rate_is_the_smallest_rate_of_the_linearized_flow(depth):
    # independent: the operator E -> P_A(E Sxx) built as a d² x d² matrix from matrix powers
    rng = np.random.default_rng(depth)
    d, rank, eta = 5, 3, 1e-3
    q1, _ = np.linalg.qr(rng.standard_normal((d, d)))
    q2, _ = np.linalg.qr(rng.standard_normal((d, d)))
    teacher = q1[:, :rank] @ np.diag([1.0, 0.5, 0.2]) @ q2[:, :rank].T
    x = rng.standard_normal((d, 40))
    sxx = x @ x.T
    op = sum(
        np.kron(
            (sxx @ _psd_power(teacher.T @ teacher, (depth - 1 - a) / depth)).T,
            _psd_power(teacher @ teacher.T, a / depth),
        )
        for a in range(depth)
    )
    eig = np.sort(np.linalg.eigvals(op).real)
    positive = eig[eig > 1e-9 * eig.max()]
    assert len(positive) == d * d - (d - rank) ** 2  # the null-null block does not move
    want = 2 * eta * positive.min()
    assert cal.balanced_final_rate(teacher, sxx, depth, eta) == pytest.approx(want, rel=1e-8)


def test_balanced_final_rate_of_a_flat_teacher_with_isotropic_inputs():
    # sigma = 1 on the range: P's smallest eigenvalue is 1 (range x null), so mu = s²
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    teacher = q[:, :3] @ q[:, 3:].T
    for depth in (2, 5):
        assert cal.balanced_final_rate(teacher, 4.0 * np.eye(6), depth, 1e-2) == pytest.approx(
            2 * 1e-2 * 4.0
        )
    # depth 1 is plain least squares: every direction moves, at rates 2 η λ(Sxx)
    sxx = np.diag([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])
    assert cal.balanced_final_rate(teacher, sxx, 1, 1e-2) == pytest.approx(2 * 1e-2 * 1.0)


def test_variant_geometric_teacher_and_per_depth_raw_start():
    from dlncore.experiments.journal import journal_init

    variant = cal.Variant(**{f: getattr(BASE, f) for f in BASE.__dataclass_fields__})
    variant = replace(variant, rank=3, ratio=0.5, top=2.0, raw_depths=(2,), init_seed=4)
    X, Y = variant.data()
    teacher = Y @ np.linalg.pinv(X)  # independent of Σxx⁻¹: least squares through pinv
    values = np.linalg.svd(teacher, compute_uv=False)
    assert values[:3] == pytest.approx([2.0, 1.0, 0.5], rel=1e-8)
    assert values[3:] == pytest.approx([0, 0], abs=1e-10)
    raw = journal_init("pytorch-raw", [5, 2, 5], 4)
    assert all(np.array_equal(a, b) for a, b in zip(variant.start(2), raw, strict=True))
    base = replace(BASE, rank=3, top=2.0, init_seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(variant.start(3), base.start(3), strict=True))
    assert np.array_equal(replace(variant, ratio=0.0).data()[1], base.data()[1])


def test_closed_form_values_and_their_scale_invariant():
    e = replace(BASE, rank=3, spectrum="linear")
    out = cal.closed_form(e, [2, 3])
    X, Y = e.data()
    w0 = e.start(3)
    direct = 0.5 * np.linalg.norm(Y - w0[2] @ w0[1] @ w0[0] @ X) ** 2
    assert out["loss0_3"] == pytest.approx(direct, rel=1e-12)
    assert out["lstar"] == pytest.approx(e.problem().optimal_loss(2))
    assert out["loss0_per_rate"] == pytest.approx(out["loss0_2"] / out["rate_2"])
    # loss and curvature both grow like s²: their ratio does not depend on the input scale
    doubled = cal.closed_form(replace(e, input_scale=2 * e.input_scale), [2, 3])
    assert doubled["loss0_per_rate"] == pytest.approx(out["loss0_per_rate"], rel=1e-9)
    assert doubled["rate_3"] == pytest.approx(4 * out["rate_3"], rel=1e-9)


def test_held_per_depth_counts_the_targets_a_row_meets():
    published = cal.load_published()
    feats = {n: cal.features(c) | {"loss0": float(c.loss_at(1.0))} for n, c in published.items()}
    row = {f"{k}_{n}": v for n, f in feats.items() for k, v in f.items()}
    counts = cal.held_per_depth(row, feats)
    assert all(held == applied > 0 for held, applied in counts.values())  # itself: all held
    late = row | {"drop_2": 3 * row["drop_2"], "norm_max_5": row["norm_max_5"] + 0.02}
    moved = cal.held_per_depth(late, feats)
    assert moved[2] == (counts[2][0] - 1, counts[2][1])
    assert moved[5] == (counts[5][0] - 1, counts[5][1])
    assert moved[3] == counts[3]


def test_screen_families_rows_per_family_with_targets_and_time_scale():
    published = _published_by_truth()  # depths 2 and 3, made by TRUTH at step 1e-3
    anchor = cal.Variant(**{f: getattr(BASE, f) for f in BASE.__dataclass_fields__})
    families = [
        ("scales", "s = 1", {"input_scale": 1.0}, 1),
        ("time", "c = 2", {}, 2),
    ]
    rows = cal.screen_families(anchor, families, published, 2.0, _serial)
    assert [r["family"] for r in rows] == ["final choice", "scales", "time"]
    final, scaled, timed = rows
    assert final["distance"] < 0.1 and 0 < final["held_2"] <= final["applied_2"] == 8
    assert scaled["distance"] > final["distance"] + 0.01 and scaled["c"] == 1.0
    assert timed["factor"] == 1.0 and timed["c"] == 2.0  # the same step 2 η as the others
    # steps of 2 η follow the flow twice as fast: at k = 1e3 it is where the truth is at 2e3
    assert timed["loss_1e3_2"] == pytest.approx(float(published[2].loss_at(2e3)), rel=0.05)
    assert abs(final["loss_1e3_2"] / timed["loss_1e3_2"] - 1) > 0.1
    # below the time scale the screening factor stays 1 (GD at step c η itself)
    (_, slow) = cal.screen_families(anchor, families[1:], published, 1.0, _serial)
    assert slow["factor"] == 1.0 and slow["loss_1e3_2"] == pytest.approx(timed["loss_1e3_2"])
    with pytest.raises(ValueError, match="repeat"):
        cal.screen_families(anchor, [families[0], families[0]], published, 2.0, _serial)


def test_the_stored_family_screen_is_the_screen_of_families():
    rows, made_with = cal.stored_families()
    assert made_with["families"] == len(cal.FAMILIES)
    assert [(r["family"], r["variant"]) for r in rows] == [
        ("final choice", "as chapter 7"),
        *((family, name) for family, name, _, _ in cal.FAMILIES),
    ]
    assert all(0 <= r[f"held_{n}"] <= r[f"applied_{n}"] for r in rows for n in (2, 3, 5))
    assert all(r["factor"] == made_with["screen_factor"] / r["c"] for r in rows)


def test_compare_accepts_a_run_that_starts_at_zero_loss():
    # d = 1 at the chapter's extremes: the start can be the teacher itself, L(0) = 0
    published = cal.load_published()
    feats = {2: cal.features(published[2]) | {"loss0": float(published[2].loss_at(1.0))}}
    ours = {2: dict(feats[2], loss0=0.0, loss_1e3=0.0)}
    rows, held = cal.compare(ours, feats, 1e-3)
    (rel,) = [r for r in rows if r["quantity"] == "loss at k = 1e3 relative to L(0)"]
    assert rel["ours"] == "n/a" and rel["held?"] == "n/a"
    assert len(held) > 0


def test_compare_shows_norms_to_3_decimals_so_that_the_verdict_is_visible():
    pub = {2: _feats(norm_max=1.0751), 5: _feats(norm_max=1.0743)}
    ours = {2: _feats(norm_max=1.0700, final32=1e-8), 5: _feats(norm_max=1.0574, final32=1e-8)}
    rows, _ = cal.compare(ours, pub, 1e-2)
    shown = {
        r["N"]: (r["published"], r["ours"], r["off by"], r["held?"])
        for r in rows
        if r["quantity"] == "norm maximum (after the minimum)"
    }
    assert shown == {2: ("1.075", "1.070", "0.005", "yes"), 5: ("1.074", "1.057", "0.017", "no")}
    (drop,) = [r for r in rows if r["N"] == 2 and r["quantity"].startswith("first k")]
    assert drop["off by"] == "×1"


def test_compare_writes_a_missing_plateau_as_none_with_its_slope():
    rows, held = cal.compare({2: _feats(plateau_slope=1.34, final32=1e-8)}, {2: _feats()}, 1e-2)
    (row,) = [r for r in rows if r["quantity"].startswith("plateau")]
    assert (row["published"], row["ours"], row["held?"]) == ("0.6", "none (slope 1.34)", "no")
    never = _feats(drop=np.nan, plateau=np.nan, plateau_slope=np.nan, final32=1e-8)
    rows, _ = cal.compare({2: never}, {2: _feats()}, 1e-2)
    (row,) = [r for r in rows if r["quantity"].startswith("plateau")]
    assert row["ours"] == "none (no drop)"
    (row,) = [r for r in rows if r["quantity"].startswith("first k")]
    assert (row["ours"], row["held?"]) == ("not reached", "no")


def test_compare_gives_no_iteration_for_a_norm_minimum_that_is_no_dip():
    flat = _feats(norm_start=1.0, norm_min=1.0, norm_min_k=1.0, final32=1e-8)
    pub = {2: _feats(norm_start=1.0)}  # dips to 0.95
    rows, held = cal.compare({2: flat}, pub, 1e-2)
    (row,) = [r for r in rows if r["quantity"] == "iteration of the norm minimum"]
    assert (row["ours"], row["held?"]) == ("n/a (no dip)", "no")
    assert (2, "iteration of the norm minimum", False, float("inf")) in held
    # a published curve without a dip sets no target for the iteration
    rows, held = cal.compare({2: flat}, {2: dict(flat)}, 1e-2)
    (row,) = [r for r in rows if r["quantity"] == "iteration of the norm minimum"]
    assert (row["published"], row["target"], row["held?"]) == ("n/a (no dip)", "n/a here", "n/a")
    # a dip smaller than the digitizing accuracy is no dip; features records the start
    k = np.geomspace(1, 1e3, 50)
    shallow = cal.features(_curve(k, 1 / k, 1 - 0.0005 * np.sin(np.log(k))))
    assert shallow["norm_start"] == 1.0 and not cal.has_dip(shallow)
    assert cal.has_dip(cal.features(_synthetic()))


def test_screen_error_table_names_features_and_leaves_out_runs_without_a_dip():
    rows, _ = cal.stored_search()
    raw = {r["feature"]: r for r in cal.screen_errors(rows, [2, 3, 5])}
    table = {r["feature"]: r for r in cal.screen_error_table(rows, [2, 3, 5])}
    # the width-50 finalist's norm never dips: its "minimum" lies at k = 13 or k = 999900
    assert raw["norm_min_k"][2] > 1e4
    assert table["iteration of the norm minimum"]["N = 2"] == "1.17"
    assert table["iteration of the norm maximum"]["N = 2"] == "1.02"
    # the width-50 finalist drops at neither step at N = 3, 5: the steps agree, it is left out
    assert table["first k with loss < 1e-3"]["N = 3"] == "1.04"
    assert table["loss part of the distance"]["error"] == "difference"
    assert all(isinstance(v, str) for r in table.values() for v in r.values())
    assert cal.screen_error_table([r for r in rows if r["stage"] != "confirm"], [2]) == []


def test_screen_errors_leave_out_pairs_that_lack_a_feature_at_both_steps():
    rows, _ = cal.stored_search()
    raw = {r["feature"]: r for r in cal.screen_errors(rows, [2, 3, 5])}
    assert raw["drop"][2] == pytest.approx(1.095, abs=1e-3)
    assert all(np.isfinite(raw["drop"][n]) and raw["drop"][n] <= 1.1 for n in (2, 3, 5))
    assert all(np.isfinite(raw["plateau"][n]) for n in (2, 3, 5))
    assert cal.screen_neither(rows, [2, 3, 5]) == [("the finalist with width 50", [3, 5])]
    assert cal.neither_drops_phrase(rows, [2, 3, 5]) == (
        "the finalist with width 50 drops at neither step at N = 3 and 5"
    )
    # exactly one run of a pair without the feature is still an unbounded error
    keys = [k for k, _ in cal.SCREEN_FEATURES] + ["d_loss", "d_norm"]
    base = {k: 1 for k in cal.CHOICES} | {f"{k}_2": 1.0 for k in keys}
    one = [base | {"stage": "confirm", "drop_2": 1e4}, base | {"stage": "grid", "drop_2": np.nan}]
    assert cal.screen_errors(one, [2])[0][2] == float("inf")
    assert cal.neither_drops_phrase(one, [2]) == ""
    both = [dict(r, drop_2=np.nan) for r in one]
    assert np.isnan(cal.screen_errors(both, [2])[0][2])
    assert cal.neither_drops_phrase(both, [2]) == "the finalist drops at neither step at N = 2"


def test_screen_drop_texts_say_the_factor_over_the_pairs_that_drop():
    rows, _ = cal.stored_search()
    measured, sentence = cal.screen_drop_texts(rows, [2, 3, 5])
    neither = "the finalist with width 50 drops at neither step at N = 3 and 5"
    assert measured == f"1.1 over the pairs that drop; {neither}"
    assert sentence == (
        "are off by factors up to 1.1 against the confirmation over the pairs that drop "
        f"({neither})"
    )
    keys = [k for k, _ in cal.SCREEN_FEATURES] + ["d_loss", "d_norm"]
    base = {k: 1 for k in cal.CHOICES} | {f"{k}_2": 1.0 for k in keys}
    one = [base | {"stage": "confirm", "drop_2": 1e4}, base | {"stage": "grid", "drop_2": np.nan}]
    assert cal.screen_drop_texts(one, [2]) == (
        "unbounded (one run of a pair drops, the other never does)",
        "are off by an unbounded factor (one run of a pair drops, the other never does) "
        "against the confirmation",
    )
    both = [dict(r, drop_2=np.nan) for r in one]
    assert cal.screen_drop_texts(both, [2]) == (
        "n/a (the finalist drops at neither step at N = 2)",
        "cannot be compared (the finalist drops at neither step at N = 2)",
    )
    assert cal.screen_drop_texts(one[1:], [2])[1] == "have no confirmation to compare with"


def test_feature_text_shows_norms_to_three_decimals():
    pub = {n: cal.features(c) for n, c in cal.load_published().items()}
    assert [cal.feature_text(pub[n]["norm_max"], "norm_max") for n in (2, 3, 5)] == [
        "1.075",
        "1.074",
        "1.074",
    ]
    assert cal.feature_text(pub[2]["norm_min_k"], "norm_min_k") == "115"
    assert cal.feature_text(float("nan"), "norm_min") == "n/a"


def test_search_sentences_say_only_what_applies():
    text = cal.search_sentences(121, 8.538, 0, 3, 0.0857, False)
    assert text == (
        "The 121 screened candidates range up to distance 8.54; none of them diverged at the "
        "larger screening step. Rerunning the 3 finalists at the confirmation step changed their "
        "distance by at most 0.086, and the confirmation ranks them in a different order than "
        "the screening."
    )
    same = cal.search_sentences(10, 2.0, 2, 2, 0.1, True)
    assert '; 2 of them diverged at the larger screening step (distance "nan"' in same
    assert same.endswith("ranks them in the same order as the screening.")
    assert cal.search_sentences(10, 2.0, 0, 1, 0.1, None).endswith(
        "Rerunning the finalist at the confirmation step changed its distance by at most 0.1."
    )
    none = cal.search_sentences(10, 2.0, 0, 0, float("nan"), None)
    assert none.endswith("larger screening step. No finalist was rerun at the confirmation step.")
    assert "n/a" not in none


def test_raised_top_shows_our_starting_loss_and_a_margin_above_a_peak():
    axes = cal.PUBLISHED_AXES
    # our L(0) = 389 lies above the published top 3.1e2: the top is raised, the bottom stays
    low, high = cal.raised_top(axes["loss"], [389.0, 2.0, 1e-23], 1.3, log=True)
    assert (low, high) == (axes["loss"][0], pytest.approx(389.0 * 1.3))
    # a norm peak at the published top gets the margin; values inside leave the range alone
    assert cal.raised_top(axes["norm"], [0.93, 1.083], 0.005)[1] == pytest.approx(1.088)
    assert cal.raised_top(axes["norm"], [0.95, 1.07], 0.005) == axes["norm"]
    assert cal.raised_top(axes["norm"], [np.nan], 0.005) == axes["norm"]


def test_screenable_targets_leave_out_iterations_before_the_first_screening_record():
    pub = cal.load_published()
    # every target but the final losses applies where the screening records start early
    count, text = cal.screenable_targets(pub, 10.0)
    assert count == 24
    assert text == "no published iteration lies before the first screening record k = 10"
    # at c = 300 the N = 2 norm minimum (published k = 115) comes before the first record
    count, text = cal.screenable_targets(pub, 300.0)
    assert count == 23
    assert text == (
        "the iteration of the norm minimum at N = 2 (published k = 115) lies before the first "
        "screening record k = 300"
    )
    count, text = cal.screenable_targets(pub, 1e5)
    assert count == 16 and text.endswith("lie before the first screening record k = 100000")


def test_smallest_of_keeps_the_names_with_the_prefix():
    ratios = {"flat, s = 1.7": 6.8, "geometric q = 0.95": 78.0, "geometric q = 0.867": 1.4e3}
    assert cal.smallest_of(ratios) == ("flat, s = 1.7", 6.8)
    assert cal.smallest_of(ratios, "geometric") == ("geometric q = 0.95", 78.0)
    name, value = cal.smallest_of({"flat": 1.0, "geometric q = 0.9": np.nan}, "geometric")
    assert name == "none" and np.isnan(value)


def test_rate_ratios_text_puts_ours_beside_the_published():
    ours = {2: 1.77, 3: 0.491, 5: 0.1}
    published = {2: 1.84, 3: 1.84 / 6.74, 5: 0.1}
    assert cal.rate_ratios_text(ours, published) == (
        "2/5: 17.7 (published 18.4), 2/3: 3.6 (published 6.74)"
    )
    assert cal.rate_ratios_text({}, published) == "n/a"


def test_draw_published_labels_each_depth_where_its_loss_crosses_or_its_norm_peaks():
    from matplotlib.figure import Figure

    published = cal.load_published()
    ax = Figure().subplots()
    cal.draw_published(ax, published, at_loss=1e-4)
    assert len(ax.lines) == len(published)
    assert [t.get_text() for t in ax.texts] == [str(n) for n in published]
    for text, curve in zip(ax.texts, published.values(), strict=True):
        assert text.xy == (cal.first_crossing(curve, 1e-4), 1e-4)
    assert [line.get_label() for line in ax.lines][0] == "published, digitized"
    bx = Figure().subplots()
    cal.draw_published(bx, published)
    for text, curve in zip(bx.texts, published.values(), strict=True):
        assert text.xy[1] == curve.norm.max() and text.xy[0] == curve.norm_k[curve.norm.argmax()]
