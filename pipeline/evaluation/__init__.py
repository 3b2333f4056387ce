"""Evaluation: held-out bits, the linear and n-gram baselines, assessment of generated audio and its
metrics, score metrics.  Imports the base, ``pipeline.corpus`` and ``pipeline.training``."""
