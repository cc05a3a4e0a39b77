"""``PredictOptions``: every choice a prediction makes, as one typed, self-validating record.

:class:`FolderOptions`, its companion, holds what only a folder of images asks (existing outputs, colour pictures,
multi-page files, the check of every input before anything is written):
:func:`~MedSegCNNLib.inference.folder.predict_folder` takes both.

The record goes from the Slicer panel (or a script) through the background command line to
:func:`~MedSegCNNLib.inference.segment.segment`: :meth:`PredictOptions.to_argv` writes it as ``medsegcnn predict``
arguments, :meth:`PredictOptions.add_arguments` declares those arguments from the fields (each field's
``metadata`` holds its flag and help) and :meth:`PredictOptions.from_args` reads them back. It also names the
files a prediction writes beside the label map (:meth:`PredictOptions.output_paths`). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ..atomic import full_suffix
from ..errors import InputError
from ..image.io import SUPPORTED_EXTENSIONS, is_raster_path
from ..image.raster import LOSSY_EXTENSIONS, Pages, check_label_format
from ..postprocessing import PostprocessingConfig
from ..runtime import (
    BACKENDS,
    DEVICES,
    INFERENCE_PRECISIONS,
    Backend,
    Device,
    InferencePrecision,
    user_cache_folder,
)

#: The files written beside the label map ``NAME.EXT`` when asked for: ``NAME_<option><extension>``, in this order.
EXTRA_OUTPUTS = {"probabilities": ".nii.gz", "uncertainty": ".nii.gz", "overlay": ".png"}
OUTPUT_FORMATS = ("auto", *(extension for extension in SUPPORTED_EXTENSIONS if extension not in LOSSY_EXTENSIONS))
"""The choices of ``output_format``: ``auto`` (see :meth:`PredictOptions.label_extension`) or a file type."""
VOLUME_FORMAT = ".nii.gz"
"""The label maps' file type with ``output_format="auto"`` for inputs other than 2D pictures."""

ExistingOutputs = Literal["refuse", "overwrite", "skip"]
"""What a folder prediction does with output files that exist already (see :class:`FolderOptions`)."""
EXISTING_OUTPUTS: tuple[ExistingOutputs, ...] = get_args(ExistingOutputs)
PAGES: tuple[Pages, ...] = get_args(Pages)


def _option(flag: str, help: str, *, metavar: str | None = None, choices: tuple[str, ...] | None = None) -> dict:
    """A field's command-line form: its flag, help text, metavar and choices (``argparse`` keywords)."""
    return {"flag": flag, "help": help, "metavar": metavar, "choices": choices}


@dataclass(frozen=True)
class PredictOptions:
    """How to predict and what to write. ``min_size_mm3`` is a volume in mm³ (0: keep every component).

    - ``device``: where the network runs (``auto``: CUDA, else Apple MPS, else CPU; the CPU for the OpenVINO
      backend); ``precision``: ``fp32``, ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA); ``auto``: bf16/fp16 on CUDA,
      bf16 on CPUs with bf16 units, else fp32 (see :mod:`MedSegCNNLib.runtime`). A reduced precision is used
      only where it passes the accuracy gate (:mod:`~MedSegCNNLib.inference.precision_gate`).
    - ``backend``: ``torch``, ``openvino`` (CPU; ``pip install "medsegcnn[openvino]"``) or ``auto`` (OpenVINO on
      the CPU when it is installed, else torch).
    - ``cache_dir``: where converted networks and precision decisions are kept (empty: the per-user cache,
      :func:`~MedSegCNNLib.runtime.user_cache_folder`).
    - ``tta``: average over every mirror flip of the spatial axes (2**dims predictions per window).
    - ``probabilities``, ``uncertainty`` (entropy of the mean softmax, in nats), ``overlay`` (PNG montage):
      also compute and write these (:meth:`output_paths` names the files).
    - ``keep_largest``, ``min_size_mm3``, ``fill_holes``: post-processing of every label
      (:class:`~MedSegCNNLib.postprocessing.PostprocessingConfig`).
    - ``allow_partial_channels``: go on when a further input channel leaves more than 1 % of the first channel's
      voxels uncovered (they get 0; :func:`~MedSegCNNLib.image.geometry.channel_onto`); otherwise refused.
    - ``output_format``: the file type of the label maps written into an output folder (one of
      :data:`OUTPUT_FORMATS`); ``auto``: the input's own format for 2D pictures (a JPEG gives PNG), else
      ``.nii.gz`` (:meth:`label_extension`).
    """

    device: Device = field(default="auto", metadata=_option("--device", "where the network runs", choices=DEVICES))
    precision: InferencePrecision = field(
        default="auto",
        metadata=_option(
            "--precision", "auto: bf16/fp16 on CUDA, bf16 on CPUs with bf16 units", choices=INFERENCE_PRECISIONS
        ),
    )
    backend: Backend = field(
        default="auto",
        metadata=_option("--backend", "auto: OpenVINO on the CPU when installed, else torch", choices=BACKENDS),
    )
    cache_dir: str = field(
        default="", metadata=_option("--cache-dir", "converted networks are cached here", metavar="DIR")
    )
    tta: bool = field(default=False, metadata=_option("--tta", "average over mirrored copies (slower, often better)"))
    probabilities: bool = field(default=False, metadata=_option("--probabilities", "also write class probabilities"))
    uncertainty: bool = field(
        default=False, metadata=_option("--uncertainty", "also write the entropy of the probabilities")
    )
    overlay: bool = field(default=False, metadata=_option("--overlay", "also write a PNG montage of the segmentation"))
    keep_largest: bool = field(
        default=False, metadata=_option("--keep-largest", "keep the largest component of each label")
    )
    min_size_mm3: float = field(default=0.0, metadata=_option("--min-size", "remove smaller components", metavar="MM3"))
    fill_holes: bool = field(default=False, metadata=_option("--fill-holes", "fill holes enclosed by a label"))
    allow_partial_channels: bool = field(
        default=False,
        metadata=_option(
            "--allow-partial-channels",
            "go on when a further channel leaves over 1 percent of the first uncovered (0 there)",
        ),
    )
    output_format: str = field(
        default="auto",
        metadata=_option(
            "--format",
            "label maps' file type in an output folder; auto: the input's for 2D pictures (JPEG: .png), else .nii.gz",
            choices=OUTPUT_FORMATS,
        ),
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InputError(f"Unknown device {self.device!r}; choose one of {', '.join(DEVICES)}.")
        if self.precision not in INFERENCE_PRECISIONS:
            raise InputError(f"Unknown precision {self.precision!r}; choose one of {', '.join(INFERENCE_PRECISIONS)}.")
        if self.precision == "int8" and self.backend == "torch":
            raise InputError("int8 runs on the OpenVINO backend; use --backend openvino (or auto) with int8.")
        if self.backend not in BACKENDS:
            raise InputError(f"Unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}.")
        if not isinstance(self.cache_dir, str):
            raise InputError(f"cache_dir must be a folder name (a string); got {self.cache_dir!r}.")
        for option in dataclasses.fields(self):
            if isinstance(option.default, bool) and not isinstance(getattr(self, option.name), bool):
                raise InputError(f"{option.name} must be True or False; got {getattr(self, option.name)!r}.")
        size = self.min_size_mm3
        if isinstance(size, bool) or not isinstance(size, int | float) or not (math.isfinite(size) and size >= 0):
            raise InputError(f"The minimum component size must be a number of mm³ >= 0; got {size!r}.")
        object.__setattr__(self, "min_size_mm3", float(size))
        check_label_format(str(self.output_format))
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(
                f"Unknown output format {self.output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}."
            )

    @property
    def device_choice(self) -> str:
        """The device to load the model on: ``device``, except the CPU for ``auto`` with the OpenVINO backend."""
        return "cpu" if self.backend == "openvino" and self.device == "auto" else self.device

    @property
    def cache_folder(self) -> Path:
        """``cache_dir``, or the per-user cache folder when it is empty."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else user_cache_folder()

    @property
    def postprocessing(self) -> PostprocessingConfig:
        """The post-processing these options ask for (``active`` is false when none)."""
        return PostprocessingConfig(
            keep_largest=self.keep_largest, min_size_mm3=self.min_size_mm3, fill_holes=self.fill_holes
        )

    @property
    def wants_probabilities(self) -> bool:
        """Whether the class probabilities must be kept: for themselves or for the uncertainty."""
        return self.probabilities or self.uncertainty

    def label_extension(self, source: Path, *, stack: bool = False) -> str:
        """The file type of the label map of input ``source`` in an output folder: ``output_format``, or for
        ``auto`` the input's own format when it is a 2D picture (lower case; JPEG gives ``.png``, since its lossy
        compression would change the labels) and :data:`VOLUME_FORMAT` for every other input, including pictures
        read as a 3D ``stack`` of pages."""
        if self.output_format != "auto":
            return self.output_format
        if stack or not is_raster_path(source):
            return VOLUME_FORMAT
        extension = source.suffix.lower()
        return ".png" if extension in LOSSY_EXTENSIONS else extension

    def output_paths(self, labels: Path) -> dict[str, Path]:
        """The files written for the label map ``labels``: ``{"labels": labels}`` and, for each extra output asked
        for, ``NAME_<option><extension>`` beside it (e.g. ``case_probabilities.nii.gz`` for ``case.seg.nrrd``)."""
        stem = labels.name[: -len(full_suffix(labels))]
        extras = {
            name: labels.with_name(f"{stem}_{name}{extension}")
            for name, extension in EXTRA_OUTPUTS.items()
            if getattr(self, name)
        }
        return {"labels": labels, **extras}

    def to_argv(self) -> list[str]:
        """``medsegcnn predict`` arguments for every option that differs from its default."""
        args: list[str] = []
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if value == option.default:
                continue
            flag = option.metadata["flag"]
            if isinstance(value, bool):
                args.append(flag)
            else:
                args += [flag, repr(value) if isinstance(value, float) else str(value)]
        return args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declare one command-line option per field (flags for booleans), with the field's default."""
        for option in dataclasses.fields(cls):
            spec = option.metadata
            if isinstance(option.default, bool):
                parser.add_argument(spec["flag"], action="store_true", help=spec["help"])
                continue
            keywords: dict[str, Any] = {"default": option.default, "help": spec["help"]}
            if spec["choices"] is not None:
                keywords["choices"] = spec["choices"]
            if spec["metavar"] is not None:
                keywords["metavar"] = spec["metavar"]
            if isinstance(option.default, float):
                keywords["type"] = float
            parser.add_argument(spec["flag"], **keywords)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PredictOptions:
        """The options of a namespace parsed with a parser that :meth:`add_arguments` set up."""
        given = vars(args)
        return cls(**{option.name: given[_destination(option)] for option in dataclasses.fields(cls)})


@dataclass(frozen=True)
class FolderOptions:
    """What a prediction over a folder of images (or one image written to a file) does besides predicting.

    - ``existing``: what happens to output files that exist already (a symbolic link counts, also one to a missing
      file): ``"refuse"`` (:class:`~MedSegCNNLib.errors.OutputExistsError` before anything is written),
      ``"overwrite"`` (a link itself is replaced, never the file it points to) or ``"skip"`` (the complete cases,
      every output file present and read back whole, are kept; the partial ones are redone). An input is never
      replaced, whatever this says.
    - ``grayscale``: a colour picture for a one-channel model becomes its luminance, 0.299 R + 0.587 G +
      0.114 B (ITU-R BT.601).
    - ``pages``: multi-page TIFFs (and animated PNGs) are refused (``single``) or read as one 3D image, z = page
      (``stack``; their label maps are then written as .nii.gz unless ``output_format`` says otherwise).
    - ``check_inputs``: with two or more cases to segment, read and check every input against the model before
      anything is written, so that a bad file among good ones stops the run with nothing written (each input is
      then read twice; a single case is read once, before anything of it is written). Without it, a bad input is
      one more failed case, recorded while the others go on.
    """

    existing: ExistingOutputs = "refuse"
    grayscale: bool = False
    pages: Pages = "single"
    check_inputs: bool = True

    def __post_init__(self) -> None:
        if self.existing not in EXISTING_OUTPUTS:
            raise InputError(f"existing must be one of {', '.join(EXISTING_OUTPUTS)}; got {self.existing!r}.")
        if self.pages not in PAGES:
            raise InputError(f"pages must be one of {', '.join(PAGES)}; got {self.pages!r}.")
        for name in ("grayscale", "check_inputs"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False; got {getattr(self, name)!r}.")


def _destination(option: dataclasses.Field) -> str:
    """The ``argparse`` destination of a field's flag (``--min-size`` → ``min_size``)."""
    return option.metadata["flag"].lstrip("-").replace("-", "_")
