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


def test_summary_says_one_layer_and_one_value_when_the_ends_agree(problem):
    one = dc.gd(problem, dc.init.gaussian([5, 4], 0.5, seed=1), 0.01, 20)
    assert one.summary().startswith("gd: 1 layer, 20 steps, final loss ")
    two = dc.gd(problem, dc.init.gaussian([5, 3, 4], 0.5, seed=1, batch=2), 0.01, 20)
    assert two.summary().startswith("gd: 2 layers, 20 steps, final loss ")
    same = dc.gd(problem, dc.network.repeat(dc.init.gaussian([5, 4], 0.5, seed=1), 3), 0.01, 20)
    assert same.summary() == f"gd: 1 layer, 20 steps, final loss {float(one.final_loss):.4g}"
    fl = np.atleast_1d(two.final_loss)
    assert f"final loss {fl.min():.4g}..{fl.max():.4g}" in two.summary()
