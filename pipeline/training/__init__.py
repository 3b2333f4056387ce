"""Training: the stage trainer and its parts, ``train_stage`` (``python -m pipeline.training``), EMA, the
score tier and the chord chain.  Imports the base and ``pipeline.corpus``."""
