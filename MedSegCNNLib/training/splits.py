"""K-fold cross-validation splits, saved to JSON and reused so every fold sees the same partition."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..errors import InputError


def make_splits(case_names: Sequence[str], folds: int, *, seed: int = 0) -> list[dict[str, list[str]]]:
    """Partition case names into ``folds`` folds: ``[{"train": [...], "val": [...]}, ...]``.

    Cases are shuffled with ``seed`` and dealt round-robin, so fold sizes differ by at most one; every
    case is in exactly one validation fold.
    """
    names = sorted(set(case_names))
    if len(names) != len(case_names):
        raise InputError("Case names must be unique to split them into folds.")
    if len(names) < folds:
        raise InputError(f"{folds}-fold cross-validation needs at least {folds} cases; the dataset has {len(names)}.")
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[index]: position % folds for position, index in enumerate(order)}
    return [
        {
            "train": [name for name in names if fold_of[name] != fold],
            "val": [name for name in names if fold_of[name] == fold],
        }
        for fold in range(folds)
    ]


def load_or_create_splits(
    path: str | os.PathLike[str], case_names: Sequence[str], folds: int, *, seed: int = 0
) -> list[dict[str, list[str]]]:
    """The splits in ``path`` when it exists (checked against the dataset), else new ones written there."""
    path = Path(path)
    if not path.exists():
        splits = make_splits(case_names, folds, seed=seed)
        write_text_atomic(path, json.dumps(splits, indent=1) + "\n")
        return splits
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
        valid = isinstance(splits, list) and all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list) for s in splits
        )
    except (OSError, json.JSONDecodeError):
        valid = False
    if not valid:
        raise InputError(f"{path} is not a splits file ([{{'train': [...], 'val': [...]}}, ...]); delete or fix it.")
    if len(splits) != folds:
        raise InputError(
            f"{path} holds {len(splits)} folds but {folds} were asked for; delete it or ask for {len(splits)}."
        )
    known = set(case_names)
    listed = {name for split in splits for name in split["train"] + split["val"]}
    if listed != known:
        missing, extra = sorted(known - listed), sorted(listed - known)
        raise InputError(
            f"{path} does not match the dataset (not in splits: {missing[:5]}, not in dataset: {extra[:5]}); "
            "delete it to make new splits."
        )
    return splits
