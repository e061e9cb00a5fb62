"""Evaluation toolkit: datasets, classical baselines, BD-rate, RD plots, resumable runs
(local or Ray) and the ``make reproduce-paper`` protocol. Entry points: ``evaluate`` in
``evaluation.py``, ``reproduce`` in ``reproduce.py``, command functions in ``cli.py``."""
