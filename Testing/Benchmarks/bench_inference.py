"""Side-by-side benchmark of prediction: MedSegCNN's backends and precisions vs MONAI's sliding window.

Every figure is printed with the CPU's model and flags (AMX, AVX512-BF16, AVX512-VNNI): machines differ, and
the machine may be shared, so read the ratios printed side by side, not the seconds.

Part 1 (``--part 1``): a 3D U-Net (DynUNet-equivalent: features [32, 64, 128, 256, 320], instance norm,
3 classes, random weights) over a 192x192x96 volume (where MONAI's window placement and ours coincide:
starts 0, 48, 96 in-plane, one window across z), 96^3 windows, overlap 0.5, Gaussian weights. MONAI
(``monai.inferers.sliding_window_inference``, fp32, sw_batch_size 1 and 2: the faster counts) and MedSegCNN's
engines (:mod:`MedSegCNNLib.inference.engine`): torch fp32 and bf16 (channels-last), OpenVINO fp32 and bf16
(converted once, from the cache afterwards; the first conversion's time is recorded apart), OpenVINO int8.
Every import is done before any clock starts, and every mode runs one window untimed (its warm-up) just before
its clock. Recorded per mode: time, ratio to MONAI, the share of time outside the network, max |difference| of
the averaged outputs and argmax agreement with MONAI (per voxel).

Part 2 (``--part 2``): a 512x512x300 volume, 14 classes, a *tiny* U-Net (features [4, 8, 16, 32]: the network is
small so that the stitching and its memory dominate), 128^3 windows. Each mode runs in its own subprocess so that
the peak RSS (``VmHWM`` of the child) is its own; MONAI returns the full logits, ours ``output="labels"``; one
window per batch. Each child saves its label map, and the parent compares them with MONAI's voxel by voxel.

Part 3 (``--part 3``, "small images"): the bundled ``hippocampus-tiny`` model over a folder of hippocampus MRIs
(``../shared/data/hippocampus/imagesTr``, the 60 last cases: about 35x50x36 voxels each), per mode:

- cases per second once the model is loaded (read, segment, write each case; the first case outside the clock);
- the same through ``medsegcnn predict`` on the folder, start-up included (wall time of the command);
- the Dice of each mode's segmentation vs torch fp32's, per label, on those of the cases that the model card does
  not list among its training cases (the card's held-out validation cases).

Part 4 (``--part 4``, "end to end"): what a user waits for. A model folder holding part 1's U-Net (random weights,
its last convolution scaled by 30 so that its logits are confident, as a trained network's are) with a 96^3 patch,
and a 96x128x128 NIfTI volume (smoothed noise). ``medsegcnn predict`` is timed from the process's start to its exit
(the file written), as a new user runs it (a new, empty cache folder: "cold") and again with that cache ("warm"),
for ``--backend auto --precision auto`` (the defaults), OpenVINO fp32 and torch fp32; in ``--rounds`` interleaved
rounds, the best of each counted. Against MONAI's ``sliding_window_inference`` on the same network and the same
normalised volume (fp32, network only: imports, loading and warm-up off its clock, the faster of sw_batch_size 1
and 2). One more cold and one warm ``auto`` run under ``cProfile`` (not timed) break the time down: start-up
imports, loading the model, reading and checking the input, conversion and compilation, the accuracy gate,
windows, stitching and writing.

Every run writes ``Testing/Benchmarks/results/inference-<UTC date-time>.json`` (:mod:`recording`: the command, the
commit, the CPU and its flags, the versions, the settings and every measured number), rewritten after each part.

Run by hand::

    python Testing/Benchmarks/bench_inference.py [--part 1 2 3 4] [--modes ...] [--rounds 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recording import RunRecord

from MedSegCNNLib.inference import sliding_window_inference
from MedSegCNNLib.inference.engine import Engine
from MedSegCNNLib.networks import build_network
from MedSegCNNLib.runtime import cpu_has_bf16, openvino_version

ROOT = Path(__file__).resolve().parents[2]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "hippocampus" / "imagesTr"
MODES = ("monai-sw1", "monai-sw2", "torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16", "openvino-int8")
OURS = tuple(mode for mode in MODES if not mode.startswith("monai"))
CACHE = Path(tempfile.gettempdir()) / "medsegcnn-bench-cache"
#: Part 4's ``medsegcnn predict`` arms: (name, --backend, --precision).
END_TO_END = (("auto", "auto", "auto"), ("openvino-fp32", "openvino", "fp32"), ("torch-fp32", "torch", "fp32"))


def monai_inferer():
    """MONAI's ``sliding_window_inference``, imported by whoever calls this before any clock starts (the part 2
    child of a MedSegCNN mode never imports MONAI: about 120 MiB of RSS)."""
    from monai.inferers import sliding_window_inference as monai_sliding_window_inference

    return monai_sliding_window_inference


class Timed:
    """Wraps a network and adds up the seconds spent in its calls."""

    def __init__(self, network) -> None:
        self.network, self.seconds = network, 0.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        result = self.network(batch)
        self.seconds += time.perf_counter() - start
        return result


def unet(features: list[int], classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": classes, "features": features}
    return build_network(config).eval()


def engine(
    mode: str, network: torch.nn.Module, window_shape: tuple[int, ...], calibration: torch.Tensor | None = None
) -> tuple[Engine, float]:
    """MedSegCNN's engine of ``mode`` (``torch-fp32``...) for ``network``, and the seconds its conversion (or
    quantisation) took. int8 is calibrated on windows cut from ``calibration`` (N, C, *S), quantised once per
    process."""
    backend, precision = mode.split("-")
    if backend == "torch":
        layout = torch.channels_last_3d if len(window_shape) == 5 else torch.channels_last
        return Engine((copy.deepcopy(network).to(memory_format=layout),), "torch", precision, 1), 0.0
    from MedSegCNNLib.inference.openvino_backend import compile_model, compile_network, openvino_core

    start = time.perf_counter()
    if precision == "int8":
        key = (id(network), window_shape)
        if key not in QUANTIZED and INT8_IR:  # quantised by the parent (part 2), read as a user's int8 model is
            QUANTIZED[key] = openvino_core().read_model(INT8_IR[0])
        if key not in QUANTIZED:
            from MedSegCNNLib.inference.quantization import quantize_network

            QUANTIZED[key] = quantize_network(network, window_shape, calibration_windows(calibration, window_shape))
        compiled = compile_model(QUANTIZED[key], "int8")
    else:
        compiled = compile_network(network, window_shape, precision, CACHE)
    return Engine((compiled,), "openvino", precision, 1), time.perf_counter() - start


QUANTIZED: dict = {}
#: Part 2's children: the int8 IR the parent quantised and saved (one entry), read instead of quantising again.
INT8_IR: list[Path] = []


def calibration_windows(image: torch.Tensor, window_shape: tuple[int, ...], count: int = 8) -> list:
    """``count`` windows of ``window_shape`` at random corners (seeded) inside ``image`` (N, C, *S)."""
    patch = window_shape[2:]
    generator = torch.Generator().manual_seed(1)
    windows = []
    for _ in range(count):
        corner = [
            int(torch.randint(0, s - p + 1, (1,), generator=generator))
            for s, p in zip(image.shape[2:], patch, strict=True)
        ]
        box = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
        windows.append(image[(slice(0, 1), slice(None), *box)].numpy().copy())
    return windows


def run_mode(mode: str, network, image: torch.Tensor, patch: list[int], batch: int = 1, output: str = "average"):
    """(result, seconds, seconds in the network) of one mode; MONAI modes are ``monai-swN``. The mode's network runs
    one window first, off the clock (its warm-up: oneDNN's kernels, OpenVINO's first request)."""
    window = image[(slice(0, 1), slice(None), *(slice(0, size) for size in patch))]
    with torch.inference_mode():
        if mode.startswith("monai"):
            inferer = monai_inferer()
            network(window)
            timed = Timed(network)
            start = time.perf_counter()
            result = inferer(image, patch, int(mode[-1]), timed, overlap=0.5, mode="gaussian")
            return result, time.perf_counter() - start, timed.seconds
        chosen, _ = engine(mode, network, (1, image.shape[1], *patch), calibration=image)
        with chosen.running():
            warm = window.contiguous(memory_format=torch.channels_last_3d) if chosen.channels_last else window
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=chosen.autocast == "bf16"):
                chosen.networks[0](warm)
            timed = Timed(chosen.networks[0])
            start = time.perf_counter()
            result = sliding_window_inference(
                image, timed, patch, overlap=0.5, batch_size=batch, output=output, precision=chosen.autocast,
                channels_last=chosen.channels_last,
            )  # fmt: skip
    return result, time.perf_counter() - start, timed.seconds


def part1(args: argparse.Namespace, record: RunRecord) -> None:
    classes, patch = 3, [96, 96, 96]
    image = torch.randn((1, 1, 96, 192, 192), generator=torch.Generator().manual_seed(0))
    network = unet([32, 64, 128, 256, 320], classes)
    parameters = sum(p.numel() for p in network.parameters())
    print(f"Part 1: U-Net {parameters / 1e6:.1f} M parameters, 192x192x96 volume, 96^3 windows, overlap 0.5")
    print(f"  {record.describe_machine()}")
    part = record.data["part1"] = {"settings": {"features": [32, 64, 128, 256, 320], "classes": classes,
                                               "parameters": parameters, "volume_zyx": [96, 192, 192],
                                               "patch": patch, "overlap": 0.5, "weights": "gaussian"},
                                   "conversion_seconds": {}, "modes": {}}  # fmt: skip
    if any(mode.startswith("monai") for mode in args.modes):
        monai_inferer()
    for mode in args.modes:
        if mode.startswith("openvino"):
            _, seconds = engine(mode, network, (1, 1, *patch), calibration=image)
            part["conversion_seconds"][mode] = seconds
            print(f"  {mode}: conversion (int8: and quantisation) and compilation {seconds:.1f} s (off the clock)")
    results = {}
    for mode in args.modes:
        results[mode] = run_mode(mode, network, image, patch, batch=2 if mode == "monai-sw2" else 1)
        _, seconds, inside = results[mode]
        outside = (seconds - inside) / inside
        part["modes"][mode] = {"seconds": seconds, "network_seconds": inside, "outside_share": outside}
        print(f"  {mode:16s} {seconds:7.1f} s  network {inside:7.1f} s  outside the network {outside:6.1%}")
        record.write()
    print("  (int8 calibrated on 8 windows of this random volume: its speed is real, its accuracy not a measure)")
    monai = [mode for mode in results if mode.startswith("monai")]
    if not monai:
        return
    best = min(monai, key=lambda mode: results[mode][1])
    reference, reference_seconds, _ = results[best]
    part["monai_reference"] = best
    print(f"\n  {'mode':16s} {'vs ' + best:>12s} {'max |diff|':>11s} {'argmax agreement':>17s}")
    for mode, (output, seconds, _) in results.items():
        agreement = (output.argmax(1) == reference.argmax(1)).float().mean().item()
        difference = (output.softmax(1) - reference.softmax(1)).abs().max().item() if mode in OURS else 0.0
        part["modes"][mode].update(ratio_to_monai=reference_seconds / seconds, max_softmax_difference=difference,
                                   argmax_agreement=agreement)  # fmt: skip
        print(f"  {mode:16s} {reference_seconds / seconds:11.2f}x {difference:11.2e} {agreement:17.5f}")
    print("  (max |diff| of the softmax of the averaged logits; with Gaussian weights MONAI clamps its map at 1e-3,")
    print("  which moves the near-ties of a random network: see the constant-weights check below)")
    part["constant_weights_check"] = same_windows_check(network, image, patch)
    record.write()


def same_windows_check(network, image: torch.Tensor, patch: list[int]) -> dict[str, float]:
    """Both sliding windows with constant window weights: the windows coincide, so the outputs must agree up to
    float rounding (MedSegCNN's torch fp32 engine against MONAI, the same network)."""
    with torch.inference_mode():
        monai = monai_inferer()(image, patch, 1, network, overlap=0.5, mode="constant")
        ours = sliding_window_inference(image, network, patch, overlap=0.5, mode="constant")
    agreement = (ours.argmax(1) == monai.argmax(1)).float().mean().item()
    difference = (ours - monai).abs().max().item()
    print(f"  Constant weights, torch fp32 vs MONAI: max |diff| of the logits {difference:.2e}, argmax agreement "
          f"{agreement:.5f}")  # fmt: skip
    return {"max_logit_difference": difference, "argmax_agreement": agreement}


def child(mode: str, labels_path: Path) -> None:
    """Part 2 in this process: save the label map at ``labels_path`` (``.npy``) and print a JSON line with the
    seconds and the peak RSS (int8: the IR the parent quantised, read and compiled here as from a model folder's
    int8/, outside the timing but inside the peak RSS)."""
    if mode.startswith("monai"):
        monai_inferer()
    network = unet([4, 8, 16, 32], 14)
    image = torch.randn((1, 1, 300, 512, 512), generator=torch.Generator().manual_seed(0))
    output = "average" if mode.startswith("monai") else "labels"
    result, seconds, inside = run_mode(mode, network, image, [128] * 3, output=output)
    peak = peak_rss_gib()
    labels = result.argmax(1) if output == "average" else result
    np.save(labels_path, labels.to(torch.uint8).numpy())
    print(json.dumps({"seconds": seconds, "network_seconds": inside, "peak_rss_gib": peak}))


def peak_rss_gib() -> float:
    """This process's peak resident memory: ``VmHWM`` of its own memory map where Linux tells it (``ru_maxrss``
    would include the parent's peak at the fork, which Linux carries across ``exec``), else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    scale = 2**30 if sys.platform == "darwin" else 2**20  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def save_int8(path: Path) -> None:
    """Quantise part 2's network (calibrated on its image, as the child would) and save the int8 IR at ``path``."""
    from MedSegCNNLib.inference.openvino_backend import import_openvino
    from MedSegCNNLib.inference.quantization import quantize_network

    image = torch.randn((1, 1, 300, 512, 512), generator=torch.Generator().manual_seed(0))
    window = (1, 1, 128, 128, 128)
    quantized = quantize_network(unet([4, 8, 16, 32], 14), window, calibration_windows(image, window))
    import_openvino().save_model(quantized, path, compress_to_fp16=False)


def part2(args: argparse.Namespace, record: RunRecord) -> None:
    print("\nPart 2: 512x512x300, 14 classes, a tiny U-Net [4, 8, 16, 32], 128^3 windows (one subprocess each)")
    print(f"  {record.describe_machine()}")
    part = record.data["part2"] = {"settings": {"features": [4, 8, 16, 32], "network": "tiny", "classes": 14,
                                               "volume_zyx": [300, 512, 512], "patch": [128] * 3, "overlap": 0.5},
                                   "modes": {}}  # fmt: skip
    modes = [mode for mode in args.modes if mode != "monai-sw2"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-part2-"))
    int8_ir = scratch / "int8.xml"
    for mode in modes:
        if mode.startswith("openvino") and mode != "openvino-int8":  # converted once outside the measured children
            engine(mode, unet([4, 8, 16, 32], 14), (1, 1, 128, 128, 128))
        if mode == "openvino-int8":  # quantised once here; the child reads the int8 IR as from a model folder
            save_int8(int8_ir)
    for mode in modes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--int8-ir", str(int8_ir), "--labels", str(scratch / mode)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        part["modes"][mode] = json.loads(output.strip().splitlines()[-1])
        record.write()
    reference = np.load(scratch / "monai-sw1.npy") if "monai-sw1" in part["modes"] else None
    for mode, result in part["modes"].items():
        text = ""
        if reference is not None:
            labels = np.load(scratch / f"{mode}.npy")
            result["voxel_agreement_with_monai"] = float(np.count_nonzero(labels == reference) / labels.size)
            result["ratio_to_monai"] = part["modes"]["monai-sw1"]["seconds"] / result["seconds"]
            agreement = result["voxel_agreement_with_monai"]
            text = f"{result['ratio_to_monai']:5.2f}x MONAI  voxels as MONAI's {agreement:.5f}"
        print(f"  {mode:16s} {result['seconds']:7.1f} s  {text}  peak RSS {result['peak_rss_gib']:.2f} GiB")
    shutil.rmtree(scratch, ignore_errors=True)
    record.write()


def part3(args: argparse.Namespace, record: RunRecord) -> None:
    """Small images: cases per second with the bundled model, and the Dice of each mode vs torch fp32."""
    from MedSegCNNLib.image.io import read_image, write_image
    from MedSegCNNLib.inference.model import load_segmentation_model
    from MedSegCNNLib.inference.options import PredictOptions
    from MedSegCNNLib.inference.segment import segment
    from MedSegCNNLib.registry import resolve_model

    if not HIPPOCAMPUS.is_dir():
        print(f"\nPart 3 skipped: {HIPPOCAMPUS} not found")
        return
    files = sorted(HIPPOCAMPUS.glob("*.nii.gz"))[-args.cases :]
    model_folder = resolve_model("hippocampus-tiny")
    print(f"\nPart 3: {len(files)} hippocampus MRIs with the bundled hippocampus-tiny model")
    print(f"  {record.describe_machine()}")
    part = record.data["part3"] = {"settings": {"model": "hippocampus-tiny", "cases": [f.name for f in files]},
                                   "modes": {}}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-small-"))
    inputs = work / "inputs"
    inputs.mkdir()
    for file in files:
        (inputs / file.name).symlink_to(file)
    segmentations: dict[str, list[np.ndarray]] = {}
    folders = {mode: model_folder for mode in OURS}
    if "openvino-int8" in args.modes:  # an int8 copy, calibrated on 16 training cases (the first by name)
        from MedSegCNNLib.inference.quantization import quantize_model

        folders["openvino-int8"] = work / "hippocampus-tiny-int8"
        shutil.copytree(model_folder, folders["openvino-int8"])
        quantize_model(folders["openvino-int8"], HIPPOCAMPUS.parent, cases=16)
    print(f"  {'mode':16s} {'cases/s loaded':>15s} {'CLI wall s':>11s} {'CLI cases/s':>12s}  gate (CLI, first case)")
    for mode in [mode for mode in args.modes if mode in OURS]:
        backend, precision = mode.split("-")
        options = PredictOptions(backend=backend, precision=precision, cache_dir=str(CACHE / "part3"))
        model = load_segmentation_model(folders[mode], torch.device("cpu"))
        forced = without_gate(model, backend, precision)  # this loop measures the mode itself, whatever the gate says
        segment(read_image(files[0]), model, options)  # conversion, compilation, warm-up
        out = work / mode
        out.mkdir()
        start = time.perf_counter()
        labels = []
        for file in files:
            result = segment(read_image(file), model, options)
            write_image(result.labels, out / file.name)
            labels.append(result.labels.array)
        loaded_rate = len(files) / (time.perf_counter() - start)
        segmentations[mode] = labels
        command = [sys.executable, "-m", "MedSegCNNLib", "predict", "--model", str(folders[mode]), "--input",
                   str(inputs), "--output", str(work / f"{mode}-cli"), "--backend", backend, "--precision",
                   precision, "--cache-dir", str(CACHE / f"part3-cli-{mode}"), "--progress", "none"]  # fmt: skip
        shutil.rmtree(CACHE / f"part3-cli-{mode}", ignore_errors=True)  # the CLI's cache starts empty
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        gate = next((line.split("Precision check: ")[1] for line in done.stderr.splitlines() if "Precision check" in
                     line), "none (fp32)")  # fmt: skip
        part["modes"][mode] = {"cases_per_second_loaded": loaded_rate, "cli_seconds": wall,
                               "cli_gate": gate.strip(), "loop_forced_past_the_gate": forced}  # fmt: skip
        print(f"  {mode:16s} {loaded_rate:15.1f} {wall:11.1f} {len(files) / wall:12.1f}  {gate.split(':')[0]}")
        record.write()
    if "torch-fp32" not in segmentations:
        return
    training = load_segmentation_model(model_folder, torch.device("cpu")).card.training
    trained_on = set(training.train_cases or ()) if training is not None else set()
    held_out = [index for index, file in enumerate(files) if file.name.removesuffix(".nii.gz") not in trained_on]
    part["held_out_cases"] = [files[i].name for i in held_out]
    print(f"  Dice vs torch fp32 on the {len(held_out)} of these cases the model never trained on (min / mean):")
    for mode, labels in segmentations.items():
        cells, scores_by_label = [], {}
        for label in (1, 2):
            reference = segmentations["torch-fp32"]
            scores = [dice_of(labels[i] == label, reference[i] == label) for i in held_out]
            scores_by_label[str(label)] = {"per_case": scores, "min": min(scores), "mean": float(np.mean(scores))}
            cells.append(f"label {label} {min(scores):.4f} / {np.mean(scores):.4f}")
        part["modes"][mode]["dice_vs_torch_fp32"] = scores_by_label
        print(f"  {mode:16s} {'   '.join(cells)}")
    record.write()


def without_gate(model, backend: str, precision: str) -> bool:
    """Record an accepted gate decision for ``model`` in memory (and for int8 build its engine past the check of
    ``medsegcnn quantize``), so that it predicts at ``precision`` whatever its Dice against fp32: the benchmark
    measures each mode; prediction itself always checks. Returns whether the mode was forced so (not fp32)."""
    if precision == "fp32":
        return False
    from MedSegCNNLib.inference.openvino_backend import compile_model, int8_model
    from MedSegCNNLib.inference.precision_gate import GateDecision, gate_record

    if precision == "int8":
        version = int8_model(model.sources[0], model.networks[0], (1, len(model.channels), *model.patch_size))
        model.engines[("openvino", "int8", 2)] = Engine((compile_model(version.model, "int8"),), "openvino", "int8", 2)

    record = gate_record(model, backend, precision)
    decision = GateDecision(precision, True, {}, "benchmark", {"reduced": 0.0, "fp32": 1.0})
    model.engines[("gate", json.dumps(record, sort_keys=True))] = decision
    return True


def dice_of(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


# ----- part 4: end to end ----------------------------------------------------------------------------------


def make_end_to_end_case(folder: Path) -> tuple[Path, Path]:
    """Part 4's model folder and volume in ``folder`` (see the module docstring)."""
    import SimpleITK as sitk

    from MedSegCNNLib.checkpoint import save_model
    from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan

    network = unet([32, 64, 128, 256, 320], 3)
    with torch.no_grad():
        last = [module for module in network.modules() if isinstance(module, torch.nn.Conv3d)][-1]
        last.weight.mul_(30.0)
    plan = PreprocessingPlan(target_spacing=(1.0, 1.0, 1.0), crop_to_nonzero=False, image_interpolation="linear",
                             normalization=(NormalizationSpec(scheme="zscore"),), spatial_dims=3)  # fmt: skip
    card = {"network": network.config, "spatial_dims": 3, "patch_size": [96, 96, 96], "channels": ["CT"],
            "labels": {str(v): {"name": n, "color": [v / 3, 0.5, 0.2]} for v, n in enumerate(["bg", "a", "b"])},
            "preprocessing": plan.to_dict()}  # fmt: skip
    model = save_model(folder / "model", network, card)
    noise = np.random.default_rng(0).normal(size=(96, 128, 128)).astype(np.float32)
    volume = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(noise), 2.0)
    image = folder / "case.nii.gz"
    sitk.WriteImage(volume, str(image))
    return model, image


def monai_network_only(model: Path, image: Path) -> dict[str, Any]:
    """MONAI's time on part 4's case: the model's network (loaded by MedSegCNN's loader: the same weights), the
    volume z-scored as the model card says, fp32, Gaussian weights; the faster of sw_batch_size 1 and 2, each after
    one untimed window."""
    import SimpleITK as sitk

    from MedSegCNNLib.checkpoint import load_model

    inferer = monai_inferer()
    network, _ = load_model(model)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).astype(np.float32)
    tensor = torch.from_numpy((array - array.mean()) / array.std())[None, None]
    seconds = {}
    with torch.inference_mode():
        for batch in (1, 2):
            network(tensor[..., :96, :96, :96])
            start = time.perf_counter()
            inferer(tensor, [96, 96, 96], batch, network, overlap=0.5, mode="gaussian")
            seconds[f"sw{batch}"] = time.perf_counter() - start
    return {"seconds": seconds, "best": min(seconds.values())}


def predict_command(model: Path, image: Path, output: Path, backend: str, precision: str) -> list[str]:
    return [sys.executable, "-m", "MedSegCNNLib", "predict", "--model", str(model), "--input", str(image),
            "--output", str(output), "--backend", backend, "--precision", precision, "--progress", "none"]  # fmt: skip


def user_environment(home: Path) -> dict[str, str]:
    """The environment of a user whose cache and data folders are under ``home`` (empty at first: "cold")."""
    return {**os.environ, "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data")}


def timed_command(command: list[str], environment: dict[str, str]) -> tuple[float, str]:
    """Seconds from starting ``command`` to its exit, and its stderr (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, done.stderr


#: Part 4's breakdown: phase -> the functions (``file:function``) whose cumulative time it is (outermost calls).
PHASES = {
    "load the model": ("inference/model.py:load_segmentation_model",),
    "read and check the input": ("inference/folder_run.py:model_inputs", "inference/segment.py:load_checked_input"),
    "preprocess": ("data/preprocessing.py:preprocess_case",),
    "convert and compile (engine)": ("inference/engine.py:_build",),
    "network (windows, through the predictor)": ("inference/predictor.py:__call__",),
    "map back to the input grid": ("data/preprocessing.py:to_source_grid",),
    "write": ("image/io.py:write_image",),
}
#: The whole prediction (engine, accuracy gate, windows, stitching): what is left of it after the engine and the
#: network is the gate's bookkeeping and the stitching.
PREDICTION = "inference/prediction.py:predict_gated"


def cumulative(stats: dict, name: str) -> float:
    """Cumulative seconds of ``name`` (``file:function``) in cProfile ``stats``, outermost calls only."""
    suffix, wanted = name.split(":")
    total = 0.0
    for (file, _line, function), (_cc, _nc, _tt, seconds, callers) in stats.items():
        nested = any(caller[0] == file and caller[2] == function for caller in callers)
        if file.endswith(suffix) and function == wanted and not nested:
            total += seconds
    return total


def profiled_phases(profile: Path, wall: float) -> dict[str, float]:
    """Seconds of each of :data:`PHASES` in the cProfile ``profile`` of one ``medsegcnn predict``, the stitching
    and gate (the prediction less the engine and the network), the start-up before the command's ``main``
    (interpreter, imports, argument parsing), and whatever is left of ``wall``."""
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    phases = {phase: sum(cumulative(stats, name) for name in names) for phase, names in PHASES.items()}
    prediction = cumulative(stats, PREDICTION)
    phases["stitching and gate (the prediction less engine and network)"] = (
        prediction - phases["convert and compile (engine)"] - phases["network (windows, through the predictor)"]
    )
    command = cumulative(stats, "cli/main.py:main")
    phases["start-up (interpreter, imports, argument parsing)"] = wall - command
    phases["other"] = wall - sum(phases.values())
    return phases


def part4(args: argparse.Namespace, record: RunRecord) -> None:
    print("\nPart 4: end to end, `medsegcnn predict` from process start to file written, against MONAI's network")
    print(f"  {record.describe_machine()}")
    work = Path(tempfile.mkdtemp(prefix="bench-end-to-end-"))
    model, image = make_end_to_end_case(work)
    part = record.data["part4"] = {"settings": {"features": [32, 64, 128, 256, 320], "classes": 3, "patch": [96] * 3,
                                               "volume_zyx": [96, 128, 128], "last_layer_scale": 30.0,
                                               "rounds": args.rounds, "arms": [list(arm) for arm in END_TO_END]},
                                   "monai": monai_network_only(model, image), "runs": [], "profiles": {}}  # fmt: skip
    monai = part["monai"]["best"]
    print(f"  MONAI network only (fp32, best of sw_batch 1/2): {monai:.1f} s")
    record.write()
    for round_index in range(args.rounds):
        for name, backend, precision in END_TO_END:
            home = work / f"home-{name}-{round_index}"
            for state in ("cold", "warm"):
                output = work / f"out-{name}-{round_index}-{state}.nii.gz"
                seconds, log = timed_command(predict_command(model, image, output, backend, precision),
                                             user_environment(home))  # fmt: skip
                ran = [line.split("Predicting with ")[1].split(" on ")[0] for line in log.splitlines()
                       if "Predicting with " in line]  # fmt: skip
                part["runs"].append({"arm": name, "round": round_index, "cache": state, "seconds": seconds,
                                     "engines_logged": ran, "gate": [line for line in log.splitlines()
                                                                     if "Precision check" in line]})  # fmt: skip
                print(f"  round {round_index + 1} {name:14s} {state}: {seconds:6.1f} s ({monai / seconds:.2f}x MONAI)"
                      f"  ran: {'; '.join(ran)}")  # fmt: skip
                record.write()
    summary = part["best"] = {}
    for name, _, _ in END_TO_END:
        for state in ("cold", "warm"):
            best = min(run["seconds"] for run in part["runs"] if run["arm"] == name and run["cache"] == state)
            summary[f"{name} {state}"] = {"seconds": best, "ratio_to_monai": monai / best}
    print(f"  best of {args.rounds} rounds, relative to MONAI's network-only {monai:.1f} s:")
    for key, value in summary.items():
        print(f"    {key:20s} {value['seconds']:6.1f} s  {value['ratio_to_monai']:.2f}x")
    for state in ("cold", "warm"):
        home = work / "home-profiled"
        profile = work / f"profile-{state}"
        command = predict_command(model, image, work / f"out-profiled-{state}.nii.gz", "auto", "auto")
        command[1:1] = ["-m", "cProfile", "-o", str(profile)]
        wall, _ = timed_command(command, user_environment(home))
        phases = profiled_phases(profile, wall)
        part["profiles"][state] = {"wall_seconds_profiled": wall, "phases": phases}
        print(f"  where the time goes, auto, {state} cache (under cProfile: {wall:.1f} s in all):")
        for phase, seconds in phases.items():
            print(f"    {phase:52s} {seconds:6.2f} s")
    record.write()
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", type=int, nargs="+", choices=(1, 2, 3, 4), default=[1, 2, 3, 4])
    parser.add_argument("--modes", nargs="+", choices=MODES, help="default: all (the bf16 ones with bf16 units)")
    parser.add_argument("--cases", type=int, default=60, help="part 3: the last N hippocampus cases")
    parser.add_argument("--rounds", type=int, default=2, help="part 4: interleaved rounds (the best of each counts)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--results", type=Path, default=None, help="folder of the results file (default: results/)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--int8-ir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    if args.child:
        if args.int8_ir is not None and args.int8_ir.is_file():
            INT8_IR.append(args.int8_ir)
        child(args.child, args.labels.with_suffix(".npy"))
        return
    if args.modes is None:  # bf16 emulated through fp32 (no bf16 units) is many times slower: not worth hours here
        args.modes = [mode for mode in MODES if cpu_has_bf16() or not mode.endswith("bf16")]
        if len(args.modes) < len(MODES):
            print("This CPU has no bf16 units: the bf16 modes are left out (ask for them with --modes).")
    settings = {"parts": args.part, "modes": args.modes, "cases": args.cases, "rounds": args.rounds,
                "threads": args.threads, "openvino": openvino_version()}  # fmt: skip
    record = RunRecord("inference", settings, **({"results": args.results} if args.results else {}))
    print(f"Results: {record.write()}")
    for number, run in ((4, part4), (1, part1), (2, part2), (3, part3)):
        if number in args.part:
            run(args, record)
    print(f"Results: {record.write()}")


if __name__ == "__main__":
    main()
