"""Generation: parameters and plans, the cascade run, jobs and their spectrograms.  Imports the base,
``pipeline.corpus``, ``pipeline.training`` and ``pipeline.evaluation``."""
