"""Finding the volumes in a folder and pairing two folders by case name."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import InputError
from .io import SUPPORTED_EXTENSIONS, case_name, is_image_path

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
"""nnU-Net's channel files: ``<case>_0000``, ``<case>_0001``, ... (case name, then the 4-digit channel number)."""


def list_cases(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Map case name → file for every image file directly inside ``folder`` (not recursive), sorted by name.

    Image files are those :func:`~.io.read_image` reads: volumes and 2D raster files (``.png``, ``.jpg``, ``.tif``,
    ``.bmp``...). The case name is the file name without its format extension (``case_001.nii.gz`` → ``case_001``,
    ``fundus_07.png`` → ``fundus_07``).
    Hidden files are ignored. Raises :class:`InputError` when the folder has no volumes or holds the same
    case twice (e.g. ``a.nii.gz`` and ``a.nrrd``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not is_image_path(path):
            continue
        name = case_name(path)
        if name in cases:
            raise InputError(
                f"Case {name!r} appears twice in {folder} ({cases[name].name} and {path.name}); keep one of them."
            )
        cases[name] = path
    if not cases:
        raise InputError(
            f"No volumes found in {folder} (looked for files ending in {', '.join(SUPPORTED_EXTENSIONS)})."
        )
    return cases


def channel_numbers(files: Mapping[str, Path]) -> dict[str, dict[int, Path]] | None:
    """Case → {channel number: file} when every name of ``files`` (case name → file, as :func:`list_cases` gives)
    ends in ``_<4 digits>`` (:data:`CHANNEL_SUFFIX`); otherwise ``None``. Cases sorted by name."""
    numbered: dict[str, dict[int, Path]] = {}
    for name, path in files.items():
        match = CHANNEL_SUFFIX.match(name)
        if match is None:
            return None
        numbered.setdefault(match["case"], {})[int(match["channel"])] = path
    return dict(sorted(numbered.items()))


def group_channel_files(files: Mapping[str, Path]) -> dict[str, tuple[Path, ...]] | None:
    """Case → channel files (in channel order) when every name ends in ``_<4 digits>`` and every case has the
    channels 0000, 0001, ... up to the same last one (nnU-Net's layout); otherwise ``None``."""
    numbered = channel_numbers(files)
    if numbered is None:
        return None
    counts = {len(channels) for channels in numbered.values()}
    if len(counts) != 1 or any(sorted(channels) != list(range(len(channels))) for channels in numbered.values()):
        return None
    return {case: tuple(path for _, path in sorted(channels.items())) for case, channels in numbered.items()}


def pair_cases(predictions: str | os.PathLike[str], references: str | os.PathLike[str]) -> list[tuple[str, Path, Path]]:
    """Pair the volumes of two folders by case name: ``[(case, prediction_path, reference_path), ...]``.

    Every case must have a partner; otherwise :class:`InputError` lists the unmatched cases of each side.
    """
    pred_cases, ref_cases = list_cases(predictions), list_cases(references)
    require_partners(
        pred_cases,
        ref_cases,
        roles=("prediction", "reference"),
        where=f"{predictions} and {references}",
        hint="Files are matched by name without extension; rename or remove the unmatched ones.",
    )
    return [(name, pred_cases[name], ref_cases[name]) for name in sorted(pred_cases)]


def files_for_cases(folder: str | os.PathLike[str], cases: Iterable[str], *, what: str) -> list[Path]:
    """The file of each of ``cases`` in ``folder``, matched by case name (:func:`list_cases`); ``what`` names the
    files in the message that lists the cases without one (e.g. "reference", "ROI mask")."""
    cases = list(cases)
    available = list_cases(folder)
    missing = [case for case in cases if case not in available]
    if missing:
        raise InputError(
            f"No {what} in {folder} for {listing(missing)}; {what}s are matched to the cases by file name without "
            "extension."
        )
    return [available[case] for case in cases]


def require_partners(
    first: Iterable[str], second: Iterable[str], *, roles: tuple[str, str], where: str, hint: str
) -> None:
    """Raise :class:`InputError` listing the case names of each side that have no partner on the other."""
    first, second = set(first), set(second)
    parts = []
    if only_first := sorted(first - second):
        parts.append(f"no {roles[1]} for {listing(only_first)}")
    if only_second := sorted(second - first):
        parts.append(f"no {roles[0]} for {listing(only_second)}")
    if parts:
        raise InputError(f"Cases do not match between {where}: {'; '.join(parts)}. {hint}")


def listing(names: list[str], limit: int = 5) -> str:
    """Up to ``limit`` names joined by commas, then how many more there are."""
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown
