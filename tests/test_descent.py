"""Gradient descent against plain loops; bad step sizes and steps."""

import warnings

import numpy as np
import pytest

import dlncore as dc
from tests.conftest import naive_gradients, naive_loss


def textbook_gd(X, Y, weights, etas):
    weights = [w.copy() for w in weights]
    losses = [naive_loss(X, Y, weights)]
    for eta in etas:
        grads = naive_gradients(X, Y, weights)
        weights = [w - eta * g for w, g in zip(weights, grads, strict=True)]
        losses.append(naive_loss(X, Y, weights))
    return weights, np.array(losses)


def test_gd_matches_textbook_loop(problem):
    start = dc.init.gaussian([5, 3, 6, 4], 0.5, seed=1)
    run = dc.gd(problem, start, 0.02, 300, record=range(301))
    weights, losses = textbook_gd(problem.X, problem.Y, start, [0.02] * 300)
    np.testing.assert_allclose(run.loss, losses, rtol=1e-10)
    for w, e in zip(run.weights, weights, strict=True):
        np.testing.assert_allclose(w, e, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(run.iterations, np.arange(301))
    assert run.time[-1] == pytest.approx(300 * 0.02)


def test_schedule_array_and_callable_agree_with_textbook(problem):
    start = dc.init.gaussian([5, 4, 4], 0.5, seed=2)
    etas = 0.03 / (1 + 0.01 * np.arange(100))
    a = dc.gd(problem, start, etas, 100)
    b = dc.gd(problem, start, lambda k: etas[k], 100)
    weights, _ = textbook_gd(problem.X, problem.Y, start, etas)
    for wa, wb, we in zip(a.weights, b.weights, weights, strict=True):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_allclose(wa, we, rtol=1e-10, atol=1e-12)


def test_batched_equals_looped_with_per_start_step_sizes(problem):
    start = dc.init.gaussian([5, 3, 3, 4], 0.6, seed=4, batch=5)
    etas = np.array([0.005, 0.01, 0.02, 0.04, 0.05])
    names = ["grad_norm", "path_length"]
    batched = dc.gd(problem, start, etas[None, :], 200, metrics=names)
    for b in range(5):
        single = dc.gd(problem, [w[b] for w in start], etas[b], 200, metrics=names)
        np.testing.assert_allclose(batched.loss[:, b], single.loss, rtol=1e-11)
        for name in names:
            got, want = batched.metrics[name][:, b], single.metrics[name]
            np.testing.assert_allclose(got, want, rtol=1e-10)
        for w, s in zip(batched.weights, single.weights, strict=True):
            np.testing.assert_allclose(w[b], s, rtol=1e-11, atol=1e-14)


def test_same_seed_same_bits(problem):
    runs = [
        dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=9, batch=3), 0.02, 50)
        for _ in range(2)
    ]
    assert runs[0].loss.tobytes() == runs[1].loss.tobytes()
    for a, b in zip(runs[0].weights, runs[1].weights, strict=True):
        assert a.tobytes() == b.tobytes()
    other = dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=10, batch=3), 0.02, 50)
    assert other.loss.tobytes() != runs[0].loss.tobytes()


def test_two_layer_gd_reaches_the_global_minimum():
    problem = dc.synthetic_problem(6, 5, 40, 4, seed=3, noise=0.2)
    for width in (2, 6):  # with and without a bottleneck
        start = dc.init.gaussian([6, width, 5], 0.3, seed=1)
        run = dc.gd(problem, start, 0.05, 20000)
        assert run.loss[-1] - problem.optimal_loss(min(width, 5)) < 1e-9


def test_divergence_is_flagged_without_warnings(problem):
    start = dc.init.gaussian([5, 3, 4], 0.5, seed=1, batch=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = dc.gd(problem, start, np.array([[0.01, 50.0, 1e3]]), 500)
    np.testing.assert_array_equal(run.diverged, [False, True, True])
    assert run.diverged_at[0] == -1 and 0 < run.diverged_at[2] <= run.diverged_at[1]
    assert np.all(run.diverged_loss[1:] > 1e6 * run.loss[0, 1:])
    assert np.isnan(run.loss[-1, 1:]).all() and np.isfinite(run.loss[:, 0]).all()
    assert all(np.all(np.isfinite(w)) for w in run.weights)
    assert "2 of 3 start(s) diverged" in run.summary()


def test_single_divergent_run_stops_at_divergence(problem):
    run = dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=1), 1e3, 10**6)
    assert run.diverged and run.iterations[-1] == run.diverged_at < 100
    assert run.info["steps"] == run.diverged_at


@pytest.mark.parametrize("engine", ["numpy", "compiled"])
def test_a_start_diverges_above_blowup_times_the_larger_of_its_loss_and_half_y(engine):
    # L(w) = ½(1 − w)² (x = y = 1, ½‖Y‖² = ½); with η = 3, 1 − w flips sign and doubles:
    # L(k) = 4^k L(0). blowup = 10: from w = 0.5 (L(0) = 1/8 < ½) the limit is 10 · ½ = 5,
    # crossed at k = 3 (8); from w = 3 (L(0) = 2) it is 20, crossed at k = 2 (32).
    problem = dc.Problem(np.array([[1.0]]), np.array([[1.0]]))
    for w0, k in [(0.5, 3), (3.0, 2)]:
        run = dc.gd(problem, [np.array([[w0]])], 3.0, 10, blowup=10.0, engine=engine)
        assert run.diverged_at == k and run.diverged_loss == pytest.approx(4**k * (1 - w0) ** 2 / 2)
    for blowup in (1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="blowup must be a finite number > 1"):
            dc.gd(problem, [np.array([[0.5]])], 3.0, 10, blowup=blowup, engine=engine)


@pytest.mark.parametrize(
    ("step_size", "steps", "message"),
    [
        (0.0, 5, "positive and finite"),
        (-1e-3, 5, "positive and finite"),
        (np.nan, 5, "positive and finite"),
        (np.inf, 5, "positive and finite"),
        (np.array([0.1, 0.1, -0.1]), 3, "positive and finite"),
        (lambda k: 0.1 if k < 2 else 0.0, 5, "at iteration 2"),
        (np.ones(4), 5, "does not broadcast"),
        (0.1, -1, "non-negative"),
        (0.1, 2.5, "integer"),
    ],
)
def test_bad_step_sizes_and_steps(small, step_size, steps, message):
    weights = dc.init.gaussian([4, 2, 3], 0.1, seed=0)
    with pytest.raises(ValueError, match=message):
        dc.gd(small, weights, step_size, steps)


def test_extrema_over_every_step_match_an_every_step_record(problem, tmp_path):
    start = dc.init.gaussian([5, 3, 3, 4], 0.3, seed=4, batch=4)
    etas = np.array([0.01, 0.05, 0.5, 50.0])
    steps, tol = 300, -1e-12
    loss0 = problem.loss(start)

    def ratio(it):  # drift / (2 η (L(0) − L(k))) where every step before k descended
        drift = dc.metrics.imbalance_drift(it.weights, start)
        held = it.active & (it.descent_min >= tol) & (it.k > 0)
        return np.where(held, drift / (2 * etas * (loss0 - it.loss)), np.nan)

    extrema = {"margin": lambda it: it.descent, "ratio": ratio, "k": lambda it: it.k + 0 * etas}
    run = dc.gd(problem, start, etas[None], steps, record=5, extrema=extrema)
    assert run.iterations.size <= 5 and run.diverged.tolist() == [False] * 3 + [True]
    plain = dc.gd(problem, start, etas[None], steps, record=5)  # the records do not change
    assert plain.loss.tobytes() == run.loss.tobytes() and plain.extrema == {}
    # independently: the same run recorded at every iteration
    drift = {"grad_norm": None, "drift": lambda w: dc.metrics.imbalance_drift(w, start)}
    every = dc.gd(problem, start, etas[None], steps, record=np.arange(steps + 1), metrics=drift)
    grad = every.metrics["grad_norm"][:-1]
    margin = every.loss[:-1] - every.loss[1:] - 0.5 * etas * grad**2
    np.testing.assert_allclose(run.extrema["margin"][0], np.nanmin(margin, axis=0), rtol=1e-9)
    np.testing.assert_allclose(run.extrema["margin"][1], np.nanmax(margin, axis=0), rtol=1e-9)
    # η = 0.5 breaks the descent condition from step 8 on and converges; η = 50 diverges
    np.testing.assert_array_equal(run.extrema["margin"][0] > 0, [True, True, False, False])
    failed = np.cumsum(np.nan_to_num(margin, nan=0.0) < tol, axis=0) > 0
    held = np.vstack([np.zeros((1, 4), bool), ~failed])  # no failed step before k (k > 0)
    with np.errstate(invalid="ignore"):  # 0 / 0 at k = 0, not held
        want = np.where(held, every.metrics["drift"] / (2 * etas * (loss0 - every.loss)), np.nan)
    np.testing.assert_allclose(run.extrema["ratio"][0], np.fmin.reduce(want), rtol=1e-9)
    np.testing.assert_allclose(run.extrema["ratio"][1], np.fmax.reduce(want), rtol=1e-9)
    assert np.isnan(run.extrema["ratio"][1]).tolist() == [False] * 3 + [True]  # 50: never held
    assert np.isnan(want[10:, 2]).all() and np.isfinite(want[1:9, 2]).all()
    np.testing.assert_array_equal(run.extrema["k"], [[0] * 4, [steps] * 3 + [steps]])
    back = dc.Run.load(run.save(tmp_path / "run.npz"))
    assert back.extrema.keys() == run.extrema.keys()
    for name, value in run.extrema.items():
        np.testing.assert_array_equal(back.extrema[name], value)


def test_extrema_agree_between_the_numpy_and_the_compiled_step(problem):
    start = dc.init.gaussian([5, 3, 4], 0.5, seed=2)
    extrema = {"margin": lambda it: it.descent, "loss": lambda it: it.loss}
    runs = [
        dc.gd(problem, start, 0.05, 200, extrema=extrema, engine=e) for e in ("numpy", "compiled")
    ]
    for name in extrema:
        np.testing.assert_allclose(runs[1].extrema[name], runs[0].extrema[name], rtol=1e-9)
    np.testing.assert_allclose(
        runs[0].extrema["loss"], [runs[0].loss[-1], runs[0].loss[0]], rtol=1e-12
    )
