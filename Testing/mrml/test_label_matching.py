"""Numbering segments against known labels (pure Python, no MRML needed)."""

from __future__ import annotations

import pytest

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.image.core import LabelInfo
from MedSegCNNLib.mrml.label_matching import SourceSegment, number_segments

CARD = (LabelInfo(0, "background"), LabelInfo(1, "Liver", (1.0, 0.0, 0.0)), LabelInfo(2, "Tumour"))


def test_without_labels_segments_are_numbered_in_order():
    segments = [SourceSegment("b", 7, (0.0, 1.0, 0.0)), SourceSegment("a", 7)]
    assert number_segments(segments, None, "seg") == ([1, 2], (LabelInfo(1, "b", (0.0, 1.0, 0.0)), LabelInfo(2, "a")))


def test_names_first_then_values():
    segments = [SourceSegment(" tumour", 1), SourceSegment("Segment_1", 1)]
    assert number_segments(segments, CARD, "seg") == ([2, 1], CARD)


def test_background_is_never_matched():
    with pytest.raises(InputError, match=r"Segment 'background' of 'seg' matches no label \(1 'Liver', 2 'Tumour'\)"):
        number_segments([SourceSegment("background", 0)], CARD, "seg")


def test_unmatched_and_duplicate_segments_are_named():
    with pytest.raises(InputError, match=r"Segment 'spleen' of 'seg' matches no label.*rename it"):
        number_segments([SourceSegment("spleen", 9)], CARD, "seg")
    with pytest.raises(InputError, match="Segment 'liver' and Segment 'LIVER' of 'seg' both match label 1 'Liver'"):
        number_segments([SourceSegment("liver", 1), SourceSegment("LIVER", 5)], CARD, "seg")


def test_by_value_only_ignores_names():
    with pytest.raises(InputError, match=r"Label value 5 of 'map' matches no label"):
        number_segments([SourceSegment("Liver", 5)], CARD, "map", by_name=False)
    assert number_segments([SourceSegment("x", 2)], CARD, "map", by_name=False)[0] == [2]
