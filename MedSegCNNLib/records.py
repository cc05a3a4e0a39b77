"""Records (dataclasses) built from JSON objects: the one strict rule for their keys. Nothing of the library but
its errors is imported here, so every layer can use it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import InputError

Record = TypeVar("Record")


def record_from_dict(cls: type[Record], data: Any, what: str) -> Record:
    """``cls(**data)`` for the JSON object ``data``, a ``what`` (e.g. ``"training configuration"``, named in errors).

    Data that is not an object, a key that is not a field of ``cls`` (unknown) and a field without a default that
    ``data`` lacks (missing) raise :class:`InputError` naming ``what`` and the keys; the values are checked by
    ``cls`` itself.
    """
    if not isinstance(data, Mapping):
        raise InputError(f"The {what} must be a JSON object, not a {type(data).__name__}.")
    fields = [field for field in dataclasses.fields(cls) if field.init]
    known = sorted(field.name for field in fields)
    unknown = sorted(map(str, set(data) - set(known)))
    if unknown:
        raise InputError(f"Unknown field(s) in the {what}: {', '.join(unknown)}; known: {', '.join(known)}.")
    missing = [
        field.name
        for field in fields
        if field.name not in data
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise InputError(f"The {what} lacks the required field(s) {', '.join(missing)}.")
    return cls(**data)
