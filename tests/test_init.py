"""Initializations."""

import numpy as np
import pytest

import dlncore as dc


def test_balanced_init_is_balanced_with_the_right_product():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 3)) @ rng.standard_normal((3, 6))  # rank 3
    for seed in (None, 5):
        ws = dc.init.balanced(W, [6, 3, 5, 4], seed=seed)
        np.testing.assert_allclose(dc.end_to_end(ws), W, atol=1e-12)
        assert dc.metrics.imbalance(ws) < 1e-12
        norm = np.linalg.norm(W, 2) ** (1 / 3)
        np.testing.assert_allclose([np.linalg.norm(w, 2) for w in ws], norm, rtol=1e-12)
    with pytest.raises(ValueError, match="rank"):
        dc.init.balanced(W, [6, 2, 4])


def test_batched_inits_have_the_requested_structure():
    ws = dc.init.orthogonal([4, 6, 3], seed=1, scale=0.5, batch=3)
    assert ws[0].shape == (3, 6, 4) and ws[1].shape == (3, 3, 6)
    for w in ws:
        np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), 0.5, rtol=1e-12)
    rd = dc.init.rank_deficient([5, 5, 5], rank=2, scale=1.0, seed=3, batch=4)
    assert np.all(dc.metrics.numerical_rank(rd) == 2)
    ident = dc.init.identity([3, 3, 3], scale=2.0)
    np.testing.assert_array_equal(dc.end_to_end(ident), 4 * np.eye(3))
    g = dc.init.gaussian([50, 40], 0.1, seed=2)
    assert np.std(g[0]) == pytest.approx(0.1, rel=0.05)
    near = dc.init.perturb(ident, 1e-3, seed=0)
    assert 0 < np.max(np.abs(near[0] - ident[0])) < 1e-2
