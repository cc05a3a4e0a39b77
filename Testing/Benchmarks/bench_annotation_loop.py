"""Benchmark of the annotation loop (issue 22, "Proof"): a simulated annotator on the shared hippocampus cases.

Data: the hippocampus dataset (MSD Task04 layout, ``../shared/data/hippocampus`` next to the repository, or
``--data``). The sorted case names are shuffled with ``--seed``; the first ``--hold-out`` (40) are held out (the
loop never sees them), the next ``--initial`` (5) are labelled from the start, the rest (or the first ``--pool``
of them) are the pool of unlabelled cases. Two reference label maps are stored as float32: every reference is
cast to integers once (``<work>/references/``) and those files play the user's corrections.

Each loop arm runs a real :class:`MedSegCNNLib.annotation.AnnotationProject` in a fresh folder of its own
(``<work>/<arm>/project``), made from an image folder of symlinks to the initial and pool cases and a label folder
holding only the initial labels, with the arm's learning budget per round, so that the project's own background
learner does all the learning:

1. Wait for version 1 (learned from the initial cases), then ask for the first case (``next_case``).
2. Round k = 1..R: the shown case's reference is the user's corrected segmentation. ``t0``;
   ``project.accept(case, reference)``; at once ``project.next_case(strategy)`` (the learning that accept
   started runs in the background; the driver pauses it while it predicts). ``ready_s`` = seconds from ``t0`` to
   the next prediction ("from Accept to the next prediction"). Then the user corrects that next case while the
   model learns: ``project.wait_for(case, revision)`` returns when the version that learned the accepted case
   exists. A round whose learning fails (or times out) is recorded with its reason and the loop goes on with the
   newest version, as a user would (the next accept learns again); a failure before version 1 ends the arm.
3. Per round, from ``project.status()`` (written by accept): the Dice of the prediction before correction (mean
   and per label), the voxels changed against the voxels to paint from scratch, and the version that predicted it.

The honest consequence of a user who never waits for learning: the case shown in round k+1 was predicted by the
version that learned everything up to round k-1 (round 1's and round 2's cases by version 1), not by the version
that learned round k's case, which is still learning while the user corrects it.

After the loop (off every clock), every version (``PROJECT/models/vNNNN``, listed in ``versions.json``) segments
the held-out cases (``segment`` with torch, fp32, the model loaded once per version); Dice per label with
``confusion_counts``/``overlap_scores``. The table gives, per round, the held-out Dice of the newest version after
that round (the one that learned its case).

Arms (``--arms``, comma-separated; default all):

- ``random``: random order (the project's seeded order), at each budget of ``--budgets`` (seconds per round,
  default 60; the issue's three: ``--budgets 30,60,120``). Every random arm sees the same cases.
- ``entropy``: entropy order at ``--reference-budget`` (60 s).
- ``no-learning``: version 1 of the random arm at the reference budget (the initial-cases model) throughout: its
  held-out Dice, and its Dice on the cases that random arm was shown (post hoc, no loop).
- ``train-at-end``: one training run from scratch (``MedSegCNNLib.training.train``, ``fold=None``) on the cases the
  random arm at the reference budget accepted (initial + R), with a time budget equal to the total learning
  seconds of that arm's versions (sum of ``learn_seconds``: the same CPU time), then its held-out Dice.

``no-learning`` and ``train-at-end`` need the random arm at the reference budget; it is added when missing.

Output: the CPU model and flags, library versions, a table per arm, a summary and the issue's goals with PASS or
MISS as measured (never asserted); ``Testing/Benchmarks/results/annotation_loop-<UTC date-time>.json`` (command,
commit, CPU, versions, settings, split, every per-round and per-held-out-case number), rewritten after every arm,
and a PNG of the curves beside it with the same stem (``--smoke`` runs end in ``-smoke``, which git ignores). Run by
hand on the machine to measure, alone. Expect on 2 cores about 1 h 30 min with the defaults and about 2 h 45 min with
``--budgets 30,60,120``: a round took about three quarters of its budget plus 2 s in the smoke run (the planner keeps
a reserve), and scoring one version takes about 1 s per held-out case::

    python Testing/Benchmarks/bench_annotation_loop.py [--arms random,entropy,no-learning,train-at-end]
        [--budgets 30,60,120] [--rounds 20] [--work DIR --keep]

A quick end-to-end check (2 rounds, 40 s budgets, 2 initial cases, 3 held-out cases, a pool of 12; about 5 min):
``--smoke``. (20 s is too short: the training planner refuses a budget that leaves fewer than 50 steps after loading
and planning.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from recording import RunRecord

from MedSegCNNLib.annotation import AnnotationProject
from MedSegCNNLib.annotation import learner as annotation_learner
from MedSegCNNLib.annotation.project_file import CaseState, absolute_path, read_project_file
from MedSegCNNLib.annotation.versions import read_versions
from MedSegCNNLib.atomic import write_text_atomic
from MedSegCNNLib.data.msd import read_label_names
from MedSegCNNLib.errors import InputError, MedSegCNNError
from MedSegCNNLib.image import Image
from MedSegCNNLib.image.io import read_image, write_image
from MedSegCNNLib.inference.model import load_segmentation_model
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.metrics.overlap import confusion_counts, overlap_scores
from MedSegCNNLib.runtime import resolve_device

logger = logging.getLogger("bench_annotation_loop")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "hippocampus"
RESULTS = ROOT / "Testing" / "Benchmarks" / "results"
SUFFIX = ".nii.gz"
ARMS = ("random", "entropy", "no-learning", "train-at-end")
OPTIONS = PredictOptions(backend="torch", precision="fp32")
SMOKE = {"rounds": 2, "budgets": [40.0], "reference_budget": 40.0, "hold_out": 3, "initial": 2, "pool": 12}
GOAL_HELD_OUT = 0.85  # held-out mean Dice after initial + 20 at 60 s
GOAL_LATE = 0.83  # mean pre-correction Dice of rounds 11-20
LATE_ROUNDS = (11, 20)
GOAL_READY_S = 3.0
GOAL_MARGIN = 0.01  # the loop never worse than one training at the end by more than this
LOG_TAIL = 12  # lines of a failed arm's learner log printed


# ----- arguments -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", type=parse_arms, default=",".join(ARMS), help=f"comma-separated of {ARMS}")
    parser.add_argument("--budgets", type=parse_budgets, default="60", help="seconds of learning per round of the "
                        "random arms, comma-separated")  # fmt: skip
    parser.add_argument("--reference-budget", type=float, default=60.0, help="seconds per round of the entropy arm "
                        "and of the random arm that no-learning and train-at-end compare with")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=20, help="accepted cases per loop arm after the initial ones")
    parser.add_argument("--hold-out", type=int, default=40, help="held-out cases the loop never sees")
    parser.add_argument("--initial", type=int, default=5, help="cases labelled from the start")
    parser.add_argument("--pool", type=int, help="at most this many unlabelled cases (default: all the others)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the projects' case order")
    parser.add_argument("--data", type=Path, default=DATA, help="MSD hippocampus folder (dataset.json, imagesTr, ...)")
    parser.add_argument("--work", type=Path, help="folder for the projects (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the results JSON and PNG")
    parser.add_argument("--figures", type=Path, nargs="+", help="only add the figures, computed from the raw numbers, "
                        "to these results files written before results files had them")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="a tiny end-to-end run: " + ", ".join(
        f"{key} {value}" for key, value in SMOKE.items()))  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if min(args.rounds, args.hold_out) < 1 or args.initial < annotation_min_cases():
        parser.error(f"--rounds and --hold-out must be >= 1 and --initial >= {annotation_min_cases()}")
    if not math.isfinite(args.reference_budget) or args.reference_budget <= 0:
        parser.error("--reference-budget must be a positive number of seconds")
    if args.pool is not None and args.pool < args.rounds + 1:
        parser.error("--pool must hold at least --rounds + 1 cases")
    if {"no-learning", "train-at-end"} & set(args.arms) and args.reference_budget not in random_budgets(args):
        logger.info("no-learning and train-at-end need the random arm at %g s: added", args.reference_budget)
    return args


def annotation_min_cases() -> int:
    return annotation_learner.MIN_CASES_TO_LEARN


def parse_arms(text: str) -> list[str]:
    arms = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [arm for arm in arms if arm not in ARMS]
    if not arms or unknown:
        raise argparse.ArgumentTypeError(f"arms are {', '.join(ARMS)}; got {text!r}")
    return arms


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds such as 30,60,120; got {text!r}") from None
    if not budgets or any(not math.isfinite(budget) or budget <= 0 for budget in budgets):
        raise argparse.ArgumentTypeError(f"budgets must be positive seconds; got {text!r}")
    return budgets


def random_budgets(args: argparse.Namespace) -> list[float]:
    """The budgets of the random arms: ``--budgets`` when ``random`` is asked for, plus the reference budget when
    ``no-learning`` or ``train-at-end`` needs its arm."""
    budgets = list(args.budgets) if "random" in args.arms else []
    if {"no-learning", "train-at-end"} & set(args.arms) and args.reference_budget not in budgets:
        budgets.append(args.reference_budget)
    return budgets


# ----- machine, commit and data ----------------------------------------------------------------------------


def case_name(path: Path) -> str:
    return path.name[: -len(SUFFIX)]


def prepare_split(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The seeded split and ``<work>/references/``: every used reference as an integer label map."""
    images, labels = args.data / "imagesTr", args.data / "labelsTr"
    if not images.is_dir():
        raise SystemExit(f"No hippocampus images in {images}; give --data (the MSD folder with imagesTr/, labelsTr/).")
    names = sorted(case_name(p) for p in images.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
    missing = [name for name in names if not (labels / f"{name}{SUFFIX}").is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} case(s) of {images} have no label map in {labels}, e.g. {missing[0]}")
    order = [names[i] for i in np.random.default_rng(args.seed).permutation(len(names))]
    held_out = order[: args.hold_out]
    initial = order[args.hold_out : args.hold_out + args.initial]
    pool = order[args.hold_out + args.initial :][: args.pool]
    if len(pool) < args.rounds + 1:
        raise SystemExit(f"{len(names)} cases leave a pool of {len(pool)}: too few for {args.rounds} rounds")
    references = work / "references"
    references.mkdir(parents=True)
    cast = []
    for name in (*held_out, *initial, *pool):
        source = labels / f"{name}{SUFFIX}"
        label = read_image(source)
        array = np.asarray(label.array)
        if np.issubdtype(array.dtype, np.integer):
            (references / source.name).symlink_to(source.resolve())
            continue
        whole = np.rint(array)
        if not np.array_equal(whole, array) or whole.min() < 0 or whole.max() > 255:
            raise SystemExit(f"{source} holds values that are not label values (0..255 whole numbers)")
        write_image(Image(whole.astype(np.uint8), label.spacing, label.origin, label.direction),
                    references / source.name)  # fmt: skip
        cast.append(name)
    if cast:
        logger.info("reference(s) stored as floats, cast to integers: %s", ", ".join(cast))
    return {"seed": args.seed, "held_out": held_out, "initial": initial, "pool": pool, "cast_to_int": cast,
            "images": images, "references": references}  # fmt: skip


def reference_array(split: dict[str, Any], case: str) -> np.ndarray:
    return np.asarray(read_image(split["references"] / f"{case}{SUFFIX}").array).astype(np.int64)


# ----- scoring ---------------------------------------------------------------------------------------------


def dice_scores(predicted: np.ndarray, reference: np.ndarray, labels: dict[int, str]) -> dict[str, float]:
    """Dice per foreground label (by name) and their mean."""
    values = sorted(value for value in labels if value != 0)
    dice = overlap_scores(confusion_counts(predicted.astype(np.int64), reference, values)).dice
    scores = {labels[value]: round(float(score), 5) for value, score in zip(values, dice, strict=True)}
    return {**scores, "mean": round(float(np.mean(dice)), 5)}


def score_model(model_folder: Path, cases: Sequence[str], split: dict[str, Any],
                labels: dict[int, str]) -> dict[str, Any]:  # fmt: skip
    """Segment ``cases`` with the model (loaded once) and score each against its reference."""
    model = load_segmentation_model(model_folder, resolve_device(OPTIONS.device_choice))
    per_case = {}
    started = time.perf_counter()
    for case in cases:
        result = segment(split["images"] / f"{case}{SUFFIX}", model, OPTIONS)
        per_case[case] = dice_scores(np.asarray(result.labels.array), reference_array(split, case), labels)
    names = [*(labels[value] for value in sorted(labels) if value != 0), "mean"]
    dice = {name: round(float(np.mean([scores[name] for scores in per_case.values()])), 5) for name in names}
    return {"dice": dice, "per_case": per_case, "seconds": round(time.perf_counter() - started, 2)}


# ----- the loop arms ---------------------------------------------------------------------------------------


def round_timeout(budget: float) -> float:
    """Seconds after which waiting for a learning round is given up (a hung learner must not hang the bench)."""
    return 300.0 + 10.0 * budget


def make_project_inputs(folder: Path, split: dict[str, Any]) -> tuple[Path, Path]:
    """``folder/images`` (symlinks to the initial and pool cases) and ``folder/labels`` (the initial labels)."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for case in (*split["initial"], *split["pool"]):
        (images / f"{case}{SUFFIX}").symlink_to((split["images"] / f"{case}{SUFFIX}").resolve())
    for case in split["initial"]:
        (labels / f"{case}{SUFFIX}").symlink_to((split["references"] / f"{case}{SUFFIX}").resolve())
    return images, labels


def learner_log_tail(project: Path, lines: int = LOG_TAIL) -> list[str]:
    """The last lines of the project's learner log (why a round failed), or none."""
    log = project / annotation_learner.LEARNING_FOLDER / annotation_learner.LOG_FILE
    with contextlib.suppress(OSError):
        return log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return []


def wait_for_learner_exit(project: Path, timeout_s: float) -> None:
    """Let the project's learner process end (it ends once every accepted case is learned), so that it uses no
    processor during the scoring or the next arm."""
    ended = time.monotonic() + timeout_s
    while annotation_learner.learner_running(project):
        if time.monotonic() > ended:
            logger.warning("the learner of %s still runs after %.0f s", project, timeout_s)
            return
        time.sleep(0.2)


def run_loop(arm: str, strategy: str, budget: float, args: argparse.Namespace, split: dict[str, Any],
             labels: dict[int, str], work: Path) -> dict[str, Any]:  # fmt: skip
    """One loop arm (module docstring, steps 1-3); the held-out scoring of its versions is :func:`score_versions`."""
    folder = work / arm
    images, initial_labels = make_project_inputs(folder, split)
    project_folder = folder / "project"
    timeout = round_timeout(budget)
    started = time.perf_counter()
    project = AnnotationProject.create(
        project_folder, images, labels=initial_labels, label_names={k: v for k, v in labels.items() if k},
        dims=3, learn_budget_s=budget, seed=args.seed, holder=f"bench_annotation_loop ({arm})",
        predict_options=OPTIONS,
    )  # fmt: skip
    rounds: list[dict[str, Any]] = []
    try:
        logger.info("%s: waiting for version 1 (learned from the %d initial cases)", arm, len(split["initial"]))
        first = project.wait_for(split["initial"][0], 1, timeout_s=timeout)
        first_s = time.perf_counter() - started
        shown = project.next_case(strategy)
        for number in range(1, args.rounds + 1):
            reference = split["references"] / f"{shown.case}{SUFFIX}"
            t0 = time.perf_counter()
            accepted = project.accept(shown.case, reference)
            accept_s = time.perf_counter() - t0
            following = project.next_case(strategy)
            ready_s = time.perf_counter() - t0
            try:
                learned, learning_error = project.wait_for(shown.case, accepted.revision, timeout_s=timeout), None
            except InputError as error:  # the round failed; the next accept learns again (module docstring)
                newest = read_versions(project_folder).newest
                learned, learning_error = (None if newest is None else newest.version), str(error)
                logger.warning("%s round %d: learning failed (%s); going on with version %s", arm, number, error,
                               learned)  # fmt: skip
            rounds.append({
                "round": number, "case": shown.case, "shown_version": shown.model_version,
                "shown_uncertainty": shown.uncertainty, "accept_s": round(accept_s, 3), "ready_s": round(ready_s, 3),
                "next_case": following.case, "next_predict_s": round(following.seconds, 3),
                "learning": accepted.learning, "learned_version": learned, "learning_error": learning_error,
                "wait_for_learning_s": round(time.perf_counter() - t0 - ready_s, 2),
            })  # fmt: skip
            logger.info("%s round %d: %s (shown by v%s), ready in %.2f s, newest v%s", arm, number, shown.case,
                        shown.model_version, ready_s, learned)  # fmt: skip
            shown = following
        status = project.status().to_dict()
    finally:
        project.close()
    loop_s = time.perf_counter() - started
    wait_for_learner_exit(project_folder, timeout)
    logged = {entry["case"]: entry for entry in status["rounds"]}
    for entry in rounds:
        record = logged[entry["case"]]
        if record.get("model_version") != entry["shown_version"]:
            logger.warning("%s round %d: status says version %s predicted %s, next_case said %s", arm, entry["round"],
                           record.get("model_version"), entry["case"], entry["shown_version"])  # fmt: skip
        entry.update(
            {
                key: record.get(key)
                for key in (
                    "model_version",
                    "dice",
                    "mean_dice",
                    "voxels_changed",
                    "voxels_to_paint",
                    "predict_seconds",
                    "user_seconds",
                )
            }
        )
    versions = [asdict(version) for version in read_versions(project_folder).versions]
    return {
        "arm": arm, "strategy": strategy, "budget_s": budget, "project": str(project_folder),
        "first_version": first, "first_version_s": round(first_s, 2), "loop_s": round(loop_s, 2),
        "rounds": rounds, "versions": versions, "failures": status["failures"],
        "total_learn_s": round(sum(v["learn_seconds"] or 0.0 for v in versions), 2),
    }  # fmt: skip


def score_versions(result: dict[str, Any], split: dict[str, Any], labels: dict[int, str]) -> None:
    """The held-out Dice of every version of a loop arm (after its loop, off every clock)."""
    project = Path(result["project"])
    result["held_out"] = {}
    for version in result["versions"]:
        logger.info("%s: scoring version %d on %d held-out cases", result["arm"], version["version"],
                    len(split["held_out"]))  # fmt: skip
        scored = score_model(project / version["folder"], split["held_out"], split, labels)
        result["held_out"][str(version["version"])] = scored


def no_learning(reference_arm: dict[str, Any], split: dict[str, Any], labels: dict[int, str]) -> dict[str, Any]:
    """Version 1 of the reference random arm throughout: its held-out Dice (that arm's scoring of it) and its Dice
    on the cases that arm was shown, scored here after the fact."""
    project = Path(reference_arm["project"])
    first = reference_arm["first_version"]
    folder = next(v["folder"] for v in reference_arm["versions"] if v["version"] == first)
    shown = score_model(project / folder, [entry["case"] for entry in reference_arm["rounds"]], split, labels)
    rounds = [{"round": entry["round"], "case": entry["case"], "dice": shown["per_case"][entry["case"]]}
              for entry in reference_arm["rounds"]]  # fmt: skip
    for entry, loop_entry in zip(rounds, reference_arm["rounds"], strict=True):
        if loop_entry["shown_version"] == first and loop_entry["mean_dice"] is not None and \
                abs(loop_entry["mean_dice"] - entry["dice"]["mean"]) > 1e-3:  # fmt: skip
            logger.warning("round %d: version %d scores %.4f here but %.4f in the project's log", entry["round"],
                           first, entry["dice"]["mean"], loop_entry["mean_dice"])  # fmt: skip
    return {"arm": "no-learning", "of_arm": reference_arm["arm"], "version": first, "model": str(project / folder),
            "held_out": reference_arm["held_out"][str(first)], "rounds": rounds}  # fmt: skip


def train_at_end(reference_arm: dict[str, Any], args: argparse.Namespace, split: dict[str, Any],
                 labels: dict[int, str], work: Path) -> dict[str, Any]:  # fmt: skip
    """One training from scratch on the reference arm's accepted cases (their accepted files), for the arm's total
    learning seconds, then its held-out Dice."""
    from MedSegCNNLib.data.dataset import CaseSource, Dataset
    from MedSegCNNLib.training import TrainingConfig, train

    project = Path(reference_arm["project"])
    state = read_project_file(project)
    sources = [
        CaseSource(record.id, tuple(absolute_path(path, project) for path in record.images),
                   absolute_path(record.revisions[-1], project))
        for record in state.cases if record.state is CaseState.ACCEPTED
    ]  # fmt: skip
    budget_s = reference_arm["total_learn_s"]
    dataset = Dataset("train_at_end", state.channels, state.labels, tuple(sources))
    config = TrainingConfig(time_budget_minutes=budget_s / 60, fold=None, spatial_dims=3, seed=args.seed)
    output = work / "train-at-end"
    logger.info("train-at-end: %d cases, budget %.0f s", len(sources), budget_s)
    started = time.perf_counter()
    trained = train(dataset, output, config)
    train_s = time.perf_counter() - started
    if trained.model is None:
        raise MedSegCNNError(f"the training ended {trained.status} without a model")
    return {
        "arm": "train-at-end", "of_arm": reference_arm["arm"], "cases": [source.name for source in sources],
        "budget_s": budget_s, "train_s": round(train_s, 2), "status": trained.status, "steps": trained.steps_done,
        "model": str(trained.model), "held_out": score_model(trained.model, split["held_out"], split, labels),
    }  # fmt: skip


# ----- report ----------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def dice_text(dice: dict[str, float] | None, names: Sequence[str]) -> str:
    if not dice:
        return "-"
    return f"{dice['mean']:.4f} ({' / '.join(fmt(dice.get(name)) for name in names)})"


def late_rounds(rounds: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The rounds of the issue's goal (11-20), or the later half when the run has fewer than 20."""
    low, high = LATE_ROUNDS
    if len(rounds) >= high:
        return [entry for entry in rounds if low <= entry["round"] <= high], f"rounds {low}-{high}"
    start = len(rounds) // 2 + 1
    label = f"rounds {start}-{len(rounds)}"
    return [entry for entry in rounds if entry["round"] >= start], label


def loop_summary(result: dict[str, Any]) -> dict[str, Any]:
    rounds = result["rounds"]
    ready = [entry["ready_s"] for entry in rounds]
    late, late_label = late_rounds(rounds)
    late_dice = [entry["mean_dice"] for entry in late if entry["mean_dice"] is not None]
    final = result["held_out"][str(rounds[-1]["learned_version"])]["dice"] if rounds else None
    return {
        "final_version": rounds[-1]["learned_version"] if rounds else result["first_version"],
        "final_held_out": final,
        "late_rounds": late_label,
        "late_mean_dice": round(float(np.mean(late_dice)), 5) if late_dice else None,
        "ready_max_s": max(ready) if ready else None,
        "ready_median_s": statistics.median(ready) if ready else None,
        "total_learn_s": result["total_learn_s"],
        "failed_rounds": [entry["round"] for entry in rounds if entry.get("learning_error")],
        "changed_fraction": round(
            sum(e["voxels_changed"] or 0 for e in rounds) / max(1, sum(e["voxels_to_paint"] for e in rounds)), 4
        ),
    }


def print_loop(result: dict[str, Any], names: Sequence[str], initial: int) -> None:
    held = result["held_out"]
    first = result["first_version"]
    print(f"\n## {result['arm']}: {result['strategy']} order, {result['budget_s']:g} s of learning per round")
    print(
        f"version {first} ({initial} initial cases) after {result['first_version_s']:.0f} s; loop "
        f"{result['loop_s']:.0f} s; learning {result['total_learn_s']:.0f} s in all; project {result['project']}"
    )
    if result["failures"]:
        print(f"learning failures (versions.json): {result['failures']}")
    for entry in result["rounds"]:
        if entry.get("learning_error"):
            print(
                f"round {entry['round']}: learning failed ({entry['learning_error']}); the newest version stayed "
                f"v{entry['learned_version']} and the next accept learned again"
            )
    label_names = " / ".join(names)
    print(f"| round | case | predicted by | Dice before correction, mean ({label_names}) | voxels changed / to paint "
          f"| ready s | newest version | its held-out Dice, mean ({label_names}) |")  # fmt: skip
    print("|---:|---|---:|---|---:|---:|---:|---|")
    print(f"| 0 | ({initial} initial) | - | - | - | - | v{first} | {dice_text(held[str(first)]['dice'], names)} |")
    for entry in result["rounds"]:
        version = entry["learned_version"]
        before = None if entry["dice"] is None else {**entry["dice"], "mean": entry["mean_dice"]}
        print(f"| {entry['round']} | {entry['case']} | v{entry['model_version']} | {dice_text(before, names)} "
              f"| {fmt(entry['voxels_changed'], 'd')} / {entry['voxels_to_paint']} | {entry['ready_s']:.2f} "
              f"| v{version} | {dice_text(held[str(version)]['dice'], names)} |")  # fmt: skip


def print_no_learning(result: dict[str, Any], names: Sequence[str]) -> None:
    print(f"\n## no-learning: version {result['version']} of {result['of_arm']} throughout")
    print(f"held-out Dice {dice_text(result['held_out']['dice'], names)}")
    print("| round | case | Dice of the initial model, mean (" + " / ".join(names) + ") |\n|---:|---|---|")
    for entry in result["rounds"]:
        print(f"| {entry['round']} | {entry['case']} | {dice_text(entry['dice'], names)} |")
    dice = [entry["dice"]["mean"] for entry in result["rounds"]]
    late, label = late_rounds(result["rounds"])
    print(f"mean over all rounds {np.mean(dice):.4f}; {label} {np.mean([e['dice']['mean'] for e in late]):.4f}")


def print_train_at_end(result: dict[str, Any], names: Sequence[str]) -> None:
    print(
        f"\n## train-at-end: one training from scratch on the {len(result['cases'])} cases {result['of_arm']} "
        f"accepted, budget {result['budget_s']:.0f} s (that arm's learning seconds)"
    )
    print(
        f"{result['status']} after {result['steps']} steps, {result['train_s']:.0f} s; held-out Dice "
        f"{dice_text(result['held_out']['dice'], names)}"
    )


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def print_goals(report: dict[str, Any], reference: str | None, rounds: int) -> list[dict[str, Any]]:
    """The issue's goals as measured (printed, never asserted); returns them for the JSON."""
    arms = report["arms"]
    goals: list[dict[str, Any]] = []
    ref = arms.get(reference) if reference else None
    summary = ref and ref.get("summary")
    caveat = "" if rounds >= LATE_ROUNDS[1] else f" (this run has {rounds} rounds, not 20: not the goal's setting)"
    if summary:
        held = summary["final_held_out"]["mean"]
        goals.append({"goal": f"held-out mean Dice after initial + {rounds} at {ref['budget_s']:g} s >= "
                      f"{GOAL_HELD_OUT}{caveat}", "measured": held, "pass": held >= GOAL_HELD_OUT})  # fmt: skip
        late = summary["late_mean_dice"]
        goals.append({"goal": f"mean Dice before correction of {summary['late_rounds']} >= {GOAL_LATE}{caveat}",
                      "measured": late, "pass": None if late is None else late >= GOAL_LATE})  # fmt: skip
    for name, arm in arms.items():
        if arm.get("summary"):
            s = arm["summary"]
            goals.append({"goal": f"{name}: every ready_s <= {GOAL_READY_S:g} s (max {s['ready_max_s']:.2f} s, "
                          f"median {s['ready_median_s']:.2f} s)", "measured": s["ready_max_s"],
                          "pass": s["ready_max_s"] <= GOAL_READY_S})  # fmt: skip
    at_end = arms.get("train-at-end")
    if summary and at_end and "held_out" in at_end:
        loop, end = summary["final_held_out"]["mean"], at_end["held_out"]["dice"]["mean"]
        goals.append({"goal": f"{reference} held-out mean Dice >= train-at-end - {GOAL_MARGIN} "
                      f"({loop:.4f} vs {end:.4f})", "measured": round(loop - end, 5),
                      "pass": loop >= end - GOAL_MARGIN})  # fmt: skip
    print("\n## Goals (issue 22), as measured")
    for goal in goals:
        print(f"- {verdict(goal['pass'])}: {goal['goal']}: {fmt(goal['measured'])}")
    if not goals:
        print("- none measurable with these arms")
    return goals


def plot(report: dict[str, Any], path: Path) -> None:
    """Held-out Dice of the newest version per round, and the Dice before correction per round, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (held_axis, shown_axis) = plt.subplots(1, 2, figsize=(13, 5))
    for name, arm in report["arms"].items():
        if "error" in arm:
            continue
        if "rounds" in arm and "versions" in arm:
            first = arm["first_version"]
            xs = [0, *(entry["round"] for entry in arm["rounds"])]
            versions = [first, *(entry["learned_version"] for entry in arm["rounds"])]
            held_axis.plot(xs, [arm["held_out"][str(v)]["dice"]["mean"] for v in versions], marker="o", label=name)
            shown = [(e["round"], e["mean_dice"]) for e in arm["rounds"] if e["mean_dice"] is not None]
            if shown:
                shown_axis.plot(*zip(*shown, strict=True), marker="o", label=name)
        elif name == "no-learning":
            rounds = [entry["round"] for entry in arm["rounds"]]
            held_axis.hlines(arm["held_out"]["dice"]["mean"], 0, max(rounds), linestyles="--", colors="grey",
                             label=name)  # fmt: skip
            shown_axis.plot(rounds, [e["dice"]["mean"] for e in arm["rounds"]], linestyle="--", color="grey",
                            marker=".", label=f"{name} (cases of {arm['of_arm']})")  # fmt: skip
        elif name == "train-at-end":
            rounds = len(arm["cases"]) - len(report["split"]["initial"])
            held_axis.plot([rounds], [arm["held_out"]["dice"]["mean"]], marker="*", markersize=14, linestyle="",
                           color="black", label=f"{name} ({arm['budget_s']:.0f} s)")  # fmt: skip
    held_axis.axhline(GOAL_HELD_OUT, color="red", linewidth=0.8, linestyle=":", label=f"goal {GOAL_HELD_OUT}")
    shown_axis.axhline(GOAL_LATE, color="red", linewidth=0.8, linestyle=":", label=f"goal {GOAL_LATE} (rounds 11-20)")
    held_axis.set(title=f"Newest version on {len(report['split']['held_out'])} held-out cases",
                  xlabel="round (cases accepted after the initial ones)", ylabel="mean Dice")  # fmt: skip
    shown_axis.set(title="Prediction of the round's case before correction", xlabel="round", ylabel="mean Dice")
    for axis in (held_axis, shown_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Annotation loop, hippocampus; {report['machine']['cpu_model']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(record: RunRecord) -> None:
    """Write the results file with its figures computed afresh from the raw numbers."""
    record.data["figures"] = figures(record.data)
    record.write()


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the summary and the README quote, computed from the raw per-round and per-case numbers: the
    split's sizes and, per arm, the held-out Dice, the late rounds' Dice before correction, the ready seconds,
    the learning seconds and the voxels changed against the voxels painted from scratch (totals and fraction)."""
    split = report.get("split", {})
    result: dict[str, Any] = {"split": {key: len(value) for key, value in split.items() if isinstance(value, list)},
                              "arms": {}}  # fmt: skip
    for name, arm in report.get("arms", {}).items():
        if "error" in arm:
            continue
        entry: dict[str, Any] = {}
        if "summary" in arm:
            rounds, summary = arm["rounds"], arm["summary"]
            changed = sum(e["voxels_changed"] or 0 for e in rounds)
            to_paint = sum(e["voxels_to_paint"] for e in rounds)
            entry.update({"held_out": summary["final_held_out"], "late_rounds": summary["late_rounds"],
                          "late_mean_dice": summary["late_mean_dice"], "ready_max_s": summary["ready_max_s"],
                          "ready_median_s": summary["ready_median_s"], "learn_s": summary["total_learn_s"],
                          "versions": len(arm["versions"]), "voxels_changed": changed, "voxels_to_paint": to_paint,
                          "changed_fraction": changed / max(1, to_paint)})  # fmt: skip
        elif "held_out" in arm:
            entry["held_out"] = arm["held_out"]["dice"]
            if "rounds" in arm:  # no-learning: the initial model's Dice on the shown cases
                late, label = late_rounds(arm["rounds"])
                entry.update(
                    {
                        "late_rounds": label,
                        "late_mean_dice": float(np.mean([e["dice"]["mean"] for e in late])),
                        "mean_dice_all_rounds": float(np.mean([e["dice"]["mean"] for e in arm["rounds"]])),
                    }
                )
            if "budget_s" in arm:
                entry["learn_s"] = arm["budget_s"]
        result["arms"][name] = entry
    return result


def add_figures(paths: Sequence[Path]) -> None:
    """Add ``figures`` (computed from its raw numbers) to results files written before they had it; nothing else
    in them changes."""
    for path in paths:
        report = json.loads(path.read_text(encoding="utf-8"))
        report["figures"] = figures(report)
        write_text_atomic(path, json.dumps(report, indent=1, default=str) + "\n", overwrite=True)
        print(f"{path}: figures {json.dumps(report['figures'])}")


# ----- main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    args = parse_args(argv)
    if args.figures:
        add_figures(args.figures)
        return
    temporary = args.work is None
    work = (Path(tempfile.mkdtemp(prefix="bench_annotation_loop_")) if temporary else args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        raise SystemExit(f"The work folder {work} is not empty; give a new or empty one.")
    settings = {**vars(args), "predict_options": asdict(OPTIONS), "work": work, "min_cases_to_learn":
                annotation_min_cases()}  # fmt: skip
    record = RunRecord("annotation_loop", settings, argv=argv, results=args.results,
                       suffix="-smoke" if args.smoke else "")  # fmt: skip
    json_path, png_path = record.path, record.path.with_suffix(".png")
    info = record.data["machine"]
    print("Annotation loop benchmark (issue 22): a simulated annotator on the hippocampus cases")
    print(f"{record.describe_machine()}; all flags: {' '.join(info['cpu_flags'])}")
    print(", ".join(f"{name} {version}" for name, version in info["versions"].items() if version) +
          f", Python {info['python']}")  # fmt: skip
    split = prepare_split(args, work)
    labels = read_label_names(args.data / "dataset.json")
    names = [labels[value] for value in sorted(labels) if value != 0]
    print(f"Data {args.data}: {len(split['held_out'])} held-out, {len(split['initial'])} initial, "
          f"{len(split['pool'])} in the pool (seed {args.seed}); {args.rounds} rounds; work folder {work}")  # fmt: skip
    loop_arms = [(f"random-{budget:g}s", "random", budget) for budget in random_budgets(args)]
    if "entropy" in args.arms:
        loop_arms.append((f"entropy-{args.reference_budget:g}s", "entropy", args.reference_budget))
    reference = f"random-{args.reference_budget:g}s" if random_budgets(args) and args.reference_budget in \
        random_budgets(args) else None  # fmt: skip
    report = record.data
    report["settings"].update({"loop_arms": [{"arm": a, "strategy": s, "budget_s": b} for a, s, b in loop_arms],
                               "reference_arm": reference})  # fmt: skip
    report.update({"split": {key: value for key, value in split.items() if key not in ("images", "references")},
                   "labels": labels, "arms": {}})  # fmt: skip
    write_report(record)
    try:
        for arm, strategy, budget in loop_arms:
            logger.info("arm %s", arm)
            try:
                result = run_loop(arm, strategy, budget, args, split, labels, work)
                score_versions(result, split, labels)
                result["summary"] = loop_summary(result)
            except (MedSegCNNError, OSError, RuntimeError, ValueError) as error:
                logger.exception("arm %s failed", arm)
                result = {
                    "arm": arm,
                    "error": f"{type(error).__name__}: {error}",
                    "learner_log_tail": learner_log_tail(work / arm / "project"),
                }
            report["arms"][arm] = result
            write_report(record)
            if "error" in result:
                print(f"\n## {arm}: FAILED ({result['error']})\nits learner log ends:")
                print("\n".join(f"    {line}" for line in result["learner_log_tail"]))
            else:
                print_loop(result, names, len(split["initial"]))
        base = report["arms"].get(reference) if reference else None
        usable = base is not None and "error" not in base
        if "no-learning" in args.arms:
            report["arms"]["no-learning"] = no_learning(base, split, labels) if usable else \
                {"error": f"its arm {reference} failed"}  # fmt: skip
            write_report(record)
            if usable:
                print_no_learning(report["arms"]["no-learning"], names)
        if "train-at-end" in args.arms:
            try:
                if not usable:
                    raise MedSegCNNError(f"its arm {reference} failed")
                report["arms"]["train-at-end"] = train_at_end(base, args, split, labels, work)
                print_train_at_end(report["arms"]["train-at-end"], names)
            except (MedSegCNNError, OSError, RuntimeError, ValueError) as error:
                logger.exception("train-at-end failed")
                report["arms"]["train-at-end"] = {"error": f"{type(error).__name__}: {error}"}
            write_report(record)
        print(f"\n## Summary ({record.describe_machine()})")
        print("| arm | final version | held-out mean Dice | Dice before correction, late rounds | ready s max / median "
              "| learning s | voxels changed / to paint |\n|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
        report["figures"] = figures(report)
        for arm, result in report["arms"].items():
            if "summary" in result:
                s, f = result["summary"], report["figures"]["arms"][arm]
                print(
                    f"| {arm} | v{s['final_version']} | {s['final_held_out']['mean']:.4f} | "
                    f"{fmt(s['late_mean_dice'])} ({s['late_rounds']}) | {s['ready_max_s']:.2f} / "
                    f"{s['ready_median_s']:.2f} | {s['total_learn_s']:.0f} | {f['voxels_changed']:,} / "
                    f"{f['voxels_to_paint']:,} ({f['changed_fraction']:.0%}) |"
                )
            elif "held_out" in result:
                print(
                    f"| {arm} | - | {result['held_out']['dice']['mean']:.4f} | - | - | "
                    f"{fmt(result.get('budget_s'), '.0f')} | - |"
                )
            else:
                print(f"| {arm} | FAILED: {result.get('error')} | | | | | |")
        report["goals"] = print_goals(report, reference, args.rounds)
        write_report(record)
        plot(report, png_path)
        print(f"\nResults: {json_path}\nCurves: {png_path}")
    finally:
        if temporary and not args.keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
        else:
            print(f"Work folder kept: {work}")


if __name__ == "__main__":
    main()
