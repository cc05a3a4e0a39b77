"""Make the bundled model ``hippocampus-tiny``: a small 3D U-Net that the planner trains on the shared hippocampus
data in a 15-minute CPU budget, scored on 40 cases that training never saw.

The 200 cases of ``../shared/data/hippocampus`` (MSD Task04, CC-BY-SA 4.0) are sorted by file name; the first
160 train the model and the last 40 are held out (the split of
``Testing/Benchmarks/bench_training_budget.py``). The script runs exactly what a user would::

    medsegcnn train --data <160 cases> --output RUN --time-budget 15 --fold all --device cpu

then segments the 40 held-out cases with the model (``segment``, no test-time augmentation) and writes the model
with its card to ``Resources/Models/hippocampus-tiny``, keeping the folder's README.md. The card's
``training.validation`` is the held-out Dice (``"source": "held-out cases after training"``) and
``training.val_cases`` names the 40 cases, so the registry and the panel show an honest score.

Run from the repository root (about 16 minutes on a 2-core CPU)::

    python Resources/Models/make_hippocampus_tiny.py [--data ../shared/data/hippocampus] [--run RUN]

``--run`` reuses a finished run made by that command (for example the benchmark's ``medsegcnn_B15``) instead
of training again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from MedSegCNNLib import PredictOptions, evaluate, read_image, segment
from MedSegCNNLib.checkpoint import load_model, save_model
from MedSegCNNLib.cli.main import main as medsegcnn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUTPUT = HERE / "hippocampus-tiny"
HELD_OUT = 40
BUDGET_MINUTES = 15
TITLE = "Hippocampus (tiny 3D U-Net, 15 CPU minutes)"
DESCRIPTION = (
    "Anterior and posterior hippocampus on T1-weighted MRI crops (MSD Task04), 1 mm. Trained by MedSegCNN's "
    "planner in a 15-minute budget on a 2-core CPU, on 160 cases; Dice measured on 40 other cases. For trying "
    "MedSegCNN out, not for research or clinical use."
)


def split(data: Path, work: Path) -> tuple[Path, list[str]]:
    """An MSD folder of the first cases (symlinks) under ``work``, and the held-out case names."""
    names = sorted(path.name for path in (data / "imagesTr").iterdir() if path.name.endswith(".nii.gz"))
    train, held_out = names[:-HELD_OUT], names[-HELD_OUT:]
    folder = work / "train"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
        for name in train:
            (folder / sub / name).symlink_to((data / sub / name).resolve())
    description = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    description["training"] = [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in train]
    description["numTraining"] = len(train)
    (folder / "dataset.json").write_text(json.dumps(description, indent=1), encoding="utf-8")
    return folder, held_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "hippocampus")
    parser.add_argument("--run", type=Path, help="a finished run of the same command, instead of training again")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medsegcnn-hippocampus-tiny-") as scratch:
        train_folder, held_out = split(args.data, Path(scratch))
        run = args.run
        if run is None:
            run = Path(scratch) / "run"
            command = ["train", "--data", str(train_folder), "--output", str(run)]
            status = medsegcnn([*command, "--time-budget", str(BUDGET_MINUTES), "--fold", "all", "--device", "cpu"])
            if status != 0:
                return status
        network, model_card = load_model(run / "model")
        card = model_card.to_dict()
        predictions, references = [], []
        for name in held_out:
            result = segment(read_image(args.data / "imagesTr" / name), run / "model", PredictOptions(device="cpu"))
            predictions.append(result.labels)
            references.append(read_image(args.data / "labelsTr" / name))
        summary = evaluate(predictions, references, labels=[1, 2], surface=False).summary()
        dice = {str(label): summary[label]["dice"]["mean"] for label in (1, 2)}
        card["training"]["validation"] = {
            "source": "held-out cases after training",
            "mean_dice": float(np.mean(list(dice.values()))),
            "dice": dice,
        }
        card["training"]["val_cases"] = [name.removesuffix(".nii.gz") for name in held_out]
        save_model(OUTPUT, network, {**card, "title": TITLE, "description": DESCRIPTION}, overwrite=True)
    print(f"Wrote {OUTPUT}: held-out Dice {dice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
