"""JSON files of model cards and checkpoints: written durably (flushed to disk), read with every failure turned
into an :class:`InputError`. No torch here: model cards are read where torch is not imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import flush_to_disk
from ..errors import InputError


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON (non-finite floats refused) and flush it to disk."""
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    flush_to_disk(path)


def read_json(path: Path, *, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`InputError` mentioning ``what`` it is."""
    if not path.is_file():
        raise InputError(f"The {what} {path} is missing; give a folder that holds one.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"The {what} {path} is not valid JSON (truncated or edited?): {error}") from None
