"""Book tooling for dln-book: chapters, their parameters, cached execution, Sphinx glue.

The modules are layered so that the command line (``dln-book``) and the Sphinx extension
share one implementation:

- :mod:`dlnbook.checks`: what a parameter may be, written in the ``parameters`` cell
  (ranges in brackets; rules between parameters; memory and time estimates).
- :mod:`dlnbook.chapters`: find chapter notebooks, parse their ``parameters`` cell, read YAML
  profiles and sweep files, and ``validate``: overrides into effective parameters, checked
  (types, ranges, rules, estimates) alike for ``run``, ``sweep``, ``build`` and Sphinx.
- :mod:`dlnbook.runner`: hash (code cells, effective parameters, ``dlncore`` syntax trees)
  and plan runs; execute stale chapters through the executor.
- :mod:`dlnbook.executor`: the one way chapters execute (``run``, ``sweep``, the book build):
  Dask tasks on a local cluster or an existing one (``--scheduler``, ``DLNBOOK_SCHEDULER``).
- :mod:`dlnbook.kernel_guard`: loaded into every chapter kernel; it dies with its parent.
- :mod:`dlnbook.rundirs`: run folders appear complete or not at all; failed runs' notebooks
  and logs; stale temporary folders pruned.
- :mod:`dlnbook.sweep`: ``dln-book sweep``: grids, ``points.csv`` and the sweep's page.
- :mod:`dlnbook.export`: the standalone page of a run, built by the book's own renderer.
- :mod:`dlnbook.pagerules`: what a chapter page shows (text of now, outputs of the run, the
  parameters box, folded code, alt text), for the book and the standalone run page alike.
- :mod:`dlnbook.sphinx_ext`: the Sphinx extension that makes ``jupyter-book build .``
  run the chapters and render their executed copies (with the executed-notebook download).
- :mod:`dlnbook.publish`: base URL, sitemap, link previews and buttons of a published book.
"""

__all__ = ["chapters", "checks", "runner"]
