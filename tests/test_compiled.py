"""Tests of dlncore.compiled: the compiled step agrees with the numpy step of dc.gd."""

import numpy as np
import pytest

import dlncore as dc
from dlncore.descent import compiled_step_applies

METRICS = ("grad_norm", "step_length", "path_length", "end_to_end_norm")


def both(problem, weights, step_size, steps, **kwargs):
    runs = [
        dc.gd(problem, weights, step_size, steps, engine=engine, **kwargs)
        for engine in ("numpy", "compiled")
    ]
    return runs


def assert_same(a, b, rtol=1e-13):
    """Equal to rounding: the two paths run the same products (bits agree with one BLAS)."""
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(b.time, a.time, rtol=rtol, atol=0)
    np.testing.assert_allclose(b.loss, a.loss, rtol=rtol, atol=0)
    for name in a.metrics:
        np.testing.assert_allclose(b.metrics[name], a.metrics[name], rtol=rtol, atol=0)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(wb, wa, rtol=rtol, atol=1e-300)
    assert a.diverged_at == b.diverged_at
    np.testing.assert_allclose(b.diverged_loss, a.diverged_loss, rtol=rtol)


@pytest.mark.parametrize("dims", [[4, 3], [4, 6, 3], [4, 1, 5, 3], [4, 8, 8, 8, 3]])
def test_compiled_step_matches_numpy_step(dims):
    problem = dc.synthetic_problem(dims[0], dims[-1], 40, 2, seed=5, noise=0.1)
    weights = dc.init.gaussian(dims, 0.4, seed=2)
    assert_same(*both(problem, weights, 0.01, 1500, record=30, metrics=METRICS))


def test_compiled_step_flags_the_same_divergence():
    problem = dc.synthetic_problem(4, 3, 40, 2, seed=5)
    weights = dc.init.gaussian([4, 5, 3], 1.0, seed=2)
    a, b = both(problem, weights, 2.0, 500, record=[0, 1, 2, 100, 500], metrics=METRICS)
    assert a.diverged and b.diverged and 0 < b.diverged_at < 100
    assert_same(a, b)


def test_auto_takes_the_compiled_step_only_where_it_applies():
    one = dc.init.gaussian([4, 5, 3], 0.3, seed=1)
    assert compiled_step_applies(one, 0.1)
    assert not compiled_step_applies(dc.init.gaussian([4, 5, 3], 0.3, seed=1, batch=2), 0.1)
    assert not compiled_step_applies(dc.init.gaussian([4, 40, 3], 0.3, seed=1), 0.1)
    assert not compiled_step_applies([w.astype(np.float32) for w in one], 0.1)
    assert not compiled_step_applies(one, np.full(10, 0.1))
    assert not compiled_step_applies(one, lambda k: 0.1)
    problem = dc.synthetic_problem(4, 3, 40, 2, seed=5)
    with pytest.raises(ValueError, match="compiled step needs"):
        dc.gd(problem, [w[None] for w in one], 0.1, 5, engine="compiled")
    with pytest.raises(ValueError, match="engine must be"):
        dc.gd(problem, one, 0.1, 5, engine="fortran")


def test_zero_steps_and_progress_agree():
    problem = dc.synthetic_problem(4, 3, 40, 2, seed=5)
    weights = dc.init.gaussian([4, 5, 3], 0.3, seed=1)
    assert_same(*both(problem, weights, 0.05, 0, metrics=METRICS))
    assert_same(*both(problem, weights, 0.05, 400, record=7, metrics=METRICS, progress=True))
