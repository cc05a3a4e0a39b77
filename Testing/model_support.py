"""A tiny untrained model folder for tests of the prediction plumbing (CLI, background runs), and a way to make a
model ``.zip`` member claim another size."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

from MedSegCNNLib.checkpoint import save_model
from MedSegCNNLib.data.preprocessing import NormalizationSpec, PreprocessingPlan
from MedSegCNNLib.networks import build_network


def save_tiny_model(folder: Path, labels: Sequence[str] = ("bg", "ant", "post")) -> Path:
    """An untrained 3D U-Net [4, 8, 16] (patch 16³, 1 mm, z-score, one "MRI" channel) with ``labels`` (0 first)."""
    network = build_network({"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": len(labels),
                             "features": [4, 8, 16]})  # fmt: skip
    plan = PreprocessingPlan(
        target_spacing=(1.0, 1.0, 1.0),
        crop_to_nonzero=False,
        normalization=(NormalizationSpec(scheme="zscore"),),
        image_interpolation="linear",
        spatial_dims=3,
    )
    card = {
        "network": network.config,
        "spatial_dims": 3,
        "patch_size": [16, 16, 16],
        "channels": ["MRI"],
        "labels": {str(v): {"name": n, "color": [v / 2, 0.5, 0.2]} for v, n in enumerate(labels)},
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
