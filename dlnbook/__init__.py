"""Book tooling for dln-book: chapters, their parameters, cached execution, Sphinx glue.

The modules are layered so that the command line (``dln-book``) and the Sphinx extension
share one implementation:

- :mod:`dlnbook.ranges`, :mod:`dlnbook.rules`: what a parameter may be, written in the
  ``parameters`` cell (ranges in brackets; rules between parameters; memory and time
  estimates), and the checks run before anything executes.
- :mod:`dlnbook.chapters`: find chapter notebooks, parse their ``parameters`` cell, merge
  overrides into the effective parameters (types, finite numbers, flat lists).
- :mod:`dlnbook.profiles`: read parameter profiles (YAML: chapter -> {parameter: value}).
- :mod:`dlnbook.runner`: hash (notebook, effective parameters, ``dlncore`` sources),
  execute stale chapters with papermill in parallel, keep the cache of executed copies.
- :mod:`dlnbook.sphinx_ext`: the Sphinx extension that makes ``jupyter-book build .``
  run the chapters and render their executed copies.
"""

__all__ = ["chapters", "profiles", "ranges", "rules", "runner"]
