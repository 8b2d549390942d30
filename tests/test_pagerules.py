"""The rules every chapter page is rendered with (dlnbook.pagerules)."""

from __future__ import annotations

import copy

from dlnbook.pagerules import SHOW_INPUT, apply_page_rules


def _code(tags=None, mystnb=None):
    metadata = {}
    if tags is not None:
        metadata["tags"] = tags
    if mystnb is not None:
        metadata["mystnb"] = mystnb
    return {"cell_type": "code", "metadata": metadata, "source": "x = 1", "outputs": []}


def test_code_is_folded_except_the_cells_that_teach():
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": "# Title"},
        _code(["parameters", "remove-cell"]),
        _code(),
        _code([SHOW_INPUT]),
        _code(["remove-input"]),
        _code(["hide-cell"]),
        _code(["other"]),
    ]
    nb = apply_page_rules({"cells": copy.deepcopy(cells)})
    tags = [c["metadata"].get("tags") for c in nb["cells"]]
    assert tags == [
        None,
        ["parameters", "remove-cell"],
        ["hide-input"],
        [SHOW_INPUT],
        ["remove-input"],
        ["hide-cell"],
        ["other", "hide-input"],
    ]
    again = apply_page_rules(copy.deepcopy(nb))
    assert again == nb  # applying twice adds nothing


def test_images_with_a_display_width_keep_their_aspect_ratio():
    retina = {"image/png": {"width": 500, "height": 300}}
    plain = {"image/png": {"height": 300}}
    outputs = [
        {"output_type": "display_data", "data": {"image/png": "..."}, "metadata": retina},
        {"output_type": "display_data", "data": {"image/png": "..."}, "metadata": plain},
        {"output_type": "stream", "name": "stdout", "text": "x"},
    ]
    cell = _code()
    cell["outputs"] = outputs
    apply_page_rules({"cells": [cell]})
    assert [o.get("metadata") for o in cell["outputs"]] == [
        {"image/png": {"width": 500}},
        {"image/png": {"height": 300}},
        None,
    ]
