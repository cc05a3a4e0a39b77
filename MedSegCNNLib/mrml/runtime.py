"""Lazy access to Slicer's MRML classes and to VTK, so that the library imports without them.

Inside the 3D Slicer application ``import slicer`` gives the full module; outside it, the ``slicer-core`` wheel
gives the same ``vtkMRML*`` / ``vtkSlicer*`` classes. Only those classes and VTK are used, never ``slicer.util``
or ``slicer.app``.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import MedSegCNNError


def slicer_module() -> ModuleType:
    """The ``slicer`` module (MRML scene, node and logic classes)."""
    try:
        import slicer
    except ImportError:
        raise MedSegCNNError(
            "MedSegCNNLib.mrml needs 3D Slicer's MRML classes: run it inside 3D Slicer, "
            "or install them with `pip install slicer-core`."
        ) from None
    return slicer


def vtk_modules() -> tuple[ModuleType, ModuleType]:
    """``vtk`` and ``vtk.util.numpy_support``."""
    slicer_module()  # Slicer's VTK comes with it; a helpful message when it is missing
    import vtk
    from vtk.util import numpy_support

    return vtk, numpy_support
