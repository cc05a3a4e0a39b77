"""Side-by-side benchmark of segmentation metrics: MedSegCNN ``evaluate`` vs MONAI, in one run.

Both libraries compute Dice, HD95, ASSD and NSD (1 mm) per label with physical spacing on the same
inputs; the script prints time ratios (MONAI / MedSegCNN), peak memory and the largest difference
between the two libraries' values. Run by hand (the machine is shared: read ratios, not seconds)::

    pip install -e ".[bench]"
    python Testing/Benchmarks/bench_metrics.py [--large] [--monai-labels N] [--results DIR]

Every case's raw numbers (both libraries' values per label, seconds, peak memory) and the printed figures go to
``Testing/Benchmarks/results/metrics-<UTC date-time>.json`` (``recording.RunRecord``), rewritten after each case.

Cases:
- hippocampus: the 12 bundled sample cases, reference vs the degraded sample predictions (3 labels).
- ct_multilabel: ``../shared/data/ct_multilabel`` 117-label CT map vs itself shifted by one voxel
  (skipped when the shared data is absent).
- large (``--large``): a synthetic 512x512x300 map with 110 box/ball labels vs a perturbed copy. MONAI
  runs on the first ``--monai-labels`` labels only (a one-hot of all 110 labels would need ~8.6 GB);
  the ratio is quoted on that subset, and MedSegCNN's full 110-label time is printed beside it.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from recording import RESULTS, RunRecord

from MedSegCNNLib import Image, evaluate, read_image

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "SampleData" / "Hippocampus"
SHARED = ROOT.parent / "shared" / "data"
METRICS = ("dice", "hd95", "assd", "nsd")


def medsegcnn_metrics(pred: Image, ref: Image, labels: list[int]) -> dict[int, dict[str, float]]:
    result = evaluate(pred, ref, labels=labels, nsd_tolerance_mm=1.0)
    return {row["label"]: {m: row[m] for m in METRICS} for row in result.to_rows()}


def monai_metrics(pred: Image, ref: Image, labels: list[int]) -> dict[int, dict[str, float]]:
    """MONAI's functional metrics, one label at a time (a 2-channel one-hot per label keeps memory sane)."""
    spacing = list(pred.array_spacing)
    out = {}
    pred_t, ref_t = torch.from_numpy(pred.array), torch.from_numpy(ref.array)
    for label in labels:
        p = (pred_t == label)[None, None]
        r = (ref_t == label)[None, None]
        p, r = torch.cat([~p, p], 1), torch.cat([~r, r], 1)
        out[label] = {
            "dice": float(compute_dice(p, r, include_background=False)),
            "hd95": float(compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)),
            "assd": float(compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)),
            "nsd": float(compute_surface_dice(p, r, class_thresholds=[1.0], spacing=spacing)),
        }
    return out


def measure(function: Callable[[], dict]) -> tuple[dict, float, float]:
    """(result, wall seconds, peak increase of the process's resident memory in MiB).

    Resident memory is sampled every 2 ms from /proc (it counts numpy's and torch's buffers alike, which
    tracemalloc does not), so very short-lived peaks may be missed.
    """
    gc.collect()
    baseline = _resident_mib()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _resident_mib())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return result, seconds, max(peak, _resident_mib()) - baseline


def _resident_mib() -> float:
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def compare(record: RunRecord, name: str, pred: Image, ref: Image, labels: list[int],
            monai_labels: list[int] | None = None) -> None:  # fmt: skip
    """Time both libraries on one case, print its figures and add the case (raw numbers and figures) to ``record``,
    then write it (keyed by the name's first word)."""
    key = name.split()[0]
    monai_labels = monai_labels or labels
    ours_all, ours_seconds, ours_peak = measure(lambda: medsegcnn_metrics(pred, ref, labels))
    if monai_labels != labels:
        ours, ours_subset_seconds, ours_subset_peak = measure(lambda: medsegcnn_metrics(pred, ref, monai_labels))
    else:
        ours, ours_subset_seconds, ours_subset_peak = ours_all, ours_seconds, ours_peak
    theirs, monai_seconds, monai_peak = measure(lambda: monai_metrics(pred, ref, monai_labels))
    worst = {m: 0.0 for m in METRICS}
    for label in monai_labels:
        for metric in METRICS:
            a, b = ours[label][metric], theirs[label][metric]
            if not (math.isinf(a) and math.isinf(b)) and not (math.isnan(b) and math.isinf(a)):
                worst[metric] = max(worst[metric], abs(a - b))
    figures = {"medsegcnn_all_labels_s": ours_seconds, "medsegcnn_all_labels_peak_mib": ours_peak,
               "medsegcnn_s": ours_subset_seconds, "medsegcnn_peak_mib": ours_subset_peak, "monai_s": monai_seconds,
               "monai_peak_mib": monai_peak, "ratio_monai_over_medsegcnn": monai_seconds / ours_subset_seconds,
               "largest_difference": worst}  # fmt: skip
    record.data.setdefault("cases", {})[key] = {
        "name": name,
        "shape": pred.shape, "spacing": pred.spacing, "labels": labels, "monai_labels": monai_labels,
        "medsegcnn": ours_all, "monai": theirs, "figures": figures}  # fmt: skip
    record.data.setdefault("figures", {})[key] = figures
    record.write()
    print(f"\n== {name}: shape {pred.shape}, spacing {pred.spacing}, {len(labels)} labels")
    print(f"   {record.describe_machine()}")
    if monai_labels != labels:
        print(f"   MedSegCNN, all {len(labels)} labels: {ours_seconds:.2f} s, peak +{ours_peak:.0f} MiB RSS")
        print(f"   on the first {len(monai_labels)} labels:")
    print(f"   MedSegCNN {ours_subset_seconds:8.2f} s   peak +{ours_subset_peak:6.0f} MiB RSS")
    print(f"   MONAI     {monai_seconds:8.2f} s   peak +{monai_peak:6.0f} MiB RSS")
    print(f"   time ratio MONAI / MedSegCNN = {figures['ratio_monai_over_medsegcnn']:.1f}x")
    print("   largest |MedSegCNN - MONAI|: " + ", ".join(f"{m} {worst[m]:.4g}" for m in METRICS))


def hippocampus_cases() -> tuple[Image, Image]:
    """All 12 sample cases side by side along x as one image pair (so each library runs once)."""
    preds, refs = [], []
    for path in sorted((SAMPLE / "labelsTr").glob("*.nii.gz")):
        refs.append(read_image(path).array)
        preds.append(read_image(SAMPLE / "predictionsTr" / path.name).array)
    depth = max(a.shape[0] for a in refs)
    height = max(a.shape[1] for a in refs)

    def stack(arrays: list[np.ndarray]) -> Image:
        padded = [np.pad(a, ((0, depth - a.shape[0]), (0, height - a.shape[1]), (0, 2))) for a in arrays]
        return Image.from_array(np.concatenate(padded, axis=2).astype(np.uint8))

    return stack(preds), stack(refs)


def synthetic_large(shape=(300, 512, 512), count=110, seed=0) -> tuple[Image, Image]:
    """A CT-sized label map with ``count`` boxes and balls of 5-60 voxels, and a copy with each label
    shifted by 0-2 voxels and ~1/10 of the labels eroded."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, dtype=np.uint8)
    pred = np.zeros(shape, dtype=np.uint8)
    for label in range(1, count + 1):
        size = rng.integers(5, 60, size=3)
        corner = [rng.integers(0, n - s) for n, s in zip(shape, size, strict=True)]
        region = tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))
        if label % 2:
            zz, yy, xx = np.ogrid[tuple(slice(0, s) for s in size)]
            mask = ((zz - size[0] / 2) / (size[0] / 2)) ** 2 + ((yy - size[1] / 2) / (size[1] / 2)) ** 2 + (
                (xx - size[2] / 2) / (size[2] / 2)
            ) ** 2 <= 1
        else:
            mask = np.ones(size, dtype=bool)
        ref[region][mask] = label
        shift = rng.integers(0, 3, size=3)
        shifted = tuple(
            slice(min(c + d, n - s), min(c + d, n - s) + s)
            for c, d, s, n in zip(corner, shift, size, shape, strict=True)
        )
        pred[shifted][mask] = label
    spacing = (0.8, 0.8, 1.5)
    return Image.from_array(pred, spacing=spacing), Image.from_array(ref, spacing=spacing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="include the 512x512x300, 110-label case")
    parser.add_argument("--monai-labels", type=int, default=20, help="labels MONAI runs on in the large case")
    parser.add_argument("--skip-ct", action="store_true", help="leave out the ct_multilabel case")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
    record = RunRecord("metrics", {**vars(args), "metrics": METRICS, "nsd_tolerance_mm": 1.0}, results=args.results)
    print(f"torch threads: {torch.get_num_threads()}; results: {record.path}")

    pred, ref = hippocampus_cases()
    compare(record, "hippocampus (12 sample cases side by side)", pred, ref, [1, 2])

    ct = SHARED / "ct_multilabel" / "example_seg_fast_force_split.nii.gz"
    if args.skip_ct:
        print("\n(ct_multilabel left out: --skip-ct)")
    elif ct.exists():
        ref = read_image(ct)
        ref = ref.with_array(ref.array.astype(np.uint8))
        shifted = np.zeros_like(ref.array)
        shifted[:, :, 1:] = ref.array[:, :, :-1]
        labels = sorted(int(v) for v in np.unique(ref.array) if v)
        name = "ct_multilabel (TotalSegmentator map vs itself shifted 1 voxel)"
        compare(record, name, ref.with_array(shifted), ref, labels)
    else:
        print("\n(ct_multilabel skipped: ../shared/data not found)")

    if args.large:
        pred, ref = synthetic_large()
        labels = sorted(int(v) for v in np.unique(ref.array) if v)
        compare(record, "large synthetic CT-sized map", pred, ref, labels, labels[: args.monai_labels])
    record.data["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record.write()
    print(f"\nmax RSS of this process: {record.data['max_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
