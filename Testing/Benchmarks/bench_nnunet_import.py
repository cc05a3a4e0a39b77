"""Imported nnU-Net v2 models against nnunetv2's own predictor, side by side in one run (not a test: slow).

Part 1: every variant of ``nnunet_support.VARIANTS`` (3d_fullres and 2d, one and two folds, with and without
mirroring, CT normalisation, an anisotropic dataset, ResEnc plans, two channels, region-based labels), built with
nnunetv2's own planner and trainer and imported: per held-out case, the voxel agreement of MedSegCNN's label map with
nnUNetPredictor's, the Dice of each foreground label between the two label maps (background dominates the
agreement), the largest probability difference (softmax models; a region-based model gives no probabilities), and
the seconds each took (MedSegCNN: torch fp32, and OpenVINO fp32 when installed).

Part 2: a large many-label volume, side by side. The CT phantom model (``nnunet_support.CT_PHANTOM_VARIANT``: 15
labelled structures, 1.5 mm isotropic, nnUNetTrainerNoMirroring, built with nnunetv2's own code) segments the held-out
512x512x300 CT-like volume at 0.8x0.8x1.5 mm (resampled to 1.5 mm and the logits back, as TotalSegmentator's 1.5 mm
models on clinical CTs). Each mode runs in its own child process, so that its peak RSS (``VmHWM``) is its own:
nnunetv2's ``nnUNetPredictor`` (``predict_from_files_sequential``, probabilities not saved) and MedSegCNN's
``segment()`` with ``--backend auto --precision auto`` (what a user gets: the accuracy gate decides on the warm-up
image, and the row says which backend and precision that gave), torch fp32 and OpenVINO fp32 and bf16 (torch bf16 on
request). A reduced precision that the gate would not have used is measured with the gate forced open: its row is
labelled "forced". The model is loaded, OpenVINO's
networks converted and compiled, and a patch-sized warm-up image segmented before the clock. Per mode: seconds from
the input file to the label map file (reading, preprocessing, the network, resampling back, writing: both write a
compressed ``.nii.gz``), the peak RSS, both as a ratio to nnU-Net's, the voxel agreement and the Dice per label
with nnU-Net's label map, the mean Dice against the phantom's truth, and where the time and memory go (each step's
seconds and own peak RSS).

Everything (settings, per-case and per-mode raw numbers, the printed figures) goes to
``Testing/Benchmarks/results/nnunet_import-<UTC date-time>.json`` (``recording.RunRecord``; ``--results DIR`` for
another folder), rewritten after each variant and each mode.

Usage: ``python Testing/Benchmarks/bench_nnunet_import.py [--part 1 2] [--variants fast 2d ...] [--modes ...]
[--root DIR] [--results DIR]`` (builds are kept under ``--root`` and reused). Needs the test extra and
``Testing/requirements-nnunet.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from recording import RESULTS, RunRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunet_support import (
    CT_PHANTOM_VARIANT,
    FILE_ENDING,
    PHANTOM_STRUCTURES,
    VARIANTS,
    NnunetResults,
    build_nnunet_results,
    nnunet_predict,
    nnunet_predictor,
)

from MedSegCNNLib.image.io import write_image
from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.precision_gate import GateDecision, cached_decision, gate_record
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.interop.nnunet_import import import_nnunet
from MedSegCNNLib.runtime import cpu_info, inference_precision, openvino_version, resolve_backend

CPU = torch.device("cpu")


def describe_machine() -> str:
    runtimes = f"torch {torch.__version__}, OpenVINO {openvino_version() or 'not installed'}"
    return f"CPU: {cpu_info().describe()}; {torch.get_num_threads()} threads; {runtimes}"


def part1(args: argparse.Namespace, record: RunRecord) -> None:
    print(f"Part 1: imported nnU-Net models vs nnUNetPredictor (held-out cases)\n  {describe_machine()}")
    backends = ["torch"] + (["openvino"] if openvino_version() else [])
    print(f"  {'variant':13s} {'case':16s} {'agreement':>10s} {'Dice per label vs nnU-Net':>26s} {'max |dp|':>9s} "
          f"{'nnU-Net s':>9s} " + " ".join(f"{b + ' s':>10s}" for b in backends))  # fmt: skip
    cases = record.data.setdefault("part1", {})
    for name in args.variants:
        variant = VARIANTS[name]
        results = build_nnunet_results(args.root / name, variant)
        with tempfile.TemporaryDirectory() as scratch:
            model = load_segmentation_model(import_nnunet(results.model_folder, Path(scratch) / "model"), CPU)
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # nnunetv2 prints its progress
                reference = nnunet_predict(results.model_folder, results.test_images, Path(scratch) / "nnunet",
                                           folds=variant.folds)  # fmt: skip
            nnunet_seconds = (time.perf_counter() - start) / len(reference)
            rows = cases[name] = []
            for images, expected in zip(results.test_images, reference, strict=True):
                timings, outputs = {}, {}
                for backend in backends:  # a region-based model gives no probabilities: its labels only
                    options = PredictOptions(probabilities=not variant.regions, backend=backend, precision="fp32")
                    segment([str(p) for p in images], model, options)  # conversion and caches outside the timing
                    start = time.perf_counter()
                    outputs[backend] = segment([str(p) for p in images], model, options)
                    timings[backend] = time.perf_counter() - start
                ours = outputs["torch"]
                dice = dice_between(ours.labels.array, expected.segmentation)
                agreement = float((ours.labels.array == expected.segmentation).mean())
                row = {"case": expected.case_id, "agreement": agreement,
                       "dice_vs_nnunet": dice, "min_dice_vs_nnunet": min(dice.values(), default=None),
                       "max_probability_difference": None if ours.probabilities is None else
                       float(np.abs(ours.probabilities.array - expected.probabilities).max()),
                       "nnunet_s": nnunet_seconds, "medsegcnn_s": timings}  # fmt: skip
                rows.append(row)
                record.data["figures"]["part1"] = part1_figures(cases)
                record.write()
                difference = row["max_probability_difference"]
                print(f"  {name:13s} {row['case']:16s} {row['agreement']:10.5f} "
                      f"{' '.join(f'{k}:{v:.4f}' for k, v in dice.items()):>26s} "
                      f"{'-' if difference is None else f'{difference:.2e}':>9s} {nnunet_seconds:9.2f} "
                      + " ".join(f"{t:10.2f}" for t in timings.values()), flush=True)  # fmt: skip
    print(f"  {record.describe_machine()}")
    for name, figure in record.data["figures"]["part1"].items():
        print(f"  {name:13s} lowest over its cases: agreement {figure['min_agreement']:.5f}, Dice per label vs "
              f"nnU-Net {figure['min_dice_vs_nnunet']:.4f}")  # fmt: skip
    print("  (nnU-Net s: nnUNetPredictor.predict_from_files_sequential per case, reading and writing included;")
    print("  MedSegCNN: segment() per case with the model loaded, reading included, writing not; Dice per label vs")
    print("  nnU-Net: each foreground label present in either label map; max |dp|: '-' for region-based models)")


def part1_figures(cases: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Per variant, over its held-out cases: the lowest voxel agreement, the lowest Dice of any label between the
    two label maps and the largest probability difference (None without probabilities)."""
    result = {}
    for name, rows in cases.items():
        dice = [row["min_dice_vs_nnunet"] for row in rows if row["min_dice_vs_nnunet"] is not None]
        differences = [row["max_probability_difference"] for row in rows
                       if row["max_probability_difference"] is not None]  # fmt: skip
        result[name] = {"min_agreement": min(row["agreement"] for row in rows),
                        "min_dice_vs_nnunet": min(dice, default=1.0),
                        "max_probability_difference": max(differences, default=None)}  # fmt: skip
    return result


def dice_between(labels: np.ndarray, other: np.ndarray) -> dict[int, float]:
    """The Dice of each foreground label present in either label map (1.0 for none: both empty everywhere)."""
    count = int(max(labels.max(), other.max())) + 1
    confusion = np.bincount(other.ravel().astype(np.int64) * count + labels.ravel().astype(np.int64),
                            minlength=count * count).reshape(count, count)  # fmt: skip
    hits, first, second = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    present = np.flatnonzero((first + second)[1:]) + 1
    return {int(k): float(2 * hits[k] / (first[k] + second[k])) for k in present}


# ---------------------------------------------------------------------------------------------------------------------
# part 2: a large many-label volume

#: Part 2's modes: nnunetv2's predictor, and MedSegCNN's backend-precision pairs.
MODES = ("nnunet", "auto", "torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16")
DEFAULT_MODES = ("nnunet", "auto", "torch-fp32", "openvino-fp32", "openvino-bf16")


def backend_precision(mode: str) -> tuple[str, str]:
    """The backend and precision a MedSegCNN mode asks for (``auto``: ``--backend auto --precision auto``)."""
    if mode == "auto":
        return "auto", "auto"
    backend, precision = mode.split("-")
    return backend, precision


def auto_outcome(model: Any, cache: Path) -> dict[str, Any]:
    """What ``--backend auto --precision auto`` runs on this machine for ``model``, from the accuracy gate's decision
    in ``cache``: the backend, the precision auto tries, the gate's decision and the precision that runs."""
    backend, asked = resolve_backend("auto", CPU), inference_precision("auto", CPU)
    if asked == "fp32":
        return {"backend": backend, "tries": asked, "gate": None, "runs": "fp32"}
    decision = cached_decision(model, gate_record(model, backend, asked), cache)
    return {"backend": backend, "tries": asked, "gate": decision.describe() if decision else "no decision",
            "runs": asked if decision is not None and decision.use_reduced(True) else "fp32"}  # fmt: skip


def part2(args: argparse.Namespace, record: RunRecord) -> None:
    modes = [mode for mode in args.modes if not mode.startswith("openvino") or openvino_version()]
    part = record.data["part2"] = {"modes": {}}
    folder = args.root / "ct_phantom"
    folder.mkdir(parents=True, exist_ok=True)
    print("\nPart 2: a large many-label volume, nnUNetPredictor vs MedSegCNN (one child process per mode)")
    print(f"  {describe_machine()}")
    start = time.perf_counter()
    with (folder / "build.log").open("a") as log, contextlib.redirect_stdout(log):  # nnunetv2 prints its progress
        results = build_nnunet_results(folder, CT_PHANTOM_VARIANT)
    print(f"  build: {describe_build(results, time.perf_counter() - start)}")
    print(f"  model: {describe_plans(results)}")
    part.update({"build_s": results.timings, "model": describe_plans(results), "case": results.case_ids[0]})
    image, truth = results.test_images[0][0], results.test_labels[0]
    reference = sitk.ReadImage(str(image))
    size, spacing = reference.GetSize(), reference.GetSpacing()
    print(f"  image: {results.case_ids[0]}, {'x'.join(map(str, size))} voxels of "
          f"{'x'.join(f'{s:g}' for s in spacing)} mm, {reference.GetPixelIDTypeAsString()}")  # fmt: skip
    del reference

    work = folder / "bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cache = folder / "cache"  # OpenVINO's converted networks and the precision decisions, kept between runs
    model_folder = import_nnunet(results.model_folder, work / "model")
    warmup = write_warmup_image(results, work / "warmup_0000.nii.gz")
    prepared = {}
    for mode in modes:
        if mode != "nnunet":
            prepared[mode] = prepare(mode, model_folder, warmup, cache)
            print(f"  {mode}: {prepared[mode]['text']}")
    part["prepared"] = prepared
    record.write()

    measured: dict[str, dict[str, Any]] = part["modes"]
    for mode in modes:
        command = [sys.executable, __file__, "--child", mode, "--threads", str(args.threads), "--root", str(args.root),
                   "--child-io", str(model_folder), str(image), str(warmup), str(work / mode), str(cache)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        (work / f"{mode}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            print(f"  {mode}: failed (exit {done.returncode}); see {work / f'{mode}.log'}:\n{done.stderr[-2000:]}")
            continue
        measured[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        measured[mode]["forced"] = prepared.get(mode, {}).get("forced", False)
        record.write()
    report(measured, results.case_ids[0], truth, work, record)


def describe_build(results: NnunetResults, seconds: float) -> str:
    """The build's steps and their seconds (of the build that made the folders), and whether this run reused it."""
    steps = ", ".join(f"{name} {value:.0f} s" for name, value in results.timings.items())
    return f"{steps} ({'reused' if seconds < 0.5 * results.timings.get('total', 0.0) else 'built now'})"


def describe_plans(results: NnunetResults) -> str:
    """What nnU-Net's planner chose: patch, spacing, features, batch size, and the labels."""
    plans = json.loads((results.model_folder / "plans.json").read_text())
    configuration = plans["configurations"][results.variant.configuration]
    architecture = configuration["architecture"]
    labels = json.loads((results.model_folder / "dataset.json").read_text())["labels"]
    network = architecture["network_class_name"].split(".")[-1]
    return (
        f"{results.model_folder.name}, patch {'x'.join(map(str, configuration['patch_size']))}, spacing "
        f"{'x'.join(f'{s:g}' for s in configuration['spacing'])} mm, {network}"
        f" features {architecture['arch_kwargs']['features_per_stage']}, batch {configuration['batch_size']}, "
        f"{configuration['normalization_schemes'][0]}, {len(labels) - 1} labels + background, "
        f"{results.variant.iterations * results.variant.epochs} training iterations"
    )


def write_warmup_image(results: NnunetResults, path: Path) -> Path:
    """One patch-sized crop of a training image: what the children segment once before the clock (OpenVINO's
    compilation, first-call costs) and the parent converts the networks with."""
    plans = json.loads((results.model_folder / "plans.json").read_text())
    patch = plans["configurations"][results.variant.configuration]["patch_size"]  # (z, y, x)
    training = sorted((results.root / "nnUNet_raw" / results.variant.dataset_name / "imagesTr").glob("*"))[0]
    image = sitk.ReadImage(str(training))
    size = image.GetSize()
    corner = [(s - p) // 2 for s, p in zip(size, reversed(patch), strict=True)]
    crop = image[tuple(slice(c, c + p) for c, p in zip(corner, reversed(patch), strict=True))]
    sitk.WriteImage(crop, str(path), useCompression=True)
    return path


def prepare(mode: str, model_folder: Path, warmup: Path, cache: Path) -> dict[str, Any]:
    """Convert ``mode``'s networks into the cache (OpenVINO) and take the accuracy gate's decision (reduced
    precisions, ``auto``) on the warm-up image: ``text`` says how long it took and what the gate decided; ``forced``:
    whether the child measures a reduced precision that the gate would not have used; ``auto``: what ``auto`` runs."""
    backend, precision = backend_precision(mode)
    model = load_segmentation_model(model_folder, CPU)
    options = PredictOptions(backend=backend, precision=precision, cache_dir=str(cache))
    start = time.perf_counter()
    logger = logging.getLogger("MedSegCNNLib")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the gate logs its decision: said below instead
    try:
        segment([str(warmup)], model, options)
    finally:
        logger.setLevel(level)
    seconds = time.perf_counter() - start
    text = f"conversion, compilation and a warm-up image {seconds:.1f} s (outside the timings)"
    prepared: dict[str, Any] = {"seconds": seconds, "forced": False}
    if mode == "auto":
        outcome = prepared["auto"] = auto_outcome(model, cache)
        text += f"; auto: {outcome['backend']}, tries {outcome['tries']}, gate: {outcome['gate'] or 'not needed'}; " \
            f"runs {outcome['backend']} {outcome['runs']}"  # fmt: skip
    elif precision != "fp32":
        decision = cached_decision(model, gate_record(model, backend, precision), cache)
        prepared["gate"] = decision.describe() if decision else "no decision"
        prepared["forced"] = decision is None or not decision.use_reduced(False)
        text += f"; accuracy gate: {prepared['gate']}"
        text += "; measured with the gate forced open (FORCED)" if prepared["forced"] else ""
    prepared["text"] = text
    return prepared


def child(args: argparse.Namespace) -> None:
    """One mode of part 2 in this process: print a JSON line with the seconds, the peak RSS and the steps'."""
    model_folder, image, warmup, output, cache = (Path(p) for p in args.child_io)
    output.mkdir(parents=True, exist_ok=True)
    steps = Steps()
    extra: dict[str, Any] = {}
    if args.child == "nnunet":
        with (
            contextlib.redirect_stdout(sys.stderr),
            nnunet_predictor(_results_folder(model_folder), threads=args.threads) as predictor,
        ):
            import nnunetv2.imageio.simpleitk_reader_writer as io_module  # after nnunet_predictor's first import
            import nnunetv2.inference.export_prediction as export_module

            predictor.predict_from_files_sequential([[str(warmup)]], [str(output / "warmup")], save_probabilities=False,
                                                    overwrite=True)  # fmt: skip
            preprocessor = predictor.configuration_manager.preprocessor_class
            steps.wrap(preprocessor, "run_case", "read + preprocess")
            steps.wrap(predictor, "predict_logits_from_preprocessed_data", "network")
            steps.wrap(export_module, "convert_predicted_logits_to_segmentation_with_correct_shape", "back + argmax")
            steps.wrap(io_module.SimpleITKIO, "write_seg", "write")
            steps.start()
            predictor.predict_from_files_sequential([[str(image)]], [str(output / _case(image))],
                                                    save_probabilities=False, overwrite=True)  # fmt: skip
            seconds = steps.stop()
    else:
        import MedSegCNNLib.inference.nnunet_inference as nnunet_module
        import MedSegCNNLib.inference.segment as segment_module

        backend, precision = backend_precision(args.child)
        model = load_segmentation_model(model_folder, CPU)
        options = PredictOptions(backend=backend, precision=precision, cache_dir=str(cache))
        if precision not in ("fp32", "auto"):  # the mode itself: an accepted decision in memory (the parent reports it)
            record = gate_record(model, backend, precision)
            accepted = GateDecision(precision, True, {}, "benchmark", {"reduced": 0.0, "fp32": 1.0})
            model.engines[("gate", json.dumps(record, sort_keys=True))] = accepted
        segment([str(warmup)], model, options)
        steps.wrap(segment_module, "_load_input", "read")
        steps.wrap(nnunet_module, "preprocess", "preprocess")
        steps.wrap(nnunet_module, "predict_gated", "network")
        steps.wrap(nnunet_module, "labels_from_logits", "back + argmax")
        write = steps.timed(write_image, "write")
        steps.start()
        result = segment([str(image)], model, options)
        write(result.labels, output / f"{_case(image)}{FILE_ENDING}")
        seconds = steps.stop()
        if args.child == "auto":  # auto as a user runs it, with the gate's decision the parent took
            extra = {"auto": auto_outcome(model, cache)}
    print(json.dumps({"seconds": seconds, "peak_rss_gib": steps.peak_gib, "steps": steps.table, **extra}))


def _results_folder(model_folder: Path) -> Path:
    """The nnU-Net results folder that the imported ``model_folder`` came from (bench/model -> ../../nnUNet_results)."""
    (found,) = (model_folder.parents[1] / "nnUNet_results").glob("*/*__*__*")
    return found


def _case(image: Path) -> str:
    return image.name.removesuffix(FILE_ENDING).removesuffix("_0000")


class Steps:
    """Seconds and peak RSS of named steps: wrapped functions add their calls' seconds under their step's name, and
    each call's own peak RSS is recorded by resetting the kernel's high-water mark (Linux ``clear_refs`` 5) at its
    start; the process's overall peak is kept across the resets. Steps must not nest."""

    def __init__(self) -> None:
        self.table: dict[str, list[float]] = {}  # name -> [seconds, own peak RSS GiB]
        self.peak_gib = _high_water_gib()
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> float:
        self.peak_gib = max(self.peak_gib, _high_water_gib())
        return time.perf_counter() - self._started

    def timed(self, function: Callable, name: str) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.peak_gib = max(self.peak_gib, _high_water_gib())
            resettable = _reset_high_water()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                entry = self.table.setdefault(name, [0.0, 0.0])
                entry[0] += time.perf_counter() - start
                peak = _high_water_gib()
                entry[1] = max(entry[1], peak) if resettable else float("nan")
                self.peak_gib = max(self.peak_gib, peak)

        return call

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        setattr(owner, attribute, self.timed(getattr(owner, attribute), name))


def _high_water_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    raise RuntimeError("no VmHWM in /proc/self/status: part 2 measures the peak RSS on Linux")


def _reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


#: Part 2's steps, in the order they run (nnU-Net reads inside its preprocessing); "other": the rest of the clock.
STEPS = ("read", "read + preprocess", "preprocess", "network", "back + argmax", "write", "other")


def mode_label(mode: str, result: dict[str, Any]) -> str:
    """The mode as printed: ``auto`` with what it ran, a forced mode marked as such."""
    if "auto" in result:
        return f"auto ({result['auto']['backend']} {result['auto']['runs']})"
    return f"{mode} (forced)" if result.get("forced") else mode


def part2_figures(measured: dict[str, dict[str, Any]], labels: dict[str, np.ndarray],
                  truth: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Per mode: the label printed, seconds, peak RSS (GiB), mean Dice vs the truth and, beside nnU-Net, the speed-up
    (nnU-Net's seconds / the mode's), the memory ratio (the mode's peak / nnU-Net's), the voxel agreement and the
    Dice per label with nnU-Net's label map (and its lowest); nnU-Net's Dice per structure vs the truth."""
    reference = measured.get("nnunet")
    modes: dict[str, dict[str, Any]] = {}
    for mode, result in measured.items():
        figure: dict[str, Any] = {"label": mode_label(mode, result), "forced": bool(result.get("forced")),
                                  "seconds": result["seconds"], "peak_rss_gib": result["peak_rss_gib"],
                                  "mean_dice_vs_truth": float(np.mean(list(dice_between(labels[mode], truth)
                                                                           .values())))}  # fmt: skip
        if "auto" in result:
            figure["auto"] = result["auto"]
        if reference is not None:
            dice = dice_between(labels[mode], labels["nnunet"])
            figure.update({"speed_up": reference["seconds"] / result["seconds"],
                           "memory_ratio": result["peak_rss_gib"] / reference["peak_rss_gib"],
                           "agreement": float(np.mean(labels[mode] == labels["nnunet"])),
                           "dice_vs_nnunet": dice, "min_dice_vs_nnunet": min(dice.values(), default=1.0)})  # fmt: skip
        modes[mode] = figure
    result: dict[str, Any] = {"modes": modes}
    if "nnunet" in labels:
        names = {label: name for label, (name, _, _) in enumerate(PHANTOM_STRUCTURES, start=1)}
        scores = dice_between(labels["nnunet"], truth)
        result["nnunet_dice_vs_truth"] = {names.get(k, str(k)): v for k, v in scores.items()}
    return result


def report(measured: dict[str, dict[str, Any]], case: str, truth: Path, work: Path, record: RunRecord) -> None:
    """The table of part 2: each mode's time, peak RSS, ratios to nnU-Net, agreement and Dice; the goals; the
    steps' seconds and peak RSS; nnU-Net's Dice per structure. The figures go into ``record`` first."""
    if not measured:
        return
    true_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(truth)))
    labels = {mode: sitk.GetArrayFromImage(sitk.ReadImage(str(work / mode / f"{case}{FILE_ENDING}")))
              for mode in measured}  # fmt: skip
    figures = record.data["figures"]["part2"] = part2_figures(measured, labels, true_labels)
    record.write()
    print(f"\n  {record.describe_machine()}")
    print(f"  {'mode':28s} {'seconds':>8s} {'speed-up':>9s} {'peak RSS':>9s} {'vs nnU-Net':>10s} "
          f"{'agreement':>10s} {'lowest label Dice vs nnU-Net':>29s} {'mean Dice vs truth':>19s}")  # fmt: skip
    for figure in figures["modes"].values():
        if "speed_up" not in figure:
            print(f"  {figure['label']:28s} {figure['seconds']:8.1f} {'':9s} {figure['peak_rss_gib']:5.2f} GiB "
                  f"{'':10s} {'':10s} {'':29s} {figure['mean_dice_vs_truth']:19.4f}")  # fmt: skip
            continue
        print(f"  {figure['label']:28s} {figure['seconds']:8.1f} {figure['speed_up']:8.2f}x "
              f"{figure['peak_rss_gib']:5.2f} GiB {figure['memory_ratio']:9.2f}x {figure['agreement']:10.5f} "
              f"{figure['min_dice_vs_nnunet']:29.4f} {figure['mean_dice_vs_truth']:19.4f}")  # fmt: skip
    print("  (seconds: from the input .nii.gz to the label map .nii.gz, reading and writing included; speed-up:")
    print("  nnU-Net's seconds / the mode's; peak RSS: the child process's VmHWM, imports, model and warm-up included;")
    print("  vs nnU-Net: the mode's peak / nnU-Net's; agreement: the share of voxels equal to nnU-Net's label map;")
    print("  lowest label Dice: the least Dice of any label between the mode's label map and nnU-Net's; auto: what")
    print("  --backend auto --precision auto ran; forced: a reduced precision measured with the gate forced open)")
    ratios = {mode: (f["speed_up"], f["memory_ratio"], f["agreement"])
              for mode, f in figures["modes"].items() if "speed_up" in f}  # fmt: skip
    if ratios:
        print_goals(ratios)
    print(f"\n  {'steps: seconds, peak RSS during the step':42s}" + "".join(f"{mode:>20s}" for mode in measured))
    for name in STEPS:
        cells = []
        for result in measured.values():
            if name == "other":
                value = result["seconds"] - sum(step[0] for step in result["steps"].values())
                cells.append(f"{value:8.1f} s {'':9s}")
            elif name in result["steps"]:
                seconds, peak = result["steps"][name]
                cells.append(f"{seconds:8.1f} s {peak:5.2f} GiB")
            else:
                cells.append(" " * 20)
        if any(cell.strip() for cell in cells):
            print(f"  {name:42s}" + "".join(cells))
    if "nnunet_dice_vs_truth" in figures:
        print("  nnU-Net's Dice per structure vs truth: " + ", ".join(
            f"{name} {value:.2f}" for name, value in figures["nnunet_dice_vs_truth"].items()))  # fmt: skip


def print_goals(ratios: dict[str, tuple[float, float, float]]) -> None:
    """The issue's goals against nnU-Net: torch >= 1.5x faster, the fastest CPU mode >= 3x, at most half the peak
    memory, and >= 99.9 % voxel agreement at fp32."""
    ours = {mode: value for mode, value in ratios.items() if mode != "nnunet"}
    if not ours:
        return
    fastest = max(ours, key=lambda mode: ours[mode][0])
    lines = []
    if "torch-fp32" in ours:
        lines.append(("torch fp32 >= 1.5x faster", f"{ours['torch-fp32'][0]:.2f}x", ours["torch-fp32"][0] >= 1.5))
    lines.append((f"fastest CPU mode >= 3x ({fastest})", f"{ours[fastest][0]:.2f}x", ours[fastest][0] >= 3.0))
    for mode, (_, memory, agreement) in ours.items():
        lines.append((f"{mode} peak RSS <= 1/2 of nnU-Net's", f"{memory:.2f}x", memory <= 0.5))
        if mode.endswith("fp32"):
            lines.append((f"{mode} agreement >= 99.9 %", f"{agreement:.3%}", agreement >= 0.999))
    print("  goals:")
    for goal, value, met in lines:
        print(f"    {goal + ':':48s} {value:>8s}  {'met' if met else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES), help="part 2's modes")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "medsegcnn-nnunet-bench")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results file")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child-io", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # nnunetv2 reads its thread cap when first imported: the child sets it (nnunet_predictor)
        if args.child != "nnunet":
            torch.set_num_threads(args.threads)
        child(args)
        return
    torch.set_num_threads(args.threads)
    settings = {**vars(args), "variant_settings": {name: asdict(VARIANTS[name]) for name in args.variants},
                "ct_phantom_variant": asdict(CT_PHANTOM_VARIANT)}  # fmt: skip
    record = RunRecord("nnunet_import", settings, results=args.results)
    record.data["figures"] = {}
    print(f"Results: {record.path}")
    if 1 in args.part:
        part1(args, record)
    if 2 in args.part:
        part2(args, record)


if __name__ == "__main__":
    main()
