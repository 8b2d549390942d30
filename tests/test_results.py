"""The Run container and its .npz format."""

import numpy as np

import dlncore as dc


def test_save_and_load_round_trip(problem, tmp_path):
    run = dc.gd(
        problem,
        dc.init.gaussian([5, 3, 4], 0.5, seed=1, batch=2),
        0.01,
        20,
        metrics=["singular_values"],
    )
    path = run.save(tmp_path / "sub" / "run.npz")
    back = dc.Run.load(path)
    np.testing.assert_array_equal(back.loss, run.loss)
    np.testing.assert_array_equal(back.metrics["singular_values"], run.metrics["singular_values"])
    assert back.info == run.info and len(back.weights) == 2
    flow = dc.gradient_flow(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=1), 0.5, record=5)
    assert dc.Run.load(flow.save(tmp_path / "flow.npz")).iterations is None
