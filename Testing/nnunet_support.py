"""Real nnU-Net v2 results folders, built with nnunetv2's own code, and nnunetv2's own reference predictions.

The folders are made from the bundled hippocampus cases (``Resources/SampleData/Hippocampus``): a tiny raw dataset
(``DatasetXXX_Name/imagesTr, labelsTr, imagesTs, labelsTs, dataset.json``), nnunetv2's fingerprint extraction, its
planner (``ExperimentPlanner`` or ``nnUNetPlannerResEncM``) and preprocessor, then its trainer class, instantiated as
``nnUNetv2_train`` does and run for a few iterations on the CPU. The trainer writes ``plans.json``, ``dataset.json``
and ``fold_K/checkpoint_final.pth`` through its own code. Three cases are held out (``imagesTs``) for prediction.

The variant ``dataset="ct_phantom"`` (``CT_PHANTOM_VARIANT``, the benchmark's large many-label model) replaces the
hippocampus cases with synthetic CT-like torsos (:func:`render_ct_phantom`: 15 labelled structures, int16 HU) at
1.5 mm, and holds out one 512x512x300 volume at 0.8x0.8x1.5 mm; the rest of the build is the same.

nnunetv2 is a test dependency only (``Testing/requirements-nnunet.txt``). Importing this module does not import it:
each function sets nnU-Net's environment variables (``nnUNet_raw`` ...) before importing nnunetv2 and restores the
environment afterwards.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing.pool
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "Hippocampus"
HELD_OUT_CASES = ("hippocampus_023", "hippocampus_024", "hippocampus_025")
FILE_ENDING = ".nii.gz"

# Anisotropic variant: the spacing of SimpleITK's first axis (x; the last array axis), per case; the other two stay
# 1 mm (training) or differ a little (held-out cases), so that prediction resamples, with nnU-Net's separate-z rule.
_ANISO_TRAIN_SPACING = (3.6, 4.0, 4.4)
_ANISO_TEST_SPACINGS = ((5.0, 0.9, 1.1), (3.0, 1.0, 1.0), (4.0, 1.1, 0.9))


@dataclass(frozen=True)
class NnunetVariant:
    """What to build: nnU-Net's defaults (3d_fullres, fold 0, nnUNetTrainer, nnUNetPlans) unless a field says
    otherwise, trained briefly (``iterations`` x ``epochs``)."""

    dataset: str = "hippocampus"  # or "ct_phantom": the synthetic CT-like many-label dataset (CT, one channel only)
    configuration: str = "3d_fullres"  # or "2d"
    folds: tuple[int, ...] = (0,)
    mirroring: bool = True  # False: nnUNetTrainerNoMirroring (no mirroring axes in the checkpoint)
    modality: str = "MRI"  # "MRI": ZScoreNormalization; "CT": int16 HU-like images, CTNormalization
    anisotropic: bool = False  # x spacing about 4 mm: anisotropic target spacing, a transpose, separate-z resampling
    residual_encoder: bool = False  # nnUNetPlannerResEncM: ResidualEncoderUNet in plans.json
    regions: bool = False  # region-based labels (sigmoid outputs, regions_class_order)
    channels: int = 1  # 2 adds a second channel named "rescale_to_0_1" (RescaleTo01Normalization)
    base_features: int = 32  # the planner's UNet_base_num_features (nnU-Net's 32; fewer trains faster on a CPU)
    gpu_memory_target: float = 8.0  # the planner's gpu_memory_target_in_gb (nnU-Net's 8): its patch and batch budget
    target_spacing: tuple[float, float, float] | None = None  # the planner's overwrite_target_spacing, (z, y, x) mm
    n_splits: int = 5  # cross-validation folds of nnU-Net's split (splits_final.json)
    iterations: int = 40  # training iterations per epoch
    epochs: int = 1
    initial_lr: float = 0.03  # the trainer's SGD learning rate: 3x nnU-Net's 0.01, to learn in a few dozen steps
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in ("hippocampus", "ct_phantom"):
            raise ValueError(f"dataset must be 'hippocampus' or 'ct_phantom', got {self.dataset!r}")
        if self.dataset == "ct_phantom" and (
            self.modality != "CT" or self.anisotropic or self.regions or self.channels != 1
        ):
            raise ValueError("the CT phantom has one CT channel, isotropic spacing and plain labels")

    @property
    def dataset_id(self) -> int:
        """Distinct per data variant, so that two variants' folders never share a dataset name."""
        if self.dataset == "ct_phantom":
            return 930
        return 900 + (self.modality == "CT") + 2 * self.anisotropic + 4 * self.regions + 8 * (self.channels - 1)

    @property
    def dataset_name(self) -> str:
        if self.dataset == "ct_phantom":
            return f"Dataset{self.dataset_id:03d}_CTPhantom"
        suffix = "".join(
            part
            for part, on in (
                ("CT", self.modality == "CT"),
                ("Aniso", self.anisotropic),
                ("Regions", self.regions),
                (f"{self.channels}ch", self.channels > 1),
            )
            if on
        )
        return f"Dataset{self.dataset_id:03d}_Hippocampus{suffix}"

    @property
    def trainer_name(self) -> str:
        return "nnUNetTrainer" if self.mirroring else "nnUNetTrainerNoMirroring"

    @property
    def plans_name(self) -> str:
        """The planner's own plans name, with ``_w<features>`` and ``_<target>GB`` where the width or the memory
        target is not nnU-Net's default."""
        name = "nnUNetResEncUNetMPlans" if self.residual_encoder else "nnUNetPlans"
        name += "" if self.base_features == 32 else f"_w{self.base_features}"
        return name + ("" if self.gpu_memory_target == 8.0 else f"_{self.gpu_memory_target:g}GB")


# The test suite's fast representative: 3d_fullres, fold 0, nnUNetTrainer (mirroring), nnU-Net's default planner and
# width, planned at 2 mm (nnU-Net's overwrite_target_spacing) so that a training step costs little and the 1 mm
# held-out images are resampled to the plans' spacing and back, as with TotalSegmentator's 1.5 mm and 3 mm models.
FAST_VARIANT = NnunetVariant(target_spacing=(2.0, 2.0, 2.0))

# The benchmark's large many-label model (part 2): the synthetic CT phantom (15 structures, 1.5 mm isotropic),
# nnUNetTrainerNoMirroring as TotalSegmentator's models, nnU-Net's default planner at half its width and less than a
# third of its memory target, which gives a 112^3 patch (nnU-Net's defaults give 128^3 for this dataset): a network
# that trains on a CPU in about 20 s per iteration (2 patches), 120 iterations for most structures to be learnt.
CT_PHANTOM_VARIANT = NnunetVariant(
    dataset="ct_phantom", modality="CT", mirroring=False, base_features=16, gpu_memory_target=2.5, iterations=120
)

# The variants for the benchmark and the slower tests, by name (build times on 2 shared cores in the report).
VARIANTS: dict[str, NnunetVariant] = {
    "fast": FAST_VARIANT,
    "3d_fullres": NnunetVariant(),  # nnU-Net's own plans for the 1 mm cases: patch 40x48x40
    "2d": NnunetVariant(configuration="2d", iterations=80),
    "two_folds": replace(FAST_VARIANT, folds=(0, 1)),
    "no_mirroring": replace(FAST_VARIANT, mirroring=False),
    "ct": replace(FAST_VARIANT, modality="CT"),
    "anisotropic": NnunetVariant(anisotropic=True, target_spacing=(2.0, 2.0, 8.0), iterations=120),  # 8x2x2 mm
    "resenc": replace(FAST_VARIANT, residual_encoder=True, iterations=120),  # batch 8, and slower to learn
    "regions": replace(FAST_VARIANT, regions=True),
    "two_channels": replace(FAST_VARIANT, channels=2, iterations=60),
}


@dataclass(frozen=True)
class NnunetResults:
    """A built nnU-Net v2 results folder and the held-out cases to predict."""

    variant: NnunetVariant
    root: Path  # holds nnUNet_raw/, nnUNet_preprocessed/, nnUNet_results/ and build.json
    model_folder: Path  # nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>
    case_ids: tuple[str, ...]  # held-out cases
    test_images: tuple[tuple[Path, ...], ...]  # per held-out case, its channel files (<case>_0000.nii.gz, ...)
    test_labels: tuple[Path, ...]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per build step (of the build that made it)

    def checkpoint(self, fold: int, name: str = "checkpoint_final.pth") -> Path:
        return self.model_folder / f"fold_{fold}" / name


@dataclass(frozen=True)
class NnunetPrediction:
    """nnUNetPredictor's output for one case, as it wrote it and read back."""

    case_id: str
    segmentation: np.ndarray  # label map in SimpleITK array order (z, y, x): the input image's grid
    probabilities: np.ndarray  # (classes or regions, z, y, x), float32, as nnU-Net saves them (.npz)
    segmentation_file: Path
    probabilities_file: Path


def nnunet_available() -> str | None:
    """None when nnunetv2 and the packages its used code paths import are importable, else the reason."""
    try:
        with nnunet_environment():  # nnunetv2 reads nnUNet_def_n_proc when first imported
            import nnunetv2.inference.predict_from_raw_data
            import nnunetv2.training.nnUNetTrainer.nnUNetTrainer  # noqa: F401
    except Exception as error:  # any failure to import is a reason to skip, said as it is
        return f"nnunetv2 is not importable ({type(error).__name__}: {error}); see Testing/requirements-nnunet.txt"
    return None


@contextlib.contextmanager
def nnunet_environment(
    root: Path | None = None, *, data_augmentation_processes: int = 1, threads: int = 1
) -> Iterator[None]:
    """nnU-Net's environment variables for a build under ``root`` (or none set) and ``threads`` torch threads, all
    restored on exit.

    ``nnUNet_n_proc_DA`` = 0 makes the trainer load batches in its own process (SingleThreadedAugmenter); the planner
    calls ``torch.set_num_threads`` with it, so it is 0 only around training. ``nnUNet_def_n_proc`` (read once, when
    nnunetv2 is first imported) caps nnunetv2's own torch thread settings. One thread by default: on a shared 2-core
    machine two OpenMP threads run several times slower than one.
    """
    import torch

    values = {
        "nnUNet_n_proc_DA": str(data_augmentation_processes),
        "nnUNet_def_n_proc": str(threads),
        "nnUNet_compile": "false",
    }
    if root is not None:
        values |= {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    previous = {name: os.environ.get(name) for name in values}
    previous_threads = torch.get_num_threads()
    os.environ.update(values)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------------------------------------------------
# the raw dataset


def _sample_cases() -> list[str]:
    return sorted(path.name.removesuffix(FILE_ENDING) for path in (SAMPLE_DATA / "labelsTr").glob("*" + FILE_ENDING))


def _ct_like(image: np.ndarray) -> np.ndarray:
    """int16 HU-like intensities from an MRI crop: soft tissue in about -100..400 HU, and a slab of air (-1000)."""
    scale = float(np.percentile(image, 99.5)) or 1.0
    hu = np.clip(image / scale * 400.0 - 100.0, -150.0, 450.0)
    hu[..., :3] = -1000.0  # air along one border, as around a body in CT
    return np.round(hu).astype(np.int16)


def _channels(image: np.ndarray, variant: NnunetVariant) -> list[np.ndarray]:
    first = _ct_like(image) if variant.modality == "CT" else image.astype(np.float32)
    if variant.channels == 1:
        return [first]
    if variant.channels == 2:
        return [first, np.sqrt(np.maximum(image, 0.0)).astype(np.float32)]
    raise ValueError(f"channels must be 1 or 2, got {variant.channels}")


def _spacing(case_index: int, held_out_index: int | None, variant: NnunetVariant) -> tuple[float, float, float]:
    if not variant.anisotropic:
        return (1.0, 1.0, 1.0)
    if held_out_index is not None:
        return _ANISO_TEST_SPACINGS[held_out_index % len(_ANISO_TEST_SPACINGS)]
    return (_ANISO_TRAIN_SPACING[case_index % len(_ANISO_TRAIN_SPACING)], 1.0, 1.0)


def _write_like(array: np.ndarray, reference: sitk.Image, spacing: Sequence[float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(reference.GetOrigin())
    image.SetDirection(reference.GetDirection())
    image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path), useCompression=True)


def make_raw_dataset(raw_root: Path, variant: NnunetVariant) -> Path:
    """Write the variant's nnU-Net raw dataset (imagesTr/labelsTr of the training cases, imagesTs/labelsTs of the
    held-out ones, dataset.json) under ``raw_root`` and return its folder."""
    if variant.dataset == "ct_phantom":
        return make_ct_phantom_dataset(raw_root, variant)
    folder = raw_root / variant.dataset_name
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    training = [case for case in _sample_cases() if case not in HELD_OUT_CASES]
    for index, case in enumerate(training + list(HELD_OUT_CASES)):
        held_out = HELD_OUT_CASES.index(case) if case in HELD_OUT_CASES else None
        images, labels = ("imagesTs", "labelsTs") if held_out is not None else ("imagesTr", "labelsTr")
        reference = sitk.ReadImage(str(SAMPLE_DATA / "imagesTr" / f"{case}{FILE_ENDING}"))
        label = sitk.ReadImage(str(SAMPLE_DATA / "labelsTr" / f"{case}{FILE_ENDING}"))
        spacing = _spacing(index, held_out, variant)
        for channel, array in enumerate(_channels(sitk.GetArrayFromImage(reference), variant)):
            _write_like(array, reference, spacing, folder / images / f"{case}_{channel:04d}{FILE_ENDING}")
        _write_like(
            sitk.GetArrayFromImage(label).astype(np.uint8), reference, spacing, folder / labels / f"{case}{FILE_ENDING}"
        )

    if variant.regions:  # nnU-Net's region-based format: nested regions, painted in regions_class_order
        labels: dict[str, Any] = {"background": 0, "hippocampus": [1, 2], "posterior": [2]}
    else:
        labels = {"background": 0, "anterior": 1, "posterior": 2}
    channel_names = {"0": variant.modality} | ({"1": "rescale_to_0_1"} if variant.channels == 2 else {})
    dataset_json: dict[str, Any] = {
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": len(training),
        "file_ending": FILE_ENDING,
        "name": variant.dataset_name,
        "description": "Hippocampus sample cases (MSD Task04, CC-BY-SA 4.0) made into a tiny nnU-Net v2 dataset",
        "licence": "CC-BY-SA 4.0",
    }
    if variant.regions:
        dataset_json["regions_class_order"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# the synthetic CT-like many-label dataset ("ct_phantom")

#: The phantom's training cases: a torso scanned at 1.5 mm isotropic, (z, y, x) voxels, each case a different patient
#: (sizes, organ positions) and a different z range. The held-out case is a larger patient on a 512 x 512 x 300 grid
#: at 0.8 x 0.8 x 1.5 mm (finer in-plane than the model's 1.5 mm, as a clinical CT under a 1.5 mm model).
PHANTOM_TRAINING_CASES = 8
PHANTOM_TRAINING_SHAPE = (240, 224, 256)
PHANTOM_TRAINING_SPACING = (1.5, 1.5, 1.5)
PHANTOM_TEST_CASE = "phantom_large"
PHANTOM_TEST_SHAPE = (300, 512, 512)
PHANTOM_TEST_SPACING = (1.5, 0.8, 0.8)
PHANTOM_TEST_SCALE = 1.1  # the held-out patient is 10 % larger than the average training patient
_PHANTOM_NOISE_HU = 15.0
_PHANTOM_BLUR_MM = 0.8  # partial volume at the edges: a Gaussian of this sigma before the noise


@dataclass(frozen=True)
class _Blob:
    """One primitive of a structure, in mm from the body's centre: x to the patient's left, y posterior, z cranial.
    An ellipsoid, or an elliptic cylinder along z (``radii[2]``: its half height), rotated about z by ``angle``."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float = 0.0  # degrees
    cylinder: bool = False


def _vertebrae() -> tuple[_Blob, ...]:
    """Vertebral bodies every 28 mm along the whole scanned length, discs (soft tissue) between them."""
    return tuple(_Blob((0.0, 72.0, z), (20.0, 17.0, 11.0), cylinder=True) for z in np.arange(-224.0, 225.0, 28.0))


#: Ascending, descending and transverse colon: one label of three parts.
_COLON = (
    _Blob((-100.0, 0.0, -80.0), (22.0, 22.0, 50.0)),
    _Blob((105.0, 10.0, -80.0), (20.0, 20.0, 50.0)),
    _Blob((0.0, -70.0, -40.0), (95.0, 20.0, 20.0)),
)

#: (name, HU, blobs) of each labelled structure, label 1, 2, ... in this order.
#: Distinct mean intensities (at least 60 HU apart, noise 15 HU) and shapes, so that a briefly trained network tells
#: them apart; the paired organs (lungs, kidneys) differ in intensity as well as side. The order is also the drawing
#: order: the large organs first, the small ones over them.
PHANTOM_STRUCTURES: tuple[tuple[str, float, tuple[_Blob, ...]], ...] = (
    ("lung_left", -850.0, (_Blob((75.0, 0.0, 130.0), (60.0, 80.0, 90.0)),)),
    ("lung_right", -720.0, (_Blob((-75.0, 0.0, 130.0), (65.0, 80.0, 95.0)),)),
    ("liver", 60.0, (_Blob((-60.0, -10.0, 30.0), (85.0, 70.0, 60.0), angle=-15.0),)),
    ("spleen", 130.0, (_Blob((95.0, 35.0, 40.0), (30.0, 45.0, 50.0), angle=20.0),)),
    ("stomach", -450.0, (_Blob((55.0, -30.0, 40.0), (45.0, 35.0, 40.0), angle=25.0),)),
    ("colon", -250.0, _COLON),
    ("gallbladder", -120.0, (_Blob((-45.0, -55.0, 0.0), (15.0, 15.0, 30.0), angle=-20.0),)),
    ("pancreas", 200.0, (_Blob((10.0, 10.0, 0.0), (70.0, 12.0, 14.0), angle=-10.0),)),
    ("kidney_left", 270.0, (_Blob((70.0, 55.0, -20.0), (28.0, 25.0, 50.0), angle=20.0),)),
    ("kidney_right", 340.0, (_Blob((-70.0, 55.0, -30.0), (28.0, 25.0, 50.0), angle=-20.0),)),
    ("inferior_vena_cava", 410.0, (_Blob((-25.0, 35.0, -25.0), (14.0, 11.0, 115.0), cylinder=True),)),
    ("aorta", 480.0, (_Blob((12.0, 35.0, 15.0), (12.0, 12.0, 155.0), cylinder=True),)),
    ("heart", 560.0, (_Blob((20.0, -30.0, 110.0), (55.0, 45.0, 50.0), angle=30.0),)),
    ("urinary_bladder", 700.0, (_Blob((0.0, -30.0, -175.0), (45.0, 35.0, 30.0)),)),
    ("vertebrae", 900.0, _vertebrae()),
)
_BODY = ((165.0, 115.0, -90.0), (152.0, 102.0, 30.0))  # (semi-axis x, y, HU): fat, then muscle inside it
_AIR_HU = -1000.0


def render_ct_phantom(
    shape: Sequence[int], spacing: Sequence[float], seed: int, scale: float = 1.0, z_shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like torso on a grid of ``shape`` (z, y, x) voxels of ``spacing`` (z, y, x) mm: (int16 HU, uint8 labels).

    The body is an elliptic cylinder (fat around muscle, about 0 HU) in air (-1000 HU) along the whole grid, centred
    in-plane; the anatomy's origin is ``z_shift`` mm from the grid's centre along z. ``seed`` draws the patient:
    sizes (``scale`` x 0.92-1.08 per axis), each structure's position (+- 5 mm), size (0.9-1.1) and angle (+- 8
    degrees), then the image is blurred (partial volume) and gets Gaussian noise.
    """
    rng = np.random.default_rng(seed)
    body_scale = scale * rng.uniform(0.92, 1.08, size=3)  # (x, y, z)
    offset = rng.normal(0.0, 4.0, size=2)  # the body's in-plane position, mm
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    z, y, x = axes[0] - z_shift, axes[1] - offset[1], axes[2] - offset[0]
    hu = np.full(shape, _AIR_HU, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    for semi_x, semi_y, value in _BODY:
        inside = (x[None, :] / (semi_x * body_scale[0])) ** 2 + (y[:, None] / (semi_y * body_scale[1])) ** 2 <= 1
        hu[:, inside] = value
    for label, (_name, value, blobs) in enumerate(PHANTOM_STRUCTURES, start=1):
        shift, size, turn = rng.normal(0.0, 5.0, size=3), rng.uniform(0.9, 1.1, size=3), rng.uniform(-8.0, 8.0)
        for blob in blobs:  # a structure's parts move together
            center = (np.asarray(blob.center) + shift) * body_scale
            radii = np.asarray(blob.radii) * size * body_scale
            _draw(hu, labels, (z, y, x), center, radii, np.deg2rad(blob.angle + turn), blob.cylinder, value, label)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    hu = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, _PHANTOM_BLUR_MM))
    del image
    hu += rng.standard_normal(size=hu.shape, dtype=np.float32) * np.float32(_PHANTOM_NOISE_HU)
    return np.round(hu).astype(np.int16), labels


def _draw(
    hu: np.ndarray,
    labels: np.ndarray,
    coordinates: tuple[np.ndarray, np.ndarray, np.ndarray],
    center: np.ndarray,
    radii: np.ndarray,
    angle: float,
    cylinder: bool,
    value: float,
    label: int,
) -> None:
    """Paint one blob (``center``, ``radii`` (x, y, z) mm) into ``hu`` and ``labels``, within its bounding box."""
    z, y, x = coordinates
    reach = max(radii[0], radii[1])
    box = tuple(
        slice(int(np.searchsorted(axis, c - r)), int(np.searchsorted(axis, c + r, side="right")))
        for axis, c, r in ((z, center[2], radii[2]), (y, center[1], reach), (x, center[0], reach))
    )
    if any(part.start >= part.stop for part in box):
        return
    dz, dy, dx = z[box[0]] - center[2], y[box[1]] - center[1], x[box[2]] - center[0]
    u = np.cos(angle) * dx[None, :] + np.sin(angle) * dy[:, None]
    v = -np.sin(angle) * dx[None, :] + np.cos(angle) * dy[:, None]
    in_plane = (u / radii[0]) ** 2 + (v / radii[1]) ** 2
    along = (dz / radii[2]) ** 2
    if cylinder:
        inside = (in_plane[None] <= 1) & (along[:, None, None] <= 1)
    else:
        inside = in_plane[None] + along[:, None, None] <= 1
    hu[box][inside] = value
    labels[box][inside] = label


def make_ct_phantom_dataset(raw_root: Path, variant: NnunetVariant) -> Path:
    """Write the phantom's nnU-Net raw dataset under ``raw_root``: ``PHANTOM_TRAINING_CASES`` training cases at
    1.5 mm (each a different z range of a different patient) and the large held-out case; return its folder."""
    folder = raw_root / variant.dataset_name
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    z_range = np.linspace(-60.0, 60.0, PHANTOM_TRAINING_CASES)
    cases = [
        (f"phantom_{index:03d}", "Tr", PHANTOM_TRAINING_SHAPE, PHANTOM_TRAINING_SPACING, 1.0, float(z_range[index]))
        for index in range(PHANTOM_TRAINING_CASES)
    ]
    cases.append((PHANTOM_TEST_CASE, "Ts", PHANTOM_TEST_SHAPE, PHANTOM_TEST_SPACING, PHANTOM_TEST_SCALE, 0.0))
    for index, (case, part, shape, spacing, scale, z_shift) in enumerate(cases):
        hu, labels = render_ct_phantom(shape, spacing, seed=variant.seed * 1000 + index, scale=scale, z_shift=z_shift)
        _write_phantom(hu, spacing, folder / f"images{part}" / f"{case}_0000{FILE_ENDING}")
        _write_phantom(labels, spacing, folder / f"labels{part}" / f"{case}{FILE_ENDING}")
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0} | {name: label for label, (name, _, _) in enumerate(PHANTOM_STRUCTURES, start=1)},
        "numTraining": PHANTOM_TRAINING_CASES,
        "file_ending": FILE_ENDING,
        "name": variant.dataset_name,
        "description": "Synthetic CT-like torsos (ellipsoids and cylinders of distinct HU, blurred, noisy), "
        f"{len(PHANTOM_STRUCTURES)} labelled structures",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def _write_phantom(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK's (x, y, z)
    sitk.WriteImage(image, str(path), useCompression=True)


# ---------------------------------------------------------------------------------------------------------------------
# planning, preprocessing and training, with nnunetv2's own classes


class _ThreadPoolContext:
    """Stands in for ``multiprocessing.get_context("spawn")`` in nnunetv2's fingerprint extractor and preprocessor:
    their worker pools become thread pools in this process. Spawned workers would re-import the caller's main module
    (failing in scripts without a ``__main__`` guard) and nnunetv2 with torch, seconds per pool."""

    Pool = multiprocessing.pool.ThreadPool

    @staticmethod
    def get_context(method: str | None = None) -> type[_ThreadPoolContext]:
        return _ThreadPoolContext


@contextlib.contextmanager
def _pools_in_this_process(*modules: Any) -> Iterator[None]:
    originals = [module.multiprocessing for module in modules]
    for module in modules:
        module.multiprocessing = _ThreadPoolContext
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.multiprocessing = original


def _plan_and_preprocess(variant: NnunetVariant) -> None:
    import nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor as fingerprint_module
    import nnunetv2.preprocessing.preprocessors.default_preprocessor as preprocessor_module
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncM,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with _pools_in_this_process(fingerprint_module, preprocessor_module):
        extractor = DatasetFingerprintExtractor(variant.dataset_id, num_processes=1, verbose=False)
        extractor.show_progress_bar = False
        extractor.run(overwrite_existing=True)
        planner_class = nnUNetPlannerResEncM if variant.residual_encoder else ExperimentPlanner
        target_spacing = None if variant.target_spacing is None else [float(s) for s in variant.target_spacing]
        planner = planner_class(
            variant.dataset_id,
            gpu_memory_target_in_gb=variant.gpu_memory_target,
            plans_name=variant.plans_name,
            overwrite_target_spacing=target_spacing,
        )
        planner.UNet_base_num_features = variant.base_features
        plans = planner.plan_experiment()
        assert planner.plans_identifier == variant.plans_name, planner.plans_identifier
        configuration = PlansManager(plans).get_configuration(variant.configuration)
        preprocessor = configuration.preprocessor_class(verbose=False)
        preprocessor.show_progress_bar = False
        preprocessor.run(variant.dataset_id, variant.configuration, variant.plans_name, num_processes=1)


def _cases(raw: Path, part: str) -> tuple[str, ...]:
    """The case ids of a raw dataset's ``labelsTr`` or ``labelsTs``, sorted."""
    return tuple(sorted(path.name.removesuffix(FILE_ENDING) for path in (raw / part).glob("*" + FILE_ENDING)))


def _write_splits(preprocessed: Path, raw: Path, variant: NnunetVariant) -> None:
    """nnU-Net's own split (generate_crossval_split, seed 12345) with ``n_splits`` folds, as the trainer would make."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    training = list(_cases(raw, "labelsTr"))
    splits = generate_crossval_split(training, seed=12345, n_splits=variant.n_splits)
    (preprocessed / "splits_final.json").write_text(json.dumps(splits, indent=2))


def _trainer_class(name: str) -> type:
    """The trainer class by name, imported directly: nnunetv2's own search imports every variant, some need timm."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation import nnUNetTrainerNoMirroring as no_mirroring
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs_NoMirroring as epochs

    known = {"nnUNetTrainer": nnUNetTrainer} | {
        cls.__name__: cls
        for module in (no_mirroring, epochs)
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, nnUNetTrainer)
    }
    if name not in known:
        raise KeyError(f"trainer {name!r} is not one of the trainers these fixtures know: {sorted(known)}")
    return known[name]


def _train_fold(variant: NnunetVariant, preprocessed: Path, fold: int) -> None:
    import torch

    plans = json.loads((preprocessed / f"{variant.plans_name}.json").read_text())
    plans["continue_training"] = False  # as nnunetv2.run.run_training.get_trainer_from_args sets it
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = _trainer_class(variant.trainer_name)(
        plans=plans,
        configuration=variant.configuration,
        fold=fold,
        dataset_json=dataset_json,
        device=torch.device("cpu"),
    )
    trainer.num_iterations_per_epoch = variant.iterations
    trainer.num_val_iterations_per_epoch = 1
    trainer.num_epochs = variant.epochs
    trainer.initial_lr = variant.initial_lr
    random.seed(variant.seed + fold)
    np.random.seed(variant.seed + fold)  # noqa: NPY002 - nnU-Net's loader and augmentation draw from it
    torch.manual_seed(variant.seed + fold)
    trainer.run_training()


def build_nnunet_results(root: Path, variant: NnunetVariant | None = None) -> NnunetResults:
    """Build (or reuse, when ``root/build.json`` records the same variant) a real nnU-Net v2 results folder.

    ``root`` gets ``nnUNet_raw/``, ``nnUNet_preprocessed/``, ``nnUNet_results/`` and ``build.json``; the model folder
    is ``root/nnUNet_results/<DatasetXXX_Name>/<Trainer>__<Plans>__<configuration>`` with one ``fold_K`` per fold.
    """
    variant = variant or NnunetVariant()
    root = Path(root)
    record = root / "build.json"
    model_folder = (
        root
        / "nnUNet_results"
        / variant.dataset_name
        / f"{variant.trainer_name}__{variant.plans_name}__{variant.configuration}"
    )
    raw = root / "nnUNet_raw" / variant.dataset_name
    if record.is_file():
        built = json.loads(record.read_text())
        if built["variant"] == _jsonable(variant) and all(
            (model_folder / f"fold_{fold}" / "checkpoint_final.pth").is_file() for fold in variant.folds
        ):
            return _results(root, variant, model_folder, raw, built["timings"])
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        shutil.rmtree(root / sub, ignore_errors=True)
    record.unlink(missing_ok=True)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    make_raw_dataset(root / "nnUNet_raw", variant)
    timings["raw_dataset"] = time.perf_counter() - start
    with nnunet_environment(root):
        step = time.perf_counter()
        _plan_and_preprocess(variant)
        timings["plan_and_preprocess"] = time.perf_counter() - step
        preprocessed = root / "nnUNet_preprocessed" / variant.dataset_name
        _write_splits(preprocessed, raw, variant)
    with nnunet_environment(root, data_augmentation_processes=0):
        for fold in variant.folds:
            step = time.perf_counter()
            _train_fold(variant, preprocessed, fold)
            timings[f"train_fold_{fold}"] = time.perf_counter() - step
    timings["total"] = time.perf_counter() - start
    record.write_text(json.dumps({"variant": _jsonable(variant), "timings": timings}, indent=2))
    return _results(root, variant, model_folder, raw, timings)


def _jsonable(variant: NnunetVariant) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(variant)))


def _results(root: Path, variant: NnunetVariant, model_folder: Path, raw: Path, timings: dict) -> NnunetResults:
    cases = _cases(raw, "labelsTs")
    images = tuple(
        tuple(raw / "imagesTs" / f"{case}_{channel:04d}{FILE_ENDING}" for channel in range(variant.channels))
        for case in cases
    )
    labels = tuple(raw / "labelsTs" / f"{case}{FILE_ENDING}" for case in cases)
    return NnunetResults(variant, root, model_folder, cases, images, labels, dict(timings))


# ---------------------------------------------------------------------------------------------------------------------
# nnunetv2's own prediction


def _case_id(first_channel: Path) -> str:
    name = first_channel.name.removesuffix(FILE_ENDING)
    return name[:-5] if len(name) > 5 and name[-5] == "_" and name[-4:].isdigit() else name


def nnunet_predict(
    model_folder: Path,
    images: Sequence[Path | Sequence[Path]],
    output_folder: Path,
    folds: Sequence[int | str] = (0,),
    checkpoint_name: str = "checkpoint_final.pth",
    mirroring: bool | None = None,
) -> list[NnunetPrediction]:
    """Predict ``images`` (per case a file, or its channel files in order) with nnunetv2's own ``nnUNetPredictor``
    (:func:`nnunet_predictor`), probabilities saved, sequentially in this process (``predict_from_files_sequential``).
    Writes ``<case>.nii.gz`` (the segmentation), ``<case>.npz`` (probabilities) and ``<case>.pkl`` (nnU-Net's
    properties) into ``output_folder``.
    """
    cases = [[Path(image)] if isinstance(image, (str, Path)) else [Path(p) for p in image] for image in images]
    case_ids = [_case_id(files[0]) for files in cases]
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    with nnunet_predictor(model_folder, folds, checkpoint_name, mirroring) as predictor:
        predictor.predict_from_files_sequential(
            [[str(path) for path in files] for files in cases],
            [str(output_folder / case) for case in case_ids],
            save_probabilities=True,
            overwrite=True,
        )
    results = []
    for case in case_ids:
        segmentation_file = output_folder / f"{case}{FILE_ENDING}"
        probabilities_file = output_folder / f"{case}.npz"
        with np.load(probabilities_file, allow_pickle=False) as saved:
            probabilities = saved["probabilities"]
        segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(segmentation_file)))
        results.append(NnunetPrediction(case, segmentation, probabilities, segmentation_file, probabilities_file))
    return results


@contextlib.contextmanager
def nnunet_predictor(
    model_folder: Path,
    folds: Sequence[int | str] = (0,),
    checkpoint_name: str = "checkpoint_final.pth",
    mirroring: bool | None = None,
    threads: int = 1,
) -> Iterator[Any]:
    """nnunetv2's ``nnUNetPredictor`` for ``model_folder``, loaded, inside :func:`nnunet_environment` with ``threads``.

    As ``nnUNetv2_predict`` on a CPU: Gaussian sliding window with step 0.5, the folds' logits averaged.
    ``mirroring``: None mirrors over the axes the checkpoint allows (none for NoMirroring trainers), False never
    mirrors, True mirrors over the checkpoint's axes or, where it allows none, over all spatial axes. nnunetv2 caps its
    torch threads at ``nnUNet_def_n_proc``, which it reads when first imported: ``threads`` holds only where this is
    the process's first import of nnunetv2 (elsewhere, what the first import saw).
    """
    import torch

    with nnunet_environment(threads=threads):
        import nnunetv2.inference.predict_from_raw_data as predict_module

        predictor = predict_module.nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=mirroring is not False,
            perform_everything_on_device=False,
            device=torch.device("cpu"),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        folds = [fold if fold == "all" else int(fold) for fold in folds]
        with _trainers_found_directly(predict_module):
            predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint_name)
        if mirroring and not predictor.allowed_mirroring_axes:
            predictor.allowed_mirroring_axes = tuple(range(len(predictor.configuration_manager.patch_size)))
        yield predictor


@contextlib.contextmanager
def _trainers_found_directly(predict_module: Any) -> Iterator[None]:
    """nnUNetPredictor looks the checkpoint's trainer up by importing every trainer variant, and some variants import
    timm (not installed: it pulls torchvision). Known trainers are found by a direct import instead."""
    original = predict_module.recursive_find_trainer_class_by_name

    def find(name: str) -> type:
        try:
            return _trainer_class(name)
        except KeyError:
            return original(name)

    predict_module.recursive_find_trainer_class_by_name = find
    try:
        yield
    finally:
        predict_module.recursive_find_trainer_class_by_name = original


# ---------------------------------------------------------------------------------------------------------------------
# what a checkpoint's pickle needs, read without unpickling it


def checkpoint_globals(checkpoint: Path) -> set[str]:
    """The ``module.name`` globals that ``checkpoint``'s pickle (``torch.save``'s zip, ``*/data.pkl``) would import.

    Read with ``pickletools`` (opcodes only): nothing is unpickled. GLOBAL carries the names itself; STACK_GLOBAL takes
    the two strings pushed before it (memoised strings fetched again with BINGET/LONG_BINGET are followed).
    """
    import pickletools
    import zipfile

    with zipfile.ZipFile(checkpoint) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        data = archive.read(name)
    found: set[str] = set()
    memo: dict[int, Any] = {}
    strings: list[Any] = []  # recent pushed values, enough to resolve STACK_GLOBAL
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, _, attribute = str(arg).partition(" ")
            found.add(f"{module}.{attribute}")
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            strings.append(arg)
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(arg))
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = strings[-1] if strings else None
        else:
            strings.append(None)
    return found
