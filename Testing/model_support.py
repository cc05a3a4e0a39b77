"""A tiny untrained model folder for tests of the prediction plumbing (CLI, background runs), and a way to make a
model ``.zip`` member claim another size."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from MedSegCNNLib.checkpoint import save_model
from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan
from MedSegCNNLib.networks import build_network


def save_tiny_model(
    folder: Path,
    labels: Sequence[str] = ("bg", "ant", "post"),
    *,
    channels: Sequence[str] = ("MRI",),
    spatial_dims: int = 3,
    features: Sequence[int] = (4, 8, 16),
    seed: int | None = None,
) -> Path:
    """An untrained U-Net (``features``; weights seeded with ``seed`` when given) with ``labels`` (0 first) and one
    input per name of ``channels``: 3D with a 16³ patch, or 2D with a 32² patch; 1 mm, z-score per channel."""
    if seed is not None:
        torch.manual_seed(seed)
    network = build_network({"name": "unet", "spatial_dims": spatial_dims, "in_channels": len(channels),
                             "out_channels": len(labels), "features": list(features)})  # fmt: skip
    plan = PreprocessingPlan(
        target_spacing=(1.0,) * spatial_dims,
        crop_to_nonzero=False,
        normalization=tuple(NormalizationSpec(scheme="zscore") for _ in channels),
        image_interpolation="linear",
        spatial_dims=spatial_dims,
    )
    card = {
        "network": network.config,
        "spatial_dims": spatial_dims,
        "patch_size": [16] * 3 if spatial_dims == 3 else [32] * 2,
        "channels": list(channels),
        "labels": {str(v): {"name": n, "color": [v / len(labels), 0.5, 0.2]} for v, n in enumerate(labels)},
        "preprocessing": plan.to_dict(),
    }
    save_model(folder, network, card)
    return folder


def declare_member_size(path: Path, member: str, size: int) -> Path:
    """Rewrite the uncompressed size that the local and central headers of ``member`` in the zip ``path`` declare
    (its data is unchanged): the cheap way to make a member claim gigabytes, or fewer bytes than it holds."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info, offset = archive.getinfo(member), archive.start_dir
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local file header: uncompressed size
    while data[offset : offset + 4] == b"PK\x01\x02":  # central directory entries
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_length].decode() == member:
            struct.pack_into("<I", data, offset + 24, size)
        offset += 46 + name_length + extra_length + comment_length
    path.write_bytes(bytes(data))
    return path
