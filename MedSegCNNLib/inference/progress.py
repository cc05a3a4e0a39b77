"""Prediction progress as :class:`~MedSegCNNLib.progress.Event` objects, the style training reports in.

:class:`PredictionProgress` turns the ``(windows done, windows in total)`` callbacks of
:func:`~MedSegCNNLib.inference.segment.segment` into ``progress`` events and reports each finished case as a
``case`` event (fields in :mod:`MedSegCNNLib.progress`); the caller only chooses the sink (JSON lines for the
Slicer panel, a terminal bar, or nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..progress import Event, EventSink

PROGRESS_INTERVAL_S = 0.2
"""Least time between two per-window ``progress`` events (the last window of each case is always reported)."""


class PredictionProgress:
    """``progress`` events while ``cases`` cases are segmented (at most one per ``interval_s`` seconds) and a
    ``case`` event after each.

    ``progress`` fields: stage ("segmenting <case>"), case (1-based index), cases, done and total (windows of this
    case), fraction (of the whole run: cases done plus this case's share of windows, in [0, 1]) and eta_s (seconds
    left, extrapolated from the time since this object was made; ``None`` before the first window).
    """

    def __init__(
        self,
        on_event: EventSink,
        cases: int,
        *,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_event, self.cases, self.interval_s, self.clock = on_event, cases, interval_s, clock
        self.started = clock()
        self.last_emitted: float | None = None

    def for_case(self, index: int, case: str) -> Callable[[int, int], None]:
        """The ``progress(done, total)`` callback of case ``index`` (0-based) for :func:`segment`."""

        def report(done: int, total: int) -> None:
            now = self.clock()
            if done < total and self.last_emitted is not None and now - self.last_emitted < self.interval_s:
                return
            self.last_emitted = now
            fraction = min((index + done / max(total, 1)) / self.cases, 1.0)
            elapsed = now - self.started
            eta = elapsed * (1.0 - fraction) / fraction if fraction > 0 else None
            data = {"stage": f"segmenting {case}", "case": index + 1, "cases": self.cases, "done": done}
            self.on_event(Event("progress", {**data, "total": total, "fraction": fraction, "eta_s": eta}))

        return report

    def case_done(self, index: int, case: str, output: Path) -> None:
        """The ``case`` event of case ``index`` (0-based), whose label map was written to ``output``."""
        self.on_event(Event("case", {"case": case, "index": index + 1, "total": self.cases, "output": str(output)}))
