"""Matplotlib kept off the terminal: the context every figure of the library is drawn in, and text it can draw.

Matplotlib reports through Python warnings (``Glyph 20013 (...) missing from font(s) DejaVu Sans``, layout
warnings) and through its loggers and fontTools' (a cache folder it cannot write, a font cache being built). None
of that is the library's to print: inside :func:`quiet_matplotlib` such warnings and records go to this module's
logger at DEBUG level (shown with ``--debug``). Text drawn into a figure (case and label names) goes through
:func:`drawable_text`, which puts ``?`` for each character the figure's font has no glyph for.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

MISSING_GLYPH = "?"
"""What :func:`drawable_text` draws for a character the font lacks."""

_THIRD_PARTY_LOGGERS = ("matplotlib", "fontTools")


class _ToDebug(logging.Handler):
    """Passes a third-party log record on to this module's logger at DEBUG level, named after its logger."""

    def emit(self, record: logging.LogRecord) -> None:
        logger.debug("%s: %s", record.name, record.getMessage())


@contextmanager
def quiet_matplotlib() -> Iterator[None]:
    """A block that imports and uses matplotlib with its warnings and its (and fontTools') log records passed to
    DEBUG logging instead of stderr (module docstring). Not for threads that draw at the same time: Python's
    warning filters are process-wide."""
    handler = _ToDebug()
    loggers = [logging.getLogger(name) for name in _THIRD_PARTY_LOGGERS]
    propagate = [each.propagate for each in loggers]
    for each in loggers:
        each.addHandler(handler)
        each.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for each, old in zip(loggers, propagate, strict=True):
            each.removeHandler(handler)
            each.propagate = old
    for warning in caught:
        logger.debug("matplotlib: %s", warning.message)


def drawable_text(text: str) -> str:
    """``text`` with :data:`MISSING_GLYPH` for every character that matplotlib's default font has no glyph for
    (e.g. Chinese in DejaVu Sans); call it inside :func:`quiet_matplotlib`."""
    glyphs = _default_font_characters()
    return "".join(char if char.isspace() or ord(char) in glyphs else MISSING_GLYPH for char in text)


@functools.cache
def _default_font_characters() -> frozenset[int]:
    """The code points that matplotlib's default font (its first match for the default font properties) draws."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(findfont(FontProperties())).get_charmap())
