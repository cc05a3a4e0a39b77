"""Bad input to the module's console API, inside Slicer: a clear MedSegCNNError and the scene unchanged.

Registered as a ctest by CMakeLists.txt beside this file; from Slicer's Python console:
``import slicer.testing; slicer.testing.runUnitTest([folder of this file], "MedSegCNNBadInputTest")``.
"""

import tempfile
import unittest
from pathlib import Path

import numpy as np
import slicer
from MedSegCNNModule.parameters import DEFAULT_MODEL

import MedSegCNN


class MedSegCNNBadInputTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()
        self.logic = MedSegCNN.MedSegCNNLogic()
        self.volume = slicer.util.addVolumeFromArray(np.zeros((8, 9, 10), np.float32), name="volume")

    def assert_refused(self, call, *words):
        """``call()`` raises MedSegCNNError whose message names each of ``words``, and adds no node."""
        from MedSegCNNLib.errors import MedSegCNNError

        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(MedSegCNNError) as raised:
            call()
        for word in words:
            self.assertIn(word.lower(), str(raised.exception).lower())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)

    def test_no_volume(self):
        self.assert_refused(lambda: self.logic.segment([], DEFAULT_MODEL), "volume")

    def test_more_volumes_than_the_model_has_channels(self):
        second = slicer.util.addVolumeFromArray(np.zeros((8, 9, 10), np.float32), name="second")
        self.assert_refused(lambda: self.logic.segment([self.volume, second], DEFAULT_MODEL), "input")

    def test_missing_model(self):
        self.assert_refused(lambda: self.logic.segment(self.volume, "no-such-model"), "no-such-model")

    def test_corrupted_model(self):
        from MedSegCNNLib.checkpoint.model_archive import CARD_FILE

        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / CARD_FILE).write_text("{ not json", encoding="utf-8")
            self.assert_refused(lambda: self.logic.segment(self.volume, folder), "model")

    def test_reference_that_does_not_overlap(self):
        prediction = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "prediction")
        prediction.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        prediction.GetSegmentation().AddEmptySegment("structure")
        labels = np.zeros((8, 9, 10), np.uint8)
        labels[2:5, 2:5, 2:5] = 1
        reference = slicer.util.addVolumeFromArray(
            labels, ijkToRAS=_translation(1000.0), name="far away", nodeClassName="vtkMRMLLabelMapVolumeNode"
        )
        self.assert_refused(lambda: self.logic.evaluate(prediction, reference, self.volume), "overlap")


def _translation(offset):
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix
