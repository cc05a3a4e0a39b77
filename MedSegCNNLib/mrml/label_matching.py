"""Which label value each segment of a segmentation gets (pure Python: no MRML here).

With known labels (e.g. a model card's), a segment takes the label whose name equals its name (ignoring case and
surrounding spaces); failing that, the label whose value equals the segment's label value. A segment matching
no label, or two segments taking the same label, is an error that names them: a wrong guess would silently
train or score the wrong structure. Without known labels, segments are numbered 1..N in segment order and keep
their names and colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..image.core import Color, LabelInfo


@dataclass(frozen=True)
class SourceSegment:
    """A segment to number: its name, its label value in its layer (``vtkSegment.GetLabelValue``), its colour."""

    name: str
    value: int
    color: Color | None = None


def number_segments(
    segments: Sequence[SourceSegment], labels: Sequence[LabelInfo] | None, source: str, *, by_name: bool = True
) -> tuple[list[int], tuple[LabelInfo, ...]]:
    """The output value of each segment and the output label map's :class:`LabelInfo` (see module docstring).

    ``source`` names the segmentation in messages. ``by_name=False`` matches by value only (label map volumes,
    whose colour-table names are not the user's). With ``labels``, the output's labels are ``labels`` themselves.
    """
    if labels is None:
        return list(range(1, len(segments) + 1)), tuple(
            LabelInfo(index, segment.name, segment.color) for index, segment in enumerate(segments, start=1)
        )
    candidates = [info for info in labels if info.value != 0]  # nothing is matched to the background
    by_name_key = {_key(info.name): info for info in candidates} if by_name else {}
    by_value = {info.value: info for info in candidates}
    values: list[int] = []
    taken: dict[int, SourceSegment] = {}
    for segment in segments:
        match = by_name_key.get(_key(segment.name)) or by_value.get(segment.value)
        if match is None:
            raise InputError(
                f"{_describe(segment, by_name)} of '{source}' matches no label ({_list(candidates)}); "
                + ("rename it to one of these names, or remove it." if by_name else "relabel or remove it.")
            )
        if match.value in taken:
            raise InputError(
                f"{_describe(taken[match.value], by_name)} and {_describe(segment, by_name)} of '{source}' both match "
                f"label {match.value} '{match.name}'; rename or merge them so that each label has one segment."
            )
        taken[match.value] = segment
        values.append(match.value)
    return values, tuple(labels)


def _key(name: str) -> str:
    return name.strip().casefold()


def _describe(segment: SourceSegment, by_name: bool) -> str:
    return f"Segment '{segment.name}'" if by_name else f"Label value {segment.value}"


def _list(labels: Sequence[LabelInfo]) -> str:
    return ", ".join(f"{info.value} '{info.name}'" for info in labels) or "none"
