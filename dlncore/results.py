"""The result of a gradient-descent or gradient-flow run, and its ``.npz`` file format."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Run:
    """A recorded trajectory (thin container; every array is indexed by record first).

    Attributes
    ----------
    iterations : array (R,) of int
        Iterations ``k`` at which quantities were recorded (GD); for a flow, ``None``.
    time : array (R,) or (R, B)
        Continuous time ``t_k = Σ_{i<k} η_i`` (GD) or the flow's time.
    loss : array (R,) or (R, B)
        ``L^N`` at each record (exact form). The last record is the loss of ``weights``.
        For a start that diverged, records after its divergence are NaN (not drawn by
        matplotlib).
    metrics : dict of str to array (R, ...) or (R, B, ...)
        Requested metrics at each record.
    weights : list of arrays
        Final weights ``[W_1, ..., W_N]`` (for a diverged start: the last weights reached).
    diverged : bool array, shape () or (B,)
    diverged_at : int array, shape () or (B,)
        Iteration at which the loss exceeded the blow-up threshold, −1 if never.
    diverged_loss : float array, shape () or (B,)
        Loss at that iteration (``inf`` on overflow), NaN if the start did not diverge.
    extrema : dict of str to array (2,) or (2, B)
        ``[smallest, largest]`` value of each quantity over every iteration ``0..K`` (not only
        the records; NaN ignored, NaN if never finite); see ``gd(extrema=...)``.
    info : dict
        Plain description of the run (kind, steps, step size, dtype, seconds, ...).
    """

    iterations: np.ndarray | None
    time: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    weights: list[np.ndarray]
    diverged: np.ndarray
    diverged_at: np.ndarray
    diverged_loss: np.ndarray
    extrema: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def batched(self) -> bool:
        return self.weights[0].ndim == 3

    @property
    def final_loss(self) -> np.ndarray:
        """Loss at the last record (NaN for starts that diverged earlier)."""
        return self.loss[-1]

    def summary(self) -> str:
        """One line: what ran, the final loss, and which starts diverged (when, at what loss)."""
        kind = self.info.get("kind", "run")
        div = np.atleast_1d(self.diverged)
        layers = len(self.weights)
        head = f"{kind}: {layers} layer{'s' * (layers != 1)}, {self.info.get('steps', '?')} steps"
        if not div.any():
            fl = np.atleast_1d(self.final_loss)
            low, high = f"{fl.min():.4g}", f"{fl.max():.4g}"
            rng = low if low == high else f"{low}..{high}"  # equal ends once rounded: one value
            return f"{head}, final loss {rng}"
        at = np.atleast_1d(self.diverged_at)[div]
        lo = np.atleast_1d(self.diverged_loss)[div]
        return (
            f"{head}: {div.sum()} of {div.size} start(s) diverged, first at iteration "
            f"{at.min()} (loss {lo[np.argmin(at)]:.3g})"
        )

    def __repr__(self) -> str:
        return f"Run({self.summary()})"

    def save(self, path: str | Path) -> Path:
        """Write the run to ``path`` (``.npz``); returns the path written."""
        path = Path(path)
        arrays = {
            "time": self.time,
            "loss": self.loss,
            "diverged": self.diverged,
            "diverged_at": self.diverged_at,
            "diverged_loss": self.diverged_loss,
            "info": np.array(json.dumps(self.info)),
        }
        if self.iterations is not None:
            arrays["iterations"] = self.iterations
        for j, w in enumerate(self.weights):
            arrays[f"weight_{j}"] = w
        for name, value in self.metrics.items():
            arrays[f"metric_{name}"] = value
        for name, value in self.extrema.items():
            arrays[f"extremum_{name}"] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Read a run written by :meth:`save`."""
        with np.load(path) as data:
            n = sum(1 for key in data.files if key.startswith("weight_"))
            return cls(
                iterations=data["iterations"] if "iterations" in data.files else None,
                time=data["time"],
                loss=data["loss"],
                metrics={
                    key[len("metric_") :]: data[key]
                    for key in data.files
                    if key.startswith("metric_")
                },
                weights=[data[f"weight_{j}"] for j in range(n)],
                diverged=data["diverged"],
                diverged_at=data["diverged_at"],
                diverged_loss=data["diverged_loss"],
                extrema={
                    key[len("extremum_") :]: data[key]
                    for key in data.files
                    if key.startswith("extremum_")
                },
                info=json.loads(str(data["info"])),
            )
