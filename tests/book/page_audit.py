"""What a reader sees on a built page, measured in the browser: math left as TeX, MathJax
errors, math wider than its box, figures against their natural size and code shown by default.

Used by ``test_browser.py``; ``python -m tests.book.page_audit BUILT_HTML_DIR`` prints the same
measurements for every page of a built book (the numbers quoted in the README).
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

# Runs in a loaded page (after MathJax finished: see ``Browser.inspect``). Rectangles are CSS
# pixels at the window's width.
AUDIT_PAGE = r"""
const article = document.querySelector("article") || document.body;
const text = article.cloneNode(true);
text.querySelectorAll("pre, code, mjx-container, script, style, .cell_input").forEach(
  e => e.remove());
const prose = text.textContent;
const raw = ["$", "\\(", "\\)", "\\[", "\\]"].filter(s => prose.includes(s)).map(
  s => [s, prose.slice(Math.max(0, prose.indexOf(s) - 60), prose.indexOf(s) + 60)]);
const isInline = e => ["inline", "contents"].includes(getComputedStyle(e).display);
const box = e => {
  const r = e.getBoundingClientRect(), s = getComputedStyle(e);
  return {left: r.left + parseFloat(s.paddingLeft) + parseFloat(s.borderLeftWidth),
          right: r.right - parseFloat(s.paddingRight) - parseFloat(s.borderRightWidth)};
};
const overflowing = [];
for (const math of document.querySelectorAll("mjx-container > mjx-math")) {
  let block = math.parentElement.parentElement;
  while (block && isInline(block)) block = block.parentElement;
  if (!block || math.getBoundingClientRect().width === 0) continue;
  const r = math.getBoundingClientRect(), b = box(block);
  const over = Math.max(r.right - b.right, b.left - r.left);
  if (over > 1) overflowing.push({
    px: Math.round(over), tex: (math.parentElement.getAttribute("aria-label") || "")
      .slice(0, 80), in: block.tagName + "." + block.className,
    text: block.textContent.slice(0, 80)});
}
const visible = e => !e.closest("details:not([open])") && e.getClientRects().length > 0;
const codeBlocks = [...article.querySelectorAll(".cell_input pre, div.highlight pre")]
  .filter(p => !p.closest(".cell_output"));
const shownCode = codeBlocks.filter(visible);
const wide = p => {  // lines of a monospace block that need sideways scrolling
  const rows = p.textContent.replace(/\n$/, "").split("\n");
  const perChar = p.scrollWidth / Math.max(...rows.map(r => r.length), 1);
  return p.scrollWidth > p.clientWidth + 1 ?
    rows.filter(r => r.length * perChar > p.clientWidth).length : 0;
};
const lines = p => p.textContent.replace(/\n$/, "").split("\n").length;
return {
  raw: raw,
  errors: [...document.querySelectorAll("mjx-merror, [data-mjx-error]")].map(
    e => e.getAttribute("data-mjx-error") || e.textContent),
  overflowing: overflowing,
  typeset: document.querySelectorAll("mjx-container").length,
  figures: [...article.querySelectorAll("figure img, .cell_output img")].map(i => ({
    src: i.currentSrc || i.src, alt: i.getAttribute("alt") || "",
    caption: (i.closest("figure")?.querySelector(".caption-text")?.textContent || ""),
    loaded: i.complete && i.naturalWidth > 0,
    natural: i.naturalWidth, shown: i.getBoundingClientRect().width})),
  codeLines: shownCode.map(lines).reduce((a, b) => a + b, 0),
  codeLinesAll: codeBlocks.map(lines).reduce((a, b) => a + b, 0),
  codeBlocks: codeBlocks.length,
  codeCellsShown: shownCode.filter(p => p.closest(".cell_input")).length,
  wideLines: shownCode.map(wide).reduce((a, b) => a + b, 0),
};
"""

_TICK_TEXT = re.compile(r'id="[xy]tick_\d+">.*?font-size:\s*([0-9.]+)px', re.DOTALL)
_VIEWBOX = re.compile(r'viewBox="\s*[-0-9.]+\s+[-0-9.]+\s+([0-9.]+)\s+[0-9.]+\s*"')


def svg_tick_text(path: Path) -> tuple[float, float] | None:
    """Smallest tick-label font size of a matplotlib SVG and the width of its view box (same
    units), or None when the ticks have no text elements (``svg.fonttype`` other than ``none``).
    """
    content = path.read_text(encoding="utf-8")
    sizes = [float(s) for s in _TICK_TEXT.findall(content)]
    width = _VIEWBOX.search(content)
    if not sizes or width is None:
        return None
    return min(sizes), float(width.group(1))


def png_dpi(path: Path) -> float | None:
    """Resolution a PNG declares (its ``pHYs`` chunk, as matplotlib writes it), else None."""
    data = path.read_bytes()
    at = 8  # after the signature: chunks of length, type, data, CRC
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"pHYs":
            per_x, _, unit = struct.unpack(">IIB", data[at + 8 : at + 17])
            return per_x * 0.0254 if unit == 1 else None
        at += 12 + length
    return None


def style_tick_points() -> float:
    """Tick-label size in points of the book's figure style (``dc.plotting.set_style``)."""
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    import dlncore.plotting

    with mpl.rc_context():
        dlncore.plotting.set_style()
        sizes = [mpl.rcParams[f"{axis}tick.labelsize"] for axis in "xy"]
        return min(FontProperties(size=size).get_size_in_points() for size in sizes)


def tick_text_px(figure: dict[str, Any], tick_points: float) -> float | None:
    """On-page size in CSS pixels of the tick labels of a figure read from disk (``file://``):
    measured from the text of an SVG; for a PNG, the style's ``tick_points`` at the resolution
    the PNG declares, scaled as the page scales the image. None when neither applies."""
    path = Path(unquote(urlsplit(figure["src"]).path))
    if not path.is_file():
        return None
    scale = figure["shown"] / figure["natural"] if figure["natural"] else None
    if path.suffix == ".svg":
        found = svg_tick_text(path)
        if found is None:
            return None
        size, width = found
        return size * figure["shown"] / width
    dpi = png_dpi(path) if path.suffix == ".png" else None
    return None if dpi is None or scale is None else tick_points / 72 * dpi * scale


def _pages(html: Path) -> list[Path]:
    skip = {"genindex.html", "search.html"}
    pages = html.rglob("*.html")
    return sorted(
        p
        for p in pages
        if p.name not in skip
        and not any(part.startswith("_") for part in p.relative_to(html).parts)
    )


def main(html: Path) -> None:
    """Print the audit of every page of the book built into ``html``."""
    from tests.book.conftest import Browser, find_browser

    found = find_browser()
    if found is None:
        raise SystemExit("Chromium or chromedriver is not installed")
    browser = Browser(*found, Path("/tmp") / "page-audit-profile")
    browser.driver.set_window_size(1300, 2000)
    tick_points = style_tick_points()
    try:
        for page in _pages(html):
            browser.open(page.as_uri())
            browser.inspect()
            report = browser.run(AUDIT_PAGE)
            for fig in report["figures"]:
                fig["tick_px"] = tick_text_px(fig, tick_points)
            print(json.dumps({"page": str(page.relative_to(html)), **report}))
    finally:
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
