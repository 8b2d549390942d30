"""A diverging run is reported as diverged, never crashes a chapter (issue 12).

Each test runs a real chapter through ``dln-book run`` with its smoke values
(``profiles/smoke.yml``) plus a step size far above the convergence threshold, so that every
start diverges, and asserts exit 0, the divergence reported (printed ``Run.summary()`` lines
and glued counts), and "n/a" for the checks that measured nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dlnbook.cli import main

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "profiles" / "smoke.yml").read_text())


def run_diverging(name: str, tmp_path: Path, capfd, **change) -> tuple[str, dict[str, str]]:
    """Run chapter ``name`` on smoke values plus ``change``; its printed text and glued values."""
    values = {**SMOKE.get(name, {}), **change}
    overrides = [f"{k}={v!r}" for k, v in values.items()]
    assert (
        main(["--book", str(REPO), "run", name, "-p", *overrides, "--runs-dir", str(tmp_path)]) == 0
    )
    captured = capfd.readouterr()
    (folder,) = re.findall(r"^Run folder: (.+)$", captured.out + captured.err, re.M)
    nb = json.loads((Path(folder) / f"{name}.ipynb").read_text(encoding="utf-8"))
    printed, glued = [], {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                printed.append("".join(out["text"]))
            if "scrapbook" in out.get("metadata", {}):
                value = out["data"]["application/papermill.record/text/plain"]
                glued[out["metadata"]["scrapbook"]["name"]] = value.strip("'")
    return "".join(printed), glued


@pytest.mark.slow
def test_chapter5_reports_every_start_diverged(tmp_path, capfd):
    printed, glued = run_diverging("05_deep_rank", tmp_path, capfd, step_size=100.0)
    assert re.search(r"N = 3: gd: .* 4 of 4 start\(s\) diverged, first at iteration \d+", printed)
    assert int(glued["ch5-diverged"]) == 8  # all final-rank starts, 2 depths x 4
    assert glued["ch5-conv-ok"] == "n/a" and glued["ch5-exp-ok"] == "n/a"
    assert glued["ch5-stalled-last"] == "0"  # diverged runs are not counted as stalled


@pytest.mark.slow
def test_chapter7_reports_diverged_runs_and_no_stuck_run(tmp_path, capfd):
    printed, glued = run_diverging("07_experiments", tmp_path, capfd, step_size=100.0)
    assert re.search(r"^linear N = \d+ float64: gd: .* 1 of 1 start\(s\) diverged", printed, re.M)
    assert glued["ch7-held-plateau"] == "n/a"  # diverged runs are not "stuck on a plateau"
    assert glued["ch7-held-final64"] == "n/a"


@pytest.mark.slow
def test_chapter2_checks_say_na_when_every_step_size_diverges(tmp_path, capfd):
    printed, glued = run_diverging("02_boundedness", tmp_path, capfd, eta_min=50.0, eta_max=100.0)
    assert re.search(r"5 of 5 start\(s\) diverged, first at iteration \d+ \(loss", printed)
    assert glued["ch2-diverged"] == "5"
    for key in ("ch2-drift-ok", "ch2-slope-ok"):  # the norm checks see W(0): measured
        assert glued[key] == "n/a", key
    assert glued["ch2-descent-all"] == "no"


@pytest.mark.slow
def test_chapter6_fits_no_slope_over_a_step_size_that_diverged(tmp_path, capfd):
    # two step sizes, the larger diverges at T: one gap is left, so no slope (it fitted -35)
    printed, glued = run_diverging(
        "06_gd_vs_flow", tmp_path, capfd, num_times=2, base_steps=2, halvings=1, slope_points=2
    )
    assert "1 of 2 step sizes diverged" in printed and glued["ch6-diverged"] == "1"
    assert glued["ch6-slope-e2e"] == glued["ch6-slope-fac"] == "n/a"
    assert glued["ch6-held-slope"] == "n/a" and glued["ch6-held-converged"] == "no"
