"""Make ``predictionsTr/``: deliberately degraded copies of ``labelsTr/`` (NOT a model's output).

They exist so that ``medsegcnn evaluate`` has something real to report on until ``medsegcnn demo`` trains
a model. Per case: the anterior label (1) is shifted by one voxel along x, the posterior label (2) is
eroded by one voxel (6-connectivity); in the last case the posterior label is deleted, to show how a
missed label is reported.

Run from the repository root: ``python Resources/SampleData/Hippocampus/make_example_predictions.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from MedSegCNNLib import read_image, write_image

HERE = Path(__file__).resolve().parent
ANTERIOR, POSTERIOR = 1, 2


def shift_x(mask: np.ndarray) -> np.ndarray:
    """``mask`` moved by one voxel towards higher x (the last array axis); the vacated column is empty."""
    shifted = np.zeros_like(mask)
    shifted[..., 1:] = mask[..., :-1]
    return shifted


def erode(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose six face-neighbours are all in ``mask`` (outside the array counts as empty)."""
    padded = np.pad(mask, 1)
    core = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for step in (-1, 1):
            core &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return core


def main() -> None:
    output = HERE / "predictionsTr"
    output.mkdir(exist_ok=True)
    references = sorted((HERE / "labelsTr").glob("*.nii.gz"))
    for index, path in enumerate(references):
        reference = read_image(path)
        labels = reference.array
        prediction = np.zeros_like(labels)
        prediction[shift_x(labels == ANTERIOR)] = ANTERIOR
        if index != len(references) - 1:
            prediction[erode(labels == POSTERIOR)] = POSTERIOR
        write_image(reference.with_array(prediction), output / path.name, overwrite=True)


if __name__ == "__main__":
    main()
