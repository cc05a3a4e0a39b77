"""Segment, train and evaluate with MRML nodes: what the Slicer module's logic and console API call.

Long work runs in a separate process (:class:`~MedSegCNNLib.jobs.BackgroundRun`), so the caller's thread
(Slicer's GUI) stays free: a task writes its inputs from the scene into a temporary folder, starts
``python -m MedSegCNNLib predict|train ... --progress json``, is polled from a timer, and on completion
:meth:`~SegmentationTask.finish` brings the results into the scene (on the caller's thread, as MRML requires).

Protocol of both task classes: the constructor checks the inputs (raising
:class:`~MedSegCNNLib.errors.InputError` with the scene unchanged), then ``start()``, ``poll()`` → new
:class:`~MedSegCNNLib.progress.Event` objects, ``progress`` (fraction, stage, eta_s), ``state`` (``idle``,
``running``, ``completed``, ``failed``, ``cancelled``), ``log``, ``error``, ``cancel()``, ``wait(timeout)``
(scripts), ``finish()``. A cancelled or failed task removes its temporary folder and adds nothing to the scene.

:func:`evaluate_nodes` runs in the caller's process: the metrics of a whole segmentation take seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image, LabelInfo
from ..image.io import read_image, write_image
from ..image.raster import COLOR_CHANNEL_NAMES
from ..inference.options import PredictOptions
from ..jobs import BackgroundRun, Progress
from ..jobs.commands import predict_args, train_args
from ..metrics import EvaluationResult, evaluate
from ..progress import Event
from ..registry import ModelEntry, find_model
from ..training.config import TrainingConfig
from .geometry import single_slice_axis, slice_as_2d, slice_to_3d
from .multi_volume import image_from_volume_nodes, volume_nodes_channel_names
from .scene_cleanup import remove_added_node
from .segmentation_labels import labels_from_segmentation
from .segmentations import check_replaceable, segmentation_from_labels
from .tables import table_from_metrics
from .volumes import volume_channel_names, volume_grid, volume_node_from_image

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SegmentationOutputs:
    """The nodes a finished :class:`SegmentationTask` added or filled: the segmentation, one probability
    volume per foreground label (if asked) and the uncertainty volume (if asked)."""

    segmentation_node: Any
    probability_nodes: list[Any] = field(default_factory=list)
    uncertainty_node: Any = None


class _Task:
    """The part both tasks share: a background run over a temporary folder."""

    def __init__(self, run: BackgroundRun, workdir: Path | None) -> None:
        self._run = run
        self._workdir = workdir

    def start(self) -> _Task:
        self._run.start()
        return self

    def poll(self) -> list[Event]:
        return self._run.poll()

    @property
    def progress(self) -> Progress:
        return self._run.progress

    @property
    def state(self) -> str:
        return self._run.state

    @property
    def log(self) -> str:
        return self._run.log

    @property
    def error(self) -> str | None:
        return self._run.error

    def cancel(self) -> str:
        return self._run.cancel()

    def wait(self, timeout: float | None = None) -> str:
        return self._run.wait(timeout)

    def _check_completed(self, what: str) -> None:
        if self.state != "completed":
            if self.state == "failed":
                raise InputError(f"{what} failed: {self.error}")
            raise InputError(f"{what} is {self.state}, not completed; nothing was added to the scene.")

    def _remove_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)


def _read_result(path: Path) -> Image:
    """A result file that the background run wrote in its temporary folder, checked like every image read; a
    damaged one is refused naming the file, not the temporary folder the user never chose."""
    try:
        return read_image(path)
    except InputError as error:
        cause = str(error).replace(str(path), path.name)
        raise InputError(
            f"The segmentation's result could not be loaded ({cause.rstrip('.')}); run the segmentation again and "
            f"check the free space in the temporary folder {tempfile.gettempdir()}."
        ) from None


class SegmentationTask(_Task):
    """Segment ``volume_nodes`` with ``model`` (a registry name or a model folder): their channels, in order, are
    the model's input channels (a scalar volume gives one, a vector volume one per component: a colour picture
    gives red, green and blue). A 2D model segments a single-slice volume (a picture loaded in Slicer) as the 2D
    image of its slice, and the result goes back onto that slice voxel for voxel.

    ``options``: device, test-time augmentation, post-processing and the probability and uncertainty volumes
    (:class:`~MedSegCNNLib.inference.options.PredictOptions`; default: its defaults). The result goes into a new
    segmentation node beside the first volume, or into ``segmentation_node`` — which must be empty unless
    ``replace`` is true. ``python``/``env``: the interpreter and environment of the process (in Slicer,
    PythonSlicer and ``slicer.util.startupEnvironment()``).
    """

    def __init__(
        self,
        scene: Any,
        volume_nodes: Any | Sequence[Any],
        model: PathLike,
        options: PredictOptions | None = None,
        *,
        segmentation_node: Any = None,
        replace: bool = False,
        model_folders: Iterable[PathLike] = (),
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.scene = scene
        self.volume_nodes = _node_list(volume_nodes)
        self.model: ModelEntry = find_model(model, model_folders)
        self.options = options or PredictOptions()
        self.segmentation_node = segmentation_node
        self.replace = replace
        _check_channels(self.model, self.volume_nodes)
        if segmentation_node is not None:
            check_replaceable(segmentation_node, replace)  # before the work, not only when importing it
        self._grid = volume_grid(self.volume_nodes[0])
        self._slice_axis = single_slice_axis(self._grid.shape)
        if self.model.dims == 3 and self._slice_axis is not None:
            raise InputError(
                f"'{self.volume_nodes[0].GetName()}' is a single slice ({self._grid.shape[::-1]} voxels) but model "
                f"'{self.model.name}' is 3D; choose a 2D model or a 3D volume."
            )
        self._input_grid = self._grid if self._slice_axis is None else slice_as_2d(self._grid, self._slice_axis)
        image = image_from_volume_nodes(self.volume_nodes, allow_partial_channels=self.options.allow_partial_channels)
        if self._slice_axis is not None:  # a 2D model: the slice as the 2D image it was made for
            image = slice_as_2d(image, self._slice_axis)
        workdir = Path(tempfile.mkdtemp(prefix="MedSegCNN-segment-"))
        try:
            write_image(image, workdir / "input.nrrd")
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        del image
        self._outputs = self.options.output_paths(workdir / "labels.nrrd")
        args = predict_args(self.model.path, workdir / "input.nrrd", self._outputs["labels"], self.options)
        super().__init__(BackgroundRun(args, python=python, env=env, cleanup=[workdir]), workdir)

    def finish(self) -> SegmentationOutputs:
        """Bring the finished segmentation (and maps) into the scene; call once, after ``state`` is completed."""
        self._check_completed("Segmentation")
        added: list[Any] = []
        try:
            labels = self._on_grid(_read_result(self._outputs["labels"])).with_labels(self.model.labels)
            segmentation = segmentation_from_labels(
                self.scene, labels, self.volume_nodes[0], self.segmentation_node, replace=self.replace
            )
            if self.segmentation_node is None:
                added.append(segmentation)
            outputs = SegmentationOutputs(segmentation)
            volume_name = self.volume_nodes[0].GetName()
            if self.options.probabilities:
                maps = self._on_grid(_read_result(self._outputs["probabilities"]))
                for info in self.model.labels:
                    if info.value == 0 or info.value >= maps.num_channels:
                        continue
                    name = f"{volume_name} probability {info.name}"
                    node = volume_node_from_image(
                        self.scene, self._grid.with_array(maps.array[info.value]), name,
                        reference_volume_node=self.volume_nodes[0],
                    )  # fmt: skip
                    added.append(node)
                    outputs.probability_nodes.append(node)
            if self.options.uncertainty:
                uncertainty = self._on_grid(_read_result(self._outputs["uncertainty"]))
                node = volume_node_from_image(
                    self.scene, uncertainty, f"{volume_name} uncertainty", reference_volume_node=self.volume_nodes[0]
                )
                added.append(node)
                outputs = SegmentationOutputs(segmentation, outputs.probability_nodes, node)
        except BaseException:
            for node in reversed(added):
                remove_added_node(self.scene, node)
            raise
        finally:
            self._remove_workdir()
        return outputs

    def _on_grid(self, image: Image) -> Image:
        """``image``'s voxels with the first volume's exact geometry (the files only carry it with rounding); the
        2D result of a single slice goes back into the slice."""
        grid = self._input_grid
        shape = image.array.shape[-grid.spatial_dims :]
        if (
            image.spatial_dims != grid.spatial_dims
            or shape != grid.shape
            or not image.same_grid(grid.with_array(image.array))
        ):
            raise InputError(
                f"The prediction's grid {image.shape} does not match the input's {grid.shape}; "
                "please report this, with the model and the volume's geometry."
            )
        array = image.array if self._slice_axis is None else slice_to_3d(image.array, self._slice_axis)
        return self._grid.with_array(array)


class TrainingTask(_Task):
    """Train (or fine-tune, ``config.init_from`` a model) on training ``pairs`` from the scene, or on
    ``data_folder``, as ``config`` says (default: everything planned).

    ``pairs``: ``(volume nodes, segmentation or label map node)`` per case, the volumes giving the input channels
    (as in :class:`SegmentationTask`); a single-slice case (a picture) is written as the 2D image of its slice, and
    refused for a 3D model.
    Segments are matched to labels by name across cases (the first case's segments define the labels, or the
    labels of ``init_from``'s model card when fine-tuning); ``init_from`` may be a registry name. The run is saved
    in ``output_folder`` (resumable with ``medsegcnn train --resume``). With fewer than 5 pairs and the default
    split, the validation split is fitted to them (one fold per case; one case trains without validation).
    """

    def __init__(
        self,
        scene: Any,
        pairs: Sequence[tuple[Any | Sequence[Any], Any]] | None,
        output_folder: PathLike,
        config: TrainingConfig | None = None,
        *,
        data_folder: PathLike | None = None,
        overwrite: bool = False,
        model_folders: Iterable[PathLike] = (),
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.scene = scene
        self.output_folder = Path(output_folder)
        if self.output_folder.is_file() or (
            self.output_folder.is_dir() and any(self.output_folder.iterdir()) and not overwrite
        ):
            raise InputError(
                f"The output folder {self.output_folder} is not empty; choose a new folder for the trained model."
            )
        config = config or TrainingConfig()
        self.init_from = find_model(config.init_from, model_folders) if config.init_from else None
        if self.init_from is not None:
            config = config.replace(init_from=str(self.init_from.path))
        workdir = None
        if data_folder is None:
            if not pairs:
                raise InputError(
                    "No training data: add at least one pair of a volume and its segmentation, or choose a data folder."
                )
            workdir = Path(tempfile.mkdtemp(prefix="MedSegCNN-train-"))
            try:
                data_folder = self._write_pairs(
                    pairs, workdir / "data", config.spatial_dims, allow_partial_channels=config.allow_partial_channels
                )
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            config = _small_set_validation(len(pairs), config)
        args = train_args(data_folder, self.output_folder, config, overwrite=overwrite)
        super().__init__(BackgroundRun(args, python=python, env=env, cleanup=[workdir] if workdir else []), workdir)

    def _write_pairs(
        self, pairs: Sequence[tuple[Any, Any]], folder: Path, dims: int | None, *, allow_partial_channels: bool
    ) -> Path:
        """The training folder of the scene's pairs; a single-slice case is the 2D image of its slice (as
        :class:`SegmentationTask` segments it), refused when the model's ``dims`` is 3 (None: planned); channels as
        :func:`~.multi_volume.image_from_volume_nodes` assembles them."""
        from ..data.export import write_training_folder

        labels: tuple[LabelInfo, ...] | None = None if self.init_from is None else self.init_from.labels
        channels = None if self.init_from is None else self.init_from.channels
        names: dict[int, str] = {info.value: info.name for info in labels or ()}
        cases = []
        for volumes, segmentation in pairs:
            volume_nodes = _node_list(volumes)
            given = volume_nodes_channel_names(volume_nodes)
            if channels is not None and len(given) != len(channels):
                source = f"model '{self.init_from.name}' takes" if self.init_from else "the first case has"
                raise InputError(
                    f"Each training case needs {len(channels)} input channel(s) ({', '.join(channels)}), as {source}; "
                    f"the case of '{volume_nodes[0].GetName()}' has {len(given)} ({', '.join(given)})."
                )
            channels = channels or given
            axis = single_slice_axis(volume_grid(volume_nodes[0]).shape)
            if axis is not None and dims == 3:
                raise InputError(
                    f"'{volume_nodes[0].GetName()}' is a single slice; a 3D model trains on 3D volumes: train a 2D "
                    "model on single-slice volumes (pictures), or leave this one out."
                )
            label_map = labels_from_segmentation(segmentation, volume_nodes[0], labels=labels)
            labels = labels or label_map.labels or None  # unnamed label maps keep their values
            for value in np.unique(label_map.array):
                info = label_map.label_info(int(value))
                names.setdefault(int(value), info.name if info else f"label_{value}")
            image = image_from_volume_nodes(volume_nodes, allow_partial_channels=allow_partial_channels)
            cases.append(
                (image, label_map) if axis is None else (slice_as_2d(image, axis), slice_as_2d(label_map, axis))
            )
        names.pop(0, None)
        return write_training_folder(cases, folder, labels=names, channel_names=channels)

    def finish(self) -> Path:
        """The trained model folder; call after ``state`` is completed."""
        self._check_completed("Training")
        self._remove_workdir()
        end = self._run.last_event("end")
        model = end.data.get("model") if end is not None else None
        if not model:
            raise InputError(f"Training ended without a model ({end.data.get('status') if end else 'no end event'}).")
        return Path(model)


def evaluate_nodes(
    scene: Any,
    segmentation_node: Any,
    reference_node: Any,
    reference_volume_node: Any,
    *,
    labels: Sequence[LabelInfo] | None = None,
    table_node: Any = None,
    nsd_tolerance_mm: float = 1.0,
) -> tuple[EvaluationResult, Any]:
    """Metrics of a segmentation against a reference (segmentation or label map node) on a volume's grid.

    Both are put on ``reference_volume_node``'s grid; the reference's segments are matched to the
    segmentation's labels (``labels`` if given, else the segmentation's segments) by name, else by value.
    Returns the result and the table node (one row per label) it was written to.
    """
    prediction = labels_from_segmentation(segmentation_node, reference_volume_node, labels=labels)
    reference = labels_from_segmentation(reference_node, reference_volume_node, labels=labels or prediction.labels)
    names = {info.value: info.name for info in prediction.labels}
    result = evaluate(
        prediction, reference, label_names=names, nsd_tolerance_mm=nsd_tolerance_mm, case=segmentation_node.GetName()
    )
    table = table_from_metrics(scene, result, table_node=table_node, name=f"{segmentation_node.GetName()} metrics")
    return result, table


def _small_set_validation(cases: int, config: TrainingConfig) -> TrainingConfig:
    """``config`` with a validation split that fits ``cases`` cases when it keeps the default split: 5 folds need
    5 cases, so 2-4 cases use one fold per case and a single case trains without validation."""
    default = TrainingConfig()
    if (config.fold, config.folds) != (default.fold, default.folds) or cases >= 5:
        return config
    return config.replace(fold=None) if cases == 1 else config.replace(folds=cases)


def _node_list(nodes: Any | Sequence[Any]) -> list[Any]:
    listed = [node for node in (nodes if isinstance(nodes, Sequence) else [nodes]) if node is not None]
    if not listed:
        raise InputError("No input volume is selected; select the volume(s) to segment.")
    return listed


def _check_channels(model: ModelEntry, volume_nodes: Sequence[Any]) -> None:
    """Refuse volumes that do not give the model's input channels: a vector volume given to a model with fewer
    channels with what to do about it, any other count with what the model takes."""
    given, expected = volume_nodes_channel_names(volume_nodes), model.channels
    if len(given) == len(expected):
        return
    takes = f"model '{model.name}' takes {len(expected)} input channel(s) ({', '.join(expected)})"
    vectors = [node for node in volume_nodes if len(volume_channel_names(node)) > 1]
    if vectors and len(given) > len(expected):
        names = volume_channel_names(vectors[0])
        kind = "a colour volume" if names == COLOR_CHANNEL_NAMES else "a vector volume"
        raise InputError(
            f"'{vectors[0].GetName()}' is {kind} with {len(names)} channels ({', '.join(names)}) but {takes}; "
            "choose a model made for such images, or make a single-channel volume of it first (Slicer's "
            "'Vector to Scalar Volume' module)."
        )
    raise InputError(
        f"The selected volumes give {len(given)} channel(s) ({', '.join(given)}) but {takes}; select one volume per "
        "input channel in that order (a colour volume gives its red, green and blue channels)."
    )
