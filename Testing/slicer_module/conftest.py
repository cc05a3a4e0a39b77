"""Fixtures of the module panel's tests: the MRML scene the panel works on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def scene(tmp_path: Path) -> Any:
    """A ``slicer-core`` scene wired as the Slicer application wires it, with its colour logic registered."""
    slicer = pytest.importorskip("slicer")
    from mrml_scene import wired_scene

    home = tmp_path / "slicer-home"
    home.mkdir()
    scene = wired_scene(str(home))
    application, colors = (
        scene.logics[0],
        next(logic for logic in scene.logics if isinstance(logic, slicer.vtkSlicerColorLogic)),
    )
    application.SetModuleLogic("Colors", colors)  # for label map volumes' colour tables, as Slicer's startup does
    return scene
