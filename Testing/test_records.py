"""The one strict rule for building a record (dataclass) from a JSON object."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from MedSegCNNLib.errors import InputError
from MedSegCNNLib.records import record_from_dict


@dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: str = ""


def test_a_record_is_built_from_its_fields():
    assert record_from_dict(Point, {"x": 1, "y": 2}, "point") == Point(1, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": 1, "y": 2, "z": 3}, r"^Unknown field\(s\) in the point: z; known: label, x, y\.$"),
        ({"x": 1}, r"^The point lacks the required field\(s\) y\.$"),
        ([1, 2], r"^The point must be a JSON object, not a list\.$"),
    ],
)
def test_unknown_missing_and_non_object_data_are_refused_naming_the_record_and_field(data, message):
    with pytest.raises(InputError, match=message):
        record_from_dict(Point, data, "point")
