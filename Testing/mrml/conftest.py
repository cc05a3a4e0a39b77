"""Fixtures for the MRML layer: a scene wired as the Slicer application wires it, and ways to fill it.

Built on the ``slicer-core`` wheel (Slicer's Qt-free MRML and module logics). Test inputs are placed in MRML
with matrices written out here (``RAS = diag(-1, -1, 1) @ LPS``), independently of the code under test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mrml_scene import vtk_matrix, wired_scene

from MedSegCNNLib.image.core import Image

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def scene(tmp_path) -> Any:
    """A ``vtkMRMLScene`` wired as the Slicer application wires it (see :func:`mrml_scene.wired_scene`)."""
    pytest.importorskip("slicer")
    return wired_scene(str(tmp_path))


def numpy_matrix(matrix: Any) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def rigid(angles: tuple[float, float, float], translation: tuple[float, float, float]) -> np.ndarray:
    """A 4x4 rotation about x, y then z (radians) followed by a translation (mm)."""
    matrix = np.eye(4)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(4)
        turn[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
        matrix = turn @ matrix
    matrix[:3, 3] = translation
    return matrix


class SceneBuilder:
    """Puts test inputs into a scene, with matrices written out here; and small readers for the checks."""

    LPS_TO_RAS = LPS_TO_RAS
    vtk_matrix = staticmethod(vtk_matrix)
    numpy_matrix = staticmethod(numpy_matrix)
    rigid = staticmethod(rigid)

    def __init__(self, scene: Any) -> None:
        self.scene = scene

    def volume(
        self, image: Image, name: str = "volume", node_class: str = "vtkMRMLScalarVolumeNode", transform: Any = None
    ) -> Any:
        """A volume node holding a 3D ``image``: voxels copied, IJK-to-RAS from its LPS geometry."""
        import vtk
        from vtk.util import numpy_support

        data = vtk.vtkImageData()
        data.SetDimensions(*image.size)
        scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(image.array).ravel(), deep=True)
        data.GetPointData().SetScalars(scalars)
        node = self.scene.AddNewNodeByClass(node_class, name)
        node.SetAndObserveImageData(data)
        node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS @ image.affine))
        if transform is not None:
            node.SetAndObserveTransformNodeID(transform.GetID())
        return node

    def vector_volume(self, image: Image, name: str = "picture", vector_type: str = "ColorRGB") -> Any:
        """A ``vtkMRMLVectorVolumeNode`` holding a 3D ``(C, z, y, x)`` ``image``, one component per channel, with
        the voxel vector type ``vector_type`` (``ColorRGB``, ``ColorRGBA``, ``Undefined``, ...)."""
        import vtk
        from vtk.util import numpy_support

        data = vtk.vtkImageData()
        data.SetDimensions(*image.size)
        voxels = np.moveaxis(image.array, 0, -1).reshape(-1, image.num_channels)  # x fastest, components last
        data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(voxels), deep=True))
        node = self.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
        node.SetAndObserveImageData(data)
        node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS @ image.affine))
        node.SetVoxelVectorType(getattr(node, f"VoxelVectorType{vector_type}"))
        return node

    def linear_transform(self, matrix: np.ndarray, parent: Any = None) -> Any:
        node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        node.SetMatrixTransformToParent(vtk_matrix(matrix))
        if parent is not None:
            node.SetAndObserveTransformNodeID(parent.GetID())
        return node

    def hierarchy(self) -> Any:
        import slicer

        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def study(self, *nodes: Any) -> int:
        """A patient with a study holding ``nodes`` (as the DICOM module loads them); returns the study item."""
        hierarchy = self.hierarchy()
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient")
        study = hierarchy.CreateStudyItem(patient, "study")
        for node in nodes:
            hierarchy.CreateItem(study, node)
        return study

    def parent_item(self, node: Any) -> int:
        hierarchy = self.hierarchy()
        return hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))

    def state(self) -> tuple[int, int]:
        """Number of nodes and of subject-hierarchy items: what an error must leave unchanged."""
        return self.scene.GetNumberOfNodes(), self.hierarchy().GetNumberOfItems()

    @staticmethod
    def ijk_to_ras(node: Any) -> np.ndarray:
        """The IJK-to-RAS matrix of a volume node, in its own frame."""
        import vtk

        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return numpy_matrix(matrix)

    @staticmethod
    def to_parent(transform: Any) -> np.ndarray:
        import vtk

        matrix = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToParent(matrix)
        return numpy_matrix(matrix)

    @staticmethod
    def to_world(node: Any) -> np.ndarray:
        """Local to world RAS of a node, through MRML's own transform composition."""
        import vtk

        if node.GetParentTransformNode() is None:
            return np.eye(4)
        matrix = vtk.vtkMatrix4x4()
        node.GetParentTransformNode().GetMatrixTransformToWorld(matrix)
        return numpy_matrix(matrix)

    def ijk_to_world(self, node: Any) -> np.ndarray:
        """IJK to world RAS of a volume node."""
        return self.to_world(node) @ self.ijk_to_ras(node)


@pytest.fixture
def build(scene) -> SceneBuilder:
    return SceneBuilder(scene)


@pytest.fixture
def label_volume(make_image) -> Image:
    """A 4x5x6 oblique label map with values 1, 3 (blocks) and 5 (one voxel), anisotropic, non-zero origin."""
    array = np.zeros((4, 5, 6), np.uint8)
    array[0:2, 1:4, 2:5] = 1
    array[2:4, 0:2, 0:3] = 3
    array[3, 4, 5] = 5
    return make_image((4, 5, 6), direction="oblique").with_array(array)
