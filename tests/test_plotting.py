"""The shared plotting helpers."""

import base64
import struct

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dlncore as dc  # noqa: E402
import dlncore.plotting  # noqa: E402


def test_band_draws_the_median_and_quantiles(tmp_path):
    dc.plotting.set_style()
    x = np.arange(3)
    values = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]] * 3) * np.array([[1.0], [10.0], [100.0]])
    fig, ax = plt.subplots()
    dc.plotting.band(ax, x, values, quantiles=(0.25, 0.75), label="median")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [3.0, 30.0, 300.0])
    polygon = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert polygon.min() == pytest.approx(2.0) and polygon.max() == pytest.approx(400.0)
    assert dc.plotting.save_figure(fig, "fig-test", tmp_path / "figures") is None
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "fig-test.png",
        "fig-test.svg",
    ]
    assert (tmp_path / "figures" / "fig-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "figures" / "fig-test.svg").read_text()
    plt.close(fig)


def test_svg_figures_are_byte_for_byte_reproducible(tmp_path):
    dc.plotting.set_style()
    outputs = []
    for run in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1, 2], [1.0, 0.1, 0.01])
        dc.plotting.loss_axes(ax)
        dc.plotting.save_figure(fig, "fig", tmp_path / str(run))
        outputs.append((tmp_path / str(run) / "fig.svg").read_bytes())
        plt.close(fig)
    assert outputs[0] == outputs[1]


def test_set_style_shows_inline_figures_at_twice_their_size_in_a_kernel():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        dc.plotting.set_style()
        fig, ax = plt.subplots(figsize=(4.0, 3.0))
        ax.plot([0, 1], [1, 0])
        data, metadata = shell.display_formatter.format(fig)
        png = base64.b64decode(data["image/png"])
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        shown = metadata["image/png"]
        assert (shown["width"], shown["height"]) == (width // 2, height // 2)
        assert 2 * 3.5 * 110 < width <= 2 * 4.0 * 110  # tight bounding box at figure.dpi
        plt.close(fig)
    finally:
        InteractiveShell.clear_instance()


def test_save_figure_in_a_kernel_shows_the_saved_png_once_and_closes_the_figure(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    try:
        dc.plotting.set_style()
        fig, ax = plt.subplots(figsize=(4.0, 3.0))
        ax.plot([1, 10, 100], [1.0, 0.1, 0.01])
        dc.plotting.loss_axes(ax)
        inline, inline_metadata = shell.display_formatter.format(fig)  # what it showed before
        with capture_output() as shown:
            dc.plotting.save_figure(fig, "fig", tmp_path)
        (output,) = shown.outputs
        png = base64.b64decode(output.data["image/png"])
        assert png == (tmp_path / "fig.png").read_bytes()  # drawn once for the file and the page
        assert png == base64.b64decode(inline["image/png"])
        assert output.metadata["image/png"] == inline_metadata["image/png"]
        assert not plt.fignum_exists(fig.number)  # not drawn again at the end of the cell
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.parametrize(
    ("n", "panel", "shape", "size"),
    [
        (3, (4.0, 3.9), (1, 3), (12.0, 3.9)),  # fits in 12 inches: one row
        (3, (5.2, 4.0), (2, 2), (10.4, 8.0)),  # two per row, the last cell removed
        (1, (13.0, 2.0), (1, 1), (13.0, 2.0)),  # a panel wider than the limit still shows
        (10, (3.6, 3.0), (4, 3), (10.8, 12.0)),
    ],
)
def test_panel_grid_wraps_panels_into_rows(n, panel, shape, size):
    fig, axes = dc.plotting.panel_grid(n, panel, sharey=True)
    assert len(axes) == n and len(fig.axes) == n
    rows = {ax.get_subplotspec().rowspan.start for ax in axes}
    columns = {ax.get_subplotspec().colspan.start for ax in axes}
    assert (len(rows), len(columns)) == shape
    assert tuple(fig.get_size_inches()) == pytest.approx(size)
    plt.close(fig)


def test_dims_text_writes_the_layer_dimensions_as_math():
    from dlncore.plotting import dims_text

    assert dims_text([8, 8, 8, 8]) == r"$d_0 = \dots = d_N = 8$"
    assert dims_text([5, 5]) == r"$d_0 = d_N = 5$"
    assert dims_text([8, 6, 8]) == r"$(d_0, \dots, d_N) = (8, 6, 8)$"
    assert dims_text([3]) == "$d_0 = 3$"
