"""dlncore: gradient descent, gradient flow and theory for deep linear networks.

Weights are lists ``[W_1, ..., W_N]`` with ``W_j`` of shape ``(d_j, d_{j−1})`` or, for ``B``
starts at once, ``(B, d_j, d_{j−1})``. The loss is ``L^N = ½‖Y − W_N⋯W_1 X‖_F²``.

The core, what every chapter needs (``import dlncore`` loads no plotting library):

- :mod:`~dlncore.network`: weight chains, end-to-end and prefix products;
- :mod:`~dlncore.problem`: the least-squares problem, its loss and gradients (covariance form);
- :mod:`~dlncore.data`: synthetic data and teacher spectra;
- :mod:`~dlncore.init`: initializations (Gaussian, orthogonal, balanced, ...);
- :mod:`~dlncore.iterates`: the one stepping loop (:class:`~dlncore.iterates.Iterates`);
- :mod:`~dlncore.compiled`: its compiled step for one chain of small width (numba);
- :mod:`~dlncore.descent`: :func:`gd` (step sizes, the choice of the step);
- :mod:`~dlncore.recorder`: the :class:`~dlncore.recorder.Recorder` that builds a :class:`Run`;
- :mod:`~dlncore.flow`: the gradient flow (scipy);
- :mod:`~dlncore.saddles`: the saddle at the origin and escape times (chapters 4 and 5);
- :mod:`~dlncore.bounds`: the book's a-priori bounds along GD (chapter 2, and the step-size
  bound of :mod:`~dlncore.theory`);
- :mod:`~dlncore.theory`: the Hessian and the book's step-size bound;
- :mod:`~dlncore.metrics`: quantities along a trajectory, the registry of recorded metrics;
- :mod:`~dlncore.fitting`: the log–log slope fit;
- :mod:`~dlncore.results`: the :class:`Run` container and its ``.npz`` format;
- :mod:`~dlncore.plotting`: the book's figure style (import it explicitly:
  ``import dlncore.plotting``).

Code that serves one chapter lives in :mod:`dlncore.experiments`.
"""

from dlncore import bounds, init, metrics, saddles
from dlncore.bounds import norm_bounds
from dlncore.data import synthetic_data, synthetic_problem, teacher_spectrum
from dlncore.descent import BUILTIN_METRICS, gd, geometric_grid
from dlncore.fitting import loglog_slope
from dlncore.flow import gradient_flow
from dlncore.network import check_weights, end_to_end, prefix_products, widths
from dlncore.problem import Problem
from dlncore.results import Run
from dlncore.theory import hessian, hessian_vector_product, step_size_bound

__all__ = [
    "BUILTIN_METRICS",
    "bounds",
    "Problem",
    "Run",
    "check_weights",
    "end_to_end",
    "gd",
    "geometric_grid",
    "gradient_flow",
    "hessian",
    "hessian_vector_product",
    "init",
    "loglog_slope",
    "metrics",
    "norm_bounds",
    "prefix_products",
    "saddles",
    "step_size_bound",
    "synthetic_data",
    "synthetic_problem",
    "teacher_spectrum",
    "widths",
]
