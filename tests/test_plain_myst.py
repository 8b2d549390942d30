"""MyST markup of executed chapters turned into plain Markdown for the standalone page."""

from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dlnbook.plain_myst import flatten_myst


def glue_output(name: str, text: str):
    return new_output(
        "display_data",
        data={"application/papermill.record/text/plain": text},
        metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}},
    )


def chapter():
    figure = {"mystnb": {"figure": {"name": "fig-a", "caption": "Loss, gap {glue:text}`gap:.1e`."}}}
    code = new_code_cell(
        "glue(...)", outputs=[glue_output("gap", "0.000123"), glue_output("ok", "'yes'")]
    )
    return new_notebook(
        cells=[
            new_markdown_cell(
                "By {prf:ref}`thm-main` and {cite}`nguegnang2024, bah2022`, see {numref}`fig-b`."
            ),
            code,
            new_code_cell("plot()", metadata=figure),
            new_code_cell("plot()", metadata={"mystnb": {"figure": {"name": "fig-b"}}}),
            new_markdown_cell(
                "```{prf:lemma} Small\n:label: lem-small\n\nA lemma.\n```\n\n"
                "```{prf:theorem} Main\n:label: thm-main\n\nHolds: {glue:text}`ok`, "
                "$x \\ge 0$, {numref}`Figure {number} <fig-a>`.\n```\n\n"
                "```{prf:proof}\nBy {prf:ref}`lem-small`.\n```\n\n"
                ":::{admonition} Checks\n:class: tip\n| a | b |\n| --- | --- |\n| 1 | 2 |\n:::"
            ),
        ]
    )


def test_roles_directives_glue_and_captions_become_plain_markdown():
    nb = flatten_myst(chapter())
    first, code, fig_a, caption_a, _, caption_b, blocks = nb.cells
    assert first.source == "By Theorem 1 and [nguegnang2024, bah2022], see Fig. 2."
    assert code.outputs == []  # glue outputs are consumed
    assert caption_a.source == "**Fig. 1.** Loss, gap 1.2e-04."
    assert caption_b.source == "**Fig. 2.** "
    assert "> **Lemma 1 (Small).**\n>\n> A lemma." in blocks.source
    assert "> **Theorem 1 (Main).**\n>\n> Holds: yes, $x \\ge 0$, Figure 1." in blocks.source
    assert "> **Proof.**\n>\n> By Lemma 1." in blocks.source
    assert "**Checks.**\n\n| a | b |\n| --- | --- |\n| 1 | 2 |" in blocks.source
    assert "{" not in blocks.source.replace("{number}", "")


def test_original_notebook_is_not_modified():
    nb = chapter()
    flatten_myst(nb)
    assert len(nb.cells) == 5 and len(nb.cells[1].outputs) == 2
