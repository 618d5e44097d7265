"""The one exception hierarchy of srgan: expected, user-facing failures with a one-line reason.

The CLI prints ``SrganError`` messages as a single line (no traceback unless ``--debug``);
anything else is a bug and keeps its traceback.
"""


class SrganError(Exception):
    """Base class of every expected srgan failure."""


class ImageError(SrganError):
    """An input image cannot be read or an output image cannot be written."""


class CheckpointError(SrganError):
    """A checkpoint cannot be found, downloaded, verified or loaded."""


class TrainingError(SrganError):
    """A training run cannot start, resume or go on (bad config, no data, non-finite losses)."""
