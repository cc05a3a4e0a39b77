"""The training log: one CSV row per epoch and a PNG of the loss and Dice curves."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, verify_png, write_text_atomic
from ..visualization.figures import quiet_matplotlib


@dataclass
class TrainingHistory:
    """Rows ``{"epoch", "train_loss", "lr", "seconds", "val_mean_dice", "val_dice_<label>"...}``."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]  # a resumed epoch replaces

    def to_csv(self) -> str:
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> TrainingHistory:
        rows = []
        for raw in csv.DictReader(io.StringIO(text)):
            row: dict[str, Any] = {"epoch": int(raw.pop("epoch"))}
            row.update({key: float(value) for key, value in raw.items() if value != ""})
            rows.append(row)
        return cls(rows)

    def write(self, folder: Path) -> None:
        """``training_log.csv`` and ``training_curves.png`` in ``folder``, both replaced atomically; without
        rows (no epoch done yet) both are removed."""
        if not self.rows:
            for name in ("training_log.csv", "training_curves.png"):
                (folder / name).unlink(missing_ok=True)
            return
        write_text_atomic(folder / "training_log.csv", self.to_csv(), overwrite=True)
        self.plot(folder / "training_curves.png")

    def plot(self, path: Path) -> None:
        """The loss (and validation Dice) curves as a PNG at ``path``, drawn by matplotlib kept quiet
        (:func:`~MedSegCNNLib.visualization.figures.quiet_matplotlib`)."""
        with quiet_matplotlib():
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib.figure import Figure

            figure = Figure(figsize=(7, 4), dpi=100)
            loss_axis = figure.add_subplot()
            epochs = [row["epoch"] for row in self.rows]
            loss_axis.plot(epochs, [row["train_loss"] for row in self.rows], color="tab:blue", label="training loss")
            loss_axis.set_xlabel("epoch")
            loss_axis.set_ylabel("training loss", color="tab:blue")
            validated = [row for row in self.rows if not math.isnan(row.get("val_mean_dice", math.nan))]
            if validated:
                dice_axis = loss_axis.twinx()
                dice_axis.plot(
                    [row["epoch"] for row in validated],
                    [row["val_mean_dice"] for row in validated],
                    color="tab:orange",
                    marker="o",
                    markersize=3,
                    label="validation mean Dice",
                )
                dice_axis.set_ylabel("validation mean Dice", color="tab:orange")
                dice_axis.set_ylim(0, 1)
            figure.tight_layout()
            with atomic_path(path, overwrite=True, verify=verify_png) as tmp:
                figure.savefig(tmp, format="png")
