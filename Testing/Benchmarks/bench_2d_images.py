"""Benchmark: does the 2D picture path lose anything? The same 2D slices trained as PNG pictures and as NIfTI files.

Data: the hippocampus dataset (MSD Task04 layout, ``../shared/data/hippocampus`` next to the repository, else the
12 bundled cases in ``Resources/SampleData/Hippocampus``, or ``--data``). The case names are sorted; the last
``--hold-out`` cases are held out, the others (or the first ``--train-cases`` of them) are for training. From every
case the axial slices (array axis 0 of ``(z, y, x)``) holding any label are exported twice into the work folder
(``--work``, default a new temporary folder), in the ``images/`` + ``masks/`` folder layout, named
``<case>_z<index>``:

- ``png/``: each slice as a 16-bit grayscale PNG (the case's intensities mapped linearly onto 0..65535, one map
  per case) and its labels (0, 1, 2) as an 8-bit PNG mask;
- ``nifti/``: the same uint16 slices and uint8 label maps as single-slice NIfTI volumes (3D, one slice, the
  slice's own origin, spacing and direction).

Both hold exactly the same pixel values. For each seed of ``--seeds``, a 2D model is trained on each export with
the same command a user types and the same time budget::

    python -m MedSegCNNLib train --data <work>/<png|nifti>/train --output <work>/runs/<kind>_s<seed>
        --time-budget <budget> --dims 2 --fold all --seed <seed> --progress none

(the PNG pictures are 2D images: a 2D model by default; the single-slice volumes are 3D: ``--dims 2`` trains
the 2D model on their slices, as nnU-Net's 2D configuration would). Before the first run, ``medsegcnn plan`` with
the same options runs once on each export: it fills this machine's step-time cache, so that no run spends its
budget on measurements the other one skips, and shows that both exports get the same plan. Every held-out slice
is then segmented with ``MedSegCNNLib.segment`` (PyTorch, fp32, no TTA) from its file in that export, and scored
against its labels: per held-out case, the Dice of label 1 (anterior) and 2 (posterior) over the stack of its
slices, averaged over the cases. The script prints the CPU (model and flags), each run's steps and Dice, the
PNG - NIfTI difference of the mean Dice per seed (and their mean and standard deviation over seeds), and writes
everything (settings, per held-out case Dice of every run, the printed figures) to
``Testing/Benchmarks/results/2d_images-<UTC date-time>.json`` (``recording.RunRecord``; ``--results DIR`` for
another folder), rewritten after each run. The machine may be shared: the budget is wall-clock time, so the two runs
of a seed make different numbers of steps, which is the noise the comparison has to live with. ``--steps N``
trains both for N steps instead (``--epochs 1 --steps-per-epoch N``, no budget): the two runs then see the same
patches and augmentations and should reach the same weights, hence the same Dice (as
``Testing/training/test_train_2d.py`` checks on a phantom). Run by hand::

    python Testing/Benchmarks/bench_2d_images.py [--budget-min 5 | --steps N] [--seeds 0,1,2] [--hold-out 40]
        [--train-cases N] [--work DIR] [--data DIR] [--results DIR]

A quick check that it works: ``--budget-min 1 --seeds 0 --train-cases 12 --hold-out 4``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recording import RESULTS, RunRecord

import MedSegCNNLib
from MedSegCNNLib import Image, write_image
from MedSegCNNLib.data.dataset import load_case, load_msd_dataset
from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.metrics.label_metrics import compute_label_metrics
from MedSegCNNLib.runtime import cpu_info

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "hippocampus"
BUNDLED = ROOT / "Resources" / "SampleData" / "Hippocampus"
KINDS = {"png": (".png", ".png"), "nifti": (".nii.gz", ".nii.gz")}  # kind -> (image, mask) file endings
LABELS = {1: "anterior", 2: "posterior"}
INTENSITY_MAX = 65535
LOG_TAIL = 15  # lines of a failed run's log printed
OPTIONS = PredictOptions(device="cpu", backend="torch", precision="fp32")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=5.0, help="training budget of every run, minutes")
    parser.add_argument("--steps", type=int, help="train every run for this many steps instead of the budget")
    parser.add_argument("--seeds", type=parse_seeds, default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary folder)")
    parser.add_argument("--data", type=Path, help="MSD hippocampus folder (default: the shared data, else bundled)")
    parser.add_argument("--hold-out", type=int, help="last N sorted cases held out (default 40; 3 for bundled data)")
    parser.add_argument("--train-cases", type=int, help="train on the first N of the other cases (default all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results file")
    args = parser.parse_args()
    if args.budget_min <= 0 or (args.steps is not None and args.steps < 1):
        parser.error("--budget-min and --steps must be positive")
    if (args.hold_out is not None and args.hold_out < 1) or (args.train_cases is not None and args.train_cases < 1):
        parser.error("--hold-out and --train-cases must be >= 1")
    if args.data is None:
        args.data = SHARED if (SHARED / "dataset.json").is_file() else BUNDLED
    if args.hold_out is None:
        args.hold_out = 40 if args.data == SHARED else 3
    return args


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds such as 0,1,2; got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


# ----- the two exports -----------------------------------------------------------------------------------------


def export(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write ``png/`` and ``nifti/`` (``train`` and ``holdout``, each ``images/`` + ``masks/``); the split and the
    held-out references: ``{"train": [case, ...], "holdout": {case: [(slice name, labels (y, x)), ...]}}``."""
    dataset = load_msd_dataset(args.data)
    cases = sorted(dataset.cases, key=lambda case: case.name)
    if args.hold_out >= len(cases):
        raise SystemExit(f"--hold-out {args.hold_out} leaves no training case of the {len(cases)} in {args.data}")
    train, hold_out = cases[: -args.hold_out], cases[-args.hold_out :]
    if args.train_cases is not None:
        train = train[: args.train_cases]
    for kind in KINDS:
        shutil.rmtree(work / kind, ignore_errors=True)  # an earlier export in this work folder
    references: dict[str, list[tuple[str, np.ndarray]]] = {}
    counts = {"train": 0, "holdout": 0}
    for part, chosen in (("train", train), ("holdout", hold_out)):
        for case in chosen:
            image, label = load_case(case)
            volume = image.array[0]
            low, high = float(volume.min()), float(volume.max())
            scaled = np.rint((volume - low) / max(high - low, 1e-12) * INTENSITY_MAX).astype(np.uint16)
            for z in np.flatnonzero(label.array.reshape(label.array.shape[0], -1).any(axis=1)):
                name = f"{case.name}_z{z:03d}"
                write_slice(work, part, name, image, scaled[z], label.array[z], int(z))
                counts[part] += 1
                if part == "holdout":
                    references.setdefault(case.name, []).append((name, label.array[z]))
    print(f"  exported {counts['train']} training and {counts['holdout']} held-out slices of {len(train)} + "
          f"{len(hold_out)} cases from {args.data}")  # fmt: skip
    return {"train": [case.name for case in train], "holdout": references, "slices": counts}


def write_slice(
    work: Path, part: str, name: str, volume: Image, pixels: np.ndarray, labels: np.ndarray, z: int
) -> None:
    """One slice into both exports: 2D pictures, and single-slice volumes on the slice's own grid."""
    spacing = volume.spacing
    flat_image = Image.from_array(pixels, spacing=spacing[:2])
    flat_labels = Image.from_array(labels.astype(np.uint8), spacing=spacing[:2])
    origin = volume.index_to_physical([0, 0, z])
    geometry = {"spacing": spacing, "origin": origin, "direction": volume.direction}
    outputs = {
        "png": (flat_image, flat_labels),
        "nifti": (
            Image.from_array(pixels[None], **geometry),
            Image.from_array(labels.astype(np.uint8)[None], **geometry),
        ),
    }
    for kind, (image, mask) in outputs.items():
        image_ending, mask_ending = KINDS[kind]
        write_image(image, folder(work, kind, part, "images") / f"{name}{image_ending}")
        write_image(mask, folder(work, kind, part, "masks") / f"{name}{mask_ending}")


def folder(work: Path, kind: str, part: str, sub: str) -> Path:
    path = work / kind / part / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----- training and scoring ------------------------------------------------------------------------------------


def length(args: argparse.Namespace) -> list[str]:
    """The options that set how long a run trains: the budget, or ``--steps`` steps."""
    if args.steps is None:
        return ["--time-budget", f"{args.budget_min:g}"]
    return ["--epochs", "1", "--steps-per-epoch", str(args.steps)]


def warm_up(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``medsegcnn plan`` on each export (the step times it measures are cached); the plans, which should agree."""
    plans = {}
    for kind in KINDS:
        options = length(args) if args.steps is None else []  # plan takes a budget, not epochs
        command = [
            sys.executable, "-m", "MedSegCNNLib", "plan", "--data", str(work / kind / "train"), *options,
            "--dims", "2", "--fold", "all", "--json", "--quiet",
        ]  # fmt: skip
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"medsegcnn plan on the {kind} export failed:\n{completed.stderr[-3000:]}")
        plan = json.loads(completed.stdout)
        plans[kind] = {key: plan[key] for key in ("patch_size", "batch_size", "precision", "channels_last")}
        preprocessing = dict(plan["preprocessing"])  # pictures: (x, y); one-slice volumes: (x, y, None)
        preprocessing["target_spacing"] = preprocessing["target_spacing"][:2]
        plans[kind].update(width=plan["network"]["features"][0], preprocessing=preprocessing)
    same = plans["png"] == plans["nifti"]
    shown = {key: value for key, value in plans["png"].items() if key != "preprocessing"}
    print(f"  plans {'agree' if same else 'DIFFER'}: {shown}" + ("" if same else f" vs {plans['nifti']}"))
    return plans


def train(work: Path, kind: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train with the command line; the run's folder, wall seconds and the card's steps."""
    output = work / "runs" / f"{kind}_s{seed}"
    command = [
        sys.executable, "-m", "MedSegCNNLib", "train", "--data", str(work / kind / "train"), "--output", str(output),
        *length(args), "--dims", "2", "--fold", "all", "--seed", str(seed), "--progress", "none", "--overwrite",
        "--quiet",
    ]  # fmt: skip
    log = work / "runs" / f"{kind}_s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as stream:
        stream.write(" ".join(command) + "\n\n")
        stream.flush()
        returncode = subprocess.call(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-LOG_TAIL:])
        raise SystemExit(f"training {kind} (seed {seed}) failed with status {returncode}; end of {log}:\n{tail}")
    card = json.loads((output / "model" / "model.json").read_text(encoding="utf-8"))
    plan = card["training"]["plan"]
    return {
        "model": str(output / "model"),
        "seconds": seconds,
        "steps": plan["steps_done"],
        "batch": plan["batch_size"],
        "patch": plan["patch_size"],
        "width": card["network"]["features"][0],
        "precision": plan["precision"],
        "weights_sha256": card["weights"]["sha256"],
    }


def score(work: Path, kind: str, model_folder: str, references: dict[str, list[tuple[str, np.ndarray]]]) -> dict:
    """Per held-out case Dice of each label over the stack of its slices, each slice segmented from its file."""
    model = load_segmentation_model(model_folder, torch.device("cpu"))
    image_ending = KINDS[kind][0]
    per_case: dict[str, dict[int, float]] = {}
    for case, slices in references.items():
        predicted, expected = [], []
        for name, labels in slices:
            result = segment(work / kind / "holdout" / "images" / f"{name}{image_ending}", model, OPTIONS)
            predicted.append(result.labels.array.reshape(labels.shape))
            expected.append(labels)
        metrics = compute_label_metrics(np.stack(predicted), np.stack(expected), list(LABELS), (1.0, 1.0, 1.0),
                                        surface=False)  # fmt: skip
        per_case[case] = {label: metrics[label].dice for label in LABELS}
    dice = {label: float(np.mean([values[label] for values in per_case.values()])) for label in LABELS}
    return {"dice": dice, "mean_dice": float(np.mean(list(dice.values()))), "per_case": per_case}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="medsegcnn-bench-2d-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = {**vars(args), "work": work, "predict_options": asdict(OPTIONS)}
    record = RunRecord("2d_images", settings, results=args.results)
    print("2D pictures vs single-slice NIfTI: the same hippocampus slices, the same training length and seed")
    print(f"  {record.describe_machine()}; torch {torch.__version__}, MedSegCNN {MedSegCNNLib.__version__}")
    how_long = f"budget {args.budget_min:g} min" if args.steps is None else f"{args.steps} steps"
    print(f"  {how_long} per run, seeds {args.seeds}, work folder {work}")
    split = export(args, work)
    results = record.data
    results.update({
        "cpu": cpu_info().describe(),
        "budget_minutes": args.budget_min if args.steps is None else None,
        "steps": args.steps,
        "train_cases": split["train"],
        "holdout_cases": sorted(split["holdout"]),
        "slices": split["slices"],
        "plans": warm_up(work, args),
        "runs": [],
    })  # fmt: skip
    for seed in args.seeds:
        for kind in KINDS:
            run = {"kind": kind, "seed": seed, **train(work, kind, seed, args)}
            run.update(score(work, kind, run["model"], split["holdout"]))
            results["runs"].append(run)
            results["figures"] = figures(results["runs"])
            record.write()
            dice = ", ".join(f"{LABELS[label]} {value:.4f}" for label, value in run["dice"].items())
            print(f"  seed {seed} {kind:5s}: {run['steps']} steps (batch {run['batch']}, patch {run['patch']}, width "
                  f"{run['width']}, {run['precision']}) in {run['seconds']:.0f} s; held-out Dice {dice}, mean "
                  f"{run['mean_dice']:.4f}")  # fmt: skip
    report(results["figures"], record)
    print(f"  results: {record.path}")


def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The printed figures, from the runs: per run its steps and Dice; per seed with both runs done the PNG - NIfTI
    difference of the mean Dice, the PNG / NIfTI ratio of the steps and whether the weights are identical; the mean
    (and, over two seeds or more, the standard deviation) of those differences and ratios."""
    by_run = {(run["kind"], run["seed"]): run for run in runs}
    seeds = sorted({seed for kind, seed in by_run if all((k, seed) in by_run for k in KINDS)})
    png, nifti = (by_run["png", s] for s in seeds), (by_run["nifti", s] for s in seeds)
    pairs = list(zip(png, nifti, strict=True))
    keys = ("seed", "kind", "steps", "dice", "mean_dice")
    result: dict[str, Any] = {
        "runs": [{key: run[key] for key in keys} for run in runs],
        "seeds_compared": seeds,
        "difference_png_minus_nifti": [a["mean_dice"] - b["mean_dice"] for a, b in pairs],
        "steps_ratio_png_over_nifti": [a["steps"] / b["steps"] for a, b in pairs],
        "identical_weights_seeds": [a["seed"] for a, b in pairs if a["weights_sha256"] == b["weights_sha256"]],
    }
    for key in ("difference_png_minus_nifti", "steps_ratio_png_over_nifti"):
        values = result[key]
        result[f"{key}_mean"] = statistics.mean(values) if values else None
        result[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return result


def report(figures: dict[str, Any], record: RunRecord) -> None:
    """The markdown table and the PNG - NIfTI differences of the mean Dice, from the figures."""
    print(f"\n{record.describe_machine()}")
    print("| seed | data | steps | Dice anterior | Dice posterior | mean Dice |\n| --- | --- | --- | --- | --- | --- |")
    for run in sorted(figures["runs"], key=lambda run: (run["seed"], list(KINDS).index(run["kind"]))):
        print(f"| {run['seed']} | {run['kind']} | {run['steps']} | {run['dice'][1]:.4f} | {run['dice'][2]:.4f} | "
              f"{run['mean_dice']:.4f} |")  # fmt: skip
    seeds = figures["seeds_compared"]
    print(f"\nidentical weights (SHA-256) from PNG and NIfTI for seeds {figures['identical_weights_seeds'] or 'none'} "
          f"of {seeds}")  # fmt: skip
    if not seeds:
        return
    for key, what, form in (("difference_png_minus_nifti", "mean Dice PNG - NIfTI", "+.4f"),
                            ("steps_ratio_png_over_nifti", "steps PNG / NIfTI", ".2f")):  # fmt: skip
        spread = "" if figures[f"{key}_sd"] is None else \
            f" ± {figures[f'{key}_sd']:.4f} (sd over {len(seeds)} seeds)"  # fmt: skip
        print(f"{what}: {', '.join(f'{d:{form}}' for d in figures[key])}; mean {figures[f'{key}_mean']:{form}}{spread}")


if __name__ == "__main__":
    main()
