"""Finding the volumes in a folder and pairing two folders by case name."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .io import case_name, is_image_path


def list_cases(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Map case name → file for every volume directly inside ``folder`` (not recursive), sorted by name.

    The case name is the file name without its format extension (``case_001.nii.gz`` → ``case_001``).
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
            f"No volumes found in {folder} (looked for .nii, .nii.gz, .nrrd, .seg.nrrd, .mha, .mhd files)."
        )
    return cases


def pair_cases(predictions: str | os.PathLike[str], references: str | os.PathLike[str]) -> list[tuple[str, Path, Path]]:
    """Pair the volumes of two folders by case name: ``[(case, prediction_path, reference_path), ...]``.

    Every case must have a partner; otherwise :class:`InputError` lists the unmatched cases of each side.
    """
    pred_cases, ref_cases = list_cases(predictions), list_cases(references)
    only_pred = sorted(set(pred_cases) - set(ref_cases))
    only_ref = sorted(set(ref_cases) - set(pred_cases))
    if only_pred or only_ref:
        parts = []
        if only_pred:
            parts.append(f"no reference for {_listing(only_pred)}")
        if only_ref:
            parts.append(f"no prediction for {_listing(only_ref)}")
        raise InputError(
            f"Cases do not match between {predictions} and {references}: {'; '.join(parts)}. "
            "Files are matched by name without extension; rename or remove the unmatched ones."
        )
    return [(name, pred_cases[name], ref_cases[name]) for name in sorted(pred_cases)]


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} (+{len(names) - limit} more)" if len(names) > limit else shown
