"""Bad input gets one clear ValueError naming the problem."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlncore as dc

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 20))
Y = RNG.standard_normal((3, 20))


@pytest.mark.parametrize(
    ("X", "Y", "message"),
    [
        (X[0], Y, "must be matrices"),
        (X, Y[:, :10], "X has 20 samples .* Y has 10"),
        (np.where(X > 1, np.nan, X), Y, "X has non-finite"),
        (X, np.where(Y > 1, np.inf, Y), "Y has non-finite"),
        (X[:, :3], Y[:, :3], r"singular: X has m = 3 samples for d_x = 4"),
        (np.vstack([X[:3], X[:1]]), Y, r"numerically singular .*m = 20, d_x = 4"),
    ],
)
def test_bad_data(X, Y, message):
    with pytest.raises(ValueError, match=message):
        dc.Problem(X, Y)


SMALL = dc.Problem(X, Y)


@pytest.fixture
def small():
    return SMALL


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([], "non-empty list"),
        ([np.zeros((2, 4)), np.zeros((3, 3))], "widths do not chain: W_2"),
        ([np.zeros((2, 5)), np.zeros((3, 2))], "W_1 takes 5 inputs but the data have d_x = 4"),
        ([np.zeros((2, 4)), np.zeros((4, 2))], "W_N gives 4 outputs but the data have d_y = 3"),
        ([np.zeros((2, 2, 4)), np.zeros((3, 2))], "same batch shape"),
        ([np.zeros(4)], "expected"),
        ([np.full((3, 4), np.nan)], "W_1 has non-finite"),
    ],
)
def test_bad_weights(small, weights, message):
    with pytest.raises(ValueError, match=message):
        small.loss(weights)
    with pytest.raises(ValueError, match=message):
        dc.gd(small, weights, 0.1, 1)


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


def test_bad_ranks_and_metric_names(small):
    for rank in (-1, 4, 1.5):
        with pytest.raises(ValueError, match="rank"):
            small.optimal_loss(rank)
    with pytest.raises(ValueError, match="unknown metric 'loss_rate'"):
        dc.gd(small, dc.init.gaussian([4, 3], 0.1, seed=0), 0.1, 1, metrics=["loss_rate"])
    with pytest.raises(ValueError, match="t_final"):
        dc.gradient_flow(small, dc.init.gaussian([4, 3], 0.1, seed=0), -1.0)


@settings(max_examples=40, deadline=None)
@given(
    dims=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    batch=st.one_of(st.none(), st.integers(1, 3)),
)
def test_any_chain_fitting_the_data_is_accepted(dims, batch):
    ws = dc.init.gaussian([4, *dims, 3], 0.3, seed=1, batch=batch)
    loss = SMALL.loss(ws)
    assert np.shape(loss) == (() if batch is None else (batch,))
    grads = SMALL.gradients(ws)
    assert [g.shape for g in grads] == [w.shape for w in ws]


@settings(max_examples=40, deadline=None)
@given(dims=st.lists(st.integers(1, 5), min_size=2, max_size=4), cut=st.integers(0, 2))
def test_any_broken_chain_is_rejected(dims, cut):
    ws = dc.init.gaussian([4, *dims, 3], 0.3, seed=1)
    broken = list(ws)
    j = cut % (len(ws) - 1)
    broken[j] = np.zeros((broken[j].shape[0] + 1, broken[j].shape[1]))
    with pytest.raises(ValueError, match="do not chain|outputs"):
        SMALL.loss(broken)
