"""A ``vtkMRMLScene`` wired as the Slicer application wires it, for the MRML tests and the MRML benchmark.

Plain functions (no pytest): ``Testing/mrml/conftest.py`` wraps them in fixtures, and
``Testing/Benchmarks/bench_mrml.py`` calls them directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def wired_scene(home: str) -> Any:
    """A scene with the application logic (home and share folders ``home``) and the colour, subject-hierarchy,
    segmentations, volumes and transforms logics set on it, each registered with the application logic (as
    Slicer's startup does). The logics are kept alive as long as the scene (``scene.logics``)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetHomeDirectory(home)
    application.SetShareDirectory(home)
    application.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(scene)
    application.SetColorLogic(colors)
    logics = [colors]
    for name, logic_class in [
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Transforms", slicer.vtkSlicerTransformLogic),
    ]:
        logic = logic_class()
        logic.SetMRMLApplicationLogic(application)
        logic.SetMRMLScene(scene)
        application.SetModuleLogic(name, logic)
        logics.append(logic)
    scene.logics = [application, *logics]
    return scene


def vtk_matrix(matrix: np.ndarray) -> Any:
    """A ``vtkMatrix4x4`` with the values of a 4 x 4 array."""
    import vtk

    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result
