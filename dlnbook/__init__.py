"""Book tooling for dln-book. The execution path: :mod:`~dlnbook.cli` -> :mod:`~dlnbook.chapters`
(``validate``; declarations in :mod:`~dlnbook.checks`) -> :mod:`~dlnbook.runner` (the one
driver) -> :mod:`~dlnbook.executor` (papermill kernels, here or on Dask) ->
:mod:`~dlnbook.rundirs` (atomic run folders); :mod:`~dlnbook.sweep` adds a grid. The pages:
:mod:`~dlnbook.export`, :mod:`~dlnbook.sweeppage`, :mod:`~dlnbook.pagerules`,
:mod:`~dlnbook.sphinx_ext`, :mod:`~dlnbook.publish`.
"""

__all__ = ["chapters", "checks", "runner"]
