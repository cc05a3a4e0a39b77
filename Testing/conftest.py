"""Shared fixtures: images with awkward but valid geometry (oblique or flipped axes, non-zero origin,
anisotropic spacing), so that code which mixes up axis orders or ignores the direction fails; and a real nnU-Net v2
results folder, built once per session (the nnU-Net tests and the fault suite use it)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from nnunet_support import FAST_VARIANT, NnunetResults, build_nnunet_results, nnunet_available

from MedSegCNNLib.image.core import Image, LabelInfo


def pytest_configure(config: pytest.Config) -> None:
    """One compute thread in every test process and its children. Torch's OpenMP threads spin at each barrier
    while they wait: when the cores are shared (parallel test sessions, a busy CI machine), a tiny network's step
    slows by orders of magnitude. The tests check results, never the speed of several threads."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_user_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The per-user cache (step times, converted networks), data folder (the user's models) and temporary folder:
    the tests (and their child processes) use their own, so that parallel test sessions (``pytest -n``) never see
    each other's files; the checks that nothing temporary is left behind look only at this session's."""
    names = ("XDG_CACHE_HOME", "XDG_DATA_HOME", "TMPDIR")
    previous = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(tmp_path_factory.mktemp(name.lower()))
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def nnunet_results(tmp_path_factory: pytest.TempPathFactory) -> NnunetResults:
    """The fast representative (``FAST_VARIANT``: 3d_fullres, fold 0, nnUNetTrainer with mirroring, nnUNetPlans at
    2 mm, 40 training iterations; about 20-25 s on 2 shared cores), with its three held-out hippocampus cases."""
    reason = nnunet_available()
    if reason is not None:
        pytest.skip(reason)
    return build_nnunet_results(tmp_path_factory.mktemp("nnunet-fast"), FAST_VARIANT)


def rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix about x, then y, then z (radians); one angle gives a 2D rotation."""
    if len(angles) == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        turn = np.eye(3)
        turn[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
        matrix = turn @ matrix
    return matrix


DIRECTIONS: dict[str, Callable[[int], np.ndarray]] = {
    "identity": np.eye,
    "oblique": lambda dims: rotation((0.3, -0.2, 0.7)[: 1 if dims == 2 else 3]),
    # determinant -1: the last axis is mirrored, as in many NIfTI files converted from DICOM
    "flipped": lambda dims: rotation((0.3, -0.2, 0.7)[: 1 if dims == 2 else 3]) @ np.diag([1.0] * (dims - 1) + [-1.0]),
}


@pytest.fixture
def make_image() -> Callable[..., Image]:
    """Factory ``make_image(shape=(4, 5, 6), direction="oblique", dtype=np.int16, channels=None, labels=(), seed=0)``.

    ``shape`` is the spatial shape in array order (z, y, x) or (y, x); integer images hold values 0..4
    (a label map), bool images 0/1, float images random normal values. Spacing is (0.7, 1.3, 2.9), origin
    (-123.456, 78.9, 10.01) (truncated in 2D); ``direction`` is a key of :data:`DIRECTIONS`.
    """

    def make(
        shape: Sequence[int] = (4, 5, 6),
        *,
        direction: str = "oblique",
        dtype: npt.DTypeLike = np.int16,
        channels: int | None = None,
        labels: Sequence[LabelInfo] = (),
        seed: int = 0,
    ) -> Image:
        dims = len(shape)
        full_shape = tuple(shape) if channels is None else (channels, *shape)
        rng = np.random.default_rng(seed)
        if np.issubdtype(dtype, np.floating):
            array = rng.normal(size=full_shape).astype(dtype)
        else:
            array = rng.integers(0, 2 if np.dtype(dtype) == np.bool_ else 5, size=full_shape).astype(dtype)
        return Image(
            array=array,
            spacing=(0.7, 1.3, 2.9)[:dims],
            origin=(-123.456, 78.9, 10.01)[:dims],
            direction=DIRECTIONS[direction](dims),
            labels=tuple(labels),
        )

    return make
