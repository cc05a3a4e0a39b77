"""Imported nnU-Net v2 models against nnunetv2's own predictor, side by side in one run (not a test: slow).

Part 1: every variant of ``nnunet_support.VARIANTS`` (3d_fullres and 2d, one and two folds, with and without
mirroring, CT normalisation, an anisotropic dataset, ResEnc plans, two channels), built with nnunetv2's own
planner and trainer and imported: per held-out case, the voxel agreement of MedSegCNN's label map with
nnUNetPredictor's, the largest probability difference, and the seconds each took (MedSegCNN: torch fp32, and
OpenVINO fp32 when installed).

Usage: ``python Testing/Benchmarks/bench_nnunet_import.py [--part 1] [--variants fast 2d ...] [--root DIR]``
(builds are kept under ``--root`` and reused). Needs the test extra and ``Testing/requirements-nnunet.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnunet_support import VARIANTS, build_nnunet_results, nnunet_predict

from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.interop.nnunet_import import import_nnunet
from MedSegCNNLib.runtime import cpu_info, openvino_version

#: Variants MedSegCNN refuses (said in its message), reported as such.
REFUSED = {"regions": "region-based label sets"}
CPU = torch.device("cpu")


def describe_machine() -> str:
    runtimes = f"torch {torch.__version__}, OpenVINO {openvino_version() or 'not installed'}"
    return f"CPU: {cpu_info().describe()}; {torch.get_num_threads()} threads; {runtimes}"


def part1(args: argparse.Namespace) -> None:
    print(f"Part 1: imported nnU-Net models vs nnUNetPredictor (held-out cases)\n  {describe_machine()}")
    backends = ["torch"] + (["openvino"] if openvino_version() else [])
    print(f"  {'variant':13s} {'case':16s} {'agreement':>10s} {'max |dp|':>9s} {'nnU-Net s':>9s} "
          + " ".join(f"{b + ' s':>10s}" for b in backends))  # fmt: skip
    for name in args.variants:
        if name in REFUSED:
            print(f"  {name:13s} refused by the importer: {REFUSED[name]}")
            continue
        variant = VARIANTS[name]
        results = build_nnunet_results(args.root / name, variant)
        with tempfile.TemporaryDirectory() as scratch:
            model = load_segmentation_model(import_nnunet(results.model_folder, Path(scratch) / "model"), CPU)
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # nnunetv2 prints its progress
                reference = nnunet_predict(results.model_folder, results.test_images, Path(scratch) / "nnunet",
                                           folds=variant.folds)  # fmt: skip
            nnunet_seconds = (time.perf_counter() - start) / len(reference)
            for images, expected in zip(results.test_images, reference, strict=True):
                timings, outputs = [], {}
                for backend in backends:
                    options = PredictOptions(probabilities=True, backend=backend, precision="fp32")
                    segment([str(p) for p in images], model, options)  # conversion and caches outside the timing
                    start = time.perf_counter()
                    outputs[backend] = segment([str(p) for p in images], model, options)
                    timings.append(time.perf_counter() - start)
                ours = outputs["torch"]
                agreement = float((ours.labels.array == expected.segmentation).mean())
                difference = float(np.abs(ours.probabilities.array - expected.probabilities).max())
                print(f"  {name:13s} {expected.case_id:16s} {agreement:10.5f} {difference:9.2e} {nnunet_seconds:9.2f} "
                      + " ".join(f"{t:10.2f}" for t in timings), flush=True)  # fmt: skip
    print("  (nnU-Net s: nnUNetPredictor.predict_from_files_sequential per case, reading and writing included;")
    print("  MedSegCNN: segment() per case with the model loaded, reading included, writing not)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", type=int, nargs="+", choices=(1,), default=[1])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "medsegcnn-nnunet-bench")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if 1 in args.part:
        part1(args)


if __name__ == "__main__":
    main()
