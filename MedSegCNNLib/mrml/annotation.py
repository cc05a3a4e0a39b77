"""The annotation loop's scene side (:mod:`MedSegCNNLib.annotation` in 3D Slicer): a case in, its segmentation out.

- :func:`load_case`: a :class:`~MedSegCNNLib.annotation.NextCase` into the scene: one volume node per image file
  (named after the case; with several channel files, "<case> <channel>"), and a segmentation node "<case>
  segmentation" on the first volume with one segment per project label: the prediction's voxels, voxel-exact on the
  volume's IJK grid, or empty segments to paint before the project has a model.
- :func:`case_label_map`: the user's edited segmentation back as a label map :class:`Image` on the case image's grid,
  segments matched to the project's labels by name (a segment named after no label is refused).
- :class:`AnnotationSession`: an open project driven from a scene (the module logic's console API is thin wrappers
  over it). It tracks the nodes it loaded and takes a case's nodes back out of the scene when the next case comes,
  unless the user changed them since they were loaded or accepted and did not skip the case (see
  :meth:`AnnotationSession.next_case`).
- For the Slicer panel's Annotate section: :func:`project_summary` (what its status line and learning bar show),
  :func:`segment_editor_node` (the parameter node of its embedded Segment Editor); its Dice curve is
  :mod:`.annotation_curves`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..image.core import Image, LabelInfo
from ..image.geometry import Grid, grid_difference
from .geometry import ijk_to_ras, single_slice_axis, slice_as_2d, to_numpy, to_world
from .runtime import slicer_module, vtk_modules
from .scene_cleanup import remove_added_node
from .segmentation_labels import BINARY_LABELMAP, labels_from_segmentation
from .segmentations import segmentation_from_labels
from .volumes import volume_node_from_image

logger = logging.getLogger(__name__)

SLICER_HOLDER = "3D Slicer"
"""How a project opened from Slicer names its driver in the message that refuses a second one."""
LATTICE_TOLERANCE = 1e-3
"""Largest deviation (in voxels, and of the direction cosines) for a segment layer to be on the volume's lattice."""


@dataclass
class CaseNodes:
    """The nodes :func:`load_case` added for one case, and what the session knows of them.

    ``spatial_dims``: the case image's (2 for a picture: its label map is read back as 2D). ``fingerprint``: of the
    segmentation's label map as last loaded or accepted (None: unknown). ``accepted``, ``skipped``: in this session.
    """

    case: str
    volume_nodes: tuple[Any, ...]
    segmentation_node: Any
    model_version: int | None
    prediction: Path | None
    spatial_dims: int
    fingerprint: str | None = None
    accepted: bool = False
    skipped: bool = False

    @property
    def reference_volume(self) -> Any:
        """The volume the segmentation is on (the first channel's)."""
        return self.volume_nodes[0]

    @property
    def nodes(self) -> tuple[Any, ...]:
        return (*self.volume_nodes, self.segmentation_node)


def project_label_infos(labels: Mapping[int, str]) -> tuple[LabelInfo, ...]:
    """The project's labels ``{value: name}`` as :class:`LabelInfo` (colours: the library's palette)."""
    return tuple(LabelInfo(value, name) for value, name in sorted(labels.items()))


def label_names_mapping(names: Sequence[str] | Mapping[int, str] | None) -> dict[int, str] | None:
    """Foreground label names as ``{value: name}``: a sequence (or a comma-separated string) names 1, 2, ... in
    order; a mapping is kept."""
    if names is None:
        return None
    if isinstance(names, Mapping):
        return {int(value): str(name) for value, name in names.items()}
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    return {index: str(name) for index, name in enumerate(names, start=1)}


def load_case(scene: Any, next_case: Any, labels: Mapping[int, str], channels: Sequence[str] = ()) -> CaseNodes:
    """Add ``next_case``'s image(s) and its prediction (or empty segments) to ``scene`` (module docstring).

    ``labels``: the project's ``{value: name}`` (0 is the background); ``channels``: the project's channel names,
    used in the volume names when the case has several files. On any error the nodes added are removed again.
    """
    from ..image.io import read_image
    from ..image.labels import as_label_array

    images = [read_image(path) for path in next_case.images]
    first = images[0]
    spatial_grid = first.with_array(first.array[0] if first.is_multichannel else first.array)
    if next_case.prediction is not None:
        prediction = read_image(next_case.prediction)
        array = as_label_array(prediction, allow_whole_floats=True, what=f"The prediction of case {next_case.case}")
        if not prediction.same_grid(spatial_grid):
            raise InputError(
                f"The prediction {next_case.prediction} is not on the grid of case {next_case.case}'s image "
                f"{next_case.images[0]} (prediction vs image: "
                f"{grid_difference(Grid.of(prediction), Grid.of(spatial_grid))}); remove it "
                "from the project's predictions folder to have it made again."
            )
        label_image = prediction.with_array(array, labels=project_label_infos(labels))
    else:
        label_image = spatial_grid.with_array(
            np.zeros(spatial_grid.shape, np.uint8), labels=project_label_infos(labels)
        )
    several = len(images) > 1
    names = (
        [next_case.case]
        if not several
        else [
            f"{next_case.case} {channels[index] if index < len(channels) else f'{index:04d}'}"
            for index in range(len(images))
        ]
    )
    added: list[Any] = []
    try:
        for image, name in zip(images, names, strict=True):
            added.append(volume_node_from_image(scene, image, name))
        segmentation = segmentation_from_labels(scene, label_image, added[0], name=f"{next_case.case} segmentation")
        added.append(segmentation)
        nodes = CaseNodes(
            next_case.case,
            tuple(added[:-1]),
            segmentation,
            next_case.model_version,
            next_case.prediction,
            first.spatial_dims,
        )
        nodes.fingerprint = _fingerprint(nodes, labels)
    except BaseException:
        for node in reversed(added):
            remove_added_node(scene, node)
        raise
    return nodes


def case_label_map(segmentation_node: Any, nodes: CaseNodes, labels: Mapping[int, str]) -> Image:
    """The label map of ``segmentation_node`` on the grid of the case image ``nodes`` holds, with the project's
    ``labels``: each segment takes the label of its name (ignoring case and surrounding spaces).

    Refused (:class:`InputError`): a node that is not a segmentation, a segmentation made on another volume than
    the case's, or whose voxels are on another grid, and a segment whose name is none of the project's labels. An
    empty segmentation gives an empty label map (the project accepts it with a warning).
    """
    return _as_case_dims(_label_map_3d(segmentation_node, nodes, labels), nodes)


def _as_case_dims(label_map: Image, nodes: CaseNodes) -> Image:
    """A label map read from the scene (3D) as the case image's dimensions (2D for a picture)."""
    if nodes.spatial_dims == 2:
        axis = single_slice_axis(label_map.shape)
        if axis is None:
            raise InputError(f"Case {nodes.case} is a 2D image but its volume has several slices.")
        label_map = slice_as_2d(label_map, axis)
    return label_map


def _label_map_3d(segmentation_node: Any, nodes: CaseNodes, labels: Mapping[int, str]) -> Image:
    if segmentation_node is None:
        raise InputError(f"No segmentation was given for case {nodes.case}.")
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(
            f"'{segmentation_node.GetName()}' is a {segmentation_node.GetClassName()}; give the segmentation node "
            f"of case {nodes.case} (e.g. '{nodes.segmentation_node.GetName()}')."
        )
    _check_on_case_volume(segmentation_node, nodes)
    _check_segment_names(segmentation_node, labels)
    return labels_from_segmentation(segmentation_node, nodes.reference_volume, labels=project_label_infos(labels))


def _check_on_case_volume(segmentation_node: Any, nodes: CaseNodes) -> None:
    """Refuse a segmentation whose reference geometry is another volume, or whose voxels are off the case's grid."""
    name, volume = segmentation_node.GetName(), nodes.reference_volume
    role = slicer_module().vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    reference = segmentation_node.GetNodeReference(role)
    if reference is not None and reference not in nodes.volume_nodes:
        raise InputError(
            f"Segmentation '{name}' was made on volume '{reference.GetName()}', not on case {nodes.case}'s volume "
            f"'{volume.GetName()}'; accept the segmentation of the case shown ('{nodes.segmentation_node.GetName()}')."
        )
    volume_to_world = to_world(volume) @ ijk_to_ras(volume)
    world = to_world(segmentation_node)
    vtk, _ = vtk_modules()
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        layer = segment.GetRepresentation(BINARY_LABELMAP)
        if layer is None:
            continue
        matrix = vtk.vtkMatrix4x4()
        layer.GetImageToWorldMatrix(matrix)
        relative = np.linalg.inv(volume_to_world) @ world @ to_numpy(matrix)  # layer IJK -> volume IJK
        shift = relative[:3, 3]
        if not (
            np.allclose(relative[:3, :3], np.eye(3), atol=LATTICE_TOLERANCE)
            and np.allclose(shift, np.round(shift), atol=LATTICE_TOLERANCE)
        ):
            spacing = np.linalg.norm((world @ to_numpy(matrix))[:3, :3], axis=0)
            raise InputError(
                f"Segment '{segment.GetName()}' of '{name}' is on another voxel grid (spacing "
                f"{', '.join(f'{s:g}' for s in spacing)} mm) than case {nodes.case}'s volume '{volume.GetName()}' "
                f"(spacing {', '.join(f'{s:g}' for s in volume.GetSpacing())} mm); segment on the case's own volume."
            )


def _check_segment_names(segmentation_node: Any, labels: Mapping[int, str]) -> None:
    """Each segment must be named after a project foreground label (the by-value fallback of label matching would
    give an unknown segment, e.g. a new "Segment_3", some label silently)."""
    known = {name.strip().casefold() for value, name in labels.items() if value != 0}
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_name = segmentation.GetNthSegment(index).GetName()
        if segment_name.strip().casefold() not in known:
            listed = ", ".join(f"{value} '{name}'" for value, name in sorted(labels.items()) if value != 0)
            raise InputError(
                f"Segment '{segment_name}' of '{segmentation_node.GetName()}' is named after no label of this project "
                f"({listed}); rename it to one of these names, or remove it. Nothing was stored."
            )


def _fingerprint(nodes: CaseNodes, labels: Mapping[int, str]) -> str | None:
    """A digest of the segmentation's label map on the case's grid (None when it cannot be read as the project's)."""
    try:
        label_map = _label_map_3d(nodes.segmentation_node, nodes, labels)
    except InputError:
        return None
    return _digest(label_map.array)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(str(array.shape).encode() + np.ascontiguousarray(array, np.int64).tobytes()).hexdigest()


@dataclass
class AnnotationSession:
    """An annotation project driven from ``scene`` by one driver (3D Slicer: the project's lock names it)."""

    scene: Any
    project: Any
    loaded: list[CaseNodes] = field(default_factory=list)
    current: CaseNodes | None = None

    @classmethod
    def create(
        cls,
        scene: Any,
        folder: str | os.PathLike[str],
        images: str | os.PathLike[str],
        *,
        labels: str | os.PathLike[str] | None = None,
        model: str | os.PathLike[str] | None = None,
        dims: int | None = None,
        label_names: Sequence[str] | Mapping[int, str] | None = None,
        learn_budget_s: float = 60.0,
        learning: bool = True,
        holder: str = SLICER_HOLDER,
    ) -> AnnotationSession:
        """Create a project (:meth:`AnnotationProject.create`) and open it as this scene's driver."""
        from ..annotation import AnnotationProject

        project = AnnotationProject.create(
            folder,
            images,
            labels=labels,
            model=model,
            dims=dims,
            label_names=label_names_mapping(label_names),
            learn_budget_s=float(learn_budget_s),
            learning=learning,
            holder=holder,
        )
        return cls(scene, project)

    @classmethod
    def open(cls, scene: Any, folder: str | os.PathLike[str], *, holder: str = SLICER_HOLDER) -> AnnotationSession:
        """Open the project in ``folder`` as this scene's driver."""
        from ..annotation import AnnotationProject

        return cls(scene, AnnotationProject.open(folder, holder=holder))

    def close(self) -> None:
        """Release the project (its learner goes on); the nodes stay in the scene."""
        self.project.close()
        self.loaded.clear()
        self.current = None

    @property
    def labels(self) -> dict[int, str]:
        return dict(self.project.project_file.labels)

    def next_case(self, strategy: str = "random", case: str | None = None) -> CaseNodes:
        """Load the next case (:meth:`AnnotationProject.next_case`) into the scene and make it the current one.

        Then the nodes of the cases loaded before are taken out of the scene when nothing of the user's is lost:
        the case was skipped, or its segmentation is as it was loaded (the prediction, kept in the project) or as it
        was last accepted (stored in the project). A segmentation changed since, and not accepted, stays with its
        volumes (a warning names it); :meth:`accept` still takes it, and when the next case is that case again
        (the project gives the same case until it is accepted or skipped) those nodes are the ones returned, not
        a second copy. Nodes the user removed are forgotten.
        """
        labels = self.labels
        shown = self.project.next_case(strategy=strategy, case=case)
        edited = [earlier for earlier in self.loaded if self._present(earlier) and self._has_edits(earlier, labels)]
        again = next((earlier for earlier in edited if earlier.case == shown.case), None)
        nodes = again or load_case(self.scene, shown, labels, self.project.project_file.channels)
        kept = []
        for earlier in self.loaded:
            if earlier is nodes or not self._present(earlier):
                continue  # the user removed some of its nodes: leave the rest alone
            if earlier in edited:
                logger.warning(
                    "Segmentation '%s' of case %s has changes that were not accepted; it stays in the scene (accept "
                    "it, or remove it yourself).",
                    earlier.segmentation_node.GetName(),
                    earlier.case,
                )
                kept.append(earlier)
            else:
                for node in reversed(earlier.nodes):
                    remove_added_node(self.scene, node)
        self.loaded = [*kept, nodes]
        self.current = nodes
        return nodes

    def _present(self, nodes: CaseNodes) -> bool:
        return all(self.scene.IsNodePresent(node) for node in nodes.nodes)

    @staticmethod
    def _has_edits(nodes: CaseNodes, labels: Mapping[int, str]) -> bool:
        """Whether the case's segmentation holds changes that are not in the project (and the case is not skipped)."""
        if nodes.skipped:
            return False
        return nodes.fingerprint is None or _fingerprint(nodes, labels) != nodes.fingerprint

    def case_of(self, segmentation_node: Any) -> CaseNodes:
        """The loaded case whose volume ``segmentation_node`` was made on (default: the current case's)."""
        if segmentation_node is None:
            if self.current is None:
                raise InputError("No case is loaded; load one with Next case (nextCase) first.")
            return self.current
        role = slicer_module().vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        is_segmentation = segmentation_node.IsA("vtkMRMLSegmentationNode")
        reference = segmentation_node.GetNodeReference(role) if is_segmentation else None
        for nodes in reversed(self.loaded):
            if segmentation_node is nodes.segmentation_node or (
                reference is not None and reference in nodes.volume_nodes
            ):
                return nodes
        if self.current is None:
            raise InputError("No case is loaded; load one with Next case (nextCase) first.")
        return self.current  # checked against the current case, which names what is wrong

    def accept(self, segmentation_node: Any = None, *, learn_budget_s: float | None = None, wait: bool = False) -> Any:
        """Store ``segmentation_node`` (default: the current case's) as the accepted segmentation of the case it was
        made on (:meth:`AnnotationProject.accept`); returns the :class:`AcceptResult`. The scene is not changed. With
        ``wait``, a learning round that fails raises :class:`InputError` after the segmentation was stored."""
        nodes = self.case_of(segmentation_node)
        node = nodes.segmentation_node if segmentation_node is None else segmentation_node
        gone = [item.GetName() for item in (node, nodes.reference_volume) if not self.scene.IsNodePresent(item)]
        if gone:
            raise InputError(
                f"'{gone[0]}' of case {nodes.case} is no longer in the scene; load the case again "
                f"(nextCase(case='{nodes.case}')), correct it and accept it. Nothing was stored."
            )
        labels = self.labels
        label_map = _label_map_3d(node, nodes, labels)
        stored = self._revisions(nodes.case)
        try:
            result = self.project.accept(
                nodes.case, _as_case_dims(label_map, nodes), learn_budget_s=learn_budget_s, wait=wait
            )
        except InputError:
            if self._revisions(nodes.case) > stored:  # stored; the learning ``wait`` waited for failed
                self._accepted(nodes, node, label_map)
            raise
        self._accepted(nodes, node, label_map)
        return result

    def _revisions(self, case: str) -> int:
        return len(self.project.project_file.case(case).revisions)

    @staticmethod
    def _accepted(nodes: CaseNodes, node: Any, label_map: Image) -> None:
        """Note that ``node``'s ``label_map`` is stored as the case's segmentation."""
        if node is nodes.segmentation_node:
            nodes.fingerprint = _digest(label_map.array)
        nodes.accepted = True

    def shown_case(self) -> CaseNodes | None:
        """The current case while Accept and Skip can act on it: loaded, not skipped, its nodes in the scene."""
        nodes = self.current
        if nodes is None or nodes.skipped or not self._present(nodes):
            return None
        return nodes

    def skip(self) -> str:
        """Skip the current case (its nodes go when the next case comes); returns its ID."""
        if self.current is None:
            raise InputError("No case is loaded; load one with Next case (nextCase) first.")
        self.project.skip(self.current.case)
        self.current.skipped = True
        return self.current.case

    def status(self) -> Any:
        """The project's :class:`ProjectStatus`."""
        return self.project.status()


SEGMENT_EDITOR_TAG = "MedSegCNNAnnotate"
"""The singleton tag of the Segment Editor parameter node of the panel's Annotate section."""


def segment_editor_node(scene: Any, tag: str = SEGMENT_EDITOR_TAG) -> Any:
    """The scene's ``vtkMRMLSegmentEditorNode`` with the singleton ``tag``, added when there is none (an embedded
    Segment Editor widget needs its own parameter node)."""
    node = scene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
        node.UnRegister(None)
        node.SetSingletonTag(tag)
        node.SetName(scene.GenerateUniqueName("MedSegCNN segment editor"))
        node = scene.AddNode(node)
    return node


@dataclass(frozen=True)
class ProjectSummary:
    """What the panel's status line and learning progress show of a :class:`ProjectStatus`.

    ``newest_version``: None before the first model. ``last_dice``: the mean Dice before correction of the newest
    round that has one. ``learning``: idle, starting, running, failed, stopped, or "off" for a project that does not
    learn; ``step``/``total_steps`` while it runs; ``message``: the learner's last word (why it failed)."""

    newest_version: int | None
    accepted: int
    total: int
    rounds: int
    last_dice: float | None
    learning: str
    step: int
    total_steps: int
    message: str


def project_summary(status: Any) -> ProjectSummary:
    """The :class:`ProjectSummary` of a :class:`~MedSegCNNLib.annotation.ProjectStatus`."""
    versions = [entry["version"] for entry in status.versions]
    scored = [entry["mean_dice"] for entry in status.rounds if entry.get("mean_dice") is not None]
    learning = status.learning
    return ProjectSummary(
        newest_version=max(versions) if versions else None,
        accepted=len(status.cases.get("accepted", [])),
        total=sum(len(cases) for cases in status.cases.values()),
        rounds=len(status.rounds),
        last_dice=float(scored[-1]) if scored else None,
        learning=str(learning.get("state", "idle")) if learning.get("enabled", True) else "off",
        step=int(learning.get("step") or 0),
        total_steps=int(learning.get("total_steps") or 0),
        message=str(learning.get("message") or ""),
    )
