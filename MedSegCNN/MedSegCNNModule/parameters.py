"""The panel's parameter record, saved with the scene, and the defaults it starts from."""

# Parameter names are bound by name from MedSegCNN.ui, in Slicer's camelCase.
# ruff: noqa: N815

import typing
from typing import Annotated

from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

#: The bundled model the panel selects first and the self-test uses (a registry name).
DEFAULT_MODEL = "hippocampus-tiny"
#: MedSegCNNLib.runtime.DEVICES, written out: this file loads before MedSegCNNLib's packages may be installed
#: (a test keeps the two equal).
DEVICES = ["auto", "cpu", "cuda", "mps"]
#: MedSegCNNLib.runtime.BACKENDS and PRECISIONS, written out for the same reason.
BACKENDS = ["auto", "torch", "openvino"]
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
#: MedSegCNNLib.annotation.project.STRATEGIES, written out for the same reason.
STRATEGIES = ["random", "entropy"]


@parameterNodeWrapper
class MedSegCNNParameterNode:
    """The panel's state, saved with the scene. Widgets bind to these names through their "SlicerParameterName"
    property in MedSegCNN.ui; ``model`` (a registry name or a model folder) is set by the widget."""

    # the parameter node wrapper recognises typing.Union (not the | operator) for a choice of node types; a vector
    # (colour) volume gives a model one input channel per component
    inputVolume0: typing.Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    inputVolume1: typing.Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    inputVolume2: typing.Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    inputVolume3: typing.Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    model: str = DEFAULT_MODEL
    device: Annotated[str, Choice(DEVICES)] = "auto"
    backend: Annotated[str, Choice(BACKENDS)] = "auto"
    precision: Annotated[str, Choice(PRECISIONS)] = "auto"
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
    evalReference: typing.Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    evalReferenceVolume: typing.Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]  # noqa: UP007
    evalTable: vtkMRMLTableNode
    annotateFromModel: bool = True
    annotateLearnBudgetS: Annotated[float, WithinRange(1.0, 86400.0)] = 60.0
    annotateStrategy: Annotated[str, Choice(STRATEGIES)] = "random"
