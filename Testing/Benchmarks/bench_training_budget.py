"""Side-by-side benchmark of training under a wall-clock budget: MedSegCNN as a user runs it vs a plain MONAI recipe.

Data: the hippocampus dataset (MSD Task04 layout, ``../shared/data/hippocampus`` next to the repository, or
``--data``). The case file names are sorted; the last ``--hold-out`` (default 40) are the fixed hold-out set, the
others (or the first ``--train-cases`` of them) the training set. The work folder (``--work``, default a new
temporary folder) gets ``train_data/`` (an MSD dataset folder of symlinks to the training cases and a
``dataset.json`` listing them) and ``holdout/`` (``imagesTr/``, ``labelsTr/``: symlinks to the hold-out cases).

For each budget of ``--budgets`` (minutes, default 5, 15, 60), each contender runs in its own processes:

- ``medsegcnn``: exactly the commands a user types, nothing else::

      python -m MedSegCNNLib train --data train_data --output medsegcnn_B<b> --time-budget <b> --fold all
          --progress none
      python -m MedSegCNNLib predict --model medsegcnn_B<b>/model --input holdout/imagesTr
          --output medsegcnn_B<b>/predictions --format .nii.gz --progress none

  Steps made: the card's ``training.plan.steps_done`` (or ``training.steps_done``) where the library writes
  it, else the last ``step`` column of ``training_log.csv``, else ``epochs_done`` x ``steps_per_epoch`` (capped
  at the planned total); planned: the card's ``training.plan.total_steps`` (the first plan; a budgeted run
  re-plans as it goes, ``final_total_steps`` in the JSON), else ``epochs`` x ``steps_per_epoch`` of its
  configuration; batch: the plan's (else the configuration's). Budget clock: the card's
  ``training.plan.elapsed_seconds`` (the time counted against the budget, from the start of loading and
  planning), else the sum of the epochs' ``seconds`` in ``training_log.csv`` (libraries without a plan).
- ``monai``: a plain MONAI recipe in this script (``--monai-worker``, a child process): images and labels read
  with SimpleITK (labels rounded to integers: two label maps are float32) and cached in a ``CacheDataset`` after
  ``NormalizeIntensityd`` (per-image z-score) and ``SpatialPadd`` to the patch 48x64x48; then
  ``RandSpatialCropd`` (48x64x48, fixed size) and ``RandFlipd`` (p = 0.5 on each of the three axes). Every
  hippocampus image is smaller than the patch on every axis, so the "random" crop is the whole padded image;
  ``RandSpatialCropd`` was chosen over ``RandCropByPosNegLabeld`` because here both would give the same patch.
  DynUNet (3D, 1 -> 3 channels, filters [16, 32, 64, 128], kernel 3, strides [1, 2, 2, 2], instance norm, no
  deep supervision), ``DiceCELoss(to_onehot_y=True, softmax=True)``, AdamW (lr 2e-3, weight decay 1e-5), batch
  4, ``torch.set_num_threads(--threads)``. The budget clock starts before the data are loaded (as MedSegCNN's,
  which counts loading, preprocessing and planning). Learning rate ``2e-3 * (1 - t / T)^0.9`` per step t: the
  first 10 steps run at 2e-3 and are timed, then T = 10 + (budget left) / (their mean step time), and training
  stops after T steps or when the budget is spent, whichever comes first.
  Inference: each hold-out image z-scored and padded like the training images, ``sliding_window_inference``
  (roi 48x64x48, overlap 0.5), argmax, cropped back and written as NIfTI with the input's geometry.

Scoring, the same for both: ``MedSegCNNLib.evaluate(predictions, references, labels=[1, 2], surface=False)`` over
the hold-out cases, mean Dice of label 1 (anterior), label 2 (posterior) and their mean. The script prints per
budget and contender the steps made (and patches seen: steps x batch), the process wall time of training, the
budget clock, the Dice values, and the difference of the mean Dice (MedSegCNN - MONAI); a markdown table at the
end and all results (with per-case Dice) in ``<work>/results.json``, rewritten after every run, and in the run's
results file ``Testing/Benchmarks/results/training_budget-<UTC date-time>.json`` (``recording.RunRecord``: command,
commit, machine, versions, settings, every run's numbers, the 1-minute load average sampled every
``--load-every`` seconds while each contender trains, and the printed figures; ``--results DIR`` for another
folder). Training process
time: the wall time of ``medsegcnn train``, and of the MONAI worker less its inference (both include Python's
start and imports). Results already in ``<work>/results.json`` for the same split are kept (one contender or budget
per invocation is possible; a contender run again at a budget replaces its earlier result there). A contender that fails
(or whose training runs past the budget by more than ``--max-overrun`` minutes and is stopped) is reported as
failed with the tail of its log, and the benchmark goes on. The machine may be shared: the budget is wall-clock
time, so a loaded machine makes fewer steps for both. Run by hand (hours with the defaults)::

    pip install -e ".[bench]"
    python Testing/Benchmarks/bench_training_budget.py [--budgets 5,15,60] [--only medsegcnn|monai]
        [--work DIR] [--hold-out 40] [--train-cases N] [--threads N] [--results DIR]

A quick smoke run: ``--budgets 0.5 --hold-out 4 --train-cases 12 --work /tmp/budget``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from recording import RESULTS, RunRecord

import MedSegCNNLib
from MedSegCNNLib import evaluate

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "hippocampus"
CONTENDERS = ("medsegcnn", "monai")
LABELS = {1: "anterior", 2: "posterior"}
SUFFIX = ".nii.gz"
FLAGS = ("amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f")
PATCH = (48, 64, 48)
BATCH = 4
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-5
POLY_POWER = 0.9
TIMING_STEPS = 10
LOG_TAIL = 15  # lines of a failed run's log printed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=parse_budgets, default="5,15,60", help="minutes, comma-separated")
    parser.add_argument("--only", choices=CONTENDERS, help="run one contender only")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary folder)")
    parser.add_argument("--data", type=Path, default=DATA, help="MSD hippocampus folder (dataset.json, imagesTr, ...)")
    parser.add_argument("--hold-out", type=int, default=40, help="last N sorted cases held out for scoring")
    parser.add_argument("--train-cases", type=int, help="train on the first N of the other cases (default all)")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads of the MONAI worker"
    )
    parser.add_argument(
        "--max-overrun", type=float, default=30.0, help="minutes past the budget after which a training is stopped"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the MONAI recipe")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the run's results file")
    parser.add_argument("--load-every", type=float, default=10.0, help="seconds between load average samples")
    parser.add_argument("--monai-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold_out < 1 or (args.train_cases is not None and args.train_cases < 1):
        parser.error("--hold-out and --train-cases must be >= 1")
    return args


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes such as 5,15,60; got {text!r}") from None
    if not budgets or any(budget <= 0 for budget in budgets):
        raise argparse.ArgumentTypeError(f"budgets must be positive minutes; got {text!r}")
    return budgets


# ----- machine and data ------------------------------------------------------------------------------------


def cpu_description() -> tuple[str, dict[str, bool]]:
    """The CPU model name and which of :data:`FLAGS` /proc/cpuinfo lists."""
    model, flags = "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.lower().split())
    return model, {flag: flag in flags for flag in FLAGS}


def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Split the sorted cases, build ``train_data/`` (MSD folder) and ``holdout/`` of symlinks; the split."""
    images, labels = args.data / "imagesTr", args.data / "labelsTr"
    names = sorted(p.name for p in images.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
    missing = [name for name in names if not (labels / name).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} case(s) of {images} have no label map in {labels}, e.g. {missing[0]}")
    if args.hold_out >= len(names):
        raise SystemExit(f"--hold-out {args.hold_out} leaves no training case of the {len(names)} in {images}")
    hold_out, train = names[-args.hold_out :], names[: -args.hold_out]
    if args.train_cases is not None:
        train = train[: args.train_cases]
    description = json.loads((args.data / "dataset.json").read_text(encoding="utf-8"))
    folders = {"train": work / "train_data", "holdout": work / "holdout"}
    for folder, cases in ((folders["train"], train), (folders["holdout"], hold_out)):
        if folder.exists():
            shutil.rmtree(folder)
        for sub, source in (("imagesTr", images), ("labelsTr", labels)):
            (folder / sub).mkdir(parents=True)
            for name in cases:
                (folder / sub / name).symlink_to((source / name).resolve())
    description.update(
        numTraining=len(train),
        numTest=0,
        training=[{"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"} for name in train],
        test=[],
    )
    (folders["train"] / "dataset.json").write_text(json.dumps(description, indent=2), encoding="utf-8")
    return {"train": train, "holdout": hold_out, "folders": folders}


# ----- running the contenders ------------------------------------------------------------------------------


class RunError(Exception):
    """A contender's command failed: a one-line ``summary`` and ``details`` (the end of its log)."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary)
        self.summary, self.details = summary, details


def run_logged(what: str, command: list[str], log: Path, timeout_s: float | None = None) -> float:
    """Run ``command`` (its own process group, output to ``log``); its wall seconds. Raises :class:`RunError`
    naming ``what`` ran."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as stream:
        stream.write(" ".join(command) + "\n\n")
        stream.flush()
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
            minutes = (time.perf_counter() - start) / 60
            raise RunError(f"{what} stopped after {minutes:.1f} min (--max-overrun); log {log}", tail(log)) from None
    seconds = time.perf_counter() - start
    if returncode != 0:
        raise RunError(f"{what} failed: exit status {returncode} after {seconds:.0f} s; log {log}", tail(log))
    return seconds


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the child's process group (a clean stop), SIGKILL if it is still there a minute later."""
    for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    return "\n".join(f"    | {line}" for line in lines)


def run_medsegcnn(budget: float, args: argparse.Namespace, split: dict[str, Any], work: Path) -> dict[str, Any]:
    output = work / f"medsegcnn_B{budget:g}"  # created by the train command
    if output.exists():
        shutil.rmtree(output)
    predictions = output / "predictions"
    cli = [sys.executable, "-m", "MedSegCNNLib"]
    train = [*cli, "train", "--data", str(split["folders"]["train"]), "--output", str(output)]
    train += ["--time-budget", f"{budget:g}", "--fold", "all", "--progress", "none"]
    # the run directory itself is the --output; its logs go next to it, not into it (the CLI owns that folder)
    train_log = work / f"medsegcnn_B{budget:g}.train.log"
    result: dict[str, Any] = {"command": " ".join(train[1:]), "train_log": str(train_log)}
    result["train_wall_s"] = run_logged("medsegcnn train", train, train_log, timeout_s=(budget + args.max_overrun) * 60)
    result.update(medsegcnn_steps(output))
    result["cli_said"] = [line for line in train_log.read_text(encoding="utf-8").splitlines() if "Training " in line]
    holdout_images = split["folders"]["holdout"] / "imagesTr"
    predict = [*cli, "predict", "--model", str(output / "model"), "--input", str(holdout_images)]
    predict += ["--output", str(predictions), "--format", SUFFIX, "--progress", "none"]
    predict_log = work / f"medsegcnn_B{budget:g}.predict.log"
    result["predict_wall_s"] = run_logged("medsegcnn predict", predict, predict_log)
    result["predictions"] = str(predictions)
    return result


def medsegcnn_steps(output: Path) -> dict[str, Any]:
    """Steps made, planned steps, batch size and budget clock of a finished run, from its model card and log.

    Steps made: a count the card states (``training.steps_done``, ``training.plan.steps_done``), else the last
    ``step``/``steps`` of ``training_log.csv``, else ``epochs_done`` x ``steps_per_epoch`` (at most the planned
    total: a planned last epoch may be shorter); ``steps_source`` says which.
    """
    card = json.loads((output / "model" / "model.json").read_text(encoding="utf-8"))
    training = card.get("training") or {}
    config = training.get("config") or {}
    plan = training.get("plan") or {}
    rows = []
    log = output / "training_log.csv"
    if log.is_file():
        with log.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    steps_per_epoch = plan.get("steps_per_epoch", config.get("steps_per_epoch"))
    epochs_done = training.get("epochs_done", len(rows) if rows else None)
    planned = plan.get("total_steps")
    if planned is None and config.get("epochs") is not None and steps_per_epoch is not None:
        planned = config["epochs"] * steps_per_epoch
    steps, source = None, None
    if training.get("steps_done") is not None:
        steps, source = int(training["steps_done"]), "card training.steps_done"
    elif plan.get("steps_done") is not None:
        steps, source = int(plan["steps_done"]), "card training.plan.steps_done"
    column = next((name for name in ("step", "steps") if rows and rows[-1].get(name)), None)
    if steps is None and column:
        steps, source = int(float(rows[-1][column])), f"training_log.csv {column}"
    if steps is None and epochs_done is not None and steps_per_epoch is not None:
        steps, source = epochs_done * steps_per_epoch, "epochs_done x steps_per_epoch"
        if planned is not None and steps > planned:
            steps, source = planned, "planned total (all epochs done)"
    seconds = [float(row["seconds"]) for row in rows if row.get("seconds")]
    if plan.get("elapsed_seconds") is not None:
        clock_s = float(plan["elapsed_seconds"])
    else:  # a card without the plan's elapsed time: the log's seconds are those of each epoch
        clock_s = sum(seconds) if seconds else None
    return {
        "steps": steps,
        "steps_source": source,
        "planned_steps": planned,
        "final_planned_steps": plan.get("final_total_steps"),
        "epochs_done": epochs_done,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": plan.get("batch_size", config.get("batch_size")),
        "patch_size": card.get("patch_size"),
        "network": card.get("network"),
        "clock_s": clock_s,
        "card_training": {key: value for key, value in training.items() if key != "train_cases"},
    }


def run_monai(budget: float, args: argparse.Namespace, split: dict[str, Any], work: Path) -> dict[str, Any]:
    output = work / f"monai_B{budget:g}"
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    train, holdout = split["folders"]["train"], split["folders"]["holdout"]
    spec = {
        "budget_minutes": budget,
        "train": [[str(train / "imagesTr" / n), str(train / "labelsTr" / n)] for n in split["train"]],
        "holdout": [str(holdout / "imagesTr" / n) for n in split["holdout"]],
        "predictions": str(output / "predictions"),
        "result": str(output / "worker_result.json"),
        "threads": args.threads,
        "seed": args.seed,
    }
    (output / "spec.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    command = [sys.executable, str(Path(__file__).resolve()), "--monai-worker", str(output / "spec.json")]
    log = output / "worker.log"
    wall = run_logged("MONAI worker", command, log, timeout_s=(budget + args.max_overrun) * 60 + 600)  # + inference
    result = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    # the training part of the worker's wall time: all but the inference at its end (MedSegCNN: the train command)
    result.update(train_wall_s=wall - result["inference_s"], worker_wall_s=wall, log=str(log), batch_size=BATCH)
    result["predictions"] = spec["predictions"]
    return result


def score(predictions: Path, split: dict[str, Any]) -> dict[str, Any]:
    """Dice of labels 1 and 2 on the hold-out cases, with MedSegCNNLib.evaluate (the same for both)."""
    references = split["folders"]["holdout"] / "labelsTr"
    predicted = [predictions / name for name in split["holdout"]]
    missing = [path.name for path in predicted if not path.is_file()]
    if missing:
        raise RunError(f"{len(missing)} prediction(s) missing in {predictions}, e.g. {missing[0]}")
    result = evaluate(predicted, [references / name for name in split["holdout"]], labels=list(LABELS), surface=False)
    summary = result.summary()
    dice = {name: summary[label]["dice"]["mean"] for label, name in LABELS.items()}
    per_case: dict[str, dict[str, float]] = {}
    for row in result.to_rows():
        per_case.setdefault(row["case"], {})[LABELS[row["label"]]] = row["dice"]
    return {"dice": {**dice, "mean": float(np.mean(list(dice.values())))}, "per_case_dice": per_case}


def earlier_results(path: Path, split: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The results of an earlier run in the same work folder on the same split (e.g. ``--only monai`` after
    ``--only medsegcnn``): runs of this one replace theirs, the others stay and appear in the table."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if earlier.get("train_cases") != split["train"] or earlier.get("holdout_cases") != split["holdout"]:
        print(f"(earlier {path} is of another split: replaced)")
        return {}
    print(f"(kept the earlier results of {path}: {', '.join(earlier.get('results', {})) or 'none'} min)")
    return earlier.get("results", {})


# ----- the MONAI recipe (child process) --------------------------------------------------------------------


def monai_worker(spec_path: Path) -> None:
    import SimpleITK as sitk
    from monai.data import CacheDataset, DataLoader
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import DynUNet
    from monai.transforms import (
        Compose,
        NormalizeIntensity,
        NormalizeIntensityd,
        RandFlipd,
        RandSpatialCropd,
        SpatialPad,
        SpatialPadd,
    )
    from monai.utils import set_determinism

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    set_determinism(spec["seed"])
    budget_s = spec["budget_minutes"] * 60
    started = time.perf_counter()  # the budget clock, from before the data loading (as MedSegCNN's)
    items = []
    for image_path, label_path in spec["train"]:
        image = sitk.GetArrayFromImage(sitk.ReadImage(image_path)).astype(np.float32)
        label = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(label_path))).astype(np.uint8)  # two are float32
        items.append({"image": image[None], "label": label[None]})
    keys = ["image", "label"]
    transforms = Compose(
        [
            NormalizeIntensityd("image"),
            SpatialPadd(keys, PATCH),
            RandSpatialCropd(keys, PATCH, random_size=False),
            *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)),
        ]
    )
    dataset = CacheDataset(items, transforms, num_workers=0, progress=False)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0, drop_last=len(items) >= BATCH)
    print(f"{len(items)} training cases loaded and cached in {time.perf_counter() - started:.1f} s", flush=True)

    network = DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=len(LABELS) + 1,
        kernel_size=[3] * 4,
        strides=[1, 2, 2, 2],
        upsample_kernel_size=[2] * 3,
        filters=[16, 32, 64, 128],
        norm_name="instance",
        deep_supervision=False,
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    total_steps, step_time, step, losses = None, None, 0, []
    network.train()
    loop_started = time.perf_counter()
    done = False
    while not done:
        for batch in loader:
            if total_steps is not None:
                for group in optimizer.param_groups:
                    group["lr"] = LEARNING_RATE * (1 - step / total_steps) ** POLY_POWER
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(network(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            now = time.perf_counter()
            if step == TIMING_STEPS:
                step_time = (now - loop_started) / TIMING_STEPS
                total_steps = step + max(0, int((budget_s - (now - started)) / step_time))
                print(f"first {TIMING_STEPS} steps: {step_time:.3f} s/step -> {total_steps} steps planned", flush=True)
            if step % 100 == 0:
                print(f"step {step}: loss {np.mean(losses[-100:]):.4f}, {now - started:.0f} s", flush=True)
            if (total_steps is not None and step >= total_steps) or now - started >= budget_s:
                done = True
                break
    ended = time.perf_counter()
    clock_s, loop_s = ended - started, ended - loop_started
    final_loss = float(np.mean(losses[-10:]))
    print(f"stopped after {step} steps, {clock_s:.1f} s (loop {loop_s:.1f} s), loss {final_loss:.4f}", flush=True)

    network.eval()
    predictions = Path(spec["predictions"])
    predictions.mkdir(parents=True, exist_ok=True)
    inference_started = time.perf_counter()
    with torch.inference_mode():
        for image_path in spec["holdout"]:
            reference = sitk.ReadImage(image_path)
            image = torch.from_numpy(sitk.GetArrayFromImage(reference).astype(np.float32))[None]
            padded = SpatialPad(PATCH)(NormalizeIntensity()(image))  # as in training
            logits = sliding_window_inference(torch.as_tensor(padded)[None], PATCH, BATCH, network, overlap=0.5)
            labels = torch.as_tensor(logits).argmax(1)[0]
            offsets = [(p - s) // 2 if p > s else 0 for p, s in zip(labels.shape, image.shape[1:], strict=True)]
            crop = tuple(slice(o, o + s) for o, s in zip(offsets, image.shape[1:], strict=True))  # SpatialPad's inverse
            result = sitk.GetImageFromArray(labels[crop].numpy().astype(np.uint8))
            result.CopyInformation(reference)
            sitk.WriteImage(result, str(predictions / Path(image_path).name), useCompression=True)
    summary = {
        "steps": step,
        "planned_steps": total_steps,
        "step_time_estimate_s": step_time,
        "clock_s": clock_s,
        "loop_s": loop_s,
        "final_loss": final_loss,
        "final_lr": optimizer.param_groups[0]["lr"],
        "threads": torch.get_num_threads(),
        "inference_s": time.perf_counter() - inference_started,
    }
    Path(spec["result"]).write_text(json.dumps(summary, indent=1), encoding="utf-8")


# ----- report ----------------------------------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average (``os.getloadavg``) sampled every ``every`` seconds while the block runs: the
    samples, their mean and their maximum (``None`` where the platform has no load average)."""

    def __init__(self, every: float) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadSampler:
        if hasattr(os, "getloadavg"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        return {"every_s": self.every, "samples": self.samples,
                "mean": float(np.mean(self.samples)) if self.samples else None,
                "max": max(self.samples) if self.samples else None}  # fmt: skip


def figures(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The printed figures per budget, from the runs: per contender its steps, planned steps (first and final
    plan), batch, training process and budget clock seconds, Dice (anterior, posterior, mean) and load average
    while training; MedSegCNN's mean Dice - MONAI's and MedSegCNN's steps / MONAI's where both ran."""
    keys = ("steps", "planned_steps", "final_planned_steps", "batch_size", "train_wall_s", "clock_s")
    table: dict[str, dict[str, Any]] = {}
    for budget, by_contender in sorted(results.items(), key=lambda item: float(item[0])):
        row: dict[str, Any] = {}
        for contender, result in by_contender.items():
            if "error" in result:
                row[contender] = {"error": result["error"]}
                continue
            row[contender] = {key: result.get(key) for key in keys}
            row[contender]["dice"] = result["dice"]
            row[contender]["load_average"] = {k: v for k, v in result.get("load_average", {}).items()
                                              if k in ("mean", "max")}  # fmt: skip
        if all("dice" in row.get(c, {}) for c in CONTENDERS):
            ours, theirs = row["medsegcnn"], row["monai"]
            row["difference_mean_dice"] = ours["dice"]["mean"] - theirs["dice"]["mean"]
            row["steps_ratio"] = ours["steps"] / theirs["steps"] if ours["steps"] and theirs["steps"] else None
        table[budget] = row
    return table


def fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def describe(contender: str, budget: float, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"  {contender:9s} B={budget:g} min: FAILED ({result['error']})"
    dice = result["dice"]
    steps, batch = result.get("steps"), result.get("batch_size")
    patches = f" ({steps * batch} patches of batch {batch})" if steps is not None and batch else ""
    wall = result.get("train_wall_s")
    return (
        f"  {contender:9s} B={budget:g} min: {fmt(steps)} steps{patches} of {fmt(result.get('planned_steps'))} "
        f"planned; process {fmt(wall, '.0f')} s, budget clock {fmt(result.get('clock_s'), '.0f')} s; Dice anterior "
        f"{dice['anterior']:.4f} posterior {dice['posterior']:.4f} mean {dice['mean']:.4f}"
    )


def markdown_table(table: dict[str, dict[str, Any]]) -> str:
    """The figures (:func:`figures`) as a Markdown table."""
    lines = [
        "| budget (min) | contender | steps | batch | training process (s) | budget clock (s) | Dice anterior "
        "| Dice posterior | Dice mean | MedSegCNN - MONAI (mean) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for budget, by_contender in table.items():
        difference = by_contender.get("difference_mean_dice")
        for contender in (c for c in CONTENDERS if c in by_contender):
            result = by_contender[contender]
            if "error" in result:
                lines.append(f"| {budget} | {contender} | failed | | | | | | | |")
                continue
            dice = result["dice"]
            wall = result.get("train_wall_s")
            lines.append(
                f"| {budget} | {contender} | {fmt(result.get('steps'))} | {fmt(result.get('batch_size'))} "
                f"| {fmt(wall, '.0f')} | {fmt(result.get('clock_s'), '.0f')} | {dice['anterior']:.4f} "
                f"| {dice['posterior']:.4f} | {dice['mean']:.4f} | {fmt(difference, '+.4f')} |"
            )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    if args.monai_worker:
        monai_worker(args.monai_worker)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_training_budget_"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model, flags = cpu_description()
    present = ", ".join(f"{flag} {'yes' if value else 'no'}" for flag, value in flags.items())
    record = RunRecord("training_budget", {**vars(args), "work": work}, results=args.results)
    print(f"CPU: {model}, {os.cpu_count()} logical CPUs; {present}")
    print(
        f"torch {torch.__version__}, MONAI {monai.__version__}, MedSegCNN {MedSegCNNLib.__version__}; threads: "
        f"MONAI worker {args.threads}, MedSegCNN its own default (torch default here {torch.get_num_threads()})"
    )
    split = prepare_data(args, work)
    print(
        f"Data {args.data}: {len(split['train'])} training cases ({split['train'][0]} .. {split['train'][-1]}), "
        f"{len(split['holdout'])} hold-out ({split['holdout'][0]} .. {split['holdout'][-1]}); work folder {work}"
    )
    contenders = [args.only] if args.only else list(CONTENDERS)
    results = earlier_results(work / "results.json", split)
    report = {
        "cpu": {"model": model, "flags": flags, "logical_cpus": os.cpu_count()},
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "medsegcnn": MedSegCNNLib.__version__},
        "threads": {"monai_worker": args.threads, "torch_default": torch.get_num_threads()},
        "train_cases": split["train"],
        "holdout_cases": split["holdout"],
        "results": results,
    }
    record.data.update(report)
    runners = {"medsegcnn": run_medsegcnn, "monai": run_monai}
    for budget in args.budgets:
        print(f"\nBudget {budget:g} min")
        by_contender = results.setdefault(f"{budget:g}", {})
        for contender in contenders:
            load = LoadSampler(args.load_every)
            try:
                with load:
                    result = runners[contender](budget, args, split, work)
                result["load_average"] = load.summary()
                result.update(score(Path(result["predictions"]), split))
            except Exception as error:  # a failed contender is reported; the benchmark goes on
                if isinstance(error, RunError):
                    result = {"error": error.summary, "log_tail": error.details}
                else:
                    result = {"error": f"{type(error).__name__}: {error}"}
                print(f"  {contender} failed: {result['error']}\n{result.get('log_tail', '')}".rstrip())
            by_contender[contender] = result
            print(describe(contender, budget, result), flush=True)
            (work / "results.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
            record.data["figures"] = figures(results)
            record.write()
        row = record.data["figures"][f"{budget:g}"]
        if "difference_mean_dice" in row:
            print(f"  {record.describe_machine()}")
            print(f"  mean Dice MedSegCNN - MONAI: {row['difference_mean_dice']:+.4f}; steps MedSegCNN / MONAI: "
                  f"{fmt(row['steps_ratio'], '.2f')}x")  # fmt: skip
    print(f"\n{record.describe_machine()}\n" + markdown_table(record.data["figures"]))
    print(f"\nResults: {work / 'results.json'} and {record.path}")


if __name__ == "__main__":
    main()
