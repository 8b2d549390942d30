"""Tests of dlncore.experiments.deep_rank (chapter 5) against independent computations."""

from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest

from dlncore.experiments import deep_rank
from dlncore.saddles import EscapeScan


def test_escape_fit_recovers_an_exact_power_law():
    eps = np.geomspace(1e-3, 1e-1, 5)
    times = 7.0 * eps[:, None] ** -2.0 * np.ones((1, 3))  # k = 7 eps^-2: N = 4
    pred, got, ref = deep_rank.escape_fit(EscapeScan(eps, times, 0.5), eps, 4, 0.1, 2.0)
    assert pred == -2.0
    assert got == pytest.approx(-2.0, rel=1e-12)
    np.testing.assert_allclose(ref, 7.0 * eps**-2.0, rtol=1e-12)


def test_escape_fit_two_layers_predicts_the_log_slope():
    eps = np.geomspace(1e-4, 1e-1, 4)
    eta, s1 = 0.1, 2.0
    slope = 1.0 / np.log(1.0 + eta * s1)
    times = (slope * np.log(1 / eps) + 3.0)[:, None] * np.ones((1, 2))
    times[0, :] = np.nan  # the smallest scale is censored: left out of the fit
    pred, got, ref = deep_rank.escape_fit(EscapeScan(eps, times, 0.5), eps, 2, eta, s1)
    assert pred == pytest.approx(slope, rel=1e-14)
    assert got == pytest.approx(slope, rel=1e-10)
    np.testing.assert_allclose(ref[1:], times[1:, 0], rtol=1e-10)  # offset fitted: c = 3


def test_escape_fit_without_escapes_is_nan_not_an_error():
    eps = np.geomspace(1e-3, 1e-1, 3)
    times = np.full((3, 2), np.nan)
    _, got, ref = deep_rank.escape_fit(EscapeScan(eps, times, 0.5), eps, 3, 0.1, 1.0)
    assert np.isnan(got) and np.all(np.isnan(ref))


def test_flat_stretches_finds_the_steps_of_a_staircase():
    it = np.concatenate([[0], np.unique(np.geomspace(1, 1e5, 51).astype(int))])
    # excess: 10 up to k = 100, 1 from 1e3 to 1e4, 0.01 after 3e4, steep in between
    excess = np.interp(
        np.log10(np.maximum(it, 1)), [0, 2, 3, 4, 4.5, 5], [10, 10, 1, 1, 0.01, 0.01]
    )
    found = deep_rank.flat_stretches(it, excess, tol=0.02, dwell=0.3)
    levels = [excess[i] for i, _ in found]
    assert levels == pytest.approx([10, 1, 0.01], rel=0.04)  # the band: +-2 %
    for i, j in found:
        window = excess[i : j + 1]
        assert window.max() <= 1.04 * window.min()
        assert np.log10(it[j] / it[i]) >= 0.3
    # a longer required dwell keeps only the long plateaus (2 decades and 1 decade)
    assert len(deep_rank.flat_stretches(it, excess, tol=0.02, dwell=1.5)) == 1


def test_critical_excess_against_index_sets():
    sigma = np.array([3.0, 1.5, 0.7, 0.2])
    r = 3
    critical = deep_rank.critical_excess(sigma, r)
    for k in range(r + 1):
        expected = sorted(
            0.5 * sum(sigma[i] ** 2 for i in range(r) if i not in s)
            for s in combinations(range(r), k)
        )
        assert sorted(v for _, v in critical[k]) == pytest.approx(expected)
        (top,) = [v for is_top, v in critical[k] if is_top]
        assert top == pytest.approx(0.5 * np.sum(sigma[k:r] ** 2))  # L*_k - L*_r


def test_plateau_checks_on_a_synthetic_staircase():
    sigma = np.array([2.0, 1.0, 0.5])
    r = 3
    opt = 0.1 + 0.5 * np.array([np.sum(sigma[k:] ** 2) for k in range(r + 1)])
    lines = opt - opt[r]
    it = np.concatenate([[0], np.unique(np.geomspace(1, 1e6, 121).astype(int))])
    x = np.log10(np.maximum(it, 1))
    on_lines = np.interp(
        x,
        [0, 1, 2, 2.5, 3.5, 4, 5, 5.5, 6],
        [*[lines[0]] * 2, *[lines[1]] * 2, *[lines[2]] * 2, *[1e-9] * 3],
    )
    off = on_lines.copy()
    off[(x >= 2) & (x <= 3.5)] = 0.5 * (sigma[0] ** 2 + sigma[2] ** 2)  # a rival rank-1 value
    run = SimpleNamespace(iterations=it, loss=np.column_stack([on_lines, off]) + opt[r])
    rows = deep_rank.plateau_checks(run, opt, deep_rank.critical_excess(sigma, r), 0.02, 0.3)
    assert rows[:, :2].tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]  # both lines crossed
    start0, start1 = rows[rows[:, 0] == 0], rows[rows[:, 0] == 1]
    assert np.all(start0[:, 2] < 1e-12) and np.all(start0[:, 3] > 0.1)  # on the lines
    assert start1[0, 2] > start1[0, 3]  # k = 1: its plateau is on the rival value


def test_plateau_checks_without_crossing_or_plateau():
    opt = np.array([3.0, 2.0, 1.0])
    critical = deep_rank.critical_excess(np.array([1.0, 1.0]), 2)
    it = np.arange(5)
    above = SimpleNamespace(iterations=it, loss=np.full((5, 1), 10.0))  # never crosses k = 1
    assert deep_rank.plateau_checks(above, opt, critical, 0.02, 0.1).shape == (0, 4)
    steep = SimpleNamespace(iterations=it, loss=np.array([[10.0], [5], [2], [1.2], [1.0]]))
    assert deep_rank.plateau_checks(steep, opt, critical, 0.02, 0.1).tolist() == [
        [0, 1, np.inf, 0.0]
    ]


def test_final_rank_rows_reads_each_budget_and_blanks_diverged_starts():
    it = np.array([0, 10, 100])
    metric = np.arange(6, dtype=float).reshape(3, 2)
    run = SimpleNamespace(
        iterations=it,
        diverged=np.array([False, True]),
        diverged_at=np.array([0, 50]),
        metrics={"rank": metric, "excess": metric + 10, "grad_norm": metric + 20},
    )
    scales = np.array([0.1, 0.2])
    rows = deep_rank.final_rank_rows({3: run}, [10, 100], scales)
    expected = [
        [3, 10, 2, 12, 22, 0.1],
        [3, 10, 3, 13, 23, 0.2],  # diverged at 50, after this budget: still read
        [3, 100, 4, 14, 24, 0.1],
        [3, 100, np.nan, np.nan, np.nan, 0.2],
    ]
    np.testing.assert_array_equal(rows, np.array(expected))


OPT5 = np.array([5.27, 0.605, 0.0602, 0.00604, 0.000934, 0.000203])  # L*_0 .. L*_5


def test_left_rank_sentence_says_where_the_starts_ended_not_that_they_reached_the_minimum():
    # full-scale chapter 5, N = 2: all 12 starts left rank <= q and sit on the L*_4 plateau
    ranks = np.full(12, 4)
    q = np.repeat([1, 2, 3], 4)
    excess = np.array([-1.5e-15, -3.9e-12] + [-1e-13] * 10)
    grad = np.array([1.1e-8, 5.6e-7] + [1e-7] * 10)
    text = deep_rank.left_rank_sentence(ranks, q, excess, grad, OPT5, 1e-8, 1e-10, 20000)
    assert text == (
        "all 12 starts leave the set of rank $≤ q$ through rounding alone, as expected for $N = "
        "2$, where every critical point that is not a global minimum is a strict saddle (the "
        "paper's argument): after 20000 iterations they have numerical rank 4 and their loss is "
        "$L^*_{4}$ up to 3.9e-12, below $L^*_q$ but above the global minimum $L^*_{5}$ = "
        "0.000203; their gradient norms (up to 5.6e-07, above `grad_tol`) show that they are "
        "still on the plateau at $L^*_{4}$ and have not converged"
    )


def test_left_rank_sentence_for_mixed_outcomes():
    ranks = np.array([1, 5, 5, 4])
    q = np.array([1, 1, 2, 3])
    excess = np.array([1e-14, 2e-15, -1e-15, 1e-13])
    grad = np.array([1e-12, 1e-12, 1e-12, 1e-12])
    text = deep_rank.left_rank_sentence(ranks, q, excess, grad, OPT5, 1e-8, 1e-10, 100)
    assert text == (
        "3 of 4 starts leave the set of rank $≤ q$ through rounding alone (1 keeps rank $≤ q$): "
        "after 100 iterations they have numerical rank 4 or 5 and their loss is $L^*_k$ of their "
        "own rank $k$ up to 1e-13 ($L^*_{4}$: 1, $L^*_{5}$: 2), below $L^*_q$; 2 are at the "
        "global minimum $L^*_{5}$ = 0.000203, and all gradient norms are at most 1e-12 (within "
        "`grad_tol`)"
    )


def test_left_rank_sentence_when_none_leaves():
    ranks, q = np.array([1, 2]), np.array([1, 2])
    text = deep_rank.left_rank_sentence(ranks, q, np.zeros(2), np.zeros(2), OPT5, 1e-8, 1e-10, 50)
    assert text == "none of the 2 starts leaves the set of rank $≤ q$ within 50 iterations"
    one = deep_rank.left_rank_sentence([1], [1], [0.0], [0.0], OPT5, 1e-8, 1e-10, 0)
    assert one == "the one start does not leave the set of rank $≤ q$ within 0 iterations"


@pytest.mark.parametrize(
    ("grad", "ending"),
    [
        (
            [8.6e-9, 5.6e-7, 1e-7],
            "; their gradient norms (up to 5.6e-07, 2 of 3 above `grad_tol`) show that the 2 "
            "above it are still on the plateau at $L^*_{4}$ and have not converged; the other one "
            "is below `grad_tol` although it sits on the plateau at $L^*_{4}$ too, a strict "
            "saddle: a small gradient does not certify a limit",
        ),
        (
            [8.6e-9, 5.6e-7, 1e-9],
            "(up to 5.6e-07, 1 of 3 above `grad_tol`) show that the one above it is still on the "
            "plateau at $L^*_{4}$ and has not converged; the other 2 are below `grad_tol` "
            "although they sit on the plateau at $L^*_{4}$ too, a strict saddle: a small gradient "
            "does not certify a limit",
        ),
    ],
)
def test_left_rank_sentence_when_starts_on_the_plateau_pass_grad_tol(grad, ending):
    ranks, q = np.full(3, 4), np.array([1, 2, 3])
    text = deep_rank.left_rank_sentence(
        ranks, q, np.zeros(3), np.array(grad), OPT5, 1e-8, 1e-10, 20000
    )
    assert text.endswith(ending)


def test_left_rank_sentence_says_near_not_at_when_the_loss_is_still_moving():
    ranks, q = np.array([2, 3, 1]), np.array([1, 2, 1])
    excess, grad = np.array([0.052, 0.01, 0.0]), np.array([0.04, 0.01, 0.02])
    text = deep_rank.left_rank_sentence(ranks, q, excess, grad, OPT5, 1e-8, 1e-10, 3000)
    assert text == (
        "2 of 3 starts leave the set of rank $≤ q$ through rounding alone (1 keeps rank $≤ q$): "
        "after 3000 iterations they have numerical rank 2 or 3 and their loss is within 0.052 of "
        "$L^*_k$ of their own rank $k$ ($L^*_{2}$: 1, $L^*_{3}$: 1), below $L^*_q$ but above the "
        "global minimum $L^*_{5}$ = 0.000203; their gradient norms (up to 0.04) show that 2 have "
        "not converged"
    )


def test_left_rank_sentence_speaks_of_one_start_in_the_singular():
    one_of_three = deep_rank.left_rank_sentence(
        [4, 1, 2], [1, 1, 2], [1e-13, 0, 0], [5.6e-7, 0, 0], OPT5, 1e-8, 1e-10, 20000
    )
    assert one_of_three == (
        "1 of 3 starts leaves the set of rank $≤ q$ through rounding alone (2 keep rank $≤ q$): "
        "after 20000 iterations it has numerical rank 4 and its loss is $L^*_{4}$ up to 1e-13, "
        "below $L^*_q$ but above the global minimum $L^*_{5}$ = 0.000203; its gradient norm "
        "(5.6e-07, above `grad_tol`) shows that it is still on the plateau at $L^*_{4}$ and has "
        "not converged"
    )
    # the only start, with the rank of the global minimum but its loss still 0.05 away
    alone = deep_rank.left_rank_sentence([5], [1], [0.05], [0.056], OPT5, 1e-8, 1e-10, 20)
    assert alone == (
        "the one start leaves the set of rank $≤ q$ through rounding alone, as expected for $N = "
        "2$, where every critical point that is not a global minimum is a strict saddle (the "
        "paper's argument): after 20 iterations it has numerical rank 5 and its loss is within "
        "0.05 of $L^*_{5}$, below $L^*_q$; it has the rank 5 of the global minimum $L^*_{5}$ = "
        "0.000203; its gradient norm (0.056) shows that it has not converged"
    )


def test_signed_offset_says_below_when_the_loss_is_under_its_optimum():
    # full-scale chapter 5: the stalled runs reach 8.8e-05 below L*_k (numerical rank undercounts)
    assert deep_rank.signed_offset([-8.8e-5, 6.1e-7, np.nan]) == (
        "between 8.8e-05 below and 6.1e-07 above"
    )
    assert deep_rank.signed_offset([-8.8e-5, -1e-9]) == "up to 8.8e-05 below"
    assert deep_rank.signed_offset([2e-9]) == "up to 2e-09 above"
    assert deep_rank.signed_offset([0.0]) == "exactly at"
    assert deep_rank.signed_offset([np.nan]) == "n/a (none)"


def test_stalled_sentence_separates_plateau_between_and_full_rank():
    # a rank-4 run 7 % of the way down to L*_5 is not on a plateau; rank 5 = r misses nothing
    ranks = np.array([4, 2, 5, 4])
    excess = np.array([-0.07 * (OPT5[4] - OPT5[5]), -1e-9, 2e-9, 1e-8])
    text = deep_rank.stalled_sentence(ranks, excess, OPT5, 0.02, previous=np.array([3, 2, 3, 3]))
    assert text == (
        "The other 4 runs (open markers), of numerical rank 2, 4 or 5, have a gradient norm above "
        "`grad_tol`: they have not converged. Their loss lies between 5.1e-05 below and 1e-08 "
        "above $L^*_k$ for their current rank $k$. Of them, 2 are on the plateau at $L^*_k$ of a "
        "rank $k < r$ ($|L − L^*_k| ≤$ `plateau_tol` $(L^*_k − L^*_r)$); 1 is between plateaus, "
        "below $L^*_k$ of their rank by up to 0.07 $(L^*_k − L^*_r)$, beyond `plateau_tol` = "
        "0.02; and 1 has the full rank $r$ = 5. 3 of 4 showed another numerical rank at the "
        "previous budget."
    )
    assert "still growing" not in text
    above = deep_rank.stalled_sentence(np.array([1]), np.array([5.3]), OPT5, 0.02)
    assert above.endswith(
        "it is above $L^*_k$ of its rank by up to 8.8 $(L^*_k − L^*_r)$, beyond `plateau_tol` = "
        "0.02."
    )


def test_stalled_sentence_for_one_run_and_for_none():
    one = deep_rank.stalled_sentence(np.array([5]), np.array([1e-9]), OPT5, 0.02)
    assert one == (
        "The other run (open marker), of numerical rank 5, has a gradient norm above `grad_tol`: "
        "it has not converged. Its loss lies up to 1e-09 above $L^*_k$ for its current rank $k$; "
        "it has the full rank $r$ = 5."
    )
    none = deep_rank.stalled_sentence(np.array([]), np.array([]), OPT5, 0.02)
    assert none == "No run has a gradient norm above `grad_tol` after the largest budget."
