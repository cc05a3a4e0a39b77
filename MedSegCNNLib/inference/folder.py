"""``predict_folder``: segment a folder of images (or one image, or one case's channel files) into output files.

What a run does, in order: list the cases and plan their outputs (:mod:`.folder_plan`: cases, channel files,
output names, existing outputs, inputs never replaced), load the model once, read and check every input of the
cases to segment (unless ``check_inputs`` is off), create the output folder, then segment the cases one after the
other and write their outputs through the verified writes. Whatever is wrong before the first write (a bad input
among good ones, an existing output, an output that is an input) raises with nothing written. A case that fails
after that (a failed write, or a bad input when the inputs are not checked first) is recorded in the
:class:`~.folder_run.FolderResult` and the others go on; an output folder this run created is removed again when
nothing was written into it. Under torchrun the processes share out the cases (:mod:`.cohort`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..distributed import DistributedContext
from ..progress import EventSink
from ..runtime import resolve_device
from .cohort import predict_cohort
from .folder_plan import plan_outputs
from .folder_run import FolderResult, PathLike, case_result, check_inputs, model_channels, model_folders, segment_jobs
from .model import SegmentationModel, load_segmentation_model
from .options import FolderOptions, PredictOptions
from .progress import PredictionProgress

DEFAULT_OPTIONS = PredictOptions()
DEFAULT_FOLDER_OPTIONS = FolderOptions()


def predict_folder(
    model: PathLike | Sequence[PathLike] | SegmentationModel,
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    options: PredictOptions = DEFAULT_OPTIONS,
    folder_options: FolderOptions = DEFAULT_FOLDER_OPTIONS,
    *,
    reference: PathLike | None = None,
    progress: EventSink | None = None,
    context: DistributedContext | None = None,
    allow_large_model: bool = False,
) -> FolderResult:
    """Segment every case of ``inputs`` with ``model`` and write the outputs to ``output``; returns what became of
    each case (written, skipped, failed with its error message).

    Args:
        model: a model folder or registry name, several (an ensemble), or a loaded model (used as it is).
        inputs: a folder of images (one case per file, or nnU-Net's ``<case>_0000``, ``<case>_0001``, ... channel
            files), one image or DICOM folder, or one file per input channel of a single case.
        output: the output folder (label maps named ``<case><extension>``, see
            :meth:`PredictOptions.label_extension`), or the label map file of a single case; a name ending in a
            path separator is a folder. Missing folders are created.
        options: how to predict and which extra files to write (probabilities, uncertainty, overlay).
        folder_options: existing outputs (refuse, overwrite, skip the complete cases), colour pictures, multi-page
            files, and the check of every input before anything is written.
        reference: reference label maps, a folder by case (or a file for a single case), drawn in the overlays.
        progress: where the ``progress`` and ``case`` events go (:class:`.progress.PredictionProgress`).
        context: torchrun's process group (:func:`~MedSegCNNLib.distributed.init_distributed`): the processes share
            out the cases (:mod:`.cohort`); ``None``: this process alone, on ``options``' device.
        allow_large_model: load a trusted model beyond the size bound (:func:`.model.load_segmentation_model`).

    Raises :class:`~MedSegCNNLib.errors.MedSegCNNError` for what is refused before the first write (nothing
    written then); the cases that fail afterwards are in the result's ``failed``, the others are written.

    Example:
        >>> result = predict_folder("hippocampus-tiny", "imagesTs", "labelsTs/")  # doctest: +SKIP
        >>> [(case.case, case.error) for case in result.failed]  # doctest: +SKIP
    """
    sources = [Path(path) for path in ([inputs] if isinstance(inputs, str | os.PathLike) else inputs)]
    target = os.fspath(output)
    given = model if isinstance(model, SegmentationModel) else None
    folders = model_folders(model)
    references = None if reference is None else Path(reference)
    if context is not None and context.distributed:
        return predict_cohort(given or folders, sources, target, options, folder_options, context,
                              reference=references, progress=progress, allow_large_model=allow_large_model)  # fmt: skip
    plan = plan_outputs(sources, target, folders, model_channels(given or folders), options, folder_options,
                        reference=references)  # fmt: skip
    device = resolve_device(options.device_choice) if context is None else context.device
    loaded = given or load_segmentation_model(list(plan.models), device, allow_large=allow_large_model)
    if folder_options.check_inputs and len(plan.todo) > 1:  # a single case is checked by its own read
        check_inputs(plan.todo, loaded, options, folder_options)
    with _created_folder(plan.folder):
        tracker = None if progress is None else PredictionProgress(progress, len(plan.todo))
        done = iter(segment_jobs(plan.todo, loaded, options, folder_options, tracker))
    cases = [case_result(job, options, "skipped") if job.skip else next(done) for job in plan.jobs]
    return FolderResult(tuple(cases), loaded.labels)


@contextlib.contextmanager
def _created_folder(folder: Path | None) -> Iterator[None]:
    """Create ``folder`` (with missing parents) for the block; afterwards remove what was created and is still
    empty (nothing was written there)."""
    if folder is None:
        yield
        return
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True)
    try:
        yield
    finally:
        for path in created:  # innermost first
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
