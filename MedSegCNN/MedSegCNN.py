"""MedSegCNN, the 3D Slicer module: the panel, the console logic and the self-test, wired to MedSegCNNLib.

Wiring only: segmentation, training and evaluation are MedSegCNNLib's (its MRML layer, ``MedSegCNNLib.mrml``, is
the only code that touches the scene's data). MedSegCNNLib is imported inside functions, so that this module loads
before torch and the other Python packages are installed. Long work runs as a background process that the panel
polls with a timer, so the user interface never freezes.
"""

# Slicer's API (setup, onSceneStartClose, runTest, ...) and its Python style are camelCase.
# ruff: noqa: N802, N803, N806, N815

import html
import importlib
import importlib.util
import logging
import sys
import traceback
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: The bundled model the panel selects first and the self-test uses (a registry name).
DEFAULT_MODEL = "hippocampus-tiny"
#: The bundled case the self-test segments (Resources/SampleData/Hippocampus).
SAMPLE_CASE = "hippocampus_020"  # held out when the bundled model was trained
DEVICES = ["auto", "cpu", "cuda", "mps"]
#: Input volume selectors in the panel; a model with more input channels is used from the Python console.
MAX_INPUT_CHANNELS = 4
POLL_INTERVAL_MS = 200
BROWSE_ITEM = "Model folder..."
#: The packages MedSegCNNLib needs at run time: import name -> pip requirement (as in pyproject.toml).
#: torch is installed through the PyTorch extension (the right build for the GPU), the rest with pip.
REQUIREMENTS = {
    "torch": "torch>=2.3",
    "numpy": "numpy>=1.24",
    "SimpleITK": "SimpleITK>=2.3",
    "tqdm": "tqdm>=4.60",
    "safetensors": "safetensors>=0.4",
    "matplotlib": "matplotlib>=3.7",
}


def _addSourceTreeToPath() -> None:
    """Run from a source checkout (the module path is ``MedSegCNN/``), MedSegCNNLib is one folder up; installed by
    the Extensions Manager it sits beside this file and is importable already."""
    root = Path(__file__).resolve().parents[1]
    if importlib.util.find_spec("MedSegCNNLib") is None and (root / "MedSegCNNLib" / "__init__.py").is_file():
        sys.path.insert(0, str(root))


_addSourceTreeToPath()


#
# MedSegCNN
#


class MedSegCNN(ScriptedLoadableModule):
    """Module metadata (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSegCNN"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["The MedSegCNN developers"]
        self.parent.helpText = """
<p>Segments loaded volumes with a trained CNN (2D/3D U-Net family), trains and fine-tunes models from segmentations
in the scene, and scores segmentations against references (Dice, IoU, HD95, ASSD, NSD, volumes) for all labels at
once.</p>
<ol>
<li><b>Inputs</b>: select the volume to segment; a model with several input channels (e.g. T1 and FLAIR) shows one
selector per channel, named after its model card.</li>
<li><b>Model</b>: choose a bundled model or a model folder (for example the output of training). The card shows
its labels, input channels, voxel spacing and reported accuracy.</li>
<li><b>Segment</b>: choose the device and options, then <i>Segment</i>. A new segmentation appears, one segment
per label with the model's names and colours, in the input volume's study. An existing segmentation that already
has segments is changed only with <i>Replace existing segments</i>.</li>
<li><b>Train</b>: add training pairs (the Inputs volumes and a segmentation of them) or give an MSD/nnU-Net
dataset folder, choose an empty output folder, then <i>Train</i>. The loss and the validation Dice are plotted
live. <i>Fine-tune</i> starts from the selected model.</li>
<li><b>Evaluate</b>: choose a segmentation and its reference (a segmentation or a labelmap), then <i>Compute</i>:
one row per label in the table (also a table node in the scene); <i>Export CSV</i> saves it.</li>
</ol>
<p>Segmenting and training run in a background process: the panel stays usable, the bar shows the stage and the
time left, and <i>Cancel</i> stops the run without adding anything to the scene. On first use the module offers to
install PyTorch (through the PyTorch extension) and its other Python packages; nothing is installed without
asking.</p>
<p>From the Python console:</p>
<pre>
import MedSegCNN
logic = MedSegCNN.MedSegCNNLogic()
outputs = logic.segment(volumeNode, "hippocampus-tiny")
result, tableNode = logic.evaluate(outputs.segmentation_node, referenceNode)
modelFolder = logic.train([(volumeNode, segmentationNode)], "/path/to/new/run", epochs=50)
</pre>
"""
        self.parent.acknowledgementText = """
<p>MedSegCNN is open source (Apache-2.0).</p>
<p>The bundled sample cases (Resources/SampleData/Hippocampus) are from the Medical Segmentation Decathlon, Task04
Hippocampus, originally acquired at Vanderbilt University Medical Center, licensed CC-BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/). Please cite M. Antonelli et al., "The Medical Segmentation
Decathlon", Nature Communications 13, 4128 (2022), and A. L. Simpson et al., "A large annotated medical image
dataset for the development and evaluation of segmentation algorithms", arXiv:1902.09063 (2019). The bundled
model was trained on these cases.</p>
"""


#
# MedSegCNNParameterNode
#


@parameterNodeWrapper
class MedSegCNNParameterNode:
    """The panel's state, saved with the scene. Widgets bind to these names through their "SlicerParameterName"
    property in MedSegCNN.ui; ``model`` (a registry name or a model folder) is set by the widget."""

    inputVolume0: vtkMRMLScalarVolumeNode
    inputVolume1: vtkMRMLScalarVolumeNode
    inputVolume2: vtkMRMLScalarVolumeNode
    inputVolume3: vtkMRMLScalarVolumeNode
    model: str = DEFAULT_MODEL
    device: Annotated[str, Choice(DEVICES)] = "auto"
    tta: bool = False
    keepLargest: bool = False
    minSizeMm3: Annotated[float, WithinRange(0.0, 1e9)] = 0.0
    fillHoles: bool = False
    probabilities: bool = False
    uncertainty: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    replaceSegments: bool = False
    trainSegmentation: vtkMRMLSegmentationNode
    trainDims: Annotated[str, Choice(["3D", "2D"])] = "3D"
    trainEpochs: Annotated[int, WithinRange(0, 100000)] = 0
    trainTimeBudgetMin: Annotated[float, WithinRange(0.0, 10080.0)] = 0.0
    trainDevice: Annotated[str, Choice(DEVICES)] = "auto"
    trainFineTune: bool = False
    trainFreezeEncoder: bool = False
    evalPrediction: vtkMRMLSegmentationNode
    # the parameter node wrapper recognises typing.Union (not the | operator) for a choice of node types
    evalReference: typing.Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    evalReferenceVolume: vtkMRMLScalarVolumeNode
    evalTable: vtkMRMLTableNode


#
# Qt-free helper (Testing/slicer_module/test_module_static.py runs it)
#


def isUserError(error: BaseException) -> bool:
    """True for MedSegCNNLib's user-facing errors (bad input; the message says what to do)."""
    errors = sys.modules.get("MedSegCNNLib.errors")
    return errors is not None and isinstance(error, errors.MedSegCNNError)


#
# MedSegCNNWidget
#


class MedSegCNNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node, starts background tasks and polls them with a timer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None
        self._taskTitle = ""
        self._onTaskCompleted = None
        self._logShown = 0
        self._modelEntry = None  # the selected model's registry entry, or the error describing it raised
        self._modelEntryKey = None
        self._cardShown = ""
        self._trainPairs = []  # [(volume node IDs, segmentation node ID)]
        self._lastEvaluation = None
        self._curves = None  # MedSegCNNLib.mrml.training_curves.TrainingCurves, made on the first training
        self._pollTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSegCNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegCNNLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.timeout.connect(self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChosen)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self.onModelChosen)
        self.ui.refreshModelsButton.clicked.connect(self.fillModelComboBox)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.addPairButton.clicked.connect(self.onAddPair)
        self.ui.removePairButton.clicked.connect(self.onRemovePair)
        self.ui.trainDataFolderPathLineEdit.currentPathChanged.connect(self.updateGUIState)
        self.ui.trainOutputPathLineEdit.currentPathChanged.connect(self.updateGUIState)
        self.ui.trainButton.clicked.connect(self.onTrain)
        self.ui.computeButton.clicked.connect(self.onCompute)
        self.ui.exportCsvButton.clicked.connect(self.onExportCsv)
        self.ui.cancelButton.clicked.connect(self.onCancel)

        self.fillModelComboBox()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes: stops a running task (nothing half-made is kept)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:  # its results would go into the scene being closed
            self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self._trainPairs = []
        self.ui.trainPairsListWidget.clear()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume0:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            images = [volume for volume in volumes if not volume.IsA("vtkMRMLLabelMapVolumeNode")]
            if images:
                self._parameterNode.inputVolume0 = images[0]

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIState)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIState)
            self.showModelInComboBox()  # and updates the buttons

    # ----- model ------------------------------------------------------------------------------------------

    def fillModelComboBox(self) -> None:
        """The registry's models, then the "Model folder..." item."""
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        try:
            from MedSegCNNLib.registry import list_models

            for entry in list_models():
                combo.addItem(entry.name, entry.name)
                combo.setItemData(combo.count - 1, entry.title, qt.Qt.ToolTipRole)
        except Exception as error:  # an unusable registry must not break the panel: the card says why
            logging.warning("MedSegCNN: could not list the models: %s", error)
        combo.addItem(BROWSE_ITEM, "")
        combo.blockSignals(False)
        self._modelEntryKey = None  # describe the selected model again
        self.showModelInComboBox()

    def showModelInComboBox(self) -> None:
        """Shows the parameter node's model: its registry item, or "Model folder..." with its path."""
        if self._parameterNode is None:
            return
        model = self._parameterNode.model
        combo = self.ui.modelComboBox
        index = combo.findData(model) if model else -1
        combo.blockSignals(True)
        self.ui.modelPathLineEdit.blockSignals(True)
        if index >= 0:
            combo.currentIndex = index
        else:
            combo.currentIndex = combo.count - 1
            self.ui.modelPathLineEdit.currentPath = model
        self.ui.modelPathLineEdit.blockSignals(False)
        combo.blockSignals(False)
        self.updateGUIState()

    def onModelChosen(self, *args) -> None:
        if self._parameterNode is None:
            return
        name = self.ui.modelComboBox.currentData
        self._parameterNode.model = name if name else self.ui.modelPathLineEdit.currentPath

    def selectedModelEntry(self):
        """The selected model's registry entry, or None (the card then says why); described once per model."""
        model = self._parameterNode.model if self._parameterNode else ""
        if model != self._modelEntryKey:
            self._modelEntryKey = model
            try:
                if not model:
                    raise ValueError("Choose a model, or a model folder (it holds model.json and model.safetensors).")
                self._modelEntry = self.logic.describeModel(model)
            except Exception as error:
                self._modelEntry = error
        return None if isinstance(self._modelEntry, Exception) else self._modelEntry

    def showModelCard(self, entry) -> None:
        if entry is not None:
            card = entry.summary_html()
        else:
            card = f'<p style="color:#c0392b">{html.escape(str(self._modelEntry))}</p>'
        if card != self._cardShown:  # unchanged: keep the scroll position
            self.ui.modelCardTextBrowser.setHtml(card)
            self._cardShown = card

    def showChannelRows(self, entry) -> int:
        """One input selector per model input channel, labelled with the channel's name; returns their number."""
        channels = (list(entry.channels) if entry is not None else []) or ["image"]
        browsing = not self.ui.modelComboBox.currentData
        self.ui.modelPathLabel.visible = browsing
        self.ui.modelPathLineEdit.visible = browsing
        for i in range(MAX_INPUT_CHANNELS):
            shown = i < len(channels)
            getattr(self.ui, f"inputVolumeLabel{i}").visible = shown
            getattr(self.ui, f"inputVolumeSelector{i}").visible = shown
            if shown:
                name = "Input volume" if len(channels) == 1 else f"{channels[i]} (input {i + 1})"
                getattr(self.ui, f"inputVolumeLabel{i}").text = f"{name}:"
        return len(channels)

    def selectedVolumes(self, count: int) -> list:
        """The volumes of the first ``count`` input selectors that have one."""
        volumes = (getattr(self._parameterNode, f"inputVolume{i}") for i in range(min(count, MAX_INPUT_CHANNELS)))
        return [volume for volume in volumes if volume is not None]

    # ----- state of the buttons ---------------------------------------------------------------------------

    def updateGUIState(self, *args) -> None:
        """Enables what can run now and says in each button's tooltip why it cannot."""
        if self._parameterNode is None:
            return
        parameters = self._parameterNode
        entry = self.selectedModelEntry()
        self.showModelCard(entry)
        channels = self.showChannelRows(entry)
        busy = self._task is not None

        if busy:
            reason = "Wait for the running task to finish, or cancel it."
        elif entry is None:
            reason = "Choose a usable model (see the model card)."
        elif channels > MAX_INPUT_CHANNELS:
            reason = f"This model needs {channels} input volumes; segment with it from the Python console."
        elif len(self.selectedVolumes(channels)) < channels:
            reason = f"Select {'the input volume' if channels == 1 else f'all {channels} input volumes'}."
        else:
            reason = ""
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or "Segment the input volumes with the selected model."

        hasData = bool(self._trainPairs) or bool(self.ui.trainDataFolderPathLineEdit.currentPath)
        if busy:
            reason = "Wait for the running task to finish, or cancel it."
        elif not hasData:
            reason = "Add training pairs, or choose a data folder."
        elif not self.ui.trainOutputPathLineEdit.currentPath:
            reason = "Choose an output folder for the training run."
        elif parameters.trainFineTune and entry is None:
            reason = "Choose a usable model to fine-tune."
        else:
            reason = ""
        self.ui.trainButton.enabled = not reason
        self.ui.trainButton.toolTip = reason or "Train a model in the background."
        self.ui.trainFreezeEncoderCheckBox.enabled = parameters.trainFineTune
        self.ui.addPairButton.enabled = (
            bool(self.selectedVolumes(channels)) and parameters.trainSegmentation is not None
        )
        self.ui.removePairButton.enabled = self.ui.trainPairsListWidget.count > 0

        self.ui.computeButton.enabled = parameters.evalPrediction is not None and parameters.evalReference is not None
        self.ui.exportCsvButton.enabled = self._lastEvaluation is not None
        self.ui.cancelButton.enabled = busy

    # ----- actions ----------------------------------------------------------------------------------------

    def onApply(self) -> None:
        if not self.ensureRequirements(needTorch=True):
            return
        parameters = self._parameterNode
        with self.reportErrors("Segmentation"):
            entry = self.selectedModelEntry()
            if entry is None:
                raise ValueError(str(self._modelEntry))
            task = self.logic.segment(
                self.selectedVolumes(len(entry.channels) or 1),
                parameters.model,
                segmentationNode=parameters.outputSegmentation,
                replace=parameters.replaceSegments,
                device=parameters.device,
                tta=parameters.tta,
                keepLargest=parameters.keepLargest,
                minSizeMm3=parameters.minSizeMm3,
                fillHoles=parameters.fillHoles,
                probabilities=parameters.probabilities,
                uncertainty=parameters.uncertainty,
                waitForCompletion=False,
            )
            self.runTask(task, "Segmentation", self.onSegmentationDone)

    def onSegmentationDone(self, task) -> None:
        outputs = task.finish()
        segmentation = outputs.segmentation_node
        self.logic.getParameterNode().evalPrediction = segmentation  # ready to be evaluated
        extras = len(outputs.probability_nodes) + (outputs.uncertainty_node is not None)
        extraText = f" and {extras} map volume{'s' if extras != 1 else ''}" if extras else ""
        self.setStatus(
            f"Segmented: {segmentation.GetSegmentation().GetNumberOfSegments()} segments in "
            f'"{segmentation.GetName()}"{extraText}.'
        )

    def onAddPair(self) -> None:
        parameters = self._parameterNode
        entry = self.selectedModelEntry()
        volumes = self.selectedVolumes(len(entry.channels) if entry is not None else 1)
        segmentation = parameters.trainSegmentation
        pair = ([volume.GetID() for volume in volumes], segmentation.GetID())
        if pair in self._trainPairs:
            self.setStatus("This training pair is in the list already.")
            return
        self._trainPairs.append(pair)
        names = " + ".join(volume.GetName() for volume in volumes)
        self.ui.trainPairsListWidget.addItem(f"{names}  \u2192  {segmentation.GetName()}")
        self.updateGUIState()

    def onRemovePair(self) -> None:
        row = self.ui.trainPairsListWidget.currentRow
        if row < 0:
            row = self.ui.trainPairsListWidget.count - 1
        self.ui.trainPairsListWidget.takeItem(row)
        del self._trainPairs[row]
        self.updateGUIState()

    def trainingPairNodes(self) -> list:
        """The training pairs as nodes; raises ValueError naming a pair whose node was deleted."""
        pairs = []
        for number, (volumeIDs, segmentationID) in enumerate(self._trainPairs, start=1):
            nodes = [slicer.mrmlScene.GetNodeByID(nodeID) for nodeID in (*volumeIDs, segmentationID)]
            if any(node is None for node in nodes):
                raise ValueError(f"Training pair {number} refers to a node that was deleted; remove the pair.")
            pairs.append((nodes[:-1], nodes[-1]))
        return pairs

    def onTrain(self) -> None:
        if not self.ensureRequirements(needTorch=True):
            return
        parameters = self._parameterNode
        with self.reportErrors("Training"):
            task = self.logic.train(
                self.trainingPairNodes(),
                self.ui.trainOutputPathLineEdit.currentPath,
                dataFolder=self.ui.trainDataFolderPathLineEdit.currentPath or None,
                dims=3 if parameters.trainDims == "3D" else 2,
                epochs=parameters.trainEpochs or None,
                timeBudgetMin=parameters.trainTimeBudgetMin or None,
                initFrom=parameters.model if parameters.trainFineTune else None,
                freezeEncoder=parameters.trainFineTune and parameters.trainFreezeEncoder,
                device=parameters.trainDevice,
                waitForCompletion=False,
            )
            if self._curves is None:
                from MedSegCNNLib.mrml.training_curves import TrainingCurves

                self._curves = TrainingCurves(slicer.mrmlScene)
            self.ui.trainPlotWidget.setMRMLPlotViewNode(self._curves.start())
            self.runTask(task, "Training", self.onTrainingDone)

    def onTrainingDone(self, task) -> None:
        modelFolder = task.finish()
        self.logic.getParameterNode().model = str(modelFolder)  # selects the new model, ready to segment
        self.showModelInComboBox()
        self.setStatus(f"Trained model saved in {modelFolder}.")

    def onCompute(self) -> None:
        if not self.ensureRequirements(needTorch=False):
            return
        parameters = self._parameterNode
        with self.reportErrors("Evaluation"), slicer.util.WaitCursor():
            result, table = self.logic.evaluate(
                parameters.evalPrediction,
                parameters.evalReference,
                parameters.evalReferenceVolume,
                tableNode=parameters.evalTable,
            )
            self._lastEvaluation = result
            parameters.evalTable = table
            self.ui.evalTableView.setMRMLTableNode(table)
            dice = [row["dice"] for row in result.to_rows()]
            meanDice = f"{sum(dice) / len(dice):.3f}" if dice else "-"
            self.setStatus(f'Evaluated {len(dice)} labels (mean Dice {meanDice}) into "{table.GetName()}".')
        self.updateGUIState()

    def onExportCsv(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent, "Export evaluation results", "medsegcnn-metrics.csv", "CSV files (*.csv)"
        )
        if not path:
            return
        with self.reportErrors("CSV export"):
            self._lastEvaluation.to_csv(path, overwrite=True)  # the save dialog has asked before replacing a file
            self.setStatus(f"Saved {path}.")

    def onCancel(self) -> None:
        if self._task is None:
            return
        self.setStatus(f"Cancelling {self._taskTitle.lower()}...")
        with slicer.util.WaitCursor():
            self._task.cancel()
        self.onPoll()

    # ----- background tasks -------------------------------------------------------------------------------

    def runTask(self, task, title: str, onCompleted) -> None:
        """Polls the started ``task`` until it ends; then calls ``onCompleted(task)`` if it completed."""
        self._task, self._taskTitle, self._onTaskCompleted = task, title, onCompleted
        self._logShown = 0
        self.ui.logTextEdit.clear()
        self.setStatus(f"{title} running...")
        self._pollTimer.start()
        self.updateGUIState()

    def onPoll(self) -> None:
        task = self._task
        if task is None:
            self._pollTimer.stop()
            return
        events = task.poll()
        if self._taskTitle == "Training":
            self._curves.add_events(events)
        for event in events:
            if event.kind == "message":
                self.setStatus(str(event.data.get("text", "")))
        self.showProgress(task.progress)
        self.showLog(task.log)
        if task.state in ("idle", "running"):
            return
        self._pollTimer.stop()
        self._task = None
        if task.state == "completed":
            with self.reportErrors(self._taskTitle, log=task.log):
                self._onTaskCompleted(task)
        elif task.state == "failed":
            self.setStatus(f"{self._taskTitle} failed: {task.error}")
            slicer.util.errorDisplay(task.error or f"{self._taskTitle} failed.", detailedText=task.log)
        else:
            self.setStatus(f"{self._taskTitle} cancelled; nothing was added to the scene.")
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = ""
        self.updateGUIState()

    def showProgress(self, progress) -> None:
        if progress.fraction is None:
            self.ui.progressBar.setRange(0, 0)  # busy indicator
        else:
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = round(1000 * progress.fraction)
        self.ui.progressLabel.text = progress.describe()

    def showLog(self, log: str) -> None:
        if len(log) > self._logShown:
            self.ui.logTextEdit.moveCursor(qt.QTextCursor.End)
            self.ui.logTextEdit.insertPlainText(log[self._logShown :])
            self._logShown = len(log)

    # ----- errors, dependencies, status -------------------------------------------------------------------

    @contextmanager
    def reportErrors(self, what: str, log: str = ""):
        """Shows an exception raised inside as an error dialog, so that the panel stays usable: a user error (or a
        ValueError) with its own message, anything else prefixed with ``what``; details: the process log, and the
        traceback of anything but a user error."""
        try:
            yield
        except Exception as error:
            if isUserError(error):
                message, details = str(error), log
            else:
                logging.exception("MedSegCNN: %s failed", what)
                message = str(error) if isinstance(error, ValueError) else f"{what} failed: {error}"
                details = f"{log}\n{traceback.format_exc()}".strip()
            self.setStatus(message)
            slicer.util.errorDisplay(message, **({"detailedText": details} if details else {}))

    def ensureRequirements(self, needTorch: bool) -> bool:
        """True when the Python packages are there, after offering to install the missing ones."""
        missing = [name for name in self.logic.missingRequirements() if needTorch or name != "torch"]
        if not missing:
            return True
        try:
            installed = self.logic.installRequirements(askConfirmation=True)
        except Exception as error:
            logging.exception("MedSegCNN: installing Python packages failed")
            slicer.util.errorDisplay(str(error), detailedText=traceback.format_exc())
            return False
        if not installed:
            self.setStatus("Not started: MedSegCNN needs " + ", ".join(REQUIREMENTS[name] for name in missing) + ".")
        return installed

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        logging.info("MedSegCNN: %s", text)


#
# MedSegCNNLogic
#


class MedSegCNNLogic(ScriptedLoadableModuleLogic):
    """The console API: segment, evaluate and train with MRML nodes in and out (thin wrappers over
    MedSegCNNLib.mrml). Bad input raises MedSegCNNLib.errors.InputError with the scene unchanged."""

    def getParameterNode(self):
        return MedSegCNNParameterNode(super().getParameterNode())

    @staticmethod
    def missingRequirements() -> list[str]:
        """Import names (keys of REQUIREMENTS) of the packages that are not installed (found without importing)."""
        importlib.invalidate_caches()
        return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]

    def installRequirements(self, askConfirmation: bool = True) -> bool:
        """Installs the missing packages, torch through the PyTorch extension and the rest with pip, after asking
        (unless ``askConfirmation`` is False); returns whether they are all there afterwards. Raises RuntimeError
        when torch is missing and the PyTorch extension is not installed."""
        missing = self.missingRequirements()
        if not missing:
            return True
        torchLogic = None
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(
                    "MedSegCNN installs PyTorch through the PyTorch extension, which is not installed. Install "
                    '"PyTorch" in the Extensions Manager (View > Extensions Manager), restart Slicer, and try again.'
                ) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        requirements = "\n".join(f"    {REQUIREMENTS[name]}" for name in missing)
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            f"MedSegCNN needs these Python packages, which are not installed:\n\n{requirements}\n\n"
            "Install them now? PyTorch is a large download; this can take several minutes.",
            windowTitle="MedSegCNN: install Python packages",
        ):
            return False
        if torchLogic is not None:
            torchRequirement = REQUIREMENTS["torch"].removeprefix("torch")
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=torchRequirement) is None:
                raise RuntimeError(
                    "PyTorch was not installed; see the Python console, or use the PyTorch Utils module."
                )
        others = [REQUIREMENTS[name] for name in missing if name != "torch"]
        if others:
            slicer.util.pip_install(others)
        return not self.missingRequirements()

    @staticmethod
    def describeModel(model: str):
        """The registry entry (MedSegCNNLib.registry.ModelEntry) of a registry name or a model folder."""
        from MedSegCNNLib.registry import describe_model, resolve_model

        return describe_model(resolve_model(model))

    def segment(
        self,
        inputVolumes,
        model: str = DEFAULT_MODEL,
        *,
        segmentationNode=None,
        replace: bool = False,
        device: str = "auto",
        tta: bool = False,
        keepLargest: bool = False,
        minSizeMm3: float = 0.0,
        fillHoles: bool = False,
        probabilities: bool = False,
        uncertainty: bool = False,
        waitForCompletion: bool = True,
    ):
        """Segments ``inputVolumes`` (a scalar volume node, or one per model input channel in the card's order) with
        ``model`` (a registry name or a model folder) into ``segmentationNode`` (None: a new one; one that has
        segments is changed only with ``replace``). ``minSizeMm3``: components smaller than this (mm³) are removed.

        Returns the SegmentationOutputs (segmentation_node, probability_nodes, uncertainty_node) when
        ``waitForCompletion``, else the started SegmentationTask (poll it; call ``finish()`` on the main thread
        once its state is "completed")."""
        from MedSegCNNLib.mrml.tasks import SegmentationTask

        task = SegmentationTask(
            slicer.mrmlScene,
            inputVolumes,
            model,
            device=device,
            tta=tta,
            keep_largest=keepLargest,
            min_size_mm3=minSizeMm3,
            fill_holes=fillHoles,
            probabilities=probabilities,
            uncertainty=uncertainty,
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
            raise InputError("Choose the segmentation to evaluate and its reference (a segmentation or labelmap).")
        if referenceVolumeNode is None:
            role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
            referenceVolumeNode = segmentationNode.GetNodeReference(role)
        if referenceVolumeNode is None:
            raise InputError(
                f"'{segmentationNode.GetName()}' has no reference volume; choose the volume to evaluate on."
            )
        return evaluate_nodes(
            slicer.mrmlScene, segmentationNode, referenceNode, referenceVolumeNode, labels=labels, table_node=tableNode
        )

    def train(
        self,
        pairs,
        outputFolder,
        *,
        dataFolder=None,
        dims: int = 3,
        epochs: int | None = None,
        timeBudgetMin: float | None = None,
        initFrom=None,
        freezeEncoder: bool = False,
        device: str = "auto",
        waitForCompletion: bool = True,
    ):
        """Trains a ``dims``-D network on ``pairs`` [(volume node or list of volume nodes, segmentation node), ...]
        and/or the MSD/nnU-Net dataset folder ``dataFolder``, into the new folder ``outputFolder``. ``epochs`` and
        ``timeBudgetMin`` (minutes) limit the run (None: the library's defaults); ``initFrom`` (a registry name or a
        model folder) fine-tunes that model, with its encoder frozen if ``freezeEncoder``.

        Returns the trained model folder (a Path) when ``waitForCompletion``, else the started TrainingTask."""
        from MedSegCNNLib.mrml.tasks import TrainingTask

        task = TrainingTask(
            slicer.mrmlScene,
            pairs,
            outputFolder,
            data_folder=dataFolder,
            dims=dims,
            epochs=epochs,
            time_budget_min=timeBudgetMin,
            init_from=initFrom,
            freeze_encoder=freezeEncoder,
            device=device,
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

        error = MedSegCNNError(task.error or f"The background run was {state}.")
        error.add_note(f"Process log:\n{task.log}")
        raise error


#
# MedSegCNNTest
#


class MedSegCNNTest(ScriptedLoadableModuleTest):
    """Segments a bundled sample case with the bundled model and evaluates it against its reference."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentAndEvaluateSampleCase()

    def test_SegmentAndEvaluateSampleCase(self):
        logic = MedSegCNNLogic()
        installed = logic.installRequirements(askConfirmation=not slicer.app.testingEnabled())
        self.assertTrue(installed, "MedSegCNN's Python packages are not installed.")
        from MedSegCNNLib.demo import find_sample_data

        cases = find_sample_data()
        self.delayDisplay(f"Loading the sample case {SAMPLE_CASE}")
        volume = slicer.util.loadVolume(str(cases / "imagesTr" / f"{SAMPLE_CASE}.nii.gz"))
        reference = slicer.util.loadLabelVolume(str(cases / "labelsTr" / f"{SAMPLE_CASE}.nii.gz"))

        self.delayDisplay(f"Segmenting it with {DEFAULT_MODEL}")
        outputs = logic.segment(volume, DEFAULT_MODEL)
        segments = outputs.segmentation_node.GetSegmentation()
        names = {segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())}
        expected = {label.name for label in logic.describeModel(DEFAULT_MODEL).labels}
        self.assertEqual(names, expected)

        self.delayDisplay("Evaluating it against the reference")
        result, table = logic.evaluate(outputs.segmentation_node, reference, volume)
        dice = [row["dice"] for row in result.to_rows()]
        self.assertEqual(len(dice), len(expected))
        self.assertEqual(table.GetNumberOfRows(), len(dice))
        meanDice = sum(dice) / len(dice)
        self.assertGreater(meanDice, 0.6, f"mean Dice {meanDice:.3f}")
        self.delayDisplay(f"Test passed: mean Dice {meanDice:.3f}")
