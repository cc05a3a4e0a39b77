"""The nnU-Net v2 fixture is a real results folder, and nnunetv2's own predictor runs on it."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch
from nnunet_support import NnunetResults, checkpoint_globals, nnunet_predict

# numpy scalars (the EMA Dice, logged losses) pickle through this function: numpy._core.multiarray.scalar with
# numpy 2, numpy.core.multiarray.scalar in checkpoints written with numpy 1.
NUMPY_SCALAR = np.float32(0).__reduce__()[0]

# What nnunetv2 2.8's checkpoints pickle (read with pickletools, never unpickled).
EXPECTED_GLOBALS = {
    "_codecs.encode",
    "collections.OrderedDict",
    f"{NUMPY_SCALAR.__module__}.{NUMPY_SCALAR.__name__}",
    "numpy.dtype",
    "torch.FloatStorage",
    "torch._utils._rebuild_tensor_v2",
    "torch.device",
}


def test_results_folder_has_the_nnunet_layout(nnunet_results: NnunetResults) -> None:
    folder = nnunet_results.model_folder
    assert folder.name == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert folder.parent.name == "Dataset900_Hippocampus"
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json", "fold_0/checkpoint_final.pth"):
        assert (folder / name).is_file(), name
    plans = json.loads((folder / "plans.json").read_text())
    assert plans["plans_name"] == "nnUNetPlans"
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["spacing"] == [2.0, 2.0, 2.0]
    assert configuration["architecture"]["network_class_name"].endswith(".PlainConvUNet")
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["file_ending"] == ".nii.gz"
    assert dataset["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert checkpoint_globals(nnunet_results.checkpoint(0)) == EXPECTED_GLOBALS


def test_checkpoint_loads_with_weights_only_and_the_numpy_allow_list(nnunet_results: NnunetResults) -> None:
    # torch allows the other globals itself; a numpy dtype also needs its class (float32 is the only one written)
    with torch.serialization.safe_globals([NUMPY_SCALAR, np.dtype, type(np.dtype(np.float32))]):
        checkpoint = torch.load(nnunet_results.checkpoint(0), map_location="cpu", weights_only=True)
    assert checkpoint["trainer_name"] == "nnUNetTrainer"
    assert checkpoint["inference_allowed_mirroring_axes"] == (0, 1, 2)
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"
    assert "network_weights" in checkpoint


def test_nnunet_reference_prediction(nnunet_results: NnunetResults, tmp_path) -> None:
    images = nnunet_results.test_images[0]
    (prediction,) = nnunet_predict(nnunet_results.model_folder, [images], tmp_path)
    shape = sitk.GetArrayFromImage(sitk.ReadImage(str(images[0]))).shape
    assert prediction.case_id == nnunet_results.case_ids[0]
    assert prediction.segmentation.shape == shape
    assert prediction.probabilities.shape == (3, *shape)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(prediction.segmentation, prediction.probabilities.argmax(axis=0))
    assert prediction.segmentation_file.is_file() and prediction.probabilities_file.is_file()
    # the comparisons with MedSegCNN mean little on an all-background model: the fixture is trained enough
    assert set(np.unique(prediction.segmentation)) == {0, 1, 2}, "the fixture's model predicts background only"
