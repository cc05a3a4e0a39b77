"""Placing new nodes in the subject hierarchy (Slicer's patient / study / folder tree) beside their input."""

from __future__ import annotations

from typing import Any

from .runtime import slicer_module


def place_beside(scene: Any, node: Any, reference_node: Any) -> None:
    """Put ``node``'s subject-hierarchy item under the parent of ``reference_node``'s item (e.g. its study).

    Nothing happens when the scene has no subject hierarchy or the reference has no item in it. Inside the
    Slicer application every data node already has an item (it is moved); with bare MRML one is created.
    """
    hierarchy = slicer_module().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    invalid = hierarchy.GetInvalidItemID()
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if reference_item == invalid:
        return
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item == invalid:
        hierarchy.CreateItem(parent, node)
    elif hierarchy.GetItemParent(item) != parent:
        hierarchy.SetItemParent(item, parent)
