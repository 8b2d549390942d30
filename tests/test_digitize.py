"""The digitizer reads back curves that the test draws itself, to within a pixel."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from dlncore.experiments import digitize as dg  # noqa: E402

X_DECADES = [1e0, 1e1, 1e2, 1e3, 1e4]
BLUE, ORANGE = "#1f77b4", "#ff7f0e"  # explicit: "C0" would depend on the active style


def _curves():
    return {
        "a": lambda x: 50.0 / (1.0 + (x / 300.0) ** 1.5) + 1e-3,
        "b": lambda x: 80.0 * np.exp(-x / 2000.0) + 1e-2,
    }


def _linear_curves():
    return {
        "a": lambda x: 1.0 + 0.03 * np.sin(2 * np.log10(x)),
        "b": lambda x: 0.94 + 0.005 * np.log10(x),
    }


def _render(tmp_path, ylog: bool):
    """Draw the test curves in matplotlib's default style (other tests change the style)."""
    with plt.style.context("default"):
        return _draw(tmp_path, ylog)


def _draw(tmp_path, ylog: bool):
    x = np.geomspace(1, 1e4, 2000)
    fig, ax = plt.subplots(figsize=(6.13, 5.07), dpi=100)
    for (name, f), color in zip(_curves().items(), (BLUE, ORANGE), strict=True):
        y = f(x) if ylog else _linear_curves()[name](x)
        ax.plot(x, y, color=color, label=name)
    ax.set_xscale("log")
    ax.set_xlim(0.5, 2e4)
    if ylog:
        ax.set_yscale("log")
        ax.set_ylim(3e-4, 3e2)
        ax.set_yticks([1e-3, 1e-1, 1e1])
        ax.set_yticks([], minor=True)
    else:
        ax.set_ylim(0.93, 1.07)
        ax.set_yticks([0.94, 0.97, 1.0, 1.03, 1.06])
    ax.grid(True)
    ax.legend(loc="lower left")
    path = tmp_path / "figure.png"
    fig.savefig(path)
    pixels = ax.transData.transform  # data -> display pixels (origin bottom left)
    plt.close(fig)
    return path, pixels


def _pixel_error(pixels, x, y, f):
    """Distance in pixels from each digitized point to the true curve ``f`` (densely drawn),
    without the two end columns (line caps)."""
    x, y = x[1:-1], y[1:-1]
    xs = np.geomspace(1, 1e4, 200_000)  # the drawn range
    curve = pixels(np.column_stack([xs, f(xs)]))
    return cKDTree(curve).query(pixels(np.column_stack([x, y])))[0]


def test_log_log_curves_read_back_within_a_pixel(tmp_path):
    path, pixels = _render(tmp_path, ylog=True)
    out = dg.digitize(dg.read_image(path), {"a": BLUE, "b": ORANGE}, X_DECADES, [1e-3, 1e-1, 1e1])
    for name, f in _curves().items():
        x, y = out[name]
        assert x.size > 300  # most columns are found
        assert x.min() < 1.2 and x.max() > 8e3
        err = _pixel_error(pixels, x, y, f)
        assert np.max(err) <= 1.0, (name, np.max(err))


def test_linear_axis_from_ticks_and_the_legend_is_masked(tmp_path):
    path, pixels = _render(tmp_path, ylog=False)
    image = dg.read_image(path)
    assert dg.legend_box(image, dg.find_frame(image)) is not None
    out = dg.digitize(
        image,
        {"a": BLUE, "b": ORANGE},
        X_DECADES,
        [0.94, 0.97, 1.0, 1.03, 1.06],
        y_log=False,
        y_from="ticks",
    )
    for name, f in _linear_curves().items():
        x, y = out[name]
        assert x.size > 300
        err = _pixel_error(pixels, x, y, f)
        assert np.max(err) <= 1.0, (name, np.max(err))


def test_wrong_number_of_reference_values_is_a_clear_error(tmp_path):
    path, _ = _render(tmp_path, ylog=True)
    with pytest.raises(dg.DigitizeError, match="found 5 reference lines"):
        dg.digitize(dg.read_image(path), {"a": BLUE}, X_DECADES[:4], [1e-3, 1e-1, 1e1])


def test_cli_writes_a_csv_with_the_source_and_rejects_bad_input(tmp_path, capsys):
    path, _ = _render(tmp_path, ylog=True)
    out = tmp_path / "curves.csv"
    args = [str(path), "--x-values", "1,10,100,1000,10000", "--y-values", "1e-3,1e-1,10"]
    args += ["--curve", f"a={BLUE}", "--source", "test figure", "-o", str(out)]
    assert dg.main(args) == 0
    text = out.read_text()
    assert text.startswith("# test figure\n")
    # the header records the full command, with the image by name and without the output
    want = f"# digitized with: python -m dlncore.experiments.digitize {path.name} --x-values "
    assert want + "1,10,100,1000,10000 --y-values 1e-3,1e-1,10 --curve 'a=" in text
    assert "--source 'test figure'\n" in text and str(out) not in text
    curves = dg.read_csv(out)
    assert set(curves) == {"a"} and curves["a"][0].size > 300
    bad = tmp_path / "bad.csv"
    wrong = [str(path), "--x-values", "1,10", *args[3:-1], str(bad)]
    assert dg.main(wrong) == 2
    assert "found 5 reference lines" in capsys.readouterr().err
    assert not bad.exists()
