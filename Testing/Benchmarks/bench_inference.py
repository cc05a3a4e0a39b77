"""Side-by-side benchmark of prediction: MedSegCNN's backends and precisions vs MONAI's sliding window.

Every figure is printed with the CPU's model and flags (AMX, AVX512-BF16, AVX512-VNNI): machines differ, and
the machine may be shared, so read the ratios printed side by side, not the seconds.

Part 1 (``--part 1``): a 3D U-Net (DynUNet-equivalent: features [32, 64, 128, 256, 320], instance norm,
3 classes, random weights) over a 192x192x96 volume (where MONAI's window placement and ours coincide:
starts 0, 48, 96 in-plane, one window across z), 96^3 windows, overlap 0.5, Gaussian weights. MONAI
(``monai.inferers.sliding_window_inference``, fp32, sw_batch_size 1 and 2: the faster counts) and MedSegCNN's
engines (:mod:`MedSegCNNLib.inference.engine`): torch fp32 and bf16 (channels-last), OpenVINO fp32 and bf16
(converted once, from the cache afterwards; the first conversion's time is printed apart). Printed per mode:
time, ratio to MONAI, the share of time outside the network, max |difference| of the averaged outputs and
argmax agreement with MONAI. int8 is not implemented yet and is reported as such.

Part 2 (``--part 2``): a 512x512x300 volume, 14 classes, a tiny U-Net (features [4, 8, 16, 32]), 128^3 windows.
Each mode runs in its own subprocess so that the peak RSS (``VmHWM`` of the child) is its own; MONAI
returns the full logits, ours ``output="labels"``; one window per batch.

Part 3 (``--part 3``, "small images"): the bundled ``hippocampus-tiny`` model over a folder of hippocampus MRIs
(``../shared/data/hippocampus/imagesTr``, the 60 last cases: about 35x50x36 voxels each), per mode:

- cases per second once the model is loaded (read, segment, write each case; the first case outside the clock);
- the same through ``medsegcnn predict`` on the folder, start-up included (wall time of the command);
- the Dice of each mode's segmentation vs torch fp32's, per label, on those of the cases that the model card does
  not list among its training cases (the card's held-out validation cases).

Run by hand::

    python Testing/Benchmarks/bench_inference.py [--part 1 2 3] [--modes ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from MedSegCNNLib.inference import sliding_window_inference
from MedSegCNNLib.inference.engine import Engine
from MedSegCNNLib.networks import build_network
from MedSegCNNLib.runtime import cpu_info, openvino_version

ROOT = Path(__file__).resolve().parents[2]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "hippocampus" / "imagesTr"
MODES = ("monai-sw1", "monai-sw2", "torch-fp32", "torch-bf16", "openvino-fp32", "openvino-bf16", "openvino-int8")
OURS = tuple(mode for mode in MODES if not mode.startswith("monai"))
CACHE = Path(tempfile.gettempdir()) / "medsegcnn-bench-cache"


def monai_sliding_window_inference(*args, **kwargs):
    """MONAI's function, imported on first use: the MedSegCNN child of part 2 must not pay for importing MONAI
    (about 120 MiB of RSS)."""
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(*args, **kwargs)


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
    """(result, seconds, seconds in the network) of one mode; MONAI modes are ``monai-swN``."""
    start = time.perf_counter()
    with torch.inference_mode():
        if mode.startswith("monai"):
            timed = Timed(network)
            result = monai_sliding_window_inference(image, patch, int(mode[-1]), timed, overlap=0.5, mode="gaussian")
            return result, time.perf_counter() - start, timed.seconds
        chosen, _ = engine(mode, network, (1, image.shape[1], *patch), calibration=image)
        timed = Timed(chosen.networks[0])
        start = time.perf_counter()
        with chosen.running():
            result = sliding_window_inference(
                image, timed, patch, overlap=0.5, batch_size=batch, output=output, precision=chosen.autocast,
                channels_last=chosen.channels_last,
            )  # fmt: skip
    return result, time.perf_counter() - start, timed.seconds


def describe_machine() -> str:
    runtimes = f"torch {torch.__version__}, OpenVINO {openvino_version() or 'not installed'}"
    return f"CPU: {cpu_info().describe()}; {torch.get_num_threads()} threads; {runtimes}"


def part1(args: argparse.Namespace) -> None:
    classes, patch = 3, [96, 96, 96]
    image = torch.randn((1, 1, 96, 192, 192), generator=torch.Generator().manual_seed(0))
    network = unet([32, 64, 128, 256, 320], classes)
    print(f"Part 1: U-Net 16.5 M parameters, 192x192x96 volume, 96^3 windows, overlap 0.5\n  {describe_machine()}")
    for mode in args.modes:
        if mode.startswith("openvino"):
            _, seconds = engine(mode, network, (1, 1, *patch), calibration=image)
            print(
                f"  {mode}: conversion (int8: and quantisation) and compilation {seconds:.1f} s (outside the timings)"
            )
    results = {}
    for mode in args.modes:
        results[mode] = run_mode(mode, network, image, patch, batch=2 if mode == "monai-sw2" else 1)
        _, seconds, inside = results[mode]
        outside = (seconds - inside) / inside
        print(f"  {mode:16s} {seconds:7.1f} s  network {inside:7.1f} s  outside the network {outside:6.1%}")
    print("  (int8 calibrated on 8 windows of this random volume: its speed is real, its accuracy not a measure)")
    monai = [mode for mode in results if mode.startswith("monai")]
    if not monai:
        return
    best = min(monai, key=lambda mode: results[mode][1])
    reference, reference_seconds, _ = results[best]
    print(f"\n  {'mode':16s} {'vs ' + best:>12s} {'max |diff|':>11s} {'argmax agreement':>17s}")
    for mode, (output, seconds, _) in results.items():
        agreement = (output.argmax(1) == reference.argmax(1)).float().mean().item()
        difference = (output.softmax(1) - reference.softmax(1)).abs().max().item() if mode in OURS else 0.0
        print(f"  {mode:16s} {reference_seconds / seconds:11.2f}x {difference:11.2e} {agreement:17.5f}")
    print("  (max |diff| of the softmax of the averaged logits; with Gaussian weights MONAI clamps its map at 1e-3,")
    print("  which moves the near-ties of a random network: see the constant-weights check below)")
    same_windows_check(network, image, patch)


def same_windows_check(network, image: torch.Tensor, patch: list[int]) -> None:
    """Both sliding windows with constant window weights: the windows coincide, so the outputs must agree up to
    float rounding (MedSegCNN's torch fp32 engine against MONAI, the same network)."""
    with torch.inference_mode():
        monai = monai_sliding_window_inference(image, patch, 1, network, overlap=0.5, mode="constant")
        ours = sliding_window_inference(image, network, patch, overlap=0.5, mode="constant")
    agreement = (ours.argmax(1) == monai.argmax(1)).float().mean().item()
    difference = (ours - monai).abs().max().item()
    print(f"  Constant weights, torch fp32 vs MONAI: max |diff| of the logits {difference:.2e}, argmax agreement "
          f"{agreement:.5f}")  # fmt: skip


def child(mode: str) -> None:
    """Part 2 in this process: print a JSON line with the seconds and the peak RSS (int8: the IR the parent
    quantised, read and compiled here as from a model folder's int8/, outside the timing but inside the peak RSS)."""
    network = unet([4, 8, 16, 32], 14)
    image = torch.randn((1, 1, 300, 512, 512), generator=torch.Generator().manual_seed(0))
    output = "average" if mode.startswith("monai") else "labels"
    result, seconds, inside = run_mode(mode, network, image, [128] * 3, output=output)
    labels = result.argmax(1) if output == "average" else result
    histogram = torch.bincount(labels.flatten(), minlength=14)[:14].tolist()  # no int64 copy of the labels
    peak = peak_rss_gib()
    print(json.dumps({"seconds": seconds, "network_seconds": inside, "peak_rss_gib": peak,
                      "histogram": histogram}))  # fmt: skip


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


def part2(args: argparse.Namespace) -> None:
    print("\nPart 2: 512x512x300, 14 classes, tiny U-Net [4, 8, 16, 32], 128^3 windows (one subprocess each)")
    print(f"  {describe_machine()}")
    modes = [mode for mode in args.modes if mode != "monai-sw2"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    int8_ir = scratch / "int8.xml"
    for mode in modes:
        if mode.startswith("openvino") and mode != "openvino-int8":  # converted once outside the measured children
            engine(mode, unet([4, 8, 16, 32], 14), (1, 1, 128, 128, 128))
        if mode == "openvino-int8":  # quantised once here; the child reads the int8 IR as from a model folder
            save_int8(int8_ir)
    measured = {}
    for mode in modes:
        output = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--int8-ir", str(int8_ir)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        measured[mode] = json.loads(output.strip().splitlines()[-1])
    shutil.rmtree(scratch, ignore_errors=True)
    reference = measured.get("monai-sw1")
    for mode, result in measured.items():
        ratio = f"{reference['seconds'] / result['seconds']:5.2f}x MONAI" if reference else ""
        agreement = ""
        if reference:
            overlap = sum(min(a, b) for a, b in zip(result["histogram"], reference["histogram"], strict=True))
            agreement = f"label histogram overlap {overlap / sum(result['histogram']):.5f}"
        print(
            f"  {mode:16s} {result['seconds']:7.1f} s  {ratio}  peak RSS {result['peak_rss_gib']:.2f} GiB  {agreement}"
        )


def part3(args: argparse.Namespace) -> None:
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
    print(f"\nPart 3: {len(files)} hippocampus MRIs with the bundled hippocampus-tiny model\n  {describe_machine()}")
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
        without_gate(model, backend, precision)  # this loop measures the mode itself, whatever the gate says
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
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        gate = next((line.split("Precision check: ")[1] for line in done.stderr.splitlines() if "Precision check" in
                     line), "none (fp32)")  # fmt: skip
        print(f"  {mode:16s} {loaded_rate:15.1f} {wall:11.1f} {len(files) / wall:12.1f}  {gate.split(':')[0]}")
    if "torch-fp32" not in segmentations:
        return
    training = load_segmentation_model(model_folder, torch.device("cpu")).card.training
    trained_on = set(training.train_cases or ()) if training is not None else set()
    held_out = [index for index, file in enumerate(files) if file.name.removesuffix(".nii.gz") not in trained_on]
    print(f"  Dice vs torch fp32 on the {len(held_out)} of these cases the model never trained on (min / mean):")
    for mode, labels in segmentations.items():
        cells = []
        for label in (1, 2):
            reference = segmentations["torch-fp32"]
            scores = [dice_of(labels[i] == label, reference[i] == label) for i in held_out]
            cells.append(f"label {label} {min(scores):.4f} / {np.mean(scores):.4f}")
        print(f"  {mode:16s} {'   '.join(cells)}")


def without_gate(model, backend: str, precision: str) -> None:
    """Record an accepted gate decision for ``model`` in memory (and for int8 build its engine past the check of
    ``medsegcnn quantize``), so that it predicts at ``precision`` whatever its Dice against fp32: the benchmark
    measures each mode; prediction itself always checks."""
    if precision == "fp32":
        return
    from MedSegCNNLib.inference.openvino_backend import compile_model, int8_model
    from MedSegCNNLib.inference.precision_gate import GateDecision, gate_record

    if precision == "int8":
        version = int8_model(model.sources[0], model.networks[0], (1, len(model.channels), *model.patch_size))
        model.engines[("openvino", "int8", 2)] = Engine((compile_model(version.model, "int8"),), "openvino", "int8", 2)

    record = gate_record(model, backend, precision)
    decision = GateDecision(precision, True, {}, "benchmark", {"reduced": 0.0, "fp32": 1.0})
    model.engines[("gate", json.dumps(record, sort_keys=True))] = decision


def dice_of(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--cases", type=int, default=60, help="part 3: the last N hippocampus cases")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--int8-ir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    if args.child:
        if args.int8_ir is not None and args.int8_ir.is_file():
            INT8_IR.append(args.int8_ir)
        child(args.child)
        return
    if 1 in args.part:
        part1(args)
    if 2 in args.part:
        part2(args)
    if 3 in args.part:
        part3(args)


if __name__ == "__main__":
    main()
