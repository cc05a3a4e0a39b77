"""Reading and checking the model card (``model.json``) of a saved model folder or ``.zip``, without torch.

A model folder holds ``model.json`` and the weights file the card names (``model.safetensors``); a model ``.zip``
holds that folder's two files at its top or inside one folder. This module only reads cards and finds weights
files: listing models (the registry, the Slicer panel) stays cheap, and nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

from .._version import __version__
from ..errors import InputError
from .json_file import read_json

MODEL_FORMAT = "medsegcnn-model"
MODEL_FORMAT_VERSION = 1
CARD_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
"""File types refused as models because they are (usually) pickles."""

PICKLE_REFUSAL = (
    "MedSegCNN never unpickles files; export the state dict to safetensors or use import_state_dict(...) "
    "(see MedSegCNNLib.checkpoint)."
)
_MAX_CARD_BYTES = 16 * 2**20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_model_card(path: str | Path, *, require_weights: bool = False) -> dict:
    """The checked model card of a model folder, its ``model.json`` or a ``.zip`` (no weights are read).

    With ``require_weights``, a card whose weights file is absent raises :class:`InputError` too (the file is
    looked up, not read or hashed).
    """
    with opened_model(path, need_weights=False) as (card, _):
        if require_weights and not _weights_present(Path(path), card):
            raise InputError(
                f"The weights file {card['weights']['file']} named by the model card of {path} is missing; the model "
                "is incomplete (copy the whole model folder)."
            )
        return card


@contextlib.contextmanager
def opened_model(path: str | Path, *, need_weights: bool) -> Iterator[tuple[dict, Path | None]]:
    """Yield ``(card, weights_path)`` for a model folder, its ``model.json`` or a ``.zip`` (whose weights are
    extracted to a temporary folder that lives as long as the context); ``weights_path`` is ``None`` unless
    ``need_weights``. Unreadable, unsafe, pickled or unsupported models raise :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Model {path} does not exist; give a model folder, its {CARD_FILE} or a model .zip.")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise InputError(f"{path} is not a readable model .zip (damaged or truncated?): {error}") from None
        with archive:
            prefix = _card_member_prefix(archive, path)
            card = check_card(_read_card_member(archive, prefix + CARD_FILE, path), path)
            if not need_weights:
                yield card, None
                return
            member = prefix + card["weights"]["file"]
            with tempfile.TemporaryDirectory(prefix="medsegcnn-model-") as scratch:
                weights_path = Path(scratch) / card["weights"]["file"]
                try:
                    with archive.open(member) as source, weights_path.open("wb") as target:
                        shutil.copyfileobj(source, target, 2**20)
                except KeyError:
                    raise InputError(f"{path} lacks the weights file {member} its model card names.") from None
                except (zipfile.BadZipFile, OSError, EOFError) as error:
                    raise InputError(f"{path} is damaged; cannot extract {member}: {error}") from None
                yield card, weights_path
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
    if card_path.stat().st_size > _MAX_CARD_BYTES:
        raise InputError(f"The model card {card_path} is implausibly large; not read.")
    card = check_card(read_json(card_path, what="model card"), card_path)
    yield card, (folder / card["weights"]["file"] if need_weights else None)


def check_card(card: Any, where: Path) -> dict:
    """``card`` after checking that it is a MedSegCNN model card this version can read."""
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise InputError(f'{where} is not a MedSegCNN model card (no "format": "{MODEL_FORMAT}").')
    version = card.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{where} has an invalid format_version {version!r} (corrupted?).")
    if version > MODEL_FORMAT_VERSION:
        raise InputError(
            f"{where} was written by a newer MedSegCNN (model format {version}; this is {__version__}, which reads "
            f"format {MODEL_FORMAT_VERSION}); upgrade MedSegCNN."
        )
    weights = card.get("weights")
    file = weights.get("file") if isinstance(weights, dict) else None
    sha256 = weights.get("sha256") if isinstance(weights, dict) else None
    if not isinstance(file, str) or file != PurePath(file).name or "\\" in file or not file.endswith(".safetensors"):
        raise InputError(f"{where} names no valid weights file (a .safetensors file beside the card); corrupted?")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InputError(f"{where} has no valid SHA-256 for its weights (corrupted?).")
    return card


def _weights_present(path: Path, card: dict) -> bool:
    """Whether the weights file of the checked ``card`` read from ``path`` exists (a ``.zip`` member or a file)."""
    file = card["weights"]["file"]
    if path.is_file() and path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            return _card_member_prefix(archive, path) + file in archive.namelist()
    folder = path if path.is_dir() else path.parent
    return (folder / file).is_file()


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
    info = archive.getinfo(member)
    if info.file_size > _MAX_CARD_BYTES:
        raise InputError(f"The model card in {path} is implausibly large ({info.file_size} bytes); not read.")
    try:
        return json.loads(archive.read(member).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise InputError(f"{path} is damaged; cannot read {member}: {error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"The model card {member} in {path} is not valid JSON (edited?): {error}") from None


def _looks_pickled(path: Path) -> bool:
    """True when the file starts like a pickle (protocol 2 or later)."""
    with path.open("rb") as file:
        head = file.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
