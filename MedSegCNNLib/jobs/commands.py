"""Argument lists of ``python -m MedSegCNNLib`` built from typed options, and the interpreter to run them with.

The lists end with ``--progress json`` (one JSON event per stdout line, for :class:`.process.BackgroundRun`).
Paths are passed as given (relative ones are relative to the run's ``cwd``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..inference.options import PredictOptions
from ..training.arguments import config_arguments
from ..training.config import TrainingConfig

PYTHON_SLICER = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
"""Slicer's Python launcher: runs Slicer's interpreter with the environment set up as inside the application."""
PROGRESS = ["--progress", "json"]
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
    input: PathLike | Sequence[PathLike],
    output: PathLike,
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
) -> list[str]:
    """``predict`` arguments: one model folder (or several: an ensemble), an image or folder (or several image
    files: one per input channel, in the model's order), the output, and the prediction ``options`` (default:
    :class:`PredictOptions`' defaults); ``overwrite`` replaces existing files."""
    models = [model] if isinstance(model, str | os.PathLike) else list(model)
    if not models:
        raise InputError("No model given; choose a model folder (or several for an ensemble).")
    inputs = [input] if isinstance(input, str | os.PathLike) else list(input)
    if not inputs:
        raise InputError("No input given; choose an image, a folder of images, or one image per channel.")
    args = ["predict", "--model", *map(_path, models), "--input", *map(_path, inputs), "--output", _path(output)]
    args += (options or PredictOptions()).to_argv()
    args += ["--overwrite"] if overwrite else []
    return args + PROGRESS


def train_args(
    data: PathLike,
    output: PathLike,
    config: TrainingConfig | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> list[str]:
    """``train`` arguments: a dataset folder (e.g. from :func:`~MedSegCNNLib.data.export.write_training_folder`),
    the run's output folder and the run's ``config`` (default: :class:`TrainingConfig`'s defaults, i.e. planned),
    written as options (:func:`~MedSegCNNLib.training.arguments.config_arguments`)."""
    config = config or TrainingConfig()
    if config.freeze_encoder and not config.init_from:
        raise InputError("Freezing the encoder needs a model to fine-tune from (init_from).")
    if overwrite and resume:
        raise InputError("Choose either resume (continue the run in the output folder) or overwrite, not both.")
    if config.init_from:
        config = config.replace(init_from=_path(config.init_from))
    args = ["train", "--data", _path(data), "--output", _path(output), *config_arguments(config)]
    args += ["--overwrite"] if overwrite else []
    args += ["--resume"] if resume else []
    return args + PROGRESS


def _path(path: PathLike) -> str:
    """``path`` as an argument; one starting with ``-`` gets ``./`` so that it is not read as an option."""
    text = os.fspath(path)
    return f".{os.sep}{text}" if text.startswith("-") else text
