"""Prefect wiring and the ``strata`` command line; the work itself lives in ``pipeline/``."""

from __future__ import annotations

import logging

from pipeline.errors import StrataError


class _OneLineUserErrors(logging.Filter):
    """Prefect logs a flow's exception with its traceback; a user error (``StrataError``) is
    one clear line by the project's rule, so its traceback is dropped from the log record.  So is
    an ``OSError`` (disk full, an unwritable folder): the command prints it as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (StrataError, OSError)):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_errors() -> None:
    """Install the filter on Prefect's flow-run and task-run loggers (idempotent)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineUserErrors) for f in logger.filters):
            logger.addFilter(_OneLineUserErrors())


quiet_user_errors()
