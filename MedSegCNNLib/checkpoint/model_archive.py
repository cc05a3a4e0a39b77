"""The safe opening of a model folder or model ``.zip``: its files found, its card read with a size cap, its
weights checked (size and SHA-256) before they are used. The card's schema is :mod:`.model_card`'s; nothing here
imports torch or knows the card's fields beyond the weights' file name and hash it is given.

A model folder holds ``model.json`` (:data:`CARD_FILE`) and the weights file the card names
(``model.safetensors``, :data:`WEIGHTS_FILE`); a model ``.zip`` holds that folder's two files at its top or inside
one folder. Plain PyTorch files (:data:`PICKLE_SUFFIXES`, or anything starting like a pickle) are refused.

**Zip models** are read by streaming: the card member may declare at most :data:`MAX_CARD_BYTES`; the weights
member at most what the caller allows and a compression ratio of at most :data:`MAX_COMPRESSION_RATIO`; both are
refused before anything is inflated. The weights are inflated into a private temporary folder while their SHA-256
is computed and the bytes counted (stopping at the cap); a mismatch or any error removes the folder before the
refusal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .json_file import read_json

CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
"""File types refused as models because they are (usually) pickles."""

PICKLE_REFUSAL = (
    "MedSegCNN never unpickles files; export the state dict to safetensors or use import_state_dict(...) "
    "(see MedSegCNNLib.checkpoint)."
)

MAX_CARD_BYTES = 16 * 2**20
"""Largest model card read (bytes); the bundled card is 11 kB."""
MAX_COMPRESSION_RATIO = 100
"""Highest inflated/compressed size ratio of a zip member above 1 MiB (weights barely compress; bombs do)."""

_CHUNK_BYTES = 2**20


@dataclass(frozen=True)
class ModelFiles:
    """The files of a model folder or ``.zip`` (:func:`opened_model_files`), its card read as JSON data.

    ``path``: the model as given; ``where``: where its card was read (the card file, or
    ``archive.zip:folder/model.json``), for messages; ``card_data``: the card's JSON data, not yet validated.
    """

    path: Path
    where: str
    card_data: Any
    _has: Callable[[str], bool]
    _checked: Callable[[str, str, int | None], Path]

    def has(self, name: str) -> bool:
        """Whether the model holds the file ``name`` beside its card (looked up, not read)."""
        return self._has(name)

    def checked_file(self, name: str, sha256: str, max_bytes: int | None) -> Path:
        """The file ``name`` beside the card, checked before it is used: no larger than ``max_bytes`` (``None``:
        no cap) and with the hex ``sha256``. A ``.zip``'s member is inflated into a temporary folder that lives
        as long as the :func:`opened_model_files` context; on any refusal nothing is kept."""
        return self._checked(name, sha256, max_bytes)


@contextlib.contextmanager
def opened_model_files(path: str | Path) -> Iterator[ModelFiles]:
    """Yield the :class:`ModelFiles` of a model folder, its ``model.json`` or a ``.zip``. Missing, unreadable,
    unsafe or pickled models and unreadable cards raise :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Model {path} does not exist; give a model folder, its {CARD_FILE} or a model .zip.")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"{path} is not a readable model .zip (damaged or truncated?): {error}") from None
        with archive, contextlib.ExitStack() as scratch_folders:
            prefix = _card_member_prefix(archive, path)
            yield ModelFiles(
                path,
                f"{path}:{prefix}{CARD_FILE}",
                _read_card_member(archive, prefix + CARD_FILE, path),
                lambda name: prefix + name in archive.namelist(),
                lambda name, sha256, max_bytes: _inflated(
                    archive, prefix + name, sha256, path, max_bytes, scratch_folders
                ),
            )
        return
    if path.is_file() and (suffix in PICKLE_SUFFIXES or _looks_pickled(path)):
        raise InputError(f"{path} is a PyTorch/pickle file. {PICKLE_REFUSAL}")
    if path.is_file() and path.name != CARD_FILE and suffix != ".json":
        raise InputError(f"{path} is not a MedSegCNN model; give a model folder, its {CARD_FILE} or a model .zip.")
    folder = path if path.is_dir() else path.parent
    card_path = folder / CARD_FILE if path.is_dir() else path
    if path.is_dir() and not card_path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(
                f"{folder} holds no {CARD_FILE} but PyTorch/pickle files ({', '.join(pickles)}). " + PICKLE_REFUSAL
            )
        raise InputError(f"{folder} is not a MedSegCNN model folder: it holds no {CARD_FILE}.")
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise InputError(f"The model card {card_path} is implausibly large; not read.")
    yield ModelFiles(
        path,
        str(card_path),
        read_json(card_path, what="model card"),
        lambda name: (folder / name).is_file(),
        lambda name, sha256, max_bytes: _checked(folder / name, sha256, max_bytes),
    )


def _checked(path: Path, sha256: str, max_bytes: int | None) -> Path:
    """The file ``path`` of a model folder after checking its size (before reading) and its SHA-256."""
    if not path.is_file():
        raise InputError(f"{path} is missing; the model folder is incomplete (copy the whole folder).")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InputError(_too_large(path, size, max_bytes))
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != sha256:
        raise InputError(
            f"The weights in {path} do not match the model card (corrupted or replaced?); use an intact copy of the "
            "model."
        )
    return path


def _inflated(
    archive: zipfile.ZipFile,
    member: str,
    sha256: str,
    path: Path,
    max_bytes: int | None,
    scratch_folders: contextlib.ExitStack,
) -> Path:
    """The ``member`` of a model ``.zip`` inflated into a temporary folder (registered in ``scratch_folders``)
    after checking its declared size and compression ratio, counting the inflated bytes (zipfile itself stops at
    the declared size) and checking the SHA-256 while inflating."""
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise InputError(f"{path} lacks the weights file {member} its model card names.") from None
    limit = info.file_size if max_bytes is None else min(info.file_size, max_bytes)
    if info.file_size > limit:
        raise InputError(_too_large(path, info.file_size, limit, declared=True))
    _check_ratio(info, path)
    scratch = tempfile.TemporaryDirectory(prefix="medsegcnn-model-")
    try:
        inflated_path = Path(scratch.name) / Path(member).name
        digest, inflated = hashlib.sha256(), 0
        with archive.open(info) as source, inflated_path.open("wb") as target:
            while chunk := source.read(_CHUNK_BYTES):
                inflated += len(chunk)
                if inflated > limit:
                    raise InputError(f"{path} is damaged: {member} inflates to more than its declared {limit:,} bytes.")
                digest.update(chunk)
                target.write(chunk)
        if digest.hexdigest() != sha256:
            raise InputError(
                f"The weights in {path} do not match its model card (corrupted or replaced?); use an intact copy of "
                "the model."
            )
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        scratch.cleanup()
        raise InputError(f"{path} is damaged; cannot extract {member}: {error}") from None
    except BaseException:
        scratch.cleanup()
        raise
    scratch_folders.callback(scratch.cleanup)
    return inflated_path


def _too_large(path: Path, size: int, max_bytes: int, *, declared: bool = False) -> str:
    what = "declare" if declared else "are"
    return (
        f"The weights of {path} {what} {size:,} bytes, more than the {max_bytes:,} that the network of its model "
        "card can take; they do not belong to this card (corrupted or replaced?); use an intact copy of the model."
    )


def _check_ratio(info: zipfile.ZipInfo, path: Path) -> None:
    """Refuse a member above 1 MiB that claims to inflate more than :data:`MAX_COMPRESSION_RATIO` times."""
    if info.file_size > _CHUNK_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise InputError(
            f"{path} holds {info.filename}, compressed {ratio:,.0f} to 1 (a zip bomb?); it is not opened; use an "
            "intact copy of the model."
        )


def _card_member_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The folder inside ``archive`` that holds ``model.json`` ("" or "name/"); refuses unsafe member names
    (absolute, drive letters, ``..``) and pickles."""
    names = archive.namelist()
    for name in names:
        parts = re.split(r"[\\/]", name)
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise InputError(f"{path} holds an unsafe entry {name!r} (absolute path or '..'); it is not opened.")
    cards = [name for name in names if name == CARD_FILE or re.fullmatch(rf"[^/\\]+/{re.escape(CARD_FILE)}", name)]
    if len(cards) != 1:
        if any(name.lower().endswith(PICKLE_SUFFIXES) for name in names):
            raise InputError(f"{path} holds PyTorch/pickle files, not a MedSegCNN model. {PICKLE_REFUSAL}")
        found = "no" if not cards else f"{len(cards)}"
        raise InputError(f"{path} holds {found} {CARD_FILE} (at the top or in one folder); it is not a model .zip.")
    return cards[0][: -len(CARD_FILE)]


def _read_card_member(archive: zipfile.ZipFile, member: str, path: Path) -> Any:
    """The JSON data of the card member, read with at most :data:`MAX_CARD_BYTES` bytes inflated."""
    info = archive.getinfo(member)
    if info.file_size > MAX_CARD_BYTES:
        raise InputError(f"The model card in {path} is implausibly large ({info.file_size:,} bytes); not read.")
    try:
        with archive.open(info) as source:
            text = source.read(MAX_CARD_BYTES + 1)
        return json.loads(text.decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise InputError(f"{path} is damaged; cannot read {member}: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"The model card {member} in {path} is not valid JSON (edited?): {error}") from None


def _looks_pickled(path: Path) -> bool:
    """True when the file starts like a pickle (protocol 2 or later)."""
    with path.open("rb") as file:
        head = file.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
