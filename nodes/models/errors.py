"""Errors raised by the model-loading library. Messages are meant for end users."""

from __future__ import annotations


class ModelLoadError(Exception):
    """Base class: a model file could not be loaded."""


class UnknownCheckpointError(ModelLoadError):
    """The file's keys and shapes match no supported model family; the message says what was found."""


class UnsafeFormatError(ModelLoadError):
    """The file is in a format we refuse to read (pickle that ``weights_only`` rejects, unknown extension)."""
