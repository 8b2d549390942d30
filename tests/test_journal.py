"""Tests of the tanh network, the journal helpers and the parallel job runner."""

import numpy as np
import pytest

import dlncore as dc
from dlncore.experiments.journal import Experiment, linear_run, tanh_run
from dlncore.experiments.parallel import run_many
from dlncore.experiments.tanh import (
    READINGS,
    output_tanh_loss,
    output_tanh_loss_and_gradients,
    tanh_gd,
    tanh_loss,
    tanh_loss_and_gradients,
)
from dlncore.init import normalized_gaussian
from tests.conftest import central_differences


def _tanh_case(seed: int = 0, depth: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4, 7))
    Y = rng.standard_normal((3, 7))
    dims = [4] + [5] * (depth - 1) + [3]
    weights = [0.7 * rng.standard_normal((dims[j + 1], dims[j])) for j in range(depth)]
    return X, Y, weights


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_tanh_gradients_match_central_differences(depth):
    X, Y, weights = _tanh_case(depth, depth)
    loss, grads = tanh_loss_and_gradients(weights, X, Y)
    assert loss == pytest.approx(tanh_loss(weights, X, Y), rel=1e-14)
    fds = central_differences(lambda ws: tanh_loss(ws, X, Y), weights)
    for j, fd in enumerate(fds):
        assert np.allclose(grads[j], fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_output_tanh_gradients_match_central_differences(depth):
    X, Y, weights = _tanh_case(depth + 10, depth)
    loss, grads = output_tanh_loss_and_gradients(weights, X, Y)
    W = weights[0]
    for w in weights[1:]:
        W = w @ W
    assert loss == pytest.approx(0.5 * np.sum((np.tanh(W @ X) - Y) ** 2), rel=1e-13)
    fds = central_differences(lambda ws: output_tanh_loss(ws, X, Y), weights)
    for j, fd in enumerate(fds):
        assert np.allclose(grads[j], fd, rtol=1e-6, atol=1e-7)


def test_the_two_tanh_readings_differ_and_gd_follows_each():
    X, Y, weights = _tanh_case(4)
    hidden = tanh_gd(X, Y, weights, 0.01, 20, record=3)
    output = tanh_gd(X, Y, weights, 0.01, 20, record=3, reading="output")
    assert output.info["reading"] == "output" and hidden.info["reading"] == "hidden"
    assert output.loss[0] == pytest.approx(output_tanh_loss(weights, X, Y), rel=1e-14)
    assert abs(output.loss[0] - hidden.loss[0]) > 1e-3
    ws = [w.copy() for w in weights]
    for _ in range(20):
        _, g = output_tanh_loss_and_gradients(ws, X, Y)
        ws = [w - 0.01 * gj for w, gj in zip(ws, g, strict=True)]
    assert output.loss[-1] == pytest.approx(output_tanh_loss(ws, X, Y), rel=1e-12)
    with pytest.raises(ValueError, match="reading"):
        tanh_gd(X, Y, weights, 0.01, 2, reading="input")


def test_tanh_forward_is_the_network():
    X, Y, (w1, w2, w3) = _tanh_case(1)
    out = w3 @ np.tanh(w2 @ np.tanh(w1 @ X))
    assert tanh_loss([w1, w2, w3], X, Y) == pytest.approx(0.5 * np.sum((out - Y) ** 2))


def test_tanh_gd_matches_a_plain_loop():
    X, Y, weights = _tanh_case(2)
    eta, steps = 0.01, 30
    run = tanh_gd(X, Y, weights, eta, steps, record=5)
    ws = [w.copy() for w in weights]
    for _ in range(steps):
        _, g = tanh_loss_and_gradients(ws, X, Y)
        ws = [w - eta * gj for w, gj in zip(ws, g, strict=True)]
    for a, b in zip(run.weights, ws, strict=True):
        assert np.allclose(a, b, rtol=1e-13, atol=1e-15)
    assert run.loss[-1] == pytest.approx(tanh_loss(ws, X, Y), rel=1e-12)
    assert run.loss[-1] < run.loss[0]
    assert run.iterations[0] == 0 and run.iterations[-1] == steps


def test_tanh_gd_flags_divergence():
    X, Y, weights = _tanh_case(3)
    run = tanh_gd(X, Y, [5 * w for w in weights], 10.0, 200, blowup=10.0)
    assert bool(run.diverged) and run.info["steps"] < 200


def _plain_gradients(reading, weights, X, Y):
    """Gradients of either reading written out plainly (the session-4 formulas): the reference
    that the faster products of :mod:`dlncore.experiments.tanh` must reproduce."""
    n = len(weights)
    if reading == "hidden":
        hidden = [X]
        for w in weights[:-1]:
            hidden.append(np.tanh(w @ hidden[-1]))
        delta = weights[-1] @ hidden[-1] - Y
        grads = [None] * n
        for j in range(n - 1, -1, -1):
            grads[j] = delta @ hidden[j].T
            if j > 0:
                delta = (weights[j].T @ delta) * (1 - hidden[j] ** 2)
        return grads
    below = [np.eye(X.shape[0], dtype=X.dtype)]
    for w in weights:
        below.append(w @ below[-1])
    T = np.tanh(below[-1] @ X)
    G = ((T - Y) * (1 - T * T)) @ X.T
    above = [np.eye(Y.shape[0], dtype=X.dtype)]  # A_N = I, A_{N-1} = W_N, ...
    for w in weights[:0:-1]:
        above.append(above[-1] @ w)
    return [above[n - 1 - j].T @ G @ below[j].T for j in range(n)]


@pytest.mark.parametrize("reading", ["hidden", "output"])
@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-11), ("float32", 3e-5)])
def test_tanh_gd_at_chapter_7_sizes_follows_the_plain_formulas(reading, dtype, rtol):
    """200 steps at chapter 7's sizes (d = 70, widths 35, m = 200, depth 3): the same weights
    and recorded losses as the plain loop, to float rounding (float32: 3e-5 relative)."""
    e = Experiment(70, 200, 25, "flat", 1.0, 3.4, 0, 35, 2, 1.0, 3e-5, 200, init="orthogonal")
    X, Y = (a.astype(dtype) for a in e.data())
    start = [w.astype(dtype) for w in e.start(3)]
    run = tanh_gd(X, Y, start, 1e-2, 200, record=5, dtype=dtype, reading=reading)
    loss = READINGS[reading][0]
    ws, eta = [w.copy() for w in start], np.dtype(dtype).type(1e-2)
    for k in range(201):
        if k in run.iterations:
            i = int(np.flatnonzero(run.iterations == k)[0])
            assert run.loss[i] == pytest.approx(loss(ws, X, Y), rel=rtol)
        if k < 200:
            ws = [w - eta * g for w, g in zip(ws, _plain_gradients(reading, ws, X, Y), strict=True)]
    scale = max(float(np.abs(w).max()) for w in ws)
    for a, b in zip(run.weights, ws, strict=True):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)
    assert run.loss[-1] < 0.9 * run.loss[0]  # the runs moved


@pytest.mark.parametrize("reading", ["hidden", "output"])
def test_tanh_gradients_are_scaled_and_the_recorded_loss_is_summed_in_float64(reading):
    X, Y, weights = _tanh_case(5)
    loss_func, loss_and_gradients = READINGS[reading]
    loss, grads = loss_and_gradients(weights, X, Y)
    _, scaled = loss_and_gradients(weights, X, Y, 0.25)
    for g, s in zip(grads, scaled, strict=True):
        np.testing.assert_allclose(s, 0.25 * g, rtol=1e-15, atol=0)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    run = tanh_gd(X32, Y32, weights, 0.01, 10, record=3, dtype="float32", reading=reading)
    assert run.loss.dtype == np.float64
    assert run.loss[-1] == loss_func(run.weights, X32, Y32)  # exactly: float64 sum each record


def test_normalized_gaussian_has_the_requested_norm():
    for depth in (2, 3, 5):
        dims = [7] + [4] * (depth - 1) + [6]
        w = normalized_gaussian(dims, seed=3, norm=1.7)
        assert dc.metrics.end_to_end_norm(w) == pytest.approx(1.7, rel=1e-12)
        raw = dc.init.gaussian(dims, 1.0, seed=3)
        ratios = [np.ptp(a / b) for a, b in zip(w, raw, strict=True)]
        assert max(ratios) < 1e-12  # one common rescaling of the Gaussian factors


SMALL = Experiment(
    d=6,
    samples=20,
    rank=3,
    spectrum="flat",
    top=1.0,
    input_scale=1.5,
    data_seed=0,
    width=3,
    init_seed=1,
    init_norm=1.0,
    step_size=1e-2,
    steps=40,
    record=5,
)


def _small(kind: str, depth: int = 3, **extra):
    func = linear_run if kind == "linear" else tanh_run
    return (func, dict(experiment=SMALL, depth=depth, **extra))


def test_run_many_matches_serial_runs_in_order():
    jobs = [_small("linear"), _small("tanh"), _small("linear", dtype="float32", depth=2)]
    serial = run_many(jobs, max_workers=1)
    parallel = run_many(jobs, max_workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert np.array_equal(a.loss, b.loss)
        for wa, wb in zip(a.weights, b.weights, strict=True):
            assert np.array_equal(wa, wb)
    assert serial[0].info["kind"] == "gd" and serial[1].info["kind"] == "tanh-gd"
    assert serial[2].weights[0].dtype == np.float32


def test_first_below():
    from dlncore.experiments.journal import first_below

    it = np.array([0, 10, 100, 1000])
    assert first_below(it, np.array([5.0, 3.0, 1e-4, 1e-9]), 1e-3) == 100
    assert np.isnan(first_below(it, np.array([5.0, 3.0, 2.0, 1.0]), 1e-3))


def test_moving_fraction_detects_a_stall():
    from dlncore.experiments.journal import moving_fraction

    problem = dc.synthetic_problem(5, 4, 20, 2, seed=0, dtype=np.float32)
    weights = [w.astype(np.float32) for w in dc.init.gaussian([5, 3, 4], 0.5, seed=1)]
    assert moving_fraction(problem, weights, 1e-2) == 1.0
    assert moving_fraction(problem, weights, 1e-12) == 0.0
    # brute force: count entries changed by a step taken in float32 by hand
    eta = np.float32(1e-6)
    grads = problem.gradients(weights)
    moved = sum(int(np.sum((w - eta * g) != w)) for w, g in zip(weights, grads, strict=True))
    total = sum(w.size for w in weights)
    assert moving_fraction(problem, weights, 1e-6) == moved / total


def test_stall_gradient_norm_bounds_stalled_gradients():
    from dlncore.experiments.journal import stall_gradient_norm

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((3, 4)), rng.standard_normal((2, 3))]
    eta, eps = 1e-3, 1e-7
    # gradients with |eta g| < eps |w| / 2 entrywise have norm below the bound
    grads = [0.999 * eps * np.abs(w) / (2 * eta) for w in weights]
    gnorm = np.sqrt(sum(np.sum(g**2) for g in grads))
    assert gnorm < stall_gradient_norm(weights, eta, eps)
    assert stall_gradient_norm(weights, eta, eps) == pytest.approx(gnorm / 0.999, rel=1e-12)


def test_loss_at_gradient_interpolates_log_linearly():
    from dlncore.experiments.journal import loss_at_gradient

    run = dc.Run(
        iterations=np.arange(4),
        time=np.arange(4.0),
        loss=np.array([1.0, 1e-2, 1e-4, 1e-6]),
        metrics={"grad_norm": np.array([10.0, 1.0, 0.1, 0.01])},
        weights=[np.zeros((1, 1))],
        diverged=np.array(False),
        diverged_at=np.array(-1),
        diverged_loss=np.array(np.nan),
    )
    assert loss_at_gradient(run, np.sqrt(0.1)) == pytest.approx(1e-3, rel=1e-12)
    assert np.isnan(loss_at_gradient(run, 1e-3))


def test_journal_init_orthogonal_has_unit_singular_values():
    from dlncore.experiments.journal import journal_init

    for depth in (2, 3, 5):
        dims = [8] + [4] * (depth - 1) + [8]
        w = journal_init("orthogonal", dims, seed=2, norm=1.3)
        s = dc.metrics.singular_values(w)[:4]
        assert np.allclose(s, 1.3, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown initialization"):
        journal_init("uniform", [3, 3], seed=0)


def test_journal_init_identity_is_a_scaled_projection():
    from dlncore.experiments.journal import journal_init

    dims = [6, 3, 3, 6]
    w = journal_init("identity", dims, seed=0, norm=0.1)
    assert all(np.allclose(f, 0.1 ** (1 / 3) * np.eye(*f.shape)) for f in w)
    product = w[2] @ w[1] @ w[0]
    expected = np.diag([0.1, 0.1, 0.1, 0, 0, 0])
    np.testing.assert_allclose(product, expected, atol=1e-15)
    assert np.array_equal(w[0], journal_init("identity", dims, seed=5, norm=0.1)[0])
    with pytest.raises(ValueError, match="positive"):
        journal_init("identity", dims, seed=0, norm=0.0)


def test_imbalance_keeps_the_product_and_scales_the_factors():
    from dataclasses import replace

    even = SMALL.start(3)
    tilted = replace(SMALL, imbalance=0.5).start(3)
    for w0, w1, j in zip(even, tilted, (1, 2, 3), strict=True):
        np.testing.assert_allclose(w1, np.exp(0.5 * (j - 2)) * w0, rtol=1e-14)
    np.testing.assert_allclose(
        tilted[2] @ tilted[1] @ tilted[0], even[2] @ even[1] @ even[0], atol=1e-14
    )
    assert np.linalg.norm(tilted[2]) > np.linalg.norm(tilted[0])


def test_spread_spreads_the_start_and_keeps_its_norm():
    from dataclasses import replace

    e = replace(SMALL, d=6, width=6, rank=3, init="orthogonal")
    flat = e.start(3)
    spread = replace(e, spread=1.0).start(3)

    def product(ws):
        return ws[2] @ ws[1] @ ws[0]

    s_flat = np.linalg.svd(product(flat), compute_uv=False)
    s_spread = np.linalg.svd(product(spread), compute_uv=False)
    np.testing.assert_allclose(s_flat, 1.0, rtol=1e-12)  # orthogonal: all values 1
    assert s_spread[0] == pytest.approx(1.0, rel=1e-12)  # the norm is kept
    assert s_spread[-1] == pytest.approx(np.exp(-1.0), rel=1e-12)  # spread by e^1
    assert np.all(np.diff(s_spread) <= 1e-12)


def test_tanh_run_in_float32_follows_float64():
    r64 = tanh_run(SMALL, 3)
    r32 = tanh_run(SMALL, 3, dtype="float32")
    assert r32.weights[0].dtype == np.float32 and r64.weights[0].dtype == np.float64
    assert r32.info["dtype"] == "float32"
    # same trajectory up to float32 rounding: losses agree to ~1e-5 relative, not exactly
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=1e-4)
    assert not np.array_equal(r32.loss, r64.loss)


def test_relative_updates_are_the_layers_step_over_weight_norms():
    from dlncore.experiments.journal import relative_updates

    problem = dc.synthetic_problem(5, 4, 20, 2, seed=0)
    weights = dc.init.gaussian([5, 3, 4], 0.5, seed=1)
    got = relative_updates(problem, weights, 1e-3)
    grads = problem.gradients(weights)
    pairs = zip(weights, grads, strict=True)
    want = [1e-3 * np.sqrt(np.sum(g**2)) / np.sqrt(np.sum(w**2)) for w, g in pairs]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got.shape == (2,) and np.all(got > 0)


def test_loss_rate_recovers_a_geometric_decay():
    from dlncore.experiments.journal import loss_rate

    k = np.geomspace(1, 1e5, 200).round()
    loss = np.where(k < 1e3, 1.0, np.exp(-2e-4 * (k - 1e3)))  # flat, then e^{-2e-4 k}
    assert loss_rate(k, loss, 0.9, 1e-12) == pytest.approx(2e-4, rel=1e-9)
    assert np.isnan(loss_rate(k, loss, 1e-30, 1e-40))  # no record in the window


def _matrix_power_psd(S, p):
    w, V = np.linalg.eigh(S)
    w = np.where(w < 1e-12 * w.max(), 0.0, w)
    powered = np.where(w > 0, np.abs(w) ** p, 0.0) if p > 0 else np.ones_like(w)
    return (V * powered) @ V.T


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_preconditioner_min_eigenvalue_matches_the_operator(depth):
    from dlncore.experiments.journal import preconditioner_min_eigenvalue

    rng = np.random.default_rng(depth)
    U, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    V, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    sigma = np.array([1.3, 0.7, 0.4, 0.0])  # rank 3
    W = U @ np.diag(sigma) @ V[:, :4].T
    # P(E) = sum_a (W Wᵀ)^{a/N} E (Wᵀ W)^{(N-1-a)/N} as a matrix on vec(E) (column-major)
    P = sum(
        np.kron(
            _matrix_power_psd(W.T @ W, (depth - 1 - a) / depth).T,
            _matrix_power_psd(W @ W.T, a / depth),
        )
        for a in range(depth)
    )
    eig = np.linalg.eigvalsh((P + P.T) / 2)
    want = eig[eig > 1e-9].min()
    # all min(d_y, d_x) = 4 singular values, the zero included
    assert preconditioner_min_eigenvalue(sigma, depth) == pytest.approx(want, rel=1e-9)


def test_local_rate_is_the_rate_of_plain_least_squares_gd():
    """Depth 1: P is the identity and GD on ½‖WX − Y‖² contracts the slowest direction by
    (1 − η λ_min(Σxx))² per step in the loss, ≈ e^{−2 η λ_min}."""
    from dlncore.experiments.journal import local_rate, loss_rate

    problem = dc.synthetic_problem(4, 3, 30, 3, seed=2)
    lam = np.linalg.eigvalsh(problem.sxx)
    eta = 0.2 / lam[-1]
    run = dc.gd(problem, [np.zeros((3, 4))], eta, 3000, record=400)
    fitted = loss_rate(run.iterations, run.loss - problem.optimal_loss(3), 1e-4, 1e-20)
    predicted = local_rate(problem, run.weights[0], 1, eta)
    assert predicted == pytest.approx(2 * eta * lam[0], rel=1e-12)
    assert fitted == pytest.approx(-2 * np.log(1 - eta * lam[0]), rel=0.02)
    assert fitted == pytest.approx(predicted, rel=0.1)


@pytest.mark.parametrize("name", ["07_experiments", "08_calibration"])
def test_chapters_7_and_8_keep_code_cells_short_and_outputs_out(name):
    """The developer guide's limits: no code cell over 60 lines, committed without outputs."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "chapters" / f"{name}.ipynb"
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert max(len("".join(c["source"]).splitlines()) for c in code) <= 60
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("show-input" in c["metadata"].get("tags", []) for c in code) in (1, 2)
