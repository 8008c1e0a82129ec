"""Errors for bad user input: reported by the tools as one line naming the problem."""


class InputError(ValueError):
    """A config, data set or checkpoint that cannot work (raised before training starts)."""


class MissingDataError(InputError, FileNotFoundError):
    """A data root, annotation or image file the config names does not exist."""
