"""Exceptions that carry a user-facing message: what is wrong, the value seen, and the fix."""


class CodeunlearnError(ValueError):
    """Bad input or a missing asset; the CLI prints the message and exits non-zero."""


class ConfigError(CodeunlearnError):
    """A configuration key or value that cannot be used."""


class MissingAssetError(CodeunlearnError):
    """A package, file or model the run needs is not on this machine."""
