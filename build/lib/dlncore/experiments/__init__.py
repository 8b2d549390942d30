"""Experiments that serve one chapter each, built on the core of :mod:`dlncore`.

- :mod:`dlncore.experiments.stepsize`: the largest convergent constant step (chapter 3).
- :mod:`dlncore.experiments.deep_rank`: escape-law fits, plateaus of the loss staircase and the
  final-rank table (chapter 5).
- :mod:`dlncore.experiments.tracking`: GD against gradient flow (chapter 6).
- :mod:`dlncore.experiments.prose`: outcome sentences and values without placeholders
  (chapters 1–6).
- :mod:`dlncore.experiments.journal`: the journal version's experiments (chapter 7).
- :mod:`dlncore.experiments.tanh`: gradient descent for tanh networks (chapter 7).
- :mod:`dlncore.experiments.parallel`: independent runs on several cores (chapter 7).
- :mod:`dlncore.experiments.digitize`: reads the curves of a published figure (it made chapter
  7's package data; needs Pillow and matplotlib, imported by no chapter).
"""
