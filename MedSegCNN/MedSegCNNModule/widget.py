"""The panel: binds MedSegCNN.ui to the parameter node, starts background tasks and polls them with a timer.

Long work runs as a background process that the panel polls, so the user interface never freezes. MedSegCNNLib is
imported inside functions, so that this file loads before torch and the other Python packages are installed.
"""

# Slicer's API (setup, onSceneStartClose, ...) and its Python style are camelCase.
# ruff: noqa: N802, N803, N806

import html
import importlib
import logging
import sys
import traceback
from contextlib import contextmanager

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from .install import REQUIREMENTS, InstallLogic
from .logic import MedSegCNNLogic, channelsPerSelector

#: Input volume selectors in the panel (a vector volume fills several input channels); a model that needs more
#: volumes is used from the Python console.
MAX_INPUT_CHANNELS = 4
POLL_INTERVAL_MS = 200
#: How often the Annotate section reads the open project's status (the background learning's progress).
ANNOTATE_POLL_INTERVAL_MS = 1000
#: The model list's items after the registry's: a model folder chosen in the path field below the list, and the
#: import of an nnU-Net v2 results folder into the user's models folder.
BROWSE_ITEM = _("Model folder...")
IMPORT_NNUNET_ITEM = _("Import nnU-Net model...")
IMPORT_NNUNET_DATA = "medsegcnn:import-nnunet"
#: This package's files in import order (each imports only those before it), for developer mode's Reload.
PACKAGE_FILES = ("parameters", "install", "logic", "widget", "selftest")


def isUserError(error: BaseException) -> bool:
    """True for MedSegCNNLib's user-facing errors (bad input; the message says what to do)."""
    errors = sys.modules.get("MedSegCNNLib.errors")
    return errors is not None and isinstance(error, errors.MedSegCNNError)


class MedSegCNNWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node, starts background tasks and polls them with a timer."""

    def __init__(
        self, parent=None, logic: MedSegCNNLogic | None = None, installLogic: InstallLogic | None = None
    ) -> None:
        """``logic`` segments, trains and evaluates, ``installLogic`` installs the Python packages; None: the real
        ones (Slicer passes only ``parent``; tests pass fakes)."""
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic if logic is not None else MedSegCNNLogic()
        self.installLogic = installLogic if installLogic is not None else InstallLogic()
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None
        self._openVinoOffered = False
        self._taskTitle = ""
        self._onTaskCompleted = None
        self._onTaskEvents = None
        self._logShown = 0
        self._modelEntry = None  # the selected model's registry entry, or the error describing it raised
        self._modelEntryKey = None
        self._cardShown = ""
        self._trainPairs = []  # [(volume node IDs, segmentation node ID)]
        self._lastEvaluation = None
        self._curves = None  # MedSegCNNLib.mrml.training_curves.TrainingCurves, made on the first training
        self._pollTimer = None
        self._roundCurve = None  # MedSegCNNLib.mrml.annotation_curves.RoundDiceCurve, made on the first round
        self._annotateTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSegCNN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.timeout.connect(self.onPoll)
        self._annotateTimer = qt.QTimer()
        self._annotateTimer.setInterval(ANNOTATE_POLL_INTERVAL_MS)
        self._annotateTimer.timeout.connect(self.refreshAnnotation)

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
        self.ui.annotateProjectPathLineEdit.currentPathChanged.connect(self.updateGUIState)
        self.ui.annotateImagesPathLineEdit.currentPathChanged.connect(self.updateGUIState)
        self.ui.annotateCreateButton.clicked.connect(self.onCreateProject)
        self.ui.annotateOpenButton.clicked.connect(self.onOpenProject)
        self.ui.annotateCloseButton.clicked.connect(self.onCloseProject)
        self.ui.annotateNextButton.clicked.connect(self.onNextCase)
        self.ui.annotateAcceptButton.clicked.connect(self.onAcceptCase)
        self.ui.annotateSkipButton.clicked.connect(self.onSkipCase)

        self.fillModelComboBox()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes: stops a running task (nothing half-made is kept)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self._annotateTimer is not None:
            self._annotateTimer.stop()
        self.logic.closeProject()  # releases the project's lock; its background learning goes on
        self.removeObservers()

    def onReload(self) -> None:
        """Developer mode's Reload: Slicer reloads MedSegCNN.py, which imports this package's files; reload them
        first."""
        for name in PACKAGE_FILES:
            module = sys.modules.get(f"{__package__}.{name}")
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        if self.ui.annotateSegmentEditorWidget.mrmlSegmentEditorNode() is not None:
            self.ui.annotateSegmentEditorWidget.setupViewObservations()  # the effects get the views' events

    def exit(self) -> None:
        self.ui.annotateSegmentEditorWidget.removeViewObservations()
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
        """The registry's models, then the "Model folder..." and "Import nnU-Net model..." items."""
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
        combo.addItem(IMPORT_NNUNET_ITEM, IMPORT_NNUNET_DATA)
        combo.setItemData(combo.count - 1, _("Import an nnU-Net v2 results folder as a model"), qt.Qt.ToolTipRole)
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
            combo.currentIndex = combo.findData("")
            self.ui.modelPathLineEdit.currentPath = model
        self.ui.modelPathLineEdit.blockSignals(False)
        combo.blockSignals(False)
        self.updateGUIState()

    def onModelChosen(self, *args) -> None:
        if self._parameterNode is None:
            return
        name = self.ui.modelComboBox.currentData
        if name == IMPORT_NNUNET_DATA:
            self.importNnUNetModel()
            return
        self._parameterNode.model = name if name else self.ui.modelPathLineEdit.currentPath

    def importNnUNetModel(self) -> None:
        """Asks for an nnU-Net v2 results folder, imports it into the user's models folder and selects it; the
        selection is restored when the user cancels or the import fails (the error is shown)."""
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("nnU-Net results folder (<Trainer>__<Plans>__<configuration>)")
        )
        name = None
        if folder:
            # reportErrors shows the error and goes on (slicer.util.tryWithErrorDisplay would raise it again, out of
            # this slot, and leave the "Import nnU-Net model..." item selected)
            with self.reportErrors(_("The nnU-Net import")), slicer.util.WaitCursor():
                name = self.logic.importNnUNet(folder)
        if name:
            self._parameterNode.model = name
            self.fillModelComboBox()
        else:
            self.showModelInComboBox()

    def selectedModelEntry(self):
        """The selected model's registry entry, or None (the card then says why); described once per model."""
        model = self._parameterNode.model if self._parameterNode else ""
        if model != self._modelEntryKey:
            self._modelEntryKey = model
            try:
                if not model:
                    from MedSegCNNLib.checkpoint.model_archive import CARD_FILE, WEIGHTS_FILE

                    raise ValueError(
                        _("Choose a model, or a model folder (it holds {card} and {weights}).").format(
                            card=CARD_FILE, weights=WEIGHTS_FILE
                        )
                    )
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

    def modelChannels(self, entry) -> list:
        """The model's input channel names (one unnamed channel without a usable model)."""
        return (list(entry.channels) if entry is not None else []) or ["image"]

    def selectorChannels(self, entry) -> list:
        """The number of the model's input channels each input selector shown gives (channelsPerSelector)."""
        volumes = [getattr(self._parameterNode, f"inputVolume{i}") for i in range(MAX_INPUT_CHANNELS)]
        return channelsPerSelector(len(self.modelChannels(entry)), volumes)

    def showChannelRows(self, entry) -> list:
        """The input selectors the model's channels need, each labelled with the channels it gives; returns
        selectorChannels(entry)."""
        channels, counts = self.modelChannels(entry), self.selectorChannels(entry)
        browsing = not self.ui.modelComboBox.currentData
        self.ui.modelPathLabel.visible = browsing
        self.ui.modelPathLineEdit.visible = browsing
        first = 0
        for i in range(MAX_INPUT_CHANNELS):
            shown = i < len(counts)
            getattr(self.ui, f"inputVolumeLabel{i}").visible = shown
            getattr(self.ui, f"inputVolumeSelector{i}").visible = shown
            if shown:
                names = ", ".join(channels[first : first + counts[i]])
                label = (
                    _("Input volume:")
                    if len(counts) == 1
                    else _("{channels} (input {number}):").format(channels=names, number=first + 1)
                )
                getattr(self.ui, f"inputVolumeLabel{i}").text = label
                first += counts[i]
        return counts

    def selectedVolumes(self, entry) -> list:
        """The volumes of the input selectors shown that have one."""
        volumes = (getattr(self._parameterNode, f"inputVolume{i}") for i in range(len(self.selectorChannels(entry))))
        return [volume for volume in volumes if volume is not None]

    # ----- state of the buttons ---------------------------------------------------------------------------

    def updateGUIState(self, *args) -> None:
        """Enables what can run now and says in each button's tooltip why it cannot."""
        if self._parameterNode is None:
            return
        parameters = self._parameterNode
        entry = self.selectedModelEntry()
        self.showModelCard(entry)
        counts = self.showChannelRows(entry)
        channels = len(self.modelChannels(entry))
        busy = self._task is not None

        if busy:
            reason = _("Wait for the running task to finish, or cancel it.")
        elif entry is None:
            reason = _("Choose a usable model (see the model card).")
        elif sum(counts) < channels:
            reason = _("This model needs {count} input channels; segment with it from the Python console.").format(
                count=channels
            )
        elif len(self.selectedVolumes(entry)) < len(counts):
            reason = (
                _("Select the input volume.")
                if len(counts) == 1
                else _("Select all {count} input volumes.").format(count=len(counts))
            )
        else:
            reason = ""
        self.ui.applyButton.enabled = not reason
        self.ui.applyButton.toolTip = reason or _("Segment the input volumes with the selected model.")

        hasData = bool(self._trainPairs) or bool(self.ui.trainDataFolderPathLineEdit.currentPath)
        if busy:
            reason = _("Wait for the running task to finish, or cancel it.")
        elif not hasData:
            reason = _("Add training pairs, or choose a data folder.")
        elif not self.ui.trainOutputPathLineEdit.currentPath:
            reason = _("Choose an output folder for the training run.")
        elif parameters.trainFineTune and entry is None:
            reason = _("Choose a usable model to fine-tune.")
        else:
            reason = ""
        self.ui.trainButton.enabled = not reason
        self.ui.trainButton.toolTip = reason or _("Train a model in the background.")
        self.ui.trainFreezeEncoderCheckBox.enabled = parameters.trainFineTune
        self.ui.addPairButton.enabled = bool(self.selectedVolumes(entry)) and parameters.trainSegmentation is not None
        self.ui.removePairButton.enabled = self.ui.trainPairsListWidget.count > 0

        self.ui.computeButton.enabled = parameters.evalPrediction is not None and parameters.evalReference is not None
        self.ui.exportCsvButton.enabled = self._lastEvaluation is not None
        self.ui.cancelButton.enabled = busy
        self.updateAnnotateButtons()

    def updateAnnotateButtons(self) -> None:
        """The Annotate section's buttons: enabled when they can work, else the tooltip says why."""
        projectOpen = self.logic.projectFolder() is not None
        projectPath = self.ui.annotateProjectPathLineEdit.currentPath
        if projectOpen:
            reason = _("Close the open project first.")
        elif not projectPath:
            reason = _("Choose the project folder.")
        else:
            reason = ""
        self.ui.annotateOpenButton.enabled = not reason
        self.ui.annotateOpenButton.toolTip = reason or _("Open the annotation project in this folder.")
        if not reason and not self.ui.annotateImagesPathLineEdit.currentPath:
            reason = _("Choose the folder of images to annotate.")
        self.ui.annotateCreateButton.enabled = not reason
        self.ui.annotateCreateButton.toolTip = reason or _("Create an annotation project of these images here.")
        self.ui.annotateCloseButton.enabled = projectOpen
        self.ui.annotateNextButton.enabled = projectOpen
        self.ui.annotateNextButton.toolTip = (
            _("Load the next case and its predicted segmentation into the Segment Editor below.")
            if projectOpen
            else _("Create or open a project first.")
        )
        shown = self.logic.shownCase() is not None
        for button, action in (
            (self.ui.annotateAcceptButton, _("Store the corrected segmentation and learn from it in the background.")),
            (self.ui.annotateSkipButton, _("Leave this case out; the next case comes with Next case.")),
        ):
            button.enabled = shown
            button.toolTip = action if shown else _("Load a case with Next case first.")

    # ----- actions ----------------------------------------------------------------------------------------

    def onApply(self) -> None:
        if not self.ensureRequirements(needTorch=True):
            return
        parameters = self._parameterNode
        self.offerOpenVino(parameters)
        with self.reportErrors(_("Segmentation")):
            entry = self.selectedModelEntry()
            if entry is None:
                raise ValueError(str(self._modelEntry))
            task = self.logic.segment(
                self.selectedVolumes(entry),
                parameters.model,
                options=self.predictOptions(),
                segmentationNode=parameters.outputSegmentation,
                replace=parameters.replaceSegments,
                waitForCompletion=False,
            )
            self.runTask(task, _("Segmentation"), self.onSegmentationDone)

    def predictOptions(self):
        """The Segment section's choices as one MedSegCNNLib.inference.options.PredictOptions."""
        from MedSegCNNLib.inference.options import PredictOptions

        parameters = self._parameterNode
        return PredictOptions(
            device=parameters.device,
            backend=parameters.backend,
            precision=parameters.precision,
            tta=parameters.tta,
            keep_largest=parameters.keepLargest,
            min_size_mm3=parameters.minSizeMm3,
            fill_holes=parameters.fillHoles,
            probabilities=parameters.probabilities,
            uncertainty=parameters.uncertainty,
        )

    def onSegmentationDone(self, task) -> None:
        outputs = task.finish()
        segmentation = outputs.segmentation_node
        self.logic.getParameterNode().evalPrediction = segmentation  # ready to be evaluated
        extras = len(outputs.probability_nodes) + (outputs.uncertainty_node is not None)
        if not extras:
            message = _('Segmented: {segments} segments in "{name}".')
        elif extras == 1:
            message = _('Segmented: {segments} segments in "{name}" and 1 map volume.')
        else:
            message = _('Segmented: {segments} segments in "{name}" and {maps} map volumes.')
        segments = segmentation.GetSegmentation().GetNumberOfSegments()
        self.setStatus(message.format(segments=segments, name=segmentation.GetName(), maps=extras))

    def onAddPair(self) -> None:
        parameters = self._parameterNode
        entry = self.selectedModelEntry()
        volumes = self.selectedVolumes(entry)
        segmentation = parameters.trainSegmentation
        pair = ([volume.GetID() for volume in volumes], segmentation.GetID())
        if pair in self._trainPairs:
            self.setStatus(_("This training pair is in the list already."))
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
                raise ValueError(
                    _("Training pair {number} refers to a node that was deleted; remove the pair.").format(
                        number=number
                    )
                )
            pairs.append((nodes[:-1], nodes[-1]))
        return pairs

    def onTrain(self) -> None:
        if not self.ensureRequirements(needTorch=True):
            return
        with self.reportErrors(_("Training")):
            task = self.logic.train(
                self.trainingPairNodes(),
                self.ui.trainOutputPathLineEdit.currentPath,
                options=self.trainingConfig(),
                dataFolder=self.ui.trainDataFolderPathLineEdit.currentPath or None,
                waitForCompletion=False,
            )
            if self._curves is None:
                from MedSegCNNLib.mrml.training_curves import TrainingCurves

                self._curves = TrainingCurves(slicer.mrmlScene)
            self.ui.trainPlotWidget.setMRMLPlotViewNode(self._curves.start())
            self.runTask(task, _("Training"), self.onTrainingDone, onEvents=self._curves.add_events)

    def trainingConfig(self):
        """The Train section's choices as one MedSegCNNLib.training.config.TrainingConfig (0 epochs or minutes:
        planned; fine-tuning starts from the selected model)."""
        from MedSegCNNLib.training.config import TrainingConfig

        parameters = self._parameterNode
        return TrainingConfig(
            spatial_dims=3 if parameters.trainDims == "3D" else 2,
            epochs=parameters.trainEpochs or None,
            time_budget_minutes=parameters.trainTimeBudgetMin or None,
            init_from=parameters.model if parameters.trainFineTune else None,
            freeze_encoder=parameters.trainFineTune and parameters.trainFreezeEncoder,
            device=parameters.trainDevice,
        )

    def onTrainingDone(self, task) -> None:
        modelFolder = task.finish()
        self.logic.getParameterNode().model = str(modelFolder)  # selects the new model, ready to segment
        self.showModelInComboBox()
        self.setStatus(_("Trained model saved in {folder}.").format(folder=modelFolder))

    def onCompute(self) -> None:
        if not self.ensureRequirements(needTorch=False):
            return
        parameters = self._parameterNode
        with self.reportErrors(_("Evaluation")), slicer.util.WaitCursor():
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
            self.setStatus(
                _('Evaluated {count} labels (mean Dice {meanDice}) into "{table}".').format(
                    count=len(dice), meanDice=meanDice, table=table.GetName()
                )
            )
        self.updateGUIState()

    def onExportCsv(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Export evaluation results"), "medsegcnn-metrics.csv", _("CSV files (*.csv)")
        )
        if not path:
            return
        with self.reportErrors(_("CSV export")):
            self._lastEvaluation.to_csv(path, overwrite=True)  # the save dialog has asked before replacing a file
            self.setStatus(_("Saved {path}.").format(path=path))

    def onCancel(self) -> None:
        if self._task is None:
            return
        self.setStatus(_("Cancelling {what}...").format(what=self._taskTitle.lower()))
        with slicer.util.WaitCursor():
            self._task.cancel()
        self.onPoll()

    # ----- annotate ---------------------------------------------------------------------------------------

    def onCreateProject(self) -> None:
        if not self.ensureRequirements(needTorch=True):
            return
        parameters = self._parameterNode
        with self.reportErrors(_("Creating the project")), slicer.util.WaitCursor():
            self.logic.createProject(
                self.ui.annotateProjectPathLineEdit.currentPath,
                self.ui.annotateImagesPathLineEdit.currentPath,
                labelsFolder=self.ui.annotateLabelsPathLineEdit.currentPath or None,
                model=parameters.model if parameters.annotateFromModel else None,
                labelNames=self.ui.annotateLabelNamesLineEdit.text.strip() or None,
                learnBudgetS=parameters.annotateLearnBudgetS,
            )
            self.projectOpened(_("Created"))

    def onOpenProject(self) -> None:
        if not self.ensureRequirements(needTorch=True):
            return
        with self.reportErrors(_("Opening the project")), slicer.util.WaitCursor():
            status = self.logic.openProject(self.ui.annotateProjectPathLineEdit.currentPath)
            budget = float(status.learning["budget_per_round_s"])
            if 1.0 <= budget <= 86400.0:  # the spin box's range; Accept passes its value
                self._parameterNode.annotateLearnBudgetS = budget
            self.projectOpened(_("Opened"))

    def projectOpened(self, verb: str) -> None:
        """Shows the project just created or opened (``verb`` says which) and follows its learning."""
        self.setStatus(
            _("{verb} the annotation project {folder}.").format(verb=verb, folder=self.logic.projectFolder())
        )
        self._annotateTimer.start()
        self.refreshAnnotation()

    def onCloseProject(self) -> None:
        folder = self.logic.projectFolder()
        self.logic.closeProject()
        self._annotateTimer.stop()
        self.setStatus(_("Closed the annotation project {folder}; its cases' nodes stay.").format(folder=folder))
        self.refreshAnnotation()

    def onNextCase(self) -> None:
        with self.reportErrors(_("Next case")), slicer.util.WaitCursor():
            volumes, segmentation = self.logic.nextCase(strategy=self._parameterNode.annotateStrategy)
            editor = self.ui.annotateSegmentEditorWidget
            editor.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
            editor.setSegmentationNode(segmentation)
            editor.setSourceVolumeNode(volumes[0])
            editor.setupViewObservations()
            slicer.util.setSliceViewerLayers(background=volumes[0], fit=True)
            self.setStatus(
                _('Case "{case}": correct its segmentation in the Segment Editor, then Accept (or Skip).').format(
                    case=volumes[0].GetName()
                )
            )
        self.refreshAnnotation()

    def onAcceptCase(self) -> None:
        """Stores the Segment Editor's segmentation; learning runs in the background (never waited for here)."""
        with self.reportErrors(_("Accept")), slicer.util.WaitCursor():
            result = self.logic.acceptCase(
                self.ui.annotateSegmentEditorWidget.segmentationNode(),
                learnBudgetS=self._parameterNode.annotateLearnBudgetS,
            )
            dice = result.round.mean_dice
            self.setStatus(
                _(
                    "Accepted case {case} (revision {revision}; Dice before correction {dice}); learning: {learning}."
                ).format(
                    case=result.case,
                    revision=result.revision,
                    dice="-" if dice is None else f"{dice:.3f}",
                    learning=result.learning,
                )
            )
        self.refreshAnnotation()

    def onSkipCase(self) -> None:
        with self.reportErrors(_("Skip")):
            case = self.logic.skipCase()
            self.setStatus(_("Skipped case {case}; Next case loads another.").format(case=case))
        self.refreshAnnotation()

    def refreshAnnotation(self) -> None:
        """Shows the open project's status line, learning progress and Dice curve (the timer calls this while a
        project is open); the buttons follow."""
        if self.logic.projectFolder() is None:
            self.ui.annotateStatusLabel.text = _("No project is open.")
            self.showLearning(None)
            self._annotateTimer.stop()
            self.updateGUIState()
            return
        from MedSegCNNLib.mrml.annotation import project_summary

        try:
            status = self.logic.projectStatus()
        except Exception as error:  # e.g. its project file was damaged meanwhile: say so once, stop polling
            self._annotateTimer.stop()
            self.ui.annotateStatusLabel.text = str(error)
            return
        summary = project_summary(status)
        text = _(
            "Model: {version}. Accepted: {accepted} of {total} cases. Last round's Dice before correction: {dice}."
        ).format(
            version=_("none yet")
            if summary.newest_version is None
            else _("version {number}").format(number=summary.newest_version),
            accepted=summary.accepted,
            total=summary.total,
            dice="-" if summary.last_dice is None else f"{summary.last_dice:.3f}",
        )
        if summary.learning in ("failed", "stopped") and summary.message:  # the previous version stays in use
            text += " " + _("Learning {state}: {message}").format(state=summary.learning, message=summary.message)
        self.ui.annotateStatusLabel.text = text
        self.showLearning(summary)
        if summary.last_dice is not None or self._roundCurve is not None:
            if self._roundCurve is None:
                from MedSegCNNLib.mrml.annotation_curves import RoundDiceCurve

                self._roundCurve = RoundDiceCurve(slicer.mrmlScene)
            view = self._roundCurve.show(status.rounds)
            if self.ui.annotatePlotWidget.mrmlPlotViewNode() is not view:
                self.ui.annotatePlotWidget.setMRMLPlotViewNode(view)
        self.updateGUIState()

    def showLearning(self, summary) -> None:
        """The learning progress bar: steps while a round runs, a busy bar while it starts, else its state."""
        bar = self.ui.annotateProgressBar
        active = summary is not None and summary.learning in ("starting", "running")
        if active and summary.total_steps > 0:
            bar.setRange(0, summary.total_steps)
            bar.value = min(summary.step, summary.total_steps)
            bar.format = _("learning: step %v of %m")
        elif active:  # the learner starts, or plans its round
            bar.setRange(0, 0)
            bar.format = _("learning: starting")
        else:
            bar.setRange(0, 1)
            bar.value = 0
            bar.format = _("no project") if summary is None else summary.learning
        bar.toolTip = summary.message if summary is not None and summary.message else ""

    # ----- background tasks -------------------------------------------------------------------------------

    def runTask(self, task, title: str, onCompleted, onEvents=None) -> None:
        """Polls the started ``task`` until it ends, passing the events of each poll to ``onEvents(events)`` (if
        given); then calls ``onCompleted(task)`` if it completed. ``title``: the task's name in the status line."""
        self._task, self._taskTitle, self._onTaskCompleted = task, title, onCompleted
        self._onTaskEvents = onEvents
        self._logShown = 0
        self.ui.logTextEdit.clear()
        self.setStatus(_("{what} running...").format(what=title))
        self._pollTimer.start()
        self.updateGUIState()

    def onPoll(self) -> None:
        task = self._task
        if task is None:
            self._pollTimer.stop()
            return
        events = task.poll()
        if self._onTaskEvents is not None:
            self._onTaskEvents(events)
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
            self.setStatus(_("{what} failed: {error}").format(what=self._taskTitle, error=task.error))
            message = task.error or _("{what} failed.").format(what=self._taskTitle)
            slicer.util.errorDisplay(message, detailedText=task.log)
        else:
            self.setStatus(_("{what} cancelled; nothing was added to the scene.").format(what=self._taskTitle))
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
                message = (
                    str(error)
                    if isinstance(error, ValueError)
                    else _("{what} failed: {error}").format(what=what, error=error)
                )
                details = f"{log}\n{traceback.format_exc()}".strip()
            self.setStatus(message)
            slicer.util.errorDisplay(message, **({"detailedText": details} if details else {}))

    def offerOpenVino(self, parameters) -> None:
        """Offers OpenVINO once per session when the prediction would run on the CPU with it but it is missing."""
        if self._openVinoOffered or parameters.backend == "torch" or self.installLogic.isInstalled("openvino"):
            return
        import torch

        if parameters.device not in ("auto", "cpu") or (parameters.device == "auto" and torch.cuda.is_available()):
            return
        self._openVinoOffered = True
        self.installLogic.offerOptional(
            "openvino",
            _("Segmenting on the CPU is often several times faster with OpenVINO, Intel's inference runtime."),
        )

    def ensureRequirements(self, needTorch: bool) -> bool:
        """True when the Python packages are there, after offering to install the missing ones."""
        missing = [name for name in self.installLogic.missingRequirements() if needTorch or name != "torch"]
        if not missing:
            return True
        try:
            installed = self.installLogic.installRequirements(askConfirmation=True)
        except Exception as error:
            logging.exception("MedSegCNN: installing Python packages failed")
            slicer.util.errorDisplay(str(error), detailedText=traceback.format_exc())
            return False
        if not installed:
            packages = ", ".join(REQUIREMENTS[name] for name in missing)
            self.setStatus(_("Not started: MedSegCNN needs {packages}.").format(packages=packages))
        return installed

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        logging.info("MedSegCNN: %s", text)
