"""What a weights file from another tool is, told by its first bytes before anything reads it.

``torch.save`` writes a zip holding ``<name>/data.pkl`` (PyTorch 1.6 and later), or, with
``_use_new_zipfile_serialization=False``, its legacy format: a pickle whose first object is torch's magic number.
``torch.load(weights_only=True)`` reads both with its restricted unpickler (only the legacy format cannot be
memory-mapped). A plain ``pickle.dump`` file, a zip that is not a torch file and a safetensors file are not
checkpoints ``torch.load`` can read safely; :func:`foreign_weights_problem` says what each is and what to do,
instead of torch's "corrupt file".
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path
from typing import Literal

WeightsKind = Literal["torch", "torch-legacy", "pickle", "zip", "safetensors", "unknown"]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The number torch's legacy format pickles first (``torch.serialization.MAGIC_NUMBER``)."""
_PICKLE_PROTOCOLS = range(2, 6)
"""Binary pickle protocols: their files start with ``0x80`` and the protocol number."""


def weights_file_kind(path: Path) -> WeightsKind:
    """The kind of the file at ``path`` by its first bytes (nothing is unpickled): ``torch`` (torch.save's zip; also
    a zip too damaged to list, which ``torch.load`` then reports), ``torch-legacy``, ``pickle`` (any other binary
    pickle), ``zip`` (a zip without ``data.pkl``), ``safetensors`` (an 8-byte header length, then a JSON header
    that fits in the file), or ``unknown`` (also a file that cannot be opened)."""
    try:
        with path.open("rb") as file:
            head = file.read(64)
    except OSError:  # unreadable: the reader that follows reports it
        return "unknown"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "torch"
        return "torch" if any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names) else "zip"
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return "torch-legacy" if _first_pickled_number(head) == TORCH_LEGACY_MAGIC else "pickle"
    if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size:
        return "safetensors"
    return "unknown"


def _first_pickled_number(head: bytes) -> int | None:
    """The first object of the pickle starting ``head`` when it is an integer (read by :mod:`pickletools`, which
    parses opcodes without running them), else None."""
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(head)):
            if opcode.name in ("PROTO", "FRAME"):
                continue
            return argument if opcode.name in ("LONG1", "BININT", "BININT1", "BININT2") else None
    except ValueError:  # the 64 bytes end inside an opcode
        return None
    return None


def foreign_weights_problem(path: Path, kind: WeightsKind, wanted: str) -> str | None:
    """What is wrong with giving the file ``path`` of ``kind`` where ``wanted`` (e.g. "an nnU-Net checkpoint") is
    expected, and what to do; None for the kinds ``torch.load(weights_only=True)`` reads (or tries: ``unknown``)."""
    if kind == "pickle":
        return (
            f"{path} is a plain pickle file, not {wanted} saved with torch.save; it is not read, since unpickling it "
            "could run code. Only if you trust it: load it with pickle in a trusted environment and save the weights "
            "again with torch.save (or as safetensors)."
        )
    if kind == "zip":
        return f"{path} is a zip archive but not a PyTorch file (it holds no data.pkl); give {wanted} instead."
    if kind == "safetensors":
        return f"{path} is a safetensors file, not {wanted} (a torch.save file); give {wanted} instead."
    return None
