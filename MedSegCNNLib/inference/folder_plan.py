"""The plan of a prediction over a folder of images (or one image): its cases, their channel files and outputs.

The cases and their channels (:func:`input_cases`): several files are the channels of one case, in the model
card's channel order, named after the first file without its ``_0000`` channel suffix. A folder holds one case per
file, except that nnU-Net's channel files (``<case>_0000``, ``<case>_0001``, ...) are grouped by case when the model
has several channels and the first file holds one, and ``<case>_0000`` files alone are cases ``<case>`` for a
one-channel model. A folder of multi-component files (RGB pictures, 4D or vector volumes) is one case per file.
Outputs are named by case.

A case is *complete* when every output file it asks for exists (:meth:`PredictOptions.output_paths`) and reads
back whole (the integrity checks of every read), and *partial* when only some do. ``existing="skip"`` leaves the
complete cases as they are and redoes the partial ones (replacing their files); a truncated or corrupt output
(say, from a copy that broke off) makes its case partial, with a warning naming the file: skipping asks for the
folder to be completed, and such a file holds no segmentation worth keeping. A symbolic link counts as an existing
output, also one to a missing file (see :class:`~MedSegCNNLib.inference.options.FolderOptions`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import check_writable, occupied, refuse_replacing_inputs, verify_png
from ..errors import InputError, OutputExistsError
from ..image.cases import CHANNEL_SUFFIX, channel_numbers, files_for_cases, list_cases, listing
from ..image.dicom import may_hold_dicom
from ..image.io import SUPPORTED_EXTENSIONS, case_name, is_image_path, read_image
from ..image.raster import Pages, check_label_format
from .options import FolderOptions, PredictOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One case: its name, input images (one per channel, or one file with every channel), label map
    (:meth:`PredictOptions.output_paths` names the other outputs) and reference. ``skip``: complete
    already, left as it is; ``replace``: its existing output files are replaced (``overwrite``, or a partial case
    being redone)."""

    case: str
    sources: tuple[Path, ...]
    output: Path
    reference: Path | None = None
    skip: bool = False
    replace: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON values (paths as strings)."""
        paths = {"sources": [str(path) for path in self.sources], "output": str(self.output)}
        reference = None if self.reference is None else str(self.reference)
        return {"case": self.case, **paths, "reference": reference, "skip": self.skip, "replace": self.replace}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        reference = None if data["reference"] is None else Path(data["reference"])
        sources = tuple(map(Path, data["sources"]))
        return cls(data["case"], sources, Path(data["output"]), reference, data["skip"], data["replace"])


@dataclass(frozen=True)
class Plan:
    """What a prediction does: ``jobs`` (every case, sorted by name), ``models`` (the model folders) and ``folder``
    (the output folder to create: ``None`` when it exists or the output is one file)."""

    jobs: tuple[Job, ...]
    models: tuple[Path, ...]
    folder: Path | None

    @property
    def todo(self) -> tuple[Job, ...]:
        """The jobs to segment: all but the skipped ones."""
        return tuple(job for job in self.jobs if not job.skip)

    def to_json(self) -> str:
        folder = None if self.folder is None else str(self.folder)
        jobs = [job.to_dict() for job in self.jobs]
        return json.dumps({"jobs": jobs, "models": [str(path) for path in self.models], "folder": folder})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        folder = None if data["folder"] is None else Path(data["folder"])
        return cls(tuple(map(Job.from_dict, data["jobs"])), tuple(map(Path, data["models"])), folder)


def plan_outputs(
    inputs: Sequence[Path],
    output: str,
    models: Sequence[Path],
    channels: Sequence[str],
    options: PredictOptions,
    folder_options: FolderOptions,
    *,
    reference: Path | None = None,
) -> Plan:
    """The plan of a prediction of ``inputs`` into ``output`` (a file, or a folder: an existing one, or a name
    ending in a path separator) with the model folders ``models``, whose model expects ``channels``; ``reference``:
    the reference label map (a file for one case) or folder (by case). Checks the inputs and every output path
    before anything is computed or created.

    ``folder_options.existing`` says what happens to existing outputs ("skip": the complete cases are skipped and
    the partial ones redone). An output is never an input, whatever the options.
    """
    cases, batch = input_cases(inputs, channels, pages=folder_options.pages)
    target = Path(output)
    to_folder = batch or target.is_dir() or output.endswith(("/", os.sep))
    blocker = next((path for path in (target, *target.parents) if occupied(path) and not path.is_dir()), None)
    if to_folder and blocker is not None:  # the folder (or one of its parents, to be created) is a file or link
        why = "The input is a folder of images, so --output must be a folder" if batch else "--output names a folder"
        what = "a link to a missing file" if not blocker.exists() else "a file"
        raise InputError(f"{why}; {blocker} is {what}.")
    stack = folder_options.pages == "stack"
    if to_folder:
        planned = [
            (case, sources, target / f"{case}{options.label_extension(sources[0], stack=stack)}")
            for case, sources in cases
        ]
    else:
        check_label_format(target.name)
        if not is_image_path(target):
            raise InputError(
                f"--output {target} must be a file ending in one of {', '.join(SUPPORTED_EXTENSIONS)}, or a folder."
            )
        planned = [(cases[0][0], cases[0][1], target)]
    references = _references(reference, [case for case, _, _ in planned])
    outputs = {output: list(options.output_paths(output).values()) for _, _, output in planned}
    refuse_replacing_inputs(
        [path for paths in outputs.values() for path in paths],
        [path for _, sources, _ in planned for path in sources] + references + list(models),
    )
    present = {output: [path for path in paths if occupied(path)] for output, paths in outputs.items()}
    existing = [f"{path}{'' if path.exists() else ' (a link to a missing file)'}" for paths in present.values()
                for path in paths]  # fmt: skip
    skip, overwrite = folder_options.existing == "skip", folder_options.existing == "overwrite"
    if existing and not (skip or overwrite):
        raise OutputExistsError(
            f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); pass --overwrite to replace them, "
            "or --skip-existing to keep the cases whose outputs all exist."
        )
    jobs = []
    for index, (case, sources, output) in enumerate(planned):
        complete = len(present[output]) == len(outputs[output]) and (not skip or _whole(case, options, output))
        reference = references[index] if references else None
        replace = overwrite or bool(present[output])
        jobs.append(Job(case, sources, output, reference, skip=skip and complete, replace=replace))
    skipped = sum(job.skip for job in jobs)
    if skipped:
        logger.info("Skipping %d of %d case(s): their output files all exist.", skipped, len(jobs))
    if to_folder and not target.is_dir():
        return Plan(tuple(jobs), tuple(models), target)
    for job in jobs:
        check_writable(job.output, overwrite=True)
    return Plan(tuple(jobs), tuple(models), None)


def _whole(case: str, options: PredictOptions, output: Path) -> bool:
    """Whether every output file of ``case`` (label map ``output``), all present, reads back whole; warns naming
    the first that does not (the case is then redone)."""
    for kind, path in options.output_paths(output).items():
        try:
            _check_output(kind, path)
        except InputError as error:
            logger.warning("Case %s is not complete and is segmented again, its output files replaced: %s", case, error)
            return False
    return True


def _check_output(kind: str, path: Path) -> None:
    """Refuse (:class:`InputError`) the existing output ``path`` of ``kind`` (a key of
    :meth:`PredictOptions.output_paths`) unless it reads back whole, with the checks of every read."""
    if kind == "overlay":
        try:
            verify_png(path)
        except InputError as error:
            raise InputError(f"{path} is truncated or corrupt: {error}") from None
    else:
        read_image(path)


def input_cases(
    inputs: Sequence[Path], channels: Sequence[str], *, pages: Pages = "single"
) -> tuple[list[tuple[str, tuple[Path, ...]]], bool]:
    """The cases of ``inputs`` (``--input``) as ``(name, channel sources)`` (see the module docstring) for a model with
    ``channels``, and whether the input is a folder of images (a batch). ``pages``: how multi-page files are read
    (``--pages``), when one is read to tell the layout."""
    for path in inputs:
        if not path.exists():
            raise InputError(f"Input {path} does not exist.")
    if len(inputs) > 1:
        return [_channel_files_case(inputs, channels)], False
    source = inputs[0]
    if not source.is_dir():
        return [(case_name(source), (source,))], False
    files = [path for path in source.iterdir() if path.is_file() and not path.name.startswith(".")]
    if not any(is_image_path(path) for path in files):
        if not may_hold_dicom(source):
            raise InputError(
                f"Input folder {source} holds no images: no files ending in {', '.join(SUPPORTED_EXTENSIONS)} "
                "(hidden files are ignored) and no DICOM series; give a folder of images, a DICOM folder or a file."
            )
        return [(case_name(source), (source,))], False
    return _folder_cases(source, channels, pages), True


def _channel_files_case(files: Sequence[Path], channels: Sequence[str]) -> tuple[str, tuple[Path, ...]]:
    """The one case that several ``--input`` files make: one file per channel, in the model card's order."""
    folder = next((path for path in files if path.is_dir()), None)
    if folder is not None:
        raise InputError(
            f"Several --input paths are the channel files of one case, but {folder} is a folder; give one image "
            "file per channel, or the folder alone."
        )
    if len(files) != len(channels):
        raise InputError(
            f"{len(files)} --input files given, but the model expects {len(channels)} input channel(s) "
            f"({', '.join(channels)}): give one file per channel, in that order."
        )
    matches = [CHANNEL_SUFFIX.match(case_name(path)) for path in files]
    if all(matches) and len({match["case"] for match in matches}) == 1:
        numbers = [match["channel"] for match in matches]
        if numbers != [f"{index:04d}" for index in range(len(files))]:
            raise InputError(
                f"The --input files are channels _{', _'.join(numbers)} of case {matches[0]['case']}; give them in "
                f"the model's channel order ({', '.join(channels)}): _0000, _0001, ..."
            )
    first = matches[0]
    return (first["case"] if first and first["channel"] == "0000" else case_name(files[0])), tuple(files)


def _folder_cases(folder: Path, channels: Sequence[str], pages: Pages) -> list[tuple[str, tuple[Path, ...]]]:
    """The cases of a folder of images (see the module docstring)."""
    files = list_cases(folder)
    one_per_file = [(case, (path,)) for case, path in files.items()]
    numbered = channel_numbers(files)
    if numbered is None:
        return one_per_file
    if len(channels) == 1:
        if all(list(numbers) == [0] for numbers in numbered.values()):
            return [(case, (numbers[0],)) for case, numbers in numbered.items()]
        return one_per_file
    first = next(iter(files.values()))
    components = read_image(first, pages=pages).num_channels
    if components == len(channels):
        logger.info("%s holds %d-channel images (e.g. %s): one case per file.", folder, components, first.name)
        return one_per_file
    wanted = range(len(channels))
    problems = []
    for case, numbers in numbered.items():
        missing = [f"_{number:04d}" for number in wanted if number not in numbers]
        extra = [f"_{number:04d}" for number in sorted(numbers) if number not in wanted]
        text = ", ".join(
            [f"{case} lacks {' '.join(missing)}"] * bool(missing) + [f"{case} has {' '.join(extra)}"] * bool(extra)
        )
        if text:
            problems.append(text)
    if problems:
        raise InputError(
            f"Channel files missing or extra in {folder}: the model expects {len(channels)} channels "
            f"({', '.join(channels)}), one file each named <case>_0000 to <case>_{len(channels) - 1:04d}; "
            f"{listing(problems, limit=3)}."
        )
    return [(case, tuple(numbers[number] for number in wanted)) for case, numbers in numbered.items()]


def _references(reference: Path | None, cases: list[str]) -> list[Path]:
    """The reference label map of each case (``--ref``), or none."""
    if reference is None:
        return []
    if len(cases) == 1 and reference.is_file():
        return [reference]
    if not reference.is_dir():
        raise InputError(f"--ref {reference} must be a label map file (one input) or a folder (a folder of inputs).")
    return files_for_cases(reference, cases, what="reference")
