"""Make the bundled model ``hippocampus-tiny``: a small 3D U-Net trained on the bundled hippocampus sample cases.

It runs ``medsegcnn train`` on ``Resources/SampleData/Hippocampus`` (fold 0 of 5: 9 cases train, 3 validate)
with :data:`TRAINING` in a temporary folder, then writes only the final model (the best validation epoch's
weights and the model card, plus a title and description) to ``Resources/Models/hippocampus-tiny``, replacing
the model files there and keeping its README.md. Checkpoints and logs are not kept.

Run from the repository root (about 8 minutes of CPU time; 15 minutes on a busy 2-core machine)::

    python Resources/Models/make_hippocampus_tiny.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from MedSegCNNLib.checkpoint import load_model, save_model
from MedSegCNNLib.cli.main import main as medsegcnn

HERE = Path(__file__).resolve().parent
SAMPLE_DATA = HERE.parents[1] / "Resources" / "SampleData" / "Hippocampus"
OUTPUT = HERE / "hippocampus-tiny"

#: ``TrainingConfig`` fields (``medsegcnn train --config``): the demo's recipe with a quarter of its channels.
TRAINING = {
    "network": {"name": "unet", "features": [8, 16, 32, 64]},
    "optimizer": "adam",
    "learning_rate": 0.003,
    "batch_size": 2,
    "batch_dice": True,
    "epochs": 15,
    "steps_per_epoch": 25,
    "fold": 0,
    "seed": 0,
}
TITLE = "Hippocampus (tiny 3D U-Net, sample model)"
DESCRIPTION = (
    "Anterior and posterior hippocampus on T1-weighted MRI crops (MSD Task04), 1 mm. A demonstration model "
    "trained for a few CPU minutes on 9 of the 12 bundled sample cases; not for research or clinical use."
)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="medsegcnn-hippocampus-tiny-") as scratch:
        config, run = Path(scratch) / "training.json", Path(scratch) / "run"
        config.write_text(json.dumps(TRAINING), encoding="utf-8")
        status = medsegcnn(
            ["train", "--data", str(SAMPLE_DATA), "--output", str(run), "--config", str(config), "--device", "cpu"]
        )
        if status != 0:
            return status
        network, card = load_model(run / "model")
        save_model(OUTPUT, network, {**card, "title": TITLE, "description": DESCRIPTION}, overwrite=True)
    print(f"Wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
