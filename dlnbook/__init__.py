"""Book tooling for dln-book: chapters, their parameters, cached execution, the book's pages.

The execution path, in the order a parameter takes it: :mod:`dlnbook.cli` (``dln-book``) ->
:mod:`dlnbook.chapters` (notebooks, ``parameters`` cells, YAML, ``validate``; what a cell may
declare is :mod:`dlnbook.checks`) -> :mod:`dlnbook.runner` (plans, keys, the one driver
``run_plans`` for ``run``, ``sweep``, ``build`` and Sphinx) -> :mod:`dlnbook.executor`
(papermill kernels on threads here, or a Dask cluster; every kernel loads
:mod:`dlnbook.kernel_guard`) -> :mod:`dlnbook.rundirs` (run folders published atomically
with a manifest). :mod:`dlnbook.sweep` adds a grid to the driver. The page side:
:mod:`dlnbook.export` (a run's standalone page), :mod:`dlnbook.sweeppage` (a sweep's page),
:mod:`dlnbook.pagerules` (what a chapter page shows), :mod:`dlnbook.sphinx_ext` (``jupyter-book
build .`` runs and renders the chapters), :mod:`dlnbook.publish` (a published book's extras).
"""

__all__ = ["chapters", "checks", "runner"]
