"""Argument lists of ``python -m MedSegCNNLib`` built from typed options, and the interpreter to run them with.

The lists end with ``--progress json`` (one JSON event per stdout line, for :class:`.process.BackgroundRun`).
Paths are passed as given (relative ones are relative to the run's ``cwd``).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputError
from ..inference.options import PredictOptions
from ..runtime import DEVICES
from ..training.arguments import config_options

PYTHON_SLICER = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
"""Slicer's Python launcher: runs Slicer's interpreter with the environment set up as inside the application."""
PROGRESS = ["--progress", "json"]
_TRAIN_OPTIONS_SET_HERE = frozenset(
    {"data", "output", "dims", "epochs", "time_budget", "init_from", "freeze_encoder", "device", "overwrite", "resume"}
)

PathLike = str | os.PathLike[str]


def python_executable() -> str:
    """The interpreter for background runs: ``sys.executable``, or Slicer's ``PythonSlicer`` inside Slicer.

    Inside Slicer ``sys.executable`` may be the application itself (``Slicer``, ``SlicerApp-real``) or the
    bare ``python-real``, which lacks Slicer's environment. ``PythonSlicer`` is looked for beside it, in its
    ``bin`` folder, and in the ``bin`` folder next to it (macOS: ``Contents/MacOS/Slicer`` →
    ``Contents/bin/PythonSlicer``); when ``sys.executable`` is not a Python interpreter, also on ``PATH``
    (Slicer puts its ``bin`` there, as ``slicer.util`` relies on).
    """
    executable = Path(sys.executable)
    name = executable.name.lower()
    if name.startswith("pythonslicer"):
        return sys.executable
    for folder in (executable.parent, executable.parent / "bin", executable.parent.parent / "bin"):
        candidate = folder / PYTHON_SLICER
        if candidate.is_file():
            return str(candidate)
    if not name.startswith("python"):
        found = shutil.which(PYTHON_SLICER)
        if found:
            return found
    return sys.executable


def predict_args(
    model: PathLike | Sequence[PathLike],
    input: PathLike,
    output: PathLike,
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
) -> list[str]:
    """``predict`` arguments: one model folder (or several: an ensemble), an image or folder, the output, and the
    prediction ``options`` (default: :class:`PredictOptions`' defaults); ``overwrite`` replaces existing files."""
    models = [model] if isinstance(model, str | os.PathLike) else list(model)
    if not models:
        raise InputError("No model given; choose a model folder (or several for an ensemble).")
    args = ["predict", "--model", *map(_path, models), "--input", _path(input), "--output", _path(output)]
    args += (options or PredictOptions()).to_argv()
    args += ["--overwrite"] if overwrite else []
    return args + PROGRESS


def train_args(
    data: PathLike,
    output: PathLike,
    *,
    dims: int | None = None,
    epochs: int | None = None,
    time_budget_min: float | None = None,
    init_from: PathLike | None = None,
    freeze_encoder: bool = False,
    device: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    extra: Mapping[str, object] | None = None,
) -> list[str]:
    """``train`` arguments: a dataset folder (e.g. from :func:`~MedSegCNNLib.data.export.write_training_folder`)
    and the run's output folder. ``None`` keeps the command's default.

    ``extra``: further ``medsegcnn train`` options by name (``"steps_per_epoch"`` or ``"steps-per-epoch"``):
    ``True`` gives a flag, ``False``/``None`` nothing, a sequence ``a,b,c`` (e.g. ``"patch_size": (40, 56, 40)``),
    anything else its text. Unknown options raise :class:`InputError`.
    """
    if dims not in (None, 2, 3):
        raise InputError(f"dims must be 2 (slice-wise) or 3; got {dims!r}.")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise InputError(f"epochs must be a whole number >= 1; got {epochs!r}.")
    if time_budget_min is not None and not (
        isinstance(time_budget_min, int | float) and math.isfinite(time_budget_min) and time_budget_min > 0
    ):
        raise InputError(f"The time budget must be a positive number of minutes; got {time_budget_min!r}.")
    if device is not None and device not in DEVICES:
        raise InputError(f"Unknown device {device!r}; choose one of {', '.join(DEVICES)}.")
    if freeze_encoder and init_from is None:
        raise InputError("Freezing the encoder needs a model to fine-tune from (init_from).")
    if overwrite and resume:
        raise InputError("Choose either resume (continue the run in the output folder) or overwrite, not both.")
    args = ["train", "--data", _path(data), "--output", _path(output)]
    if dims is not None:
        args += ["--dims", str(dims)]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if time_budget_min is not None:
        args += ["--time-budget", repr(float(time_budget_min))]
    if init_from is not None:
        args += ["--init-from", _path(init_from)]
    if device is not None:
        args += ["--device", device]
    args += [flag for flag, wanted in (("--freeze-encoder", freeze_encoder), ("--overwrite", overwrite)) if wanted]
    args += ["--resume"] if resume else []
    return args + _extra_train_args(extra or {}) + PROGRESS


def _extra_train_args(extra: Mapping[str, object]) -> list[str]:
    options = config_options()
    args: list[str] = []
    for key, value in extra.items():
        name = str(key).replace("-", "_")
        if name in _TRAIN_OPTIONS_SET_HERE or name == "progress":
            raise InputError(f"Give the training option {key!r} as the train_args parameter, not in extra.")
        action = options.get(name)
        if action is None:
            known = ", ".join(sorted(set(options) - _TRAIN_OPTIONS_SET_HERE - {"progress"}))
            raise InputError(f"Unknown training option {key!r}; known options: {known}.")
        flag = action.option_strings[-1]
        is_flag = action.nargs == 0
        if value is None or value is False:
            continue
        if is_flag != (value is True):
            wanted = "True or False" if is_flag else "a value"
            raise InputError(f"Training option {key!r} takes {wanted}; got {value!r}.")
        if is_flag:
            args.append(flag)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            args += [flag, ",".join(str(item) for item in value)]
        else:
            args += [flag, _path(value) if isinstance(value, os.PathLike) else str(value)]
    return args


def _path(path: PathLike) -> str:
    """``path`` as an argument; one starting with ``-`` gets ``./`` so that it is not read as an option."""
    text = os.fspath(path)
    return f".{os.sep}{text}" if text.startswith("-") else text
