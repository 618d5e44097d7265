"""The project's exception hierarchy: expected, user-facing failures with a one-line reason.

Anything raised as a SrganError is reported to the user as `path: reason` (or just the reason)
without a traceback (``--debug`` shows one); any other exception is a bug.
"""


class SrganError(Exception):
    """Base class of every expected failure; str(error) is a short, one-line reason."""


class ImageError(SrganError):
    """An image could not be read, planned or written (the batch goes on with the next one)."""


class CheckpointError(SrganError):
    """A checkpoint cannot be found, downloaded, verified or loaded."""


class TrainingError(SrganError):
    """A training run cannot start, resume or go on (bad config, no data, non-finite losses)."""


class InputError(SrganError, ValueError):
    """A Python API caller passed a value of the wrong type, shape, dtype or range."""
