"""Training checkpoints: a resumed run continues bit for bit (SGD+Nesterov+PolyLR, AdamW, GradScaler), RNG
capture/restore, the pickle-free encoding, integrity checks and atomic replacement."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from MedSegCNNLib.checkpoint import (
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)
from MedSegCNNLib.checkpoint import training_state as training_state_module
from MedSegCNNLib.checkpoint.state_codec import decode_state, encode_state
from MedSegCNNLib.errors import InputError, OutputExistsError, WriteError
from MedSegCNNLib.losses import build_loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the global RNG is what checkpoints capture
    torch.manual_seed(seed)


def make_run(optimizer: str, *, seed: int = 0, scaler: bool = False):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.InstanceNorm3d(4, affine=True),
        nn.LeakyReLU(0.01),
        nn.Dropout3d(0.3),
        nn.Conv3d(4, 2, 1),
    )
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=20, power=0.9)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) if scaler else None
    return model, opt, scheduler, grad_scaler


def train(model, optimizer, scheduler, scaler, steps: int) -> None:
    """Steps that draw from torch's, numpy's and Python's global RNGs (data, dropout, augmentation)."""
    loss_function = build_loss("dice_ce")
    model.train()
    for _ in range(steps):
        image = torch.randn(2, 1, 4, 4, 4)
        target = torch.randint(0, 2, (2, 1, 4, 4, 4))
        if random.random() < 0.5:
            image, target = image.flip(-1), target.flip(-1)
        image = image * float(np.random.uniform(0.9, 1.1))  # noqa: NPY002
        loss = loss_function(model(image), target)
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize(("optimizer", "scaler"), [("sgd", False), ("adamw", False), ("sgd", True)])
def test_resumed_training_is_bit_identical(tmp_path, optimizer, scaler):
    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    seed_everything(0)
    model, opt, scheduler, grad_scaler = make_run(optimizer, scaler=scaler)
    train(model, opt, scheduler, grad_scaler, 3)
    save_training_state(
        checkpoint,
        model=model,
        optimizer=opt,
        scheduler=scheduler,
        scaler=grad_scaler,
        epoch=1,
        step=3,
        rng=capture_rng_state(),
        extra={"sampler": {"position": 7}},
    )
    saved_scaler = None if grad_scaler is None else grad_scaler.state_dict()
    train(model, opt, scheduler, grad_scaler, 3)
    uninterrupted = weights(model)

    seed_everything(99)  # a new process: other random state, other initial weights
    model2, opt2, scheduler2, scaler2 = make_run(optimizer, seed=99, scaler=scaler)
    state = load_training_state(checkpoint, model=model2, optimizer=opt2, scheduler=scheduler2, scaler=scaler2)
    assert (state.epoch, state.step, state.extra) == (1, 3, {"sampler": {"position": 7}})
    assert scheduler2.last_epoch == 3
    if scaler:
        assert scaler2.state_dict() == saved_scaler
    restore_rng_state(state.rng)
    train(model2, opt2, scheduler2, scaler2, 3)
    assert_identical(weights(model2), uninterrupted)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]

    # Without restoring the RNGs the continuation differs: the test above depends on them.
    model3, opt3, scheduler3, scaler3 = make_run(optimizer, seed=99, scaler=scaler)
    load_training_state(checkpoint, model=model3, optimizer=opt3, scheduler=scheduler3, scaler=scaler3)
    train(model3, opt3, scheduler3, scaler3, 3)
    assert any(not torch.equal(uninterrupted[k], v) for k, v in weights(model3).items())


def test_optimizer_state_round_trip(tmp_path):
    model, opt, scheduler, _ = make_run("adamw")
    train(model, opt, scheduler, None, 2)
    save_training_state(
        tmp_path / "ckpt",
        model=model,
        optimizer=opt,
        scheduler=scheduler,
        scaler=None,
        epoch=0,
        step=2,
        rng={},
        extra={},
    )
    model2, opt2, scheduler2, _ = make_run("adamw", seed=5)
    load_training_state(tmp_path / "ckpt", model=model2, optimizer=opt2, scheduler=scheduler2)
    original, restored = opt.state_dict(), opt2.state_dict()
    assert original["param_groups"] == restored["param_groups"]
    for index, entries in original["state"].items():
        for key, value in entries.items():
            assert torch.equal(restored["state"][index][key], value), key
    assert scheduler2.state_dict() == scheduler.state_dict()
    stored = json.loads((tmp_path / "ckpt" / "training_state.json").read_text())
    assert stored["format"] == "medsegcnn-training-state"
    assert stored["optimizer_class"] == "AdamW"
    assert stored["state"]["optimizer"]["param_groups"][0]["betas"] == {"$tuple": [0.9, 0.999]}


def test_disabled_grad_scaler_round_trip(tmp_path):
    model, opt, scheduler, _ = make_run("sgd")
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    save_training_state(
        tmp_path / "ckpt",
        model=model,
        optimizer=opt,
        scheduler=scheduler,
        scaler=disabled,
        epoch=0,
        step=0,
        rng={},
        extra={},
    )
    fresh = torch.amp.GradScaler("cpu", enabled=False)
    load_training_state(tmp_path / "ckpt", model=model, optimizer=opt, scheduler=scheduler, scaler=fresh)
    assert fresh.state_dict() == {}
    enabled = torch.amp.GradScaler("cpu", init_scale=8.0)
    load_training_state(tmp_path / "ckpt", model=model, optimizer=opt, scheduler=scheduler, scaler=enabled)
    assert enabled.state_dict()["scale"] == 8.0  # nothing saved: the scale starts afresh


def test_rng_capture_and_restore():
    seed_everything(3)
    state = capture_rng_state()
    first = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    seed_everything(4)
    restore_rng_state(decode_state(*encode_state(state)))
    second = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2])
    with pytest.raises(InputError, match="RNG state cannot be restored"):
        restore_rng_state({"torch": torch.zeros(3)})


def test_codec_round_trip():
    base = torch.arange(12, dtype=torch.float32)
    state = {
        "none": None,
        "flags": [True, False],
        "big": 2**100 + 1,
        "floats": [1.5, float("inf"), -float("inf")],
        "tuple": (1, (2, "x"), []),
        "int_keys": {0: "a", 7: {"$tensor": "not a marker"}},
        "$dollar": 1,
        "numpy": {"u32": np.arange(5, dtype=np.uint32), "f16": np.ones((2, 2), np.float16), "scalar": np.float32(0.5)},
        "tensors": {
            "whole": base,
            "view": base[2:5],
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "empty": torch.zeros(0, 3),
        },
    }
    tree, tensors = encode_state(state)
    json.dumps(tree, allow_nan=False)
    decoded = decode_state(json.loads(json.dumps(tree)), tensors)
    assert decoded.keys() == state.keys()
    assert decoded["big"] == 2**100 + 1
    assert decoded["floats"] == [1.5, float("inf"), -float("inf")]
    assert decoded["tuple"] == (1, (2, "x"), [])
    assert decoded["int_keys"] == {0: "a", 7: {"$tensor": "not a marker"}}
    assert decoded["$dollar"] == 1
    assert decoded["numpy"]["u32"].dtype == np.uint32
    np.testing.assert_array_equal(decoded["numpy"]["u32"], np.arange(5))
    np.testing.assert_array_equal(decoded["numpy"]["f16"], np.ones((2, 2), np.float16))
    assert decoded["numpy"]["scalar"] == 0.5
    for name, tensor in state["tensors"].items():
        assert decoded["tensors"][name].dtype == tensor.dtype
        assert torch.equal(decoded["tensors"][name], tensor)
    nan = decode_state(*encode_state(float("nan")))
    assert nan != nan


def test_unstorable_objects_are_refused(tmp_path):
    model, opt, scheduler, _ = make_run("sgd")
    with pytest.raises(InputError, match=r"Cannot store a object at extra/sampler/hook"):
        save_training_state(
            tmp_path / "ckpt",
            model=model,
            optimizer=opt,
            scheduler=scheduler,
            scaler=None,
            epoch=0,
            step=0,
            rng={},
            extra={"sampler": {"hook": object()}},
        )
    with pytest.raises(InputError, match="epoch"):
        save_training_state(
            tmp_path / "ckpt",
            model=model,
            optimizer=opt,
            scheduler=scheduler,
            scaler=None,
            epoch=-1,
            step=0,
            rng={},
            extra={},
        )
    assert not (tmp_path / "ckpt").exists()


@pytest.fixture
def checkpoint(tmp_path):
    model, opt, scheduler, _ = make_run("sgd")
    train(model, opt, scheduler, None, 1)
    folder = tmp_path / "ckpt"
    save_training_state(
        folder, model=model, optimizer=opt, scheduler=scheduler, scaler=None, epoch=2, step=10, rng={}, extra={}
    )
    return folder


def test_corrupted_checkpoints_are_detected(checkpoint):
    model, opt, scheduler, _ = make_run("sgd")
    tensors = checkpoint / "training_state.safetensors"
    original = tensors.read_bytes()
    tensors.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(InputError, match="do not match the SHA-256"):
        load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler)
    tensors.write_bytes(original[: len(original) // 2])
    with pytest.raises(InputError, match="do not match the SHA-256"):
        load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler)
    tensors.unlink()
    with pytest.raises(InputError, match="missing"):
        load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler)
    document = checkpoint / "training_state.json"
    document.write_text(document.read_text()[:100])
    with pytest.raises(InputError, match="not valid JSON"):
        load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler)


def test_checkpoint_must_match_the_run(checkpoint):
    model, opt, _, _ = make_run("sgd")
    other = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1))
    with pytest.raises(InputError, match="weights of another network"):
        other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
        other_scheduler = torch.optim.lr_scheduler.PolynomialLR(other_opt)
        load_training_state(checkpoint, model=other, optimizer=other_opt, scheduler=other_scheduler)
    _, adamw, adamw_scheduler, _ = make_run("adamw")
    with pytest.raises(InputError, match="saved with a SGD optimizer"):
        load_training_state(checkpoint, model=model, optimizer=adamw, scheduler=adamw_scheduler)
    with pytest.raises(InputError, match="scheduler PolynomialLR, but none"):
        load_training_state(checkpoint, model=model, optimizer=opt)
    with pytest.raises(InputError, match="Unknown map_location"):
        load_training_state(checkpoint, model=model, optimizer=opt, map_location="gpu")


def test_existing_checkpoint_and_failed_saves(checkpoint, monkeypatch):
    model, opt, scheduler, _ = make_run("sgd", seed=3)
    kwargs = {"model": model, "optimizer": opt, "scheduler": scheduler, "scaler": None, "rng": {}, "extra": {}}
    with pytest.raises(OutputExistsError):
        save_training_state(checkpoint, epoch=3, step=11, overwrite=False, **kwargs)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(training_state_module, "write_json", fail)
    with pytest.raises(WriteError, match="disk full"):
        save_training_state(checkpoint, epoch=3, step=11, **kwargs)
    monkeypatch.undo()
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ckpt"]
    assert load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler).step == 10
    save_training_state(checkpoint, epoch=3, step=11, **kwargs)
    assert load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler).step == 11
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ckpt"]


def test_missing_checkpoint_names_a_surviving_previous_one(tmp_path):
    model, opt, _, _ = make_run("sgd")
    with pytest.raises(InputError, match=r"does not exist\.$"):
        load_training_state(tmp_path / "last", model=model, optimizer=opt)
    (tmp_path / ".last.0123456789ab.previous").mkdir()
    with pytest.raises(InputError, match=r"survives as .*\.last\.0123456789ab\.previous"):
        load_training_state(tmp_path / "last", model=model, optimizer=opt)


def test_a_checkpoint_that_reads_back_differently_is_not_put_in_place(checkpoint, monkeypatch):
    model, opt, scheduler, _ = make_run("sgd", seed=3)
    kwargs = {"model": model, "optimizer": opt, "scheduler": scheduler, "scaler": None, "rng": {}, "extra": {}}
    write_json = training_state_module.write_json
    monkeypatch.setattr(training_state_module, "write_json", lambda path, data: write_json(path, {**data, "step": 0}))
    with pytest.raises(WriteError) as refused:
        save_training_state(checkpoint, epoch=3, step=11, **kwargs)
    assert str(refused.value) == (
        f"Could not write {checkpoint}: it reads back differently from what was written; {checkpoint} was left as "
        "it was; check the disk and the folder's permissions."
    )
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ckpt"]
    assert load_training_state(checkpoint, model=model, optimizer=opt, scheduler=scheduler).step == 10
