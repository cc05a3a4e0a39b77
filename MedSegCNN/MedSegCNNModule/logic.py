"""The console API: segment, evaluate and train with MRML nodes in and out.

MedSegCNNLib is imported inside the methods, so that this file loads before torch and the other Python packages
are installed.
"""

# Slicer's API and its Python style are camelCase.
# ruff: noqa: N802, N803, N806

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .parameters import DEFAULT_MODEL, MedSegCNNParameterNode


def channelsPerSelector(channelCount: int, volumes) -> list[int]:
    """How many of a model's ``channelCount`` input channels each input selector the panel shows gives, in order;
    ``volumes``: the volume of every selector (None: empty). A scalar volume or an empty selector gives one
    channel, a vector volume one per component (a colour picture: red, green and blue); selectors are shown
    until they give the model's channels."""
    try:
        from MedSegCNNLib.errors import InputError
        from MedSegCNNLib.mrml.volumes import volume_channel_names
    except ImportError:  # before the Python packages are installed (the panel offers to install them)
        return [1] * min(channelCount, len(volumes))
    counts = []
    for volume in volumes:
        if sum(counts) >= channelCount:
            break
        try:
            counts.append(1 if volume is None else len(volume_channel_names(volume)))
        except InputError:  # a volume without voxels: segmenting it says so
            counts.append(1)
    return counts


#: The console keywords of ``MedSegCNNLogic.segment`` and the PredictOptions fields they set.
SEGMENT_KEYWORDS = {
    "device": "device",
    "backend": "backend",
    "precision": "precision",
    "tta": "tta",
    "keepLargest": "keep_largest",
    "minSizeMm3": "min_size_mm3",
    "fillHoles": "fill_holes",
    "probabilities": "probabilities",
    "uncertainty": "uncertainty",
}
#: The console keywords of ``MedSegCNNLogic.train`` and the TrainingConfig fields they set.
TRAIN_KEYWORDS = {
    "dims": "spatial_dims",
    "epochs": "epochs",
    "timeBudgetMin": "time_budget_minutes",
    "initFrom": "init_from",
    "freezeEncoder": "freeze_encoder",
    "device": "device",
}


def optionsRecord(recordClass, options, keywords: dict, names: dict[str, str]):
    """``options`` (an instance of ``recordClass``), or, when it is None, the record that the console ``keywords``
    give (``names``: keyword -> field; none given: the defaults). Raises TypeError for an unknown keyword or for
    keywords given with ``options``."""
    unknown = sorted(set(keywords) - set(names))
    if unknown:
        raise TypeError(
            _("Unknown option(s) {names}; the options are {known}.").format(
                names=", ".join(unknown), known=", ".join(names)
            )
        )
    if options is None:
        return recordClass(**{names[keyword]: value for keyword, value in keywords.items()})
    if keywords:
        raise TypeError(
            _("Give the options either as options= or as keywords ({names}), not both.").format(
                names=", ".join(sorted(keywords))
            )
        )
    if not isinstance(options, recordClass):
        raise TypeError(
            _("options must be a {expected}, not {given}.").format(
                expected=recordClass.__name__, given=type(options).__name__
            )
        )
    return options


class MedSegCNNLogic(ScriptedLoadableModuleLogic):
    """The console API: segment, evaluate and train with MRML nodes in and out (thin wrappers over
    MedSegCNNLib.mrml). Bad input raises MedSegCNNLib.errors.InputError with the scene unchanged."""

    def getParameterNode(self) -> MedSegCNNParameterNode:
        return MedSegCNNParameterNode(super().getParameterNode())

    @staticmethod
    def describeModel(model: str):
        """The registry entry (MedSegCNNLib.registry.ModelEntry) of a registry name or a model folder."""
        from MedSegCNNLib.registry import describe_model, resolve_model

        return describe_model(resolve_model(model))

    @staticmethod
    def importNnUNet(resultsFolder: str, folds=None, checkpoint: str = "final", overwrite: bool = False) -> str:
        """Imports an nnU-Net v2 results folder (<Trainer>__<Plans>__<configuration>) into the user's models folder
        (MedSegCNNLib.registry.user_models_folder()); returns the model's registry name. ``folds``: e.g.
        ["0", "1"] (None: every fold trained); ``checkpoint``: "final" or "best"."""
        from MedSegCNNLib.interop.nnunet_import import import_nnunet, model_name
        from MedSegCNNLib.registry import user_models_folder

        name = model_name(resultsFolder)
        user_models_folder().mkdir(parents=True, exist_ok=True)
        import_nnunet(resultsFolder, user_models_folder() / name, folds=folds, checkpoint=checkpoint,
                      overwrite=overwrite)  # fmt: skip
        return name

    def segment(
        self,
        inputVolumes,
        model: str = DEFAULT_MODEL,
        *,
        options=None,
        segmentationNode=None,
        replace: bool = False,
        waitForCompletion: bool = True,
        **keywords,
    ):
        """Segments ``inputVolumes`` with ``model`` (a registry name or a model folder) into ``segmentationNode``
        (None: a new one; one that has segments is changed only with ``replace``). ``inputVolumes``: a volume node,
        or several; their channels, in order, are the model's input channels in the card's order: a scalar volume
        gives one, a vector volume one per component (a colour picture loaded from PNG/JPEG/TIFF: red, green,
        blue). A 2D model segments a single-slice volume (a picture) as a 2D image, voxel for voxel on it.

        ``options``: how to predict, a MedSegCNNLib.inference.options.PredictOptions (the panel passes one). From the
        console, keywords may give its fields instead (``options`` None): ``device``, ``backend`` ("auto": OpenVINO
        on the CPU when installed, "torch" or "openvino"), ``precision`` ("auto", "fp32", "bf16" or "fp16"),
        ``tta``, ``keepLargest``, ``minSizeMm3`` (components smaller than this, in mm³, are removed), ``fillHoles``,
        ``probabilities`` and ``uncertainty``; e.g. ``logic.segment(volume, "hippocampus-tiny", tta=True)``.

        Returns the SegmentationOutputs (segmentation_node, probability_nodes, uncertainty_node) when
        ``waitForCompletion``, else the started SegmentationTask (poll it; call ``finish()`` on the main thread
        once its state is "completed")."""
        from MedSegCNNLib.inference.options import PredictOptions
        from MedSegCNNLib.mrml.tasks import SegmentationTask

        options = optionsRecord(PredictOptions, options, keywords, SEGMENT_KEYWORDS)
        task = SegmentationTask(
            slicer.mrmlScene,
            inputVolumes,
            model,
            options,
            segmentation_node=segmentationNode,
            replace=replace,
            env=slicer.util.startupEnvironment(),  # for PythonSlicer, as slicer.util.launchConsoleProcess does
        )
        task.start()
        return self.waitAndFinish(task) if waitForCompletion else task

    def evaluate(self, segmentationNode, referenceNode, referenceVolumeNode=None, *, labels=None, tableNode=None):
        """Scores ``segmentationNode`` against ``referenceNode`` (a segmentation or labelmap node) on the voxel grid
        of ``referenceVolumeNode`` (default: the segmentation's reference geometry volume), for every label (or
        ``labels``, a sequence of LabelInfo). Returns (EvaluationResult, the table node: ``tableNode`` or new)."""
        from MedSegCNNLib.errors import InputError
        from MedSegCNNLib.mrml.tasks import evaluate_nodes

        if segmentationNode is None or referenceNode is None:
            raise InputError(_("Choose the segmentation to evaluate and its reference (a segmentation or labelmap)."))
        if referenceVolumeNode is None:
            role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
            referenceVolumeNode = segmentationNode.GetNodeReference(role)
        if referenceVolumeNode is None:
            raise InputError(
                _("'{name}' has no reference volume; choose the volume to evaluate on.").format(
                    name=segmentationNode.GetName()
                )
            )
        return evaluate_nodes(
            slicer.mrmlScene, segmentationNode, referenceNode, referenceVolumeNode, labels=labels, table_node=tableNode
        )

    def train(
        self,
        pairs,
        outputFolder,
        *,
        options=None,
        dataFolder=None,
        waitForCompletion: bool = True,
        **keywords,
    ):
        """Trains a network on ``pairs`` [(volume node or list of volume nodes, segmentation node), ...] and/or the
        MSD/nnU-Net dataset folder ``dataFolder``, into the new folder ``outputFolder``. A vector (colour) volume
        gives one channel per component; a single-slice volume trains a 2D model as a 2D image.

        ``options``: how to train, a MedSegCNNLib.training.config.TrainingConfig (the panel passes one; its fields
        left None are planned). From the console, keywords may give the common ones instead (``options`` None):
        ``dims`` (2 or 3; None: planned, 2D for single-slice volumes such as pictures, else 3D), ``epochs`` and
        ``timeBudgetMin`` (minutes) limit the run, ``initFrom`` (a registry name or a model folder) fine-tunes that
        model, with its encoder frozen if ``freezeEncoder``, and ``device``; e.g.
        ``logic.train(pairs, folder, epochs=50)``.

        Returns the trained model folder (a Path) when ``waitForCompletion``, else the started TrainingTask."""
        from MedSegCNNLib.mrml.tasks import TrainingTask
        from MedSegCNNLib.training.config import TrainingConfig

        if keywords.get("initFrom") is not None:
            keywords["initFrom"] = str(keywords["initFrom"])  # a Path too
        config = optionsRecord(TrainingConfig, options, keywords, TRAIN_KEYWORDS)
        task = TrainingTask(
            slicer.mrmlScene,
            pairs,
            outputFolder,
            config,
            data_folder=dataFolder,
            env=slicer.util.startupEnvironment(),
        )
        task.start()
        return self.waitAndFinish(task) if waitForCompletion else task

    @staticmethod
    def waitAndFinish(task):
        """Blocks until the started ``task`` ends and returns ``task.finish()``; a failed or cancelled task raises
        MedSegCNNError with its error message, and the process log as a note."""
        state = task.wait()
        if state == "completed":
            return task.finish()
        from MedSegCNNLib.errors import MedSegCNNError

        error = MedSegCNNError(task.error or _("The background run was {state}.").format(state=state))
        error.add_note(_("Process log:\n{log}").format(log=task.log))
        raise error

    # ----- annotation projects (issue 22): thin wrappers over MedSegCNNLib.mrml.annotation.AnnotationSession -----

    def _annotationSession(self):
        """The open annotation session; InputError when no project is open."""
        session = getattr(self, "_annotation", None)
        if session is None:
            from MedSegCNNLib.errors import InputError

            raise InputError(_("No annotation project is open; create one (createProject) or open one (openProject)."))
        return session

    def _startAnnotationSession(self, start):
        """Refuses a second project while one is open; else keeps the session ``start()`` returns."""
        if getattr(self, "_annotation", None) is not None:
            from MedSegCNNLib.errors import InputError

            raise InputError(
                _("Annotation project {folder} is open; close it first (closeProject).").format(
                    folder=self._annotation.project.folder
                )
            )
        self._annotation = start()
        return self._annotation.status()

    def createProject(
        self,
        folder,
        imagesFolder,
        *,
        labelsFolder=None,
        model=None,
        dims: int | None = None,
        labelNames=None,
        learnBudgetS: float = 60.0,
    ):
        """Creates an annotation project in the new (or empty) ``folder`` from the images in ``imagesFolder`` and
        opens it (this Slicer is its one driver until closeProject). ``labelsFolder``: label maps of some cases,
        matched by case name, accepted at once; ``model``: a registry name or model folder to start from (version
        0); ``labelNames``: the foreground labels' names (a list for 1, 2, ..., or {value: name}) when neither gives
        them; ``learnBudgetS``: seconds of background learning per round. Returns the ProjectStatus."""
        from MedSegCNNLib.mrml.annotation import AnnotationSession

        return self._startAnnotationSession(
            lambda: AnnotationSession.create(
                slicer.mrmlScene,
                folder,
                imagesFolder,
                labels=labelsFolder,
                model=model,
                dims=dims,
                label_names=labelNames,
                learn_budget_s=learnBudgetS,
            )
        )

    def openProject(self, folder):
        """Opens the annotation project in ``folder`` (refused while another driver holds it); returns its
        ProjectStatus."""
        from MedSegCNNLib.mrml.annotation import AnnotationSession

        return self._startAnnotationSession(lambda: AnnotationSession.open(slicer.mrmlScene, folder))

    def closeProject(self) -> None:
        """Closes the open annotation project (its background learning goes on; the case nodes stay)."""
        session = getattr(self, "_annotation", None)
        self._annotation = None
        if session is not None:
            session.close()

    def nextCase(self, strategy: str = "random", case=None):
        """Loads the next case (``strategy`` "random" or "entropy", or the case ``case``) with the newest model's
        prediction (empty segments before the first model) into the scene; returns (volume nodes, segmentation
        node). The earlier cases' nodes are removed unless their segmentation changed since it was loaded or
        accepted and the case was not skipped: then they stay, acceptCase still takes them, and when the next case
        is that case again (a case comes again until it is accepted or skipped) its nodes are returned as they are.
        """
        nodes = self._annotationSession().next_case(strategy=strategy, case=case)
        return list(nodes.volume_nodes), nodes.segmentation_node

    def acceptCase(self, segmentationNode=None, learnBudgetS: float | None = None, wait: bool = False):
        """Stores ``segmentationNode`` (default: the current case's) as the accepted segmentation of the case whose
        volume it was made on, and starts learning (``learnBudgetS``: seconds per round from now; ``wait``: return
        once a version has learned it). Segments are matched to the project's labels by name. Returns the
        AcceptResult."""
        return self._annotationSession().accept(segmentationNode, learn_budget_s=learnBudgetS, wait=wait)

    def skipCase(self) -> str:
        """Skips the current case (its nodes go when the next case comes); returns its case ID."""
        return self._annotationSession().skip()

    def projectStatus(self):
        """The open project's ProjectStatus (cases by state, versions with their running Dice, learning)."""
        return self._annotationSession().status()

    def projectFolder(self):
        """The open annotation project's folder (a Path), or None when none is open."""
        session = getattr(self, "_annotation", None)
        return None if session is None else session.project.folder

    def shownCase(self):
        """(volume nodes, segmentation node) of the case that acceptCase and skipCase act on, or None (no project,
        no case loaded, the case skipped, or its nodes removed)."""
        session = getattr(self, "_annotation", None)
        nodes = None if session is None else session.shown_case()
        return None if nodes is None else (list(nodes.volume_nodes), nodes.segmentation_node)

    @staticmethod
    def segmentEditorNode():
        """The scene's Segment Editor parameter node for the Annotate section (made when there is none)."""
        from MedSegCNNLib.mrml.annotation import segment_editor_node

        return segment_editor_node(slicer.mrmlScene)
