"""User-facing errors: one clear line naming the input and the reason."""


class StrataError(Exception):
    """Base of all errors the command line prints as one line (no traceback)."""


class InputError(StrataError, ValueError):
    """An input file that cannot be used; the message is ``"<path>: <reason>"``.

    ``InputError("reason")`` (one argument) names no input.
    """

    def __init__(self, path=None, reason: str | None = None):
        if reason is None:
            path, reason = None, str(path)
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class DatasetError(StrataError):
    """A dataset folder that is missing, empty or does not fit the requested stage."""


class RunError(StrataError):
    """A run folder that is missing, incomplete, or does not match the config."""


class ParameterError(StrataError):
    """A command or flow parameter that is out of range or points at nothing."""


class PreprocessError(InputError):
    """A raw input that cannot become a track; the message is ``"<path>: <reason>"``."""
