"""MedSegCNN, the 3D Slicer module: its metadata and registration, wired to MedSegCNNLib.

The panel, the console logic, the Python package installer, the parameter record and the self-test have a file each
in MedSegCNNModule/; the widget, logic and test classes are imported here, where Slicer looks for them by name
(MedSegCNNWidget, MedSegCNNLogic, MedSegCNNTest). Segmentation, training and evaluation are MedSegCNNLib's (its MRML
layer, ``MedSegCNNLib.mrml``, is the only code that touches the scene's data).
"""

# Slicer's Python style is camelCase.
# ruff: noqa: N802

import importlib.util
import sys
from pathlib import Path

from MedSegCNNModule.logic import MedSegCNNLogic
from MedSegCNNModule.selftest import MedSegCNNTest
from MedSegCNNModule.widget import MedSegCNNWidget
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

__all__ = ["MedSegCNN", "MedSegCNNLogic", "MedSegCNNTest", "MedSegCNNWidget"]


def _addSourceTreeToPath() -> None:
    """Run from a source checkout (the module path is ``MedSegCNN/``), MedSegCNNLib is one folder up; installed by
    the Extensions Manager it sits beside this file and is importable already."""
    root = Path(__file__).resolve().parents[1]
    if importlib.util.find_spec("MedSegCNNLib") is None and (root / "MedSegCNNLib" / "__init__.py").is_file():
        sys.path.insert(0, str(root))


_addSourceTreeToPath()


class MedSegCNN(ScriptedLoadableModule):
    """Module metadata (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSegCNN")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["The MedSegCNN developers"]
        self.parent.helpText = _("""
<p>Segments loaded volumes with a trained CNN (2D/3D U-Net family), trains and fine-tunes models from segmentations
in the scene, and scores segmentations against references (Dice, IoU, HD95, ASSD, NSD, volumes) for all labels at
once.</p>
<ol>
<li><b>Inputs</b>: select the volume to segment; a model with several input channels (e.g. T1 and FLAIR) shows one
selector per channel, named after its model card. A colour picture (PNG, JPEG, TIFF, BMP: a single-slice vector
volume) gives its red, green and blue channels at once, for 2D models.</li>
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
<li><b>Annotate</b>: the annotation loop, which learns from every correction. Create a project (a new folder, a
folder of images, optionally labelled cases and the selected model to start from) or open one. <i>Next case</i>
loads a case with the newest model's prediction into the Segment Editor of the section; correct it there, then
<i>Accept</i> (or <i>Skip</i>). Learning runs in the background within the learning budget and gives the next
cases a better model; the status line, the learning bar and the curve of the Dice before correction per round
show how it goes.</li>
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
logic.createProject("/path/to/project", "/path/to/images", model="hippocampus-tiny")  # or logic.openProject(folder)
volumeNodes, segmentationNode = logic.nextCase()  # correct it, then:
logic.acceptCase(segmentationNode)  # or logic.skipCase(); logic.projectStatus(); logic.closeProject()
</pre>
""")
        self.parent.acknowledgementText = _("""
<p>MedSegCNN is open source (Apache-2.0).</p>
<p>The bundled sample cases (Resources/SampleData/Hippocampus) are from the Medical Segmentation Decathlon, Task04
Hippocampus, originally acquired at Vanderbilt University Medical Center, licensed CC-BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/). Please cite M. Antonelli et al., "The Medical Segmentation
Decathlon", Nature Communications 13, 4128 (2022), and A. L. Simpson et al., "A large annotated medical image
dataset for the development and evaluation of segmentation algorithms", arXiv:1902.09063 (2019). The bundled
model was trained on these cases.</p>
""")
