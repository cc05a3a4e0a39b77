"""The module's self-test (Reload and Test, and the ctest registered for MedSegCNN.py): segments a bundled sample
case with the bundled model and evaluates it against its reference."""

# Slicer's test API (setUp, runTest, delayDisplay) and its Python style are camelCase.
# ruff: noqa: N802, N806

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .install import InstallLogic
from .logic import MedSegCNNLogic
from .parameters import DEFAULT_MODEL

#: The bundled case the self-test segments (Resources/SampleData/Hippocampus).
SAMPLE_CASE = "hippocampus_020"  # held out when the bundled model was trained


class MedSegCNNTest(ScriptedLoadableModuleTest):
    """Segments a bundled sample case with the bundled model and evaluates it against its reference."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentAndEvaluateSampleCase()

    def test_SegmentAndEvaluateSampleCase(self):
        installed = InstallLogic().installRequirements(askConfirmation=not slicer.app.testingEnabled())
        self.assertTrue(installed, "MedSegCNN's Python packages are not installed.")
        from MedSegCNNLib.demo import find_sample_data

        logic = MedSegCNNLogic()
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
