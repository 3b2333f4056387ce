"""User-facing errors: one clear line naming the input and the reason."""


class StrataError(Exception):
    """Base of all errors the command line prints as one line (no traceback)."""


class DatasetError(StrataError):
    """A dataset folder that is missing, empty or does not fit the requested stage."""


class RunError(StrataError):
    """A run folder that is missing, incomplete, or does not match the config."""


class ParameterError(StrataError):
    """A command or flow parameter that is out of range or points at nothing."""
