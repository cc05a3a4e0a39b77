"""Capturing what native libraries print on the process's standard error (file descriptor 2).

ITK, VNL, GDCM, MetaImage and Teem write multi-line warnings straight to fd 2 (``std::cerr``, ``fprintf``),
around and beside the one-line errors of MedSegCNN. :func:`captured_native_stderr` redirects fd 2 to an
anonymous temporary file for the duration of a SimpleITK call and hands back what was printed, so the caller
folds it into its own message (:func:`library_text`) or logs it at debug level.

ITK's global warning display is left on: Slicer shares the process, and its other modules rely on it; the
capture already keeps those warnings off the terminal. Python's own ``sys.stderr`` is flushed before and after,
so Python output is not mixed in (except from other threads during the capture, which is short).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_STDERR_FD = 2
_SOURCE_LOCATION = re.compile(r"^(WARNING|ERROR): In .*, line \d+$|^/.*\.(h|hxx|cxx|c|txx):\s*")
_OBJECT_ADDRESS = re.compile(r"\w+ ?\(0x[0-9a-fA-F]+\):\s*")
_MAX_FOLDED = 300  # characters of library output folded into one message


@dataclass
class CapturedOutput:
    """The text native code wrote to fd 2 inside :func:`captured_native_stderr` (filled on exit)."""

    text: str = ""


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[CapturedOutput]:
    """Redirect fd 2 to a temporary file while the block runs; the text is in the yielded object afterwards.

    fd 2 is restored on any exit, exceptions included. When fd 2 cannot be duplicated (closed, or no file
    descriptors left) nothing is captured and the block runs unchanged.
    """
    captured = CapturedOutput()
    try:
        saved = os.dup(_STDERR_FD)
    except OSError:
        yield captured
        return
    try:
        with tempfile.TemporaryFile() as sink:
            _flush_python_stderr()
            os.dup2(sink.fileno(), _STDERR_FD)
            try:
                yield captured
            finally:
                _flush_python_stderr()
                os.dup2(saved, _STDERR_FD)
                sink.seek(0)
                captured.text = sink.read().decode("utf-8", "replace")
    finally:
        os.close(saved)
    if captured.text.strip():
        logger.debug("Native library output: %s", captured.text.strip())


def library_text(captured: str, known: str = "") -> str:
    """``captured`` library output as one short line without source paths and object addresses, leaving out
    lines already contained in ``known`` (our message); empty when nothing is left."""
    lines = []
    for line in captured.splitlines():
        line = _OBJECT_ADDRESS.sub("", _SOURCE_LOCATION.sub("", line.strip())).strip()
        if line and line not in known and line not in lines:
            lines.append(line)
    text = " ".join(lines)
    return text if len(text) <= _MAX_FOLDED else text[: _MAX_FOLDED - 3] + "..."


def _flush_python_stderr() -> None:
    with contextlib.suppress(Exception):  # sys.stderr may be None or a closed stream (pythonw, Slicer)
        sys.stderr.flush()
