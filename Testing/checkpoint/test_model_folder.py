"""Model folders: exact round trips (folder, model.json, zip), integrity checks, refusal of pickles (proved never
unpickled), atomic overwrite, state-dict import and partial loading."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
import torch
from torch import nn

from MedSegCNNLib import __version__
from MedSegCNNLib.checkpoint import (
    import_state_dict,
    load_matching_weights,
    load_model,
    read_model_card,
    save_model,
    zip_model,
)
from MedSegCNNLib.checkpoint import model_folder as model_folder_module
from MedSegCNNLib.errors import InputError, OutputExistsError, WriteError


def small_network(out_channels: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.InstanceNorm3d(4, affine=True),
        nn.LeakyReLU(0.01),
        nn.Conv3d(4, out_channels, 1),
    )


def builder(config: dict) -> nn.Module:
    return small_network(config["out_channels"], seed=12345)  # other initial weights than the saved network


CARD = {
    "network": {"name": "small", "spatial_dims": 3, "in_channels": 1, "out_channels": 2},
    "spatial_dims": 3,
    "labels": {0: {"name": "background", "color": [0, 0, 0]}, 1: {"name": "hippocampus", "color": [1, 0, 0]}},
    "channels": ["MRI"],
    "preprocessing": {
        "target_spacing": (1.0, 1.0, 1.0),
        "crop_to_nonzero": False,
        "normalization": [{"scheme": "zscore"}],
        "spatial_dims": 3,
    },
    "patch_size": (8, 8, 8),
    "training": {
        "epochs_done": 2,
        "seed": 1,
        "validation": {"mean_dice": 0.8, "best_mean_dice": float("inf"), "dice": {1: 0.75}},
    },
}


class Marker:
    """Unpickling this object creates the file ``path``: proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def saved(tmp_path) -> tuple[Path, nn.Module]:
    network = small_network()
    return save_model(tmp_path / "model", network, CARD), network


def _assert_same_network(a: nn.Module, b: nn.Module) -> None:
    for (name_a, tensor_a), (name_b, tensor_b) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert name_a == name_b
        assert torch.equal(tensor_a, tensor_b)
    image = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        assert torch.equal(a.eval()(image), b.eval()(image))


def test_round_trip_is_exact(saved):
    folder, network = saved
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    for path in (folder, folder / "model.json", str(folder)):
        loaded, card = load_model(path, network_builder=builder)
        assert not loaded.training
        _assert_same_network(loaded, network)
        assert card.network == CARD["network"]


def test_weights_are_as_readable_as_the_card(saved):
    """Both files get a new file's usual mode (0666 less the umask), so a shared models folder works."""
    folder, _ = saved
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("model.json", "model.safetensors"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_card_content(saved):
    folder, _ = saved
    card = json.loads((folder / "model.json").read_text())
    assert card["format"] == "medsegcnn-model"
    assert card["format_version"] == 1
    assert card["library_version"] == __version__
    assert datetime.fromisoformat(card["created"]).utcoffset().total_seconds() == 0
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert card["weights"] == {"file": "model.safetensors", "sha256": digest}
    assert card["labels"]["1"] == {"name": "hippocampus", "color": [1.0, 0.0, 0.0]}
    assert card["patch_size"] == [8, 8, 8]
    assert card["training"]["validation"] == {"mean_dice": 0.8, "best_mean_dice": "inf", "dice": {"1": 0.75}}
    assert read_model_card(folder).to_dict() == card


def test_card_must_be_json_data_with_a_network(tmp_path):
    with pytest.raises(InputError, match=r"card\['training'\]\['curve'\] is a Tensor"):
        save_model(tmp_path / "a", small_network(), {**CARD, "training": {"curve": torch.zeros(3)}})
    with pytest.raises(InputError, match="network"):
        save_model(tmp_path / "b", small_network(), {"labels": {}})
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


def test_changed_byte_is_detected(saved):
    folder, _ = saved
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"weights .* do not match the model card \(corrupted or replaced\?\)"):
        load_model(folder, network_builder=builder)


def test_truncated_weights_are_detected(saved):
    folder, _ = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError, match="do not match the model card"):
        load_model(folder, network_builder=builder)
    # Even with a card that agrees with the truncated file, safetensors' own checks catch it.
    card = json.loads((folder / "model.json").read_text())
    card["weights"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_model(folder, network_builder=builder)


def test_weights_must_fit_the_network(saved):
    folder, _ = saved
    with pytest.raises(InputError, match=r"wrong shape \(2\): 3.weight"):
        load_model(folder, network_builder=lambda config: small_network(3))
    with pytest.raises(InputError, match=r"missing \(2\): 4.weight, 4.bias"):
        load_model(folder, network_builder=lambda config: nn.Sequential(*small_network(), nn.Conv3d(2, 2, 1)))


def test_card_problems(saved, tmp_path):
    folder, _ = saved
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, "format_version": 2}))
    with pytest.raises(InputError, match="newer MedSegCNN"):
        read_model_card(folder)
    (folder / "model.json").write_text(json.dumps({**card, "weights": {**card["weights"], "file": "../x.safetensors"}}))
    with pytest.raises(InputError, match="no valid weights file"):
        read_model_card(folder)
    (folder / "model.json").write_text('{"format": ')
    with pytest.raises(InputError, match="not valid JSON"):
        read_model_card(folder)
    with pytest.raises(InputError, match=r"no model\.json"):
        read_model_card(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing", network_builder=builder)
    with pytest.raises(InputError, match="Unknown device"):
        load_model(folder, device="gpu7", network_builder=builder)


def test_card_is_read_without_weights(saved):
    folder, _ = saved
    (folder / "model.safetensors").unlink()
    assert read_model_card(folder).network == CARD["network"]
    with pytest.raises(InputError, match="missing"):
        load_model(folder, network_builder=builder)


def test_existing_folder_is_refused_and_left_unchanged(saved):
    folder, _ = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputExistsError):
        save_model(folder, small_network(seed=7), CARD)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"]  # no temporary folders left


def test_overwrite_replaces_the_model_and_keeps_other_entries(saved):
    folder, _ = saved
    (folder / "checkpoints" / "last").mkdir(parents=True)
    (folder / "checkpoints" / "last" / "state.json").write_text("{}")
    newer = small_network(seed=7)
    save_model(folder, newer, CARD, overwrite=True)
    loaded, _ = load_model(folder, network_builder=builder)
    _assert_same_network(loaded, newer)
    assert (folder / "checkpoints" / "last" / "state.json").read_text() == "{}"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"]


def test_failed_overwrite_leaves_the_old_model(saved, monkeypatch):
    folder, network = saved

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_folder_module, "write_json", fail)
    with pytest.raises(WriteError, match="disk full"):
        save_model(folder, small_network(seed=7), CARD, overwrite=True)
    monkeypatch.undo()
    loaded, _ = load_model(folder, network_builder=builder)
    _assert_same_network(loaded, network)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["model"]


def test_zip_round_trip(saved, tmp_path):
    folder, network = saved
    (folder / "notes.txt").write_text("left out of the archive")
    archive = zip_model(folder, tmp_path / "model.zip")
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == ["model/model.json", "model/model.safetensors"]
    loaded, card = load_model(archive, network_builder=builder)
    _assert_same_network(loaded, network)
    assert card == read_model_card(archive) == read_model_card(folder)
    with pytest.raises(OutputExistsError):
        zip_model(folder, archive)
    zip_model(folder, archive, overwrite=True)
    with pytest.raises(InputError, match=r"\.zip"):
        zip_model(folder, tmp_path / "model.tar")


def test_zip_with_card_at_the_top_level(saved, tmp_path):
    folder, network = saved
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        for name in ("model.json", "model.safetensors"):
            opened.write(folder / name, name)
    _assert_same_network(load_model(archive, network_builder=builder)[0], network)


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/medsegcnn-evil.txt", "model/../../evil.txt", "C:/evil.txt"])
def test_zip_slip_is_rejected(saved, tmp_path, evil):
    folder, _ = saved
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        opened.write(folder / "model.json", "model/model.json")
        opened.write(folder / "model.safetensors", "model/model.safetensors")
        opened.writestr(evil, "gotcha")
    with pytest.raises(InputError, match="unsafe entry"):
        load_model(archive, network_builder=builder)
    with pytest.raises(InputError, match="unsafe entry"):
        read_model_card(archive)
    assert not (tmp_path.parent / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_damaged_zip(tmp_path):
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match=r"not a readable model \.zip"):
        read_model_card(tmp_path / "broken.zip")


def test_pickles_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps(Marker(marker), protocol=4)
    pickle.loads(payload)  # the payload works: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()

    candidates = []
    for suffix in (".pt", ".pth", ".ckpt", ".pkl", ".bin", ".dat"):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(payload)
        candidates.append(path)
    torch_file = tmp_path / "torch_save.zip"  # torch.save writes a zip holding data.pkl
    torch.save({"weights": Marker(marker)}, torch_file)
    candidates.append(torch_file)
    folder = tmp_path / "folder_with_pt"
    folder.mkdir()
    torch.save({"weights": Marker(marker)}, folder / "model.pt")
    candidates.append(folder)

    for path in candidates:
        for action in (lambda p: load_model(p, network_builder=builder), read_model_card):
            with pytest.raises(InputError, match=r"MedSegCNN never unpickles files.*import_state_dict"):
                action(path)
    assert not marker.exists()


def test_import_state_dict(tmp_path):
    network = small_network()
    plain = tmp_path / "plain.pt"
    torch.save(network.state_dict(), plain)
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": network.state_dict(), "epoch": 3}, wrapped)
    save_model(tmp_path / "model", network, CARD)
    for path in (plain, wrapped, tmp_path / "model" / "model.safetensors"):
        imported = import_state_dict(path)
        assert imported.keys() == network.state_dict().keys()
        assert all(torch.equal(imported[k], v) for k, v in network.state_dict().items())

    marker = tmp_path / "UNPICKLED"
    evil = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "extra": Marker(marker)}, evil)
    with pytest.raises(InputError, match="not a plain PyTorch state dict that MedSegCNN can read safely") as refused:
        import_state_dict(evil)
    assert "weights_only" not in str(refused.value)  # torch's hint to load unsafely is not relayed
    assert not marker.exists()

    nested = tmp_path / "nested.pt"
    torch.save({"encoder": {"w": torch.zeros(1)}, "step": 3}, nested)
    with pytest.raises(InputError, match="not a flat state dict"):
        import_state_dict(nested)
    with pytest.raises(InputError, match="not a state dict"):
        torch.save([torch.zeros(1)], tmp_path / "list.pt")
        import_state_dict(tmp_path / "list.pt")
    with pytest.raises(InputError, match="does not exist"):
        import_state_dict(tmp_path / "absent.pt")


def test_load_matching_weights():
    source = small_network(2, seed=1)
    target = small_network(3, seed=2)
    kept = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    state = {**source.state_dict(), "head.weight": torch.zeros(2)}
    loaded, skipped = load_matching_weights(target, state)
    assert loaded == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert sorted(skipped) == [
        "3.bias: shape (2,) in the weights, (3,) in the network",
        "3.weight: shape (2, 4, 1, 1, 1) in the weights, (3, 4, 1, 1, 1) in the network",
        "head.weight: not in the network",
    ]
    for name, tensor in target.state_dict().items():
        expected = source.state_dict()[name] if name in loaded else kept[name]
        assert torch.equal(tensor, expected)


def test_the_package_exports_each_name_lazily_from_its_module():
    import MedSegCNNLib.checkpoint as checkpoint

    for name in checkpoint.__all__:
        module = importlib.import_module(f"MedSegCNNLib.checkpoint.{checkpoint._MODULE_OF[name]}")
        assert getattr(checkpoint, name) is getattr(module, name)
    assert set(checkpoint.__all__) == set(checkpoint._MODULE_OF)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = checkpoint.nothing


def test_the_size_of_a_window_is_measured_once_per_machine(tmp_path, monkeypatch):
    """The feature maps of one window are counted on the "meta" device the first time a network configuration is
    loaded, then read from the user's cache folder; an unreadable cache entry is measured again and rewritten."""
    from model_support import save_tiny_model

    from MedSegCNNLib.networks import base

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = save_tiny_model(tmp_path / "tiny")
    measured: list[int] = []
    count = base.feature_map_bytes

    def counting(network: nn.Module, window) -> int:
        measured.append(count(network, window))
        return measured[-1]

    monkeypatch.setattr(base, "feature_map_bytes", counting)
    load_model(folder)
    load_model(folder)
    assert len(measured) == 1 and measured[0] > 0
    (entry,) = (tmp_path / "cache" / "medsegcnn" / "feature-map-bytes").iterdir()
    assert json.loads(entry.read_text())["bytes"] == measured[0]
    entry.write_text("{torn", encoding="utf-8")
    load_model(folder)
    assert len(measured) == 2 and json.loads(entry.read_text())["bytes"] == measured[0]
    load_model(folder, network_builder=base_builder)  # a builder of the caller's own: measured each time
    assert len(measured) == 3


def base_builder(config: dict) -> nn.Module:
    from MedSegCNNLib.networks import build_network

    return build_network(config)
