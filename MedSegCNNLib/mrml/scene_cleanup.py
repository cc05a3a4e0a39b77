"""Taking a node that this package added back out of the scene, with what came with it."""

from __future__ import annotations

from typing import Any

from .runtime import slicer_module


def remove_added_node(scene: Any, node: Any) -> None:
    """Remove ``node``, its display and storage nodes and its subject-hierarchy item from ``scene``."""
    dependents = (
        [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLDisplayableNode")
        else []
    )
    if node.IsA("vtkMRMLStorableNode"):
        dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    hierarchy = slicer_module().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is not None:
        item = hierarchy.GetItemByDataNode(node)
        if item != hierarchy.GetInvalidItemID():
            hierarchy.RemoveItem(item, False, False)  # the item only; the nodes are removed below
    for dependent in dependents:
        if dependent is not None:
            scene.RemoveNode(dependent)
    scene.RemoveNode(node)
