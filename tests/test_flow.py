"""Gradient flow: conserved balancedness and first-order agreement with GD."""

import numpy as np
import pytest

import dlncore as dc


def test_flow_conserves_balancedness_and_tracks_gd(problem):
    w0 = dc.init.gaussian([5, 3, 4], 0.5, seed=6)
    flow = dc.gradient_flow(problem, w0, 2.0, metrics=["imbalance_drift"])
    assert np.max(flow.metrics["imbalance_drift"]) < 1e-9
    gaps = []
    for eta in (1e-2, 5e-3):
        run = dc.gd(problem, w0, eta, int(round(2.0 / eta)))
        diff = dc.end_to_end(run.weights) - dc.end_to_end(flow.weights)
        gaps.append(np.linalg.norm(diff))
    assert gaps[0] / gaps[1] == pytest.approx(2.0, rel=0.1)  # first order in eta
    assert flow.loss[-1] < flow.loss[0]
