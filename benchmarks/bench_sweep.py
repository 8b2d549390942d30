"""Sweep on this machine: speed-up of 2 workers over 1, and the driver's overhead per point.

Runs, each as its own ``dln-book`` process and into its own empty folders (nothing reused):

1. a plain ``dln-book run`` of chapter 1 with its smoke values (the baseline);
2. ``dln-book sweep`` of 8 smoke points (``seed_init=1..8``) with ``--workers 1``;
3. the same sweep with ``--workers 2``.

Prints the wall times, the speed-up of 2 workers over 1 (target: at least 1.7 on 2 free
cores) and the driver's overhead per point: the 1-worker sweep's wall time minus the time
its kernels spent executing the points (``seconds`` in ``points.csv``: kernel and chapter;
the page is rendered afterwards by ``dln-book`` and counts as overhead), divided by the
number of points. For comparison, the same overhead of the plain run (its wall time minus
its ``run.json`` seconds).

Usage: ``python benchmarks/bench_sweep.py`` (from the book's folder; about 2 minutes on two
free cores).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DLN_BOOK = Path(sys.executable).with_name("dln-book")
POINTS = 8


def smoke() -> list[str]:
    values = yaml.safe_load((ROOT / "profiles" / "smoke.yml").read_text())["01_setting"]
    return [f"{k}={v!r}" for k, v in values.items()]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(DLN_BOOK), "--book", str(ROOT), *args], check=True, capture_output=True)
    return time.perf_counter() - start


def sweep(workers: int, scratch: Path) -> tuple[float, float]:
    """Wall time of the sweep and the summed execution seconds of its points."""
    runs, sweeps = scratch / f"runs-{workers}", scratch / f"sweeps-{workers}"
    wall = timed(
        ["sweep", "1", "-p", *smoke(), f"seed_init=1:{POINTS}:{POINTS}"]
        + ["--workers", str(workers), "--runs-dir", str(runs), "--sweeps-dir", str(sweeps)]
    )
    (table,) = sweeps.glob("*/points.csv")
    with table.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == POINTS and {r["status"] for r in rows} == {"done"}
    return wall, sum(float(r["seconds"]) for r in rows)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        runs = scratch / "runs-plain"
        plain = timed(["run", "1", "-p", *smoke(), "seed_init=100", "--runs-dir", str(runs)])
        (record,) = runs.glob("*/run.json")
        plain_exec = json.loads(record.read_text())["seconds"]
        one, one_exec = sweep(1, scratch)
        two, _ = sweep(2, scratch)
    print(f"plain `dln-book run` of one smoke point: {plain:6.1f} s ({plain_exec:.1f} s executing)")
    print(f"sweep of {POINTS} smoke points, 1 worker:  {one:6.1f} s ({one / POINTS:.2f} s a point)")
    print(f"sweep of {POINTS} smoke points, 2 workers: {two:6.1f} s ({two / POINTS:.2f} s a point)")
    print(f"speed-up of 2 workers over 1: {one / two:.2f}x (target >= 1.7 on 2 free cores)")
    overhead = (one - one_exec) / POINTS
    print(
        f"executor overhead per point (1 worker): {overhead:.2f} s (target < 1 s); "
        f"plain run: {plain - plain_exec:.2f} s around {plain_exec:.1f} s of execution"
    )


if __name__ == "__main__":
    main()
