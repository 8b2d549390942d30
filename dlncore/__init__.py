"""dlncore: gradient descent, gradient flow and theory for deep linear networks.

Weights are lists ``[W_1, ..., W_N]`` with ``W_j`` of shape ``(d_j, d_{j−1})`` or, for ``B``
starts at once, ``(B, d_j, d_{j−1})``. The loss is ``L^N = ½‖Y − W_N⋯W_1 X‖_F²``.
"""

from dlncore import init, metrics, plotting, saddles, tracking
from dlncore.bounds import norm_bounds
from dlncore.data import synthetic_data, synthetic_problem, teacher_spectrum
from dlncore.descent import BUILTIN_METRICS, gd, geometric_grid
from dlncore.flow import gradient_flow
from dlncore.network import check_weights, end_to_end, prefix_products, widths
from dlncore.problem import Problem
from dlncore.results import Run
from dlncore.stepsize import largest_convergent_step
from dlncore.theory import hessian, hessian_vector_product, step_size_bound

__all__ = [
    "BUILTIN_METRICS",
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
    "largest_convergent_step",
    "metrics",
    "norm_bounds",
    "plotting",
    "prefix_products",
    "saddles",
    "step_size_bound",
    "synthetic_data",
    "synthetic_problem",
    "teacher_spectrum",
    "tracking",
    "widths",
]
