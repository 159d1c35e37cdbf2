"""Errors the user can act on. Each message says what went wrong and what to do."""


class UserError(Exception):
    """A problem with the user's input or setup (bad file, missing model, bad option)."""


class ModelNotFoundError(UserError):
    """Model weights are not available locally and cannot be downloaded."""


class ImageFormatError(UserError, ValueError):
    """An image message or file cannot be decoded (unsupported encoding, truncated,
    inconsistent)."""
