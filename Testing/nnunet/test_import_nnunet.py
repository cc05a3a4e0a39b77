"""Importing a real nnU-Net v2 results folder (built with nnunetv2's own planner and trainer, see
``nnunet_support``) and segmenting with it: MedSegCNN against nnunetv2's own ``nnUNetPredictor`` on held-out
cases, through the library and the CLI; and every refusal, with nothing written."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_support import assert_clean_failure, medsegcnn
from nnunet_support import VARIANTS, NnunetResults, build_nnunet_results, nnunet_available, nnunet_predict

from MedSegCNNLib.checkpoint import load_model
from MedSegCNNLib.checkpoint.model_card import Licence, read_model_card
from MedSegCNNLib.data.nnunet.plan import NnUNetPlan
from MedSegCNNLib.errors import InputError, OutputExistsError
from MedSegCNNLib.image.io import read_image
from MedSegCNNLib.inference.options import PredictOptions
from MedSegCNNLib.inference.segment import segment
from MedSegCNNLib.interop.nnunet_import import import_nnunet, model_name
from MedSegCNNLib.registry import list_models, user_models_folder

#: nnU-Net accumulates logits in float16 and MedSegCNN in float32: the label maps may differ at near-ties only.
MIN_AGREEMENT = 0.999
#: The largest probability difference allowed (measured: 4e-3 to 5e-3): nnU-Net sums the windows' logits and
#: weights in float16.
MAX_PROBABILITY_DIFFERENCE = 0.01


@pytest.fixture(scope="module")
def reference(nnunet_results: NnunetResults, tmp_path_factory: pytest.TempPathFactory) -> list:
    """nnunetv2's own predictions of the held-out cases."""
    output = tmp_path_factory.mktemp("nnunet-predictions")
    return nnunet_predict(nnunet_results.model_folder, nnunet_results.test_images, output)


@pytest.fixture(scope="module")
def imported(nnunet_results: NnunetResults, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_nnunet(nnunet_results.model_folder, tmp_path_factory.mktemp("imported") / "model")


def test_the_imported_model_segments_like_nnunet(nnunet_results: NnunetResults, imported: Path, reference) -> None:
    assert sorted(p.name for p in imported.iterdir()) == ["model.json", "model.safetensors"]  # no pickle left
    card = read_model_card(imported)
    assert isinstance(card.preprocessing, NnUNetPlan)
    assert card.preprocessing.mirror_axes == (0, 1, 2)
    names = json.loads((nnunet_results.model_folder / "dataset.json").read_text())["labels"]
    assert {label.name: label.value for label in card.labels} == names
    for images, expected in zip(nnunet_results.test_images, reference, strict=True):
        result = segment([str(p) for p in images], imported, PredictOptions(probabilities=True))
        labels, source = result.labels, read_image(images[0])
        difference = np.abs(result.probabilities.array - expected.probabilities).max()
        print(f"{expected.case_id}: max |probability difference| {difference:.2e}")
        assert difference <= MAX_PROBABILITY_DIFFERENCE
        assert labels.array.shape == expected.segmentation.shape
        assert np.allclose(labels.spacing, source.spacing) and np.allclose(labels.origin, source.origin)
        agreement = float((labels.array == expected.segmentation).mean())
        assert agreement >= MIN_AGREEMENT, f"{expected.case_id}: {agreement:.5f} of voxels agree with nnU-Net"
        assert len(np.unique(expected.segmentation)) > 1, "the reference must segment something"


def test_the_cli_imports_and_predicts(nnunet_results: NnunetResults, reference, tmp_path: Path) -> None:
    model = tmp_path / "model"
    result = medsegcnn("import", "nnunet", nnunet_results.model_folder, "--output", model)
    assert result.returncode == 0, result.stderr
    assert "Imported" in result.stdout
    output = tmp_path / "seg.nii.gz"
    result = medsegcnn("predict", "--model", model, "--input", nnunet_results.test_images[0][0], "--output", output)
    assert result.returncode == 0, result.stderr
    agreement = (read_image(output).array == reference[0].segmentation).mean()
    assert agreement >= MIN_AGREEMENT
    again = medsegcnn("import", "nnunet", nnunet_results.model_folder, "--output", model)
    assert_clean_failure(again, "exists")


def test_an_import_into_the_user_models_folder_is_in_the_registry(
    nnunet_results: NnunetResults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # this test's own user folder: no model left for others
    name = model_name(nnunet_results.model_folder)
    assert name == f"{nnunet_results.variant.dataset_name}-3d_fullres"
    user_models_folder().mkdir(parents=True)
    import_nnunet(nnunet_results.model_folder, user_models_folder() / name)
    (entry,) = [entry for entry in list_models() if entry.name == name]
    assert entry.source == "user" and entry.network == "nnunet-plain-unet"
    names = json.loads((nnunet_results.model_folder / "dataset.json").read_text())["labels"]
    assert {label.name: label.value for label in entry.labels} == {k: v for k, v in names.items() if v}
    assert all(s is not None and s > 0 for s in entry.spacing)


def test_a_region_based_model_paints_its_regions_like_nnunet(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Sigmoid outputs, one per region, painted in regions_class_order; each painted label named after its region."""
    reason = nnunet_available()
    if reason is not None:
        pytest.skip(reason)
    results = build_nnunet_results(tmp_path_factory.mktemp("nnunet-regions"), VARIANTS["regions"])
    model = import_nnunet(results.model_folder, tmp_path_factory.mktemp("imported-regions") / "model")
    card = read_model_card(model)
    assert [(label.value, label.name) for label in card.labels] == [(0, "background"), (1, "hippocampus"),
                                                                    (2, "posterior")]  # fmt: skip
    assert card.network["out_channels"] == 2 and card.preprocessing.regions_class_order == (1, 2)
    reference = nnunet_predict(results.model_folder, results.test_images, tmp_path_factory.mktemp("nnunet-seg"))
    for images, expected in zip(results.test_images, reference, strict=True):
        labels = segment([str(p) for p in images], model).labels.array
        assert (labels == expected.segmentation).mean() >= MIN_AGREEMENT
    with pytest.raises(InputError, match="overlapping regions"):
        segment([str(p) for p in results.test_images[0]], model, PredictOptions(probabilities=True))


def test_a_batch_norm_trainer_builds_its_network_as_nnunet_does(copy: Path, tmp_path: Path) -> None:
    """nnUNetTrainerBN swaps the plans' instance norm for batch norm: a checkpoint of nnunetv2's own BN network
    (random weights and statistics) gives the same logits through the imported model's network."""
    from nnunetv2.training.nnUNetTrainer.variants.network_architecture.nnUNetTrainerBN import nnUNetTrainerBN
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((copy / "plans.json").read_text()))
    torch.manual_seed(0)
    reference = nnUNetTrainerBN.build_network_architecture(
        plans, plans.get_configuration("3d_fullres"), 1, 3, enable_deep_supervision=False
    ).eval()
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor))
    _rewrite_checkpoint(
        copy, lambda c: c.update(trainer_name="nnUNetTrainerBN", network_weights=reference.state_dict())
    )
    model = load_model(import_nnunet(copy, tmp_path / "model"))[0].eval()
    x = torch.randn(1, 1, *read_model_card(tmp_path / "model").patch_size)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)


def test_the_imported_card_carries_the_licence_its_dataset_json_states(imported: Path) -> None:
    assert read_model_card(imported).licence == Licence(text="As the nnU-Net dataset.json says: CC-BY-SA 4.0")


@pytest.mark.parametrize(
    ("stated", "licence"),
    [
        ({"license": "CC-BY-4.0", "reference": "Some  et al.\n2024"}, Licence("CC-BY-4.0", "As the nnU-Net "
         "dataset.json says: CC-BY-4.0; reference: Some et al. 2024")),
        ({}, None),
    ],
)  # fmt: skip
def test_a_licence_spdx_identifier_is_kept_and_a_missing_one_is_logged_as_unknown(
    stated: dict, licence: Licence | None, copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _edit_json(copy / "dataset.json", lambda data: (data.pop("licence"), data.update(stated)))
    with caplog.at_level(logging.WARNING, logger="MedSegCNNLib.interop.nnunet_import"):
        card = read_model_card(import_nnunet(copy, tmp_path / "model"))
    assert card.licence == licence
    unknown = [record.getMessage() for record in caplog.records if "licence is unknown" in record.getMessage()]
    assert len(unknown) == (licence is None)
    assert all("check the terms of the source of these weights" in message for message in unknown)


# ----- refusals: one clear message, nothing written ---------------------------------------------------------------


@pytest.fixture
def copy(nnunet_results: NnunetResults, tmp_path: Path) -> Path:
    """A copy of the results folder (same name), to damage."""
    target = tmp_path / "results" / nnunet_results.model_folder.name
    shutil.copytree(nnunet_results.model_folder, target)
    return target


def _refused(source: Path, fragment: str, tmp_path: Path, **options) -> None:
    output = tmp_path / "out"
    with pytest.raises(InputError, match=fragment):
        import_nnunet(source, output, **options)
    assert not output.exists(), "nothing may be written"


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_folder_that_is_not_a_results_folder(tmp_path: Path, copy: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(empty, "no plans.json", tmp_path)
    (copy / "dataset.json").unlink()
    _refused(copy, "dataset.json missing", tmp_path)


def test_missing_folds(copy: Path, tmp_path: Path) -> None:
    _refused(copy, "fold\\(s\\) 3", tmp_path, folds=["0", "3"])
    for best in copy.glob("fold_*/checkpoint_best.pth"):
        best.unlink()
    _refused(copy, "no fold_K/checkpoint_best.pth", tmp_path, checkpoint="best")


def test_plans_and_dataset_that_do_not_match(copy: Path, tmp_path: Path) -> None:
    _edit_json(
        copy / "plans.json",
        lambda d: d["configurations"]["3d_fullres"]["normalization_schemes"].append("ZScoreNormalization"),
    )
    _refused(copy, "the plans normalise 2: the plans and dataset.json do not match", tmp_path)


def test_plans_without_this_configuration(copy: Path, tmp_path: Path) -> None:
    _edit_json(copy / "plans.json", lambda d: d["configurations"].pop("3d_fullres"))
    _refused(copy, "have no configuration '3d_fullres'", tmp_path)


def test_an_unsupported_configuration_or_network(copy: Path, tmp_path: Path) -> None:
    def add_lowres(plans: dict) -> None:
        plans["configurations"]["3d_lowres"] = plans["configurations"]["3d_fullres"]

    _edit_json(copy / "plans.json", add_lowres)
    lowres = copy.with_name(copy.name.replace("3d_fullres", "3d_lowres"))
    copy.rename(lowres)
    _refused(lowres, "'3d_lowres'.*not supported", tmp_path)

    def other_network(plans: dict) -> None:
        plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "my.own.TransUNet"

    lowres.rename(copy)
    _edit_json(copy / "plans.json", other_network)
    _refused(copy, "my.own.TransUNet", tmp_path)


@pytest.mark.parametrize("reader", ["SimpleITKIOWithReorient", "NibabelIOWithReorient"])
def test_a_reorienting_reader_is_reproduced(reader: str, copy: Path, nnunet_results: NnunetResults, tmp_path: Path):
    """nnU-Net's reorienting readers give the network the voxels in the closest canonical RAS order: the imported
    model does the same, and maps the labels back onto the image's own voxels."""
    _edit_json(copy / "plans.json", lambda plans: plans.update(image_reader_writer=reader))
    model = import_nnunet(copy, tmp_path / "model")
    assert read_model_card(model).preprocessing.input_orientation == "RAS"
    # a header whose voxel axes are far from RAS (x towards posterior, y towards left, z inferior): reorienting
    # permutes and flips them
    image = sitk.ReadImage(str(nnunet_results.test_images[0][0]))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    source = tmp_path / "case_0000.nii.gz"
    sitk.WriteImage(image, str(source))
    expected = nnunet_predict(copy, [source], tmp_path / "nnunet")[0].segmentation
    labels = segment(str(source), model).labels.array
    assert (labels == expected).mean() >= MIN_AGREEMENT
    plain = segment(str(source), import_nnunet(nnunet_results.model_folder, tmp_path / "plain")).labels.array
    assert (plain == expected).mean() < MIN_AGREEMENT, "the header must make reorienting matter"


def test_an_image_reader_that_is_not_reproduced_is_refused(copy: Path, tmp_path: Path) -> None:
    _edit_json(copy / "plans.json", lambda plans: plans.update(image_reader_writer="NaturalImage2DIO"))
    _refused(copy, "NaturalImage2DIO", tmp_path)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite_checkpoint(copy: Path, change) -> Path:
    path = copy / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own fixture: trusted
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_needing_other_globals_is_refused_unread(copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    _rewrite_checkpoint(copy, lambda c: c.update(extra=_RunsCode(marker)))
    _refused(copy, "system.*not among the objects nnU-Net checkpoints hold", tmp_path)
    assert not marker.exists(), "the checkpoint's code must never run"


def test_an_unknown_trainer_is_refused_by_name(copy: Path, tmp_path: Path) -> None:
    _rewrite_checkpoint(copy, lambda c: c.update(trainer_name="nnUNetTrainerMyTransformer"))
    _refused(copy, "nnUNetTrainerMyTransformer", tmp_path)


def test_a_truncated_checkpoint(copy: Path, tmp_path: Path) -> None:
    path = copy / "fold_0" / "checkpoint_final.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _refused(copy, "truncated or corrupt", tmp_path)


def test_an_existing_output_is_refused_without_overwrite(nnunet_results: NnunetResults, tmp_path: Path) -> None:
    output = tmp_path / "model"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        import_nnunet(nnunet_results.model_folder, output)
    assert sorted(p.name for p in output.iterdir()) == ["keep.txt"]
    import_nnunet(nnunet_results.model_folder, output, overwrite=True)
    assert (output / "model.json").is_file() and (output / "keep.txt").read_text() == "mine"
