"""The demo: train a small 3D U-Net on the bundled hippocampus cases, segment the held-out ones, score them.

Everything goes into one output folder::

    OUTPUT/model_run/            the training run (model/, checkpoints/, training_log.csv, training_curves.png)
    OUTPUT/segmentations/        <case>.nii.gz and <case>.seg.nrrd (loads in 3D Slicer with names and colours)
    OUTPUT/overlays/             <case>.png: prediction beside the reference
    OUTPUT/metrics.csv           one row per (case, label)
    OUTPUT/report.md             what ran, how long, and the Dice/HD95 table
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text_atomic
from .errors import InputError, OutputExistsError
from .image.io import read_image, write_image
from .metrics.evaluate import evaluate
from .metrics.result import EvaluationResult
from .progress import EventSink

SAMPLE_DATA = Path("Resources") / "SampleData" / "Hippocampus"

#: The demo's training: whatever the planner chooses for this device in a 5-minute budget.
DEMO_TRAINING = {"time_budget_minutes": 5.0, "fold": 0}
#: A smoke test of the whole pipeline in seconds (the model is barely trained).
QUICK_TRAINING = {
    "network": {"name": "unet", "features": [4, 8, 16]},
    "batch_size": 2,
    "epochs": 1,
    "steps_per_epoch": 2,
    "patch_size": (16, 16, 16),
    "fold": 0,
}


@dataclass(frozen=True)
class DemoResult:
    output: Path
    evaluation: EvaluationResult
    training_seconds: float
    prediction_seconds: float


def find_sample_data() -> Path:
    """The bundled sample cases: in the source tree beside the package, or under the current folder."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root / SAMPLE_DATA
        if (candidate / "dataset.json").is_file():
            return candidate
    raise InputError(
        f"The sample data ({SAMPLE_DATA}) was not found; run the demo from the MedSegCNN source folder or pass "
        "--data with an MSD dataset folder."
    )


def run_demo(
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    quick: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    on_event: EventSink | None = None,
) -> DemoResult:
    """Train, segment the validation fold, evaluate, and write the demo folder (see the module docstring)."""
    from .inference.segment import segment
    from .training import TrainingConfig, train
    from .visualization.overlay import save_overlay

    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputExistsError(f"Demo folder {output} is not empty; choose another or pass --overwrite.")
    data = Path(data) if data is not None else find_sample_data()
    config = TrainingConfig.from_dict({**(QUICK_TRAINING if quick else DEMO_TRAINING), "device": device})

    started = time.monotonic()
    run = train(data, output / "model_run", config, overwrite=overwrite, on_event=on_event)
    training_seconds = time.monotonic() - started
    if run.model is None:
        raise InputError("Training was cancelled; nothing to demonstrate. Run the demo again.")

    from .data.dataset import load_dataset
    from .inference.model import load_segmentation_model
    from .runtime import resolve_device

    dataset = load_dataset(data)
    held_out = set(_validation_cases(run.model))
    cases = [case for case in dataset.cases if case.name in held_out]
    model = load_segmentation_model(run.model, resolve_device(device))
    (output / "segmentations").mkdir(parents=True, exist_ok=True)
    (output / "overlays").mkdir(exist_ok=True)
    started = time.monotonic()
    predictions, references = [], []
    for case in cases:
        image = read_image(case.images[0])
        result = segment(image, model, input_name=str(case.images[0]))
        write_image(result.labels, output / "segmentations" / f"{case.name}.nii.gz", overwrite=overwrite)
        write_image(result.labels, output / "segmentations" / f"{case.name}.seg.nrrd", overwrite=overwrite)
        reference = read_image(case.label)
        save_overlay(
            output / "overlays" / f"{case.name}.png", image, result.labels, reference=reference,
            overwrite=overwrite, title=f"{case.name}: prediction vs reference",
        )  # fmt: skip
        predictions.append(output / "segmentations" / f"{case.name}.nii.gz")
        references.append(case.label)
    prediction_seconds = time.monotonic() - started
    evaluation = evaluate(predictions, references, label_names=dict(dataset.label_names))
    evaluation.to_csv(output / "metrics.csv", overwrite=overwrite)
    result = DemoResult(output, evaluation, training_seconds, prediction_seconds)
    write_text_atomic(output / "report.md", _report(result, run.model, quick=quick), overwrite=True)
    return result


def _validation_cases(model_folder: Path) -> list[str]:
    from .checkpoint import read_model_card

    return list(read_model_card(model_folder).training.val_cases)


def _report(result: DemoResult, model_folder: Path, *, quick: bool) -> str:
    from .checkpoint import read_model_card
    from .metrics.report import format_report

    card = read_model_card(model_folder)
    plan, network = card.training.plan, card.network_config()
    summary = result.evaluation.summary()
    lines = [
        "# MedSegCNN demo",
        "",
        f"Mode: {'quick (a smoke test: the model is barely trained)' if quick else 'full'}.",
        f"Training: {network['name']} {network.get('features')}, patch {list(card.patch_size)}, "
        f"batch {plan['batch_size']}, {plan['precision']}; {plan['steps_done']} steps in "
        f"{result.training_seconds:.0f} s"
        + (f" (budget {plan['budget_seconds']:.0f} s)." if plan["budget_seconds"] else "."),
        f"Prediction of {len(result.evaluation.cases)} held-out cases: {result.prediction_seconds:.1f} s.",
        "",
        "Mean Dice over the held-out cases: "
        + ", ".join(f"{stats['name']} {stats['dice']['mean']:.3f}" for stats in summary.values()),
        "",
        "```",
        format_report(result.evaluation, per_case=True),
        "```",
        "",
        "Files: model_run/model (the model), segmentations/ (.nii.gz, .seg.nrrd), overlays/ (PNG), metrics.csv.",
        "",
    ]
    return "\n".join(lines)
