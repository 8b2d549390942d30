"""Weight chains: every chain that fits is accepted, every broken one rejected."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dlncore as dc

_RNG = np.random.default_rng(0)
SMALL = dc.Problem(_RNG.standard_normal((4, 20)), _RNG.standard_normal((3, 20)))  # as `small`


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


def test_flatten_puts_each_factor_row_major_in_turn_and_unflatten_inverts_it():
    ws = dc.init.gaussian([3, 2, 4], 1.0, seed=5, batch=2)
    flat = dc.network.flatten(ws)
    assert flat.shape == (2 * 2 * 3 + 2 * 4 * 2,)
    assert flat[0] == ws[0][0, 0, 0] and flat[1] == ws[0][0, 0, 1] and flat[3] == ws[0][0, 1, 0]
    assert flat[12] == ws[1][0, 0, 0] and flat[-1] == ws[1][1, 3, 1]
    back = dc.network.unflatten(flat, [w.shape for w in ws])
    for b, w in zip(back, ws, strict=True):
        np.testing.assert_array_equal(b, w)
        assert np.shares_memory(b, flat)


def test_repeat_makes_independent_copies_of_one_start():
    one = dc.init.gaussian([3, 2, 4], 1.0, seed=5)
    many = dc.network.repeat(one, 3)
    assert [w.shape for w in many] == [(3, 2, 3), (3, 4, 2)]
    for w, w1 in zip(many, one, strict=True):
        np.testing.assert_array_equal(w, np.stack([w1] * 3))
    many[0][1] += 1.0  # each start is its own array, writable
    np.testing.assert_array_equal(many[0][0], one[0])
    np.testing.assert_array_equal(many[0][1], one[0] + 1.0)
