"""Experiments that serve one chapter each, built on the core of :mod:`dlncore`.

- :mod:`dlncore.experiments.journal`: the journal version's experiments (chapter 7).
- :mod:`dlncore.experiments.tanh`: gradient descent for tanh networks (chapter 7).
- :mod:`dlncore.experiments.parallel`: independent runs on several cores (chapter 7).
"""
