"""Errors a user can act on. The CLI prints them as one line and exits 2."""


class MtmetaError(Exception):
    """Base class: a problem with the user's input, config or files."""


class DataError(MtmetaError):
    """A corpus file or dataset is missing, malformed or inconsistent."""


class ConfigError(MtmetaError):
    """A recipe or command-line setting is invalid."""


class CheckpointError(MtmetaError):
    """A checkpoint is missing, truncated or from an incompatible model."""
