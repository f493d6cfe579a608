"""Exceptions that carry a message meant for the user: what is wrong, where, and the fix."""


class FerError(Exception):
    """Base class for errors the CLI prints without a traceback."""


class DatasetError(FerError):
    """The input data cannot be used as given."""


class ConfigError(FerError):
    """A parameter or setting is missing or out of range."""
