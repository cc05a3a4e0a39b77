"""Errors a user can cause.

Every exception raised for bad input derives from :class:`MedSegCNNError`; its message says what is wrong
and what to do. The CLI prints that message on one line and exits non-zero; other exceptions are bugs.
"""

from __future__ import annotations


class MedSegCNNError(Exception):
    """Base class of all user-facing errors (bad input, missing files, refused overwrites)."""


class InputError(MedSegCNNError, ValueError):
    """An input (file, folder, array, parameter) is missing, unreadable or of the wrong kind."""


class GeometryError(MedSegCNNError, ValueError):
    """Two images cannot be related in physical space (e.g. they do not overlap)."""


class OutputExistsError(MedSegCNNError, FileExistsError):
    """An output path already exists and overwriting was not asked for."""


class WriteError(MedSegCNNError):
    """An output could not be written completely (no space, read-only, no permission, failed check); the
    target was left as it was."""


class CheckError(MedSegCNNError):
    """A network exported or converted for another runtime does not reproduce the model it was made from (its
    check failed); nothing was written."""
