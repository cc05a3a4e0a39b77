"""How checkpoint folders store state without pickle: tensors in safetensors, everything else in JSON.

:func:`encode_state` splits a nested structure (state dicts of models, optimizers, schedulers, RNG states) into a
JSON-serialisable tree and a flat ``name -> tensor`` mapping for ``safetensors``; :func:`decode_state` rebuilds
it exactly. JSON cannot tell a tuple from a list, hold non-string keys or non-finite floats, so the tree marks
those with one-key objects whose key starts with ``$``:

- ``{"$tensor": name}`` a ``torch.Tensor`` (stored on the CPU; device and ``requires_grad`` are not kept);
- ``{"$ndarray": name}`` a numpy array (stored as a tensor of the same dtype);
- ``{"$tuple": [...]}`` a tuple (named tuples and ``torch.Size`` come back as plain tuples);
- ``{"$dict": [[key, value], ...]}`` a mapping with a non-string key or a key starting with ``$``;
- ``{"$float": "inf" | "-inf" | "nan"}`` a non-finite float.

Numpy scalars come back as Python ``bool``/``int``/``float``; other objects are refused.

The folder helpers write files durably (flushed to disk), hash them (SHA-256), read them back with every
failure turned into an :class:`InputError`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import flush_to_disk
from ..errors import InputError

logger = logging.getLogger(__name__)

_MARKERS = ("$tensor", "$ndarray", "$tuple", "$dict", "$float")


def encode_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``state`` into a JSON-serialisable tree and the tensors it refers to (see the module docstring).

    Tensor names are the paths to the tensors, joined by ``/`` (e.g. ``optimizer/state/0/momentum_buffer``).
    Tensors are detached and copied to the CPU; ones sharing memory with another are cloned, as safetensors
    requires. Unsupported objects raise :class:`InputError` naming their path.
    """
    store = _TensorStore()

    def add_tensor(tensor: torch.Tensor, path: tuple[str, ...]) -> str:
        return store.add("/".join(path) or "tensor", tensor, _where(path))

    def encode(value: Any, path: tuple[str, ...]) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float | np.floating):
            value = float(value)
            return value if math.isfinite(value) else {"$float": str(value)}
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, torch.Tensor):
            return {"$tensor": add_tensor(value, path)}
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise InputError(f"Cannot store the object array at {_where(path)}; only numeric arrays are stored.")
            try:
                tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("=")))
            except TypeError as error:
                raise InputError(f"Cannot store the {value.dtype} array at {_where(path)}: {error}.") from None
            return {"$ndarray": add_tensor(tensor, path)}
        if isinstance(value, tuple):
            return {"$tuple": [encode(item, (*path, str(i))) for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [encode(item, (*path, str(i))) for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            if all(isinstance(key, str) and not key.startswith("$") for key in value):
                return {key: encode(item, (*path, key)) for key, item in value.items()}
            return {
                "$dict": [
                    [encode(key, (*path, f"key{i}")), encode(item, (*path, str(key)))]
                    for i, (key, item) in enumerate(value.items())
                ]
            }
        raise InputError(
            f"Cannot store a {type(value).__name__} at {_where(path)} in a checkpoint; use numbers, strings, "
            "lists, dicts, tensors or numpy arrays (checkpoints never pickle objects)."
        )

    tree = encode(state, ())
    return tree, store.tensors


def storable_tensors(state_dict: Mapping[str, Any], *, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a flat ``state_dict`` prepared for safetensors (as in :func:`encode_state`), same names;
    a value that is not a tensor raises :class:`InputError` mentioning ``what`` holds it."""
    store = _TensorStore()
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(f"The {what} holds a {type(value).__name__} at {name!r}; only tensors can be stored.")
        store.add(name, value, repr(name))
    return store.tensors


class _TensorStore:
    """Tensors collected for one safetensors file: detached CPU copies that share no memory, unique names."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[tuple[int, int]] = set()

    def add(self, name: str, tensor: torch.Tensor, where: str) -> str:
        if tensor.layout != torch.strided:
            raise InputError(f"Cannot store the sparse tensor at {where}; convert it with .to_dense().")
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() and not self._owns_storage(tensor):
            tensor = tensor.clone()
        storage = tensor.untyped_storage()
        self._storages.add((storage.data_ptr(), storage.nbytes()))
        unique, number = name, 1
        while unique in self.tensors:
            number += 1
            unique = f"{name}#{number}"
        self.tensors[unique] = tensor
        return unique

    def _owns_storage(self, tensor: torch.Tensor) -> bool:
        """True when ``tensor`` covers its whole storage and no earlier tensor uses that storage."""
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        whole = tensor.data_ptr() == key[0] and tensor.numel() * tensor.element_size() == key[1]
        return whole and key not in self._storages


def decode_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Rebuild the structure that :func:`encode_state` split into ``tree`` and ``tensors``.

    A malformed tree or a missing tensor raises :class:`InputError` (the checkpoint is corrupted).
    """

    def tensor(name: Any) -> torch.Tensor:
        if not isinstance(name, str) or name not in tensors:
            raise InputError(f"The checkpoint refers to a tensor {name!r} that its tensor file lacks (corrupted?).")
        return tensors[name]

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, item),) = value.items()
            if key.startswith("$"):
                if key == "$tensor":
                    return tensor(item)
                if key == "$ndarray":
                    return tensor(item).numpy()
                if key == "$tuple" and isinstance(item, list):
                    return tuple(decode(element) for element in item)
                if key == "$dict" and isinstance(item, list) and all(_is_pair(pair) for pair in item):
                    return {_hashable(decode(k)): decode(v) for k, v in item}
                if key == "$float" and item in ("inf", "-inf", "nan"):
                    return float(item)
                raise InputError(f"The checkpoint holds an unknown entry {key!r} (corrupted, or a newer format?).")
        return {key: decode(item) for key, item in value.items()}

    return decode(tree)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise InputError(f"The checkpoint holds a mapping key {key!r} that cannot be a key (corrupted?).") from None
    return key


def _where(path: tuple[str, ...]) -> str:
    return "/".join(path) or "the top level"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of the file at ``path``."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> str:
    """Write ``tensors`` (CPU, contiguous, not sharing memory) to a safetensors file, flush it to disk and
    return its SHA-256. A failed write raises :class:`OSError` with the operating system's error number (which
    safetensors reports only in its message), for the caller's :func:`~MedSegCNNLib.atomic.write_failure`."""
    try:
        save_file(dict(tensors), str(path), metadata={"format": "pt"})
    except SafetensorError as error:
        raise _as_os_error(error, path) from None
    path.chmod(0o666 & ~_umask())  # safetensors creates 0600 files; give it a new file's usual mode
    flush_to_disk(path)
    _check_complete(path)
    return sha256_file(path)


def _as_os_error(error: SafetensorError, path: Path) -> OSError:
    """The :class:`OSError` behind safetensors' ``error`` ("... (os error 28)"); ``EIO`` when it names none."""
    found = re.search(r"os error (\d+)", str(error))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def _check_complete(path: Path) -> None:
    """Raise OSError (EIO) unless the safetensors file at ``path`` is as long as its header says."""
    with path.open("rb") as file:
        head = file.read(8)
        header_size = int.from_bytes(head, "little") if len(head) == 8 else -1
        try:
            header = json.loads(file.read(header_size)) if 0 < header_size < 2**27 else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        raise OSError(errno.EIO, "the tensors file written has no complete header")
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    if path.stat().st_size != expected:
        raise OSError(errno.EIO, f"the tensors file written holds {path.stat().st_size} bytes, not {expected}")


def _umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_tensors(path: Path, *, sha256: str | None, what: str, record: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU after checking that its SHA-256 is the one ``record`` (e.g. "the
    model card") gives; a missing, altered or truncated file raises :class:`InputError` about ``what`` (e.g.
    "weights")."""
    if not path.is_file():
        raise InputError(f"{path} is missing; the folder is incomplete (copy the whole folder).")
    if sha256 is not None and sha256_file(path) != sha256:
        raise InputError(
            f"The {what} in {path} do not match {record} (corrupted or replaced?); use an intact copy of the folder."
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(f"{path} is not a readable safetensors file (truncated or corrupted?): {error}") from None
