"""Side-by-side benchmark of the MRML layer: MedSegCNN vs the Segmentations module logic of 3D Slicer, in one run.

Measured on the ``slicer-core`` wheel (Slicer's Qt-free MRML and module logics), in a scene wired as the Slicer
application wires it (application logic, module logics registered):

- import, label map -> segmentation node: ``MedSegCNNLib.mrml.segmentation_from_labels`` vs the route Slicer AI
  extensions take: a ``vtkMRMLLabelMapVolumeNode`` filled with the same voxels on the volume's geometry, with a
  colour table naming the labels, ``vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode`` into a
  new segmentation node whose reference geometry is the volume, then the temporary label map node removed.
- export, segmentation node -> label array on the volume grid: ``MedSegCNNLib.mrml.labels_from_segmentation`` vs
  ``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode`` (all segments, the volume as reference, the
  colour table giving the label values) into a temporary label map node, its voxels copied out with
  ``vtk.util.numpy_support``, the node removed. The segmentation exported is made beforehand (not timed) by either
  route: Slicer's import crops the shared layer to the labels' extent, ours keeps the volume's extent.

Input: a synthetic CT-like case (default 512x512x300 voxels, ``--small`` 128x128x96): a float32 volume and a uint8
label map of ``--labels`` non-overlapping ellipsoids of varied size filling ~30% of it, spacing (0.8, 0.8, 1.5) mm,
non-zero origin and a flipped z axis (so neither route can take an identity geometry shortcut). Both routes are
first checked to give the same voxels for every label (import: each segmentation exported back with
``labels_from_segmentation``; export: both arrays compared with the label map), then timed.

Each measurement runs in a fresh subprocess (scene setup there is not timed). Time: best of ``--repeat`` runs.
Memory: the largest increase of the child's resident set during the operation over its resident set just before,
read as VmHWM after resetting it through ``/proc/self/clear_refs`` (VTK's buffers are invisible to tracemalloc;
``ru_maxrss`` cannot be reset and a child started by exec inherits its parent's peak, so it is used only where
``clear_refs`` is unavailable, as "after minus before"). The machine may be shared: read ratios, not seconds.
Run by hand::

    pip install slicer-core
    python Testing/Benchmarks/bench_mrml.py [--small] [--repeat 3] [--labels 14] [--results DIR]

The case, the same-result checks, every run of every route (seconds, peak, layers) and the printed figures go to
``Testing/Benchmarks/results/mrml-<UTC date-time>.json`` (``recording.RunRecord``), rewritten after each task.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from MedSegCNNLib.image.core import Image, LabelInfo
from MedSegCNNLib.image.seg_nrrd import PALETTE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/: the scene wiring shared with the tests
from mrml_scene import vtk_matrix, wired_scene

DEFAULT_SHAPE = (300, 512, 512)  # array order (z, y, x)
SMALL_SHAPE = (96, 128, 128)
SPACING = (0.8, 0.8, 1.5)  # mm, ITK order (x, y, z)
ORIGIN = (-201.3, -187.6, 412.5)  # mm, LPS
DIRECTION = np.diag([1.0, 1.0, -1.0])  # z flipped: slices run from head to feet
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
FILL = 0.3
TASKS = {
    "import": "label map -> segmentation",
    "export-slicer-made": "segmentation -> label map (segmentation made by Slicer's import)",
    "export-ours-made": "segmentation -> label map (segmentation made by segmentation_from_labels)",
}
CONTENDERS = ("medsegcnn", "slicer")


# ----- the case -------------------------------------------------------------------------------------------------


def synthetic_labels(shape: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """``count`` non-overlapping axis-aligned ellipsoids (labels 1..count) filling about 30% of ``shape``.

    Target sizes are log-uniform over a factor of 30 (a liver next to adrenal glands), aspect ratios 0.6-1.6;
    each is placed at random where it covers no earlier ellipsoid, and shrunk by 10% after 100 failed tries.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    weights = np.exp(rng.uniform(0, np.log(30), count))
    targets = FILL * np.prod(shape) * weights / weights.sum()
    for value in np.argsort(-targets) + 1:  # the largest first
        aspect = rng.uniform(0.6, 1.6, 3)
        scale = (targets[value - 1] / (4 / 3 * np.pi * np.prod(aspect))) ** (1 / 3)
        for attempt in range(10_000):
            radii = np.minimum(aspect * scale * 0.9 ** (attempt // 100), (np.array(shape) - 1) / 2)
            half = np.floor(radii).astype(int)
            centre = [rng.integers(h, n - h) for h, n in zip(half, shape, strict=True)]
            region = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half, strict=True))
            zz, yy, xx = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
            inside = (zz / radii[0]) ** 2 + (yy / radii[1]) ** 2 + (xx / radii[2]) ** 2 <= 1
            if not labels[region][inside].any():
                labels[region][inside] = value
                break
    return labels


def synthetic_volume(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """CT-like float32 intensities: -1000 HU outside the labels, 20-220 HU per label, Gaussian noise (20 HU)."""
    rng = np.random.default_rng(seed)
    level = np.concatenate([[-1000.0], rng.uniform(20, 220, 255)]).astype(np.float32)
    volume = rng.standard_normal(labels.shape, dtype=np.float32)
    volume *= 20
    volume += level[labels]
    return volume


def label_infos(count: int) -> tuple[LabelInfo, ...]:
    return tuple(
        LabelInfo(value, f"organ_{value:02d}", PALETTE[(value - 1) % len(PALETTE)]) for value in range(1, count + 1)
    )


def grid_image(array: np.ndarray, labels: tuple[LabelInfo, ...] = ()) -> Image:
    return Image(array, SPACING, ORIGIN, DIRECTION, labels)


# ----- the scene ------------------------------------------------------------------------------------------------


def add_volume(scene: Any, image: Image, node_class: str, name: str) -> Any:
    """A volume node holding a copy of ``image``'s voxels, placed by its LPS geometry."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(*image.size)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(image.array).ravel(), deep=True))
    node = scene.AddNewNodeByClass(node_class, name)
    node.SetAndObserveImageData(data)
    node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS @ image.affine))
    return node


def colour_table(scene: Any, labels: tuple[LabelInfo, ...]) -> Any:
    """A colour table naming each label value, as an extension makes one from its model's labels."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "labels")
    table.SetTypeToUser()
    table.SetNumberOfColors(max(info.value for info in labels) + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for info in labels:
        table.SetColor(info.value, info.name, *info.color, 1.0)
    return table


# ----- the contenders: each returns (its result, seconds in Slicer's logic call or None) -------------------------


def import_medsegcnn(scene: Any, label_image: Image, volume: Any, table: Any) -> tuple[Any, float | None]:
    from MedSegCNNLib.mrml import segmentation_from_labels

    return segmentation_from_labels(scene, label_image, volume), None


def import_slicer(scene: Any, label_image: Image, volume: Any, table: Any) -> tuple[Any, float | None]:
    import slicer

    labelmap = add_volume(scene, label_image, "vtkMRMLLabelMapVolumeNode", "labels")  # geometry as the volume's
    labelmap.CreateDefaultDisplayNodes()
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    start = time.perf_counter()
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
        raise RuntimeError("ImportLabelmapToSegmentationNode failed")
    logic_seconds = time.perf_counter() - start
    scene.RemoveNode(labelmap)
    return segmentation, logic_seconds


def export_medsegcnn(
    scene: Any, segmentation: Any, volume: Any, table: Any, labels: tuple[LabelInfo, ...]
) -> tuple[np.ndarray, float | None]:
    from MedSegCNNLib.mrml import labels_from_segmentation

    return labels_from_segmentation(segmentation, volume, labels=labels).array, None


def export_slicer(
    scene: Any, segmentation: Any, volume: Any, table: Any, labels: tuple[LabelInfo, ...]
) -> tuple[np.ndarray, float | None]:
    import slicer
    import vtk
    from vtk.util import numpy_support

    ids = vtk.vtkStringArray()
    segmentation.GetSegmentation().GetSegmentIDs(ids)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    start = time.perf_counter()
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, table
    ):
        raise RuntimeError("ExportSegmentsToLabelmapNode failed")
    logic_seconds = time.perf_counter() - start
    data = labelmap.GetImageData()
    x, y, z = data.GetDimensions()
    array = numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(z, y, x).copy()
    scene.RemoveNode(labelmap)
    return array, logic_seconds


IMPORTS: dict[str, Callable[..., tuple[Any, float | None]]] = {"medsegcnn": import_medsegcnn, "slicer": import_slicer}
EXPORTS: dict[str, Callable[..., tuple[np.ndarray, float | None]]] = {
    "medsegcnn": export_medsegcnn,
    "slicer": export_slicer,
}
ROUTES = {
    ("import", "medsegcnn"): "MedSegCNN segmentation_from_labels",
    ("import", "slicer"): "Slicer ImportLabelmapToSegmentationNode",
    ("export", "medsegcnn"): "MedSegCNN labels_from_segmentation",
    ("export", "slicer"): "Slicer ExportSegmentsToLabelmapNode",
}


# ----- one measurement (in a child process) ---------------------------------------------------------------------


class Case:
    """The case loaded from ``directory`` into a wired scene: volume node, colour table, label image."""

    def __init__(self, directory: Path) -> None:
        self.labels = label_infos(int(json.loads((directory / "case.json").read_text())["labels"]))
        self.label_array = np.load(directory / "labels.npy")
        self.scene = wired_scene(str(directory))
        volume = grid_image(np.load(directory / "volume.npy"))
        self.volume = add_volume(self.scene, volume, "vtkMRMLScalarVolumeNode", "CT")
        self.table = colour_table(self.scene, self.labels)
        self.label_image = grid_image(self.label_array, self.labels)

    def segmentation(self, made_by: str) -> Any:
        return IMPORTS[made_by](self.scene, self.label_image, self.volume, self.table)[0]

    def exported(self, contender: str, segmentation: Any) -> tuple[np.ndarray, float | None]:
        return EXPORTS[contender](self.scene, segmentation, self.volume, self.table, self.labels)


def layer_counts(segmentation: Any) -> dict[str, Any]:
    """Segments, binary-labelmap layers and the first layer's extent and voxel type of a segmentation node."""
    content = segmentation.GetSegmentation()
    first = content.GetNthSegment(0).GetRepresentation("Binary labelmap")
    return {
        "segments": content.GetNumberOfSegments(),
        "layers": content.GetNumberOfLayers(),
        "layer_extent": list(first.GetExtent()),
        "layer_type": first.GetScalarTypeAsString(),
    }


class PeakMemory:
    """Largest increase of this process's resident set (MiB) while the ``with`` block runs.

    Linux: VmHWM, reset to the current resident set through ``/proc/self/clear_refs`` on entry. Elsewhere:
    ``ru_maxrss`` after minus before (0 when the block stays below an earlier peak of the process or its parent).
    """

    def __enter__(self) -> PeakMemory:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method, self.before = "VmHWM", self._status("VmRSS")
        except OSError:
            self.method, self.before = "ru_maxrss", self._maxrss()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mib = (self._status("VmHWM") if self.method == "VmHWM" else self._maxrss()) - self.before

    @staticmethod
    def _status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise OSError(f"{key} not in /proc/self/status")

    @staticmethod
    def _maxrss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def child_measure(directory: Path, task: str, contender: str) -> dict[str, Any]:
    case = Case(directory)
    made_by = {"export-slicer-made": "slicer", "export-ours-made": "medsegcnn"}.get(task)
    segmentation = case.segmentation(made_by) if made_by else None
    with PeakMemory() as memory:
        start = time.perf_counter()
        if segmentation is None:
            result, logic_seconds = IMPORTS[contender](case.scene, case.label_image, case.volume, case.table)
        else:
            result, logic_seconds = case.exported(contender, segmentation)
        seconds = time.perf_counter() - start
    detail = layer_counts(result) if segmentation is None else {"dtype": str(result.dtype)}
    return {
        "seconds": seconds,
        "logic_seconds": logic_seconds,
        "peak_mib": memory.mib,
        "memory": memory.method,
        **detail,
    }


def child_check(directory: Path) -> dict[str, Any]:
    """Both routes give the label map's voxels, label for label, in both directions."""
    from MedSegCNNLib.mrml import labels_from_segmentation

    case = Case(directory)
    expected = case.label_array
    report: dict[str, Any] = {}
    made = {contender: case.segmentation(contender) for contender in CONTENDERS}
    for contender, segmentation in made.items():
        back = labels_from_segmentation(segmentation, case.volume, labels=case.labels).array
        report[f"import by {contender}, exported back"] = {**layer_counts(segmentation), **_compare(back, expected)}
    for made_by, segmentation in made.items():
        for contender in CONTENDERS:
            array = case.exported(contender, segmentation)[0]
            report[f"export by {contender} of {made_by}'s segmentation"] = _compare(array, expected)
    return report


def _compare(array: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """Whether ``array`` equals ``expected`` voxel for voxel, and the labels whose voxels differ."""
    same_shape = array.shape == expected.shape
    differing = []
    if same_shape:
        for value in range(1, int(expected.max()) + 1):
            if not np.array_equal(array == value, expected == value):
                differing.append(value)
    equal = same_shape and not differing and np.array_equal(array, expected)
    return {"equal": bool(equal), "dtype": str(array.dtype), "labels_differing": differing}


def child_generate(directory: Path, shape: tuple[int, ...], count: int) -> dict[str, Any]:
    labels = synthetic_labels(shape, count)
    np.save(directory / "labels.npy", labels)
    np.save(directory / "volume.npy", synthetic_volume(labels))
    (directory / "case.json").write_text(json.dumps({"labels": count}))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return {"fill": float(sizes.sum() / labels.size), "smallest": int(sizes.min()), "largest": int(sizes.max())}


# ----- the parent -----------------------------------------------------------------------------------------------


def run_child(*arguments: str) -> dict[str, Any]:
    """Run this script with ``arguments`` in a fresh process; its last stdout line is a JSON result."""
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help=f"a {SMALL_SHAPE[::-1]} case, not {DEFAULT_SHAPE[::-1]}")
    parser.add_argument("--labels", type=int, default=14, help="number of labels (ellipsoids), 1 to 255")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, a fresh process each")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--results", type=Path, help="folder of the results file (default: Testing/Benchmarks/results)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, directory, *rest = args.child
        if kind == "generate":
            result = child_generate(Path(directory), SMALL_SHAPE if rest == ["small"] else DEFAULT_SHAPE, args.labels)
        elif kind == "check":
            result = child_check(Path(directory))
        else:
            result = child_measure(Path(directory), *rest)
        print(json.dumps(result))
        return
    if not 1 <= args.labels <= 255 or args.repeat < 1:
        parser.error("--labels must be 1 to 255 (a uint8 label map) and --repeat at least 1")

    from recording import RESULTS, RunRecord  # in the parent only: the children measure their own memory

    shape = SMALL_SHAPE if args.small else DEFAULT_SHAPE
    settings = {**vars(args), "shape_zyx": shape, "spacing_xyz_mm": SPACING, "origin_lps_mm": ORIGIN,
                "direction": DIRECTION.tolist(), "fill": FILL}  # fmt: skip
    record = RunRecord("mrml", settings, results=args.results or RESULTS)
    record.data.update({"tasks": {}, "figures": {}})
    print(f"{record.describe_machine()}; results: {record.path}")
    with tempfile.TemporaryDirectory(prefix="bench_mrml_") as directory:
        start = time.perf_counter()
        size = "small" if args.small else "default"
        case = run_child("--labels", str(args.labels), "--child", "generate", directory, size)
        record.data["case"] = case
        print(
            f"Case: {shape[::-1]} voxels (x, y, z), float32 volume, uint8 label map of {args.labels} ellipsoids "
            f"filling {case['fill']:.1%} (labels of {case['smallest']}-{case['largest']} voxels), spacing {SPACING} "
            f"mm, origin {ORIGIN} LPS, z axis flipped; generated in {time.perf_counter() - start:.0f} s."
        )
        record.data["checks"] = run_child("--child", "check", directory)
        record.write()
        check_results(record.data["checks"])
        print(
            f"\nBest and worst of {args.repeat} run(s), each in a fresh process; peak: largest increase of the "
            "resident set during the operation."
        )
        for task in args.tasks:
            print(f"\n{TASKS[task]}")
            runs = {
                c: [run_child("--child", "measure", directory, task, c) for _ in range(args.repeat)] for c in CONTENDERS
            }
            ours, theirs = (summary(runs[c]) for c in CONTENDERS)
            figures = {"best_s": {c: summary(runs[c])[0] for c in CONTENDERS},
                       "worst_s": {c: max(run["seconds"] for run in runs[c]) for c in CONTENDERS},
                       "peak_mib": {c: summary(runs[c])[1] for c in CONTENDERS},
                       "time_ratio_slicer_over_medsegcnn": theirs[0] / ours[0],
                       "memory_ratio_slicer_over_medsegcnn": theirs[1] / ours[1]}  # fmt: skip
            record.data["tasks"][task] = runs
            record.data["figures"][task] = figures
            record.write()
            print(f"  {record.describe_machine()}")
            for contender, measured in runs.items():
                print_row(ROUTES[task.split("-")[0], contender], measured)
            print(
                f"  ratio Slicer / MedSegCNN: time {figures['time_ratio_slicer_over_medsegcnn']:.2f}x, peak memory "
                f"{figures['memory_ratio_slicer_over_medsegcnn']:.2f}x"
                f" (>1: MedSegCNN faster / smaller; memory read as {runs['slicer'][0]['memory']})"
            )


def summary(runs: list[dict[str, Any]]) -> tuple[float, float]:
    """Best time (s) and largest peak (MiB, at least 1) of a contender's runs."""
    return min(run["seconds"] for run in runs), max(max(run["peak_mib"] for run in runs), 1.0)


def print_row(route: str, runs: list[dict[str, Any]]) -> None:
    times = [run["seconds"] for run in runs]
    logic = [run["logic_seconds"] for run in runs if run["logic_seconds"] is not None]
    first = runs[0]
    if "layers" in first:
        detail = (
            f"{first['segments']} segments in {first['layers']} layer(s) {first['layer_type']} {first['layer_extent']}"
        )
    else:
        detail = f"array {first['dtype']}"
    if logic:
        detail += f"; logic call alone {min(logic):.2f} s"
    peak = max(run["peak_mib"] for run in runs)
    print(f"  {route:42s} {min(times):7.2f} s (worst {max(times):6.2f}) peak +{peak:5.0f} MiB  {detail}")


def check_results(report: dict[str, Any]) -> None:
    print("\nSame-result checks (each label's voxels compared exactly with the label map):")
    failed = []
    for name, result in report.items():
        layers = f", {result['segments']} segments in {result['layers']} layer(s)" if "layers" in result else ""
        verdict = "same voxels" if result["equal"] else f"DIFFERENT, labels {result['labels_differing']}"
        print(f"  {name:50s} {verdict} ({result['dtype']}{layers})")
        if not result["equal"]:
            failed.append(name)
    if failed:
        raise SystemExit(f"The routes disagree ({', '.join(failed)}): their timings would compare different work.")


if __name__ == "__main__":
    main()
