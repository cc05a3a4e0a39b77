"""The on-disk cache of prediction artefacts: converted networks and precision decisions.

An *entry* is a folder ``<cache>/<kind>/<key>/`` where ``key`` is the SHA-256 of a JSON record of everything
the artefact depends on (the weights' SHA-256, the window, the batch, the precision, the runtime's version...).
Entries are built in a temporary folder and renamed into place (:func:`~MedSegCNNLib.atomic.atomic_folder`), so
a reader never sees a torn entry; two processes building the same entry each build their own temporary folder
and the first rename wins. An entry that fails to load is removed and rebuilt (:func:`load_or_build`). A cache
folder that cannot be written (read-only, full, no permission) costs speed, not the run: the artefact is built in
a temporary folder, used, and deleted, with a warning.

The default cache folder is :func:`~MedSegCNNLib.runtime.user_cache_folder`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..atomic import atomic_folder, temporary_path, write_text_atomic
from ..errors import InputError, OutputExistsError, WriteError

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: The file of an entry that holds its key record, written last: an entry without it is incomplete.
RECORD_FILE = "entry.json"


def entry_key(record: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of ``record`` as canonical JSON: the name of its entry."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()


#: Digests already taken, by network, with the stamp of the state they were taken of (:func:`_state_stamp`).
_DIGESTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def weights_sha256(network: torch.nn.Module) -> str:
    """SHA-256 of a network's state (names, dtypes, shapes and values, in name order): what its outputs depend on.
    Kept for the network while its tensors are the same and unchanged in place (a prediction asks for it several
    times: the conversion cache, the accuracy gate)."""
    state = sorted(network.state_dict().items())
    stamp = _state_stamp(state)
    known = _DIGESTS.get(network)
    if stamp is not None and known is not None and known[0] == stamp:
        return known[1]
    digest = hashlib.sha256()
    for name, tensor in state:
        value = tensor.detach().to("cpu")
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    if stamp is not None:
        _DIGESTS[network] = (stamp, digest.hexdigest())
    return digest.hexdigest()


def _state_stamp(state: list[tuple[str, torch.Tensor]]) -> tuple | None:
    """Each tensor's name, storage address, dtype, shape and in-place version counter: equal stamps mean the same
    values. None when a tensor keeps no version counter (made under ``torch.inference_mode``)."""
    try:
        return tuple((name, t.data_ptr(), t.dtype, tuple(t.shape), t._version) for name, t in state)
    except RuntimeError:
        return None


def load_or_build(
    folder: Path,
    record: Mapping[str, Any],
    build: Callable[[Path], None],
    load: Callable[[Path], T],
) -> T:
    """``load(entry)`` of the entry of ``record`` in ``folder``, building it first when it is missing.

    ``build(partial)`` writes the entry's files into an empty temporary folder; the key record is added and the
    folder renamed into place. An entry that is incomplete, holds another record (a hash collision or a stale
    layout) or fails to ``load`` is logged, removed and rebuilt once; a second failure raises. When ``folder``
    cannot be written, the artefact is built and loaded uncached (:func:`_uncached`).
    """
    entry = folder / entry_key(record)
    if lookup(folder, record) is None:
        _discard(entry)
        try:
            _build(folder, entry, record, build)
        except (InputError, WriteError, OSError) as error:
            return _uncached(folder, build, load, error)
    try:
        return load(entry)
    except Exception as error:
        logger.warning("The cache entry %s could not be loaded (%s); rebuilding it.", entry, _first_line(error))
    _discard(entry)
    _build(folder, entry, record, build)
    return load(entry)


def _uncached(folder: Path, build: Callable[[Path], None], load: Callable[[Path], T], error: Exception) -> T:
    """``load`` of an entry built in a temporary folder, deleted afterwards (``load`` must not keep files open
    that need the folder, except memory maps, which outlive the deletion where the system allows it)."""
    logger.warning(
        "The cache folder %s cannot be written (%s); continuing without the cache, which costs the conversion on "
        "every run: free space there or choose a writable folder with --cache-dir.",
        folder,
        _first_line(error),
    )
    with tempfile.TemporaryDirectory(prefix="medsegcnn-uncached-", ignore_cleanup_errors=True) as scratch:
        partial = Path(scratch) / "entry"
        partial.mkdir()
        build(partial)
        return load(partial)


def lookup(folder: Path, record: Mapping[str, Any]) -> Path | None:
    """The complete entry of ``record`` in ``folder``, or None."""
    entry = folder / entry_key(record)
    return entry if _complete(entry, record) else None


def _complete(entry: Path, record: Mapping[str, Any]) -> bool:
    try:
        return json.loads((entry / RECORD_FILE).read_text(encoding="utf-8")) == json.loads(json.dumps(record))
    except (OSError, ValueError):
        return False


def _build(folder: Path, entry: Path, record: Mapping[str, Any], build: Callable[[Path], None]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"Cannot create the cache folder {folder} ({error.strerror}); choose another.") from None
    try:
        with atomic_folder(entry, overwrite=False) as partial:
            build(partial)
            write_text_atomic(partial / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True))
    except OutputExistsError:  # another process finished the same entry first: use theirs
        logger.debug("Cache entry %s was built by another process meanwhile.", entry)


def _discard(entry: Path) -> None:
    """Remove ``entry`` (renamed aside first, so that no reader sees it half deleted)."""
    if not entry.exists():
        return
    aside = temporary_path(entry, kind="previous")
    with contextlib.suppress(OSError):
        entry.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
