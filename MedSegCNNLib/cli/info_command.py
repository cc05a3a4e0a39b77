"""``medsegcnn info``: library versions and the compute devices torch can use."""

from __future__ import annotations

import argparse
import json
import os
import platform
from importlib import metadata
from typing import Any

from .._version import __version__
from ..runtime import REPORTED_FLAGS, cpu_info


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "info", parents=parents, help="show versions and devices", description="Show versions and devices."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run)


def collect_info() -> dict[str, Any]:
    """Versions of MedSegCNN and its dependencies, and the devices torch sees (CUDA, MPS, CPU threads)."""
    versions = {"medsegcnn": __version__, "python": platform.python_version()}
    for package in ("torch", "numpy", "SimpleITK", "openvino", "nncf", "monai", "slicer-core"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, "platform": platform.platform(), "devices": _devices()}


def _devices() -> dict[str, Any]:
    cpu = cpu_info()
    devices: dict[str, Any] = {
        "cpu": {"logical_cores": os.cpu_count(), "model": cpu.model, "flags": sorted(cpu.flags & set(REPORTED_FLAGS))}
    }
    try:
        import torch
    except ImportError as error:
        devices["torch_error"] = f"torch could not be imported: {error}"
        return devices
    devices["cpu"]["torch_threads"] = torch.get_num_threads()
    cuda = torch.cuda.is_available()
    devices["cuda"] = {
        "available": cuda,
        "devices": [
            {
                "index": index,
                "name": torch.cuda.get_device_name(index),
                "memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(),
            }
            for index in range(torch.cuda.device_count())
        ]
        if cuda
        else [],
        "torch_cuda_version": torch.version.cuda,
    }
    note = cuda_build_note(torch.version.cuda, cuda)
    if note:
        devices["cuda"]["note"] = note
    mps = getattr(torch.backends, "mps", None)
    devices["mps"] = {"available": bool(mps and mps.is_available())}
    return devices


def cuda_build_note(torch_cuda_version: str | None, cuda_available: bool) -> str | None:
    """A hint when a CUDA build of torch (several GB of CUDA packages) runs where no GPU is usable, else None."""
    if torch_cuda_version is None or cuda_available:
        return None
    return (
        f"this torch is a CUDA {torch_cuda_version} build, but no GPU is usable here: everything runs on the CPU. "
        "On a machine without an NVIDIA GPU, the CPU build is a fraction of the size: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    )


def run(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"MedSegCNN {info['versions']['medsegcnn']} on {info['platform']}")
    for package, version in info["versions"].items():
        if package != "medsegcnn":
            print(f"  {package:<12} {version or 'not installed'}")
    devices = info["devices"]
    print("Devices:")
    cpu = devices["cpu"]
    threads = cpu.get("torch_threads", "?")
    print(f"  cpu          {cpu['model']}, {cpu['logical_cores']} logical cores, torch uses {threads} threads")
    print(f"               flags: {' '.join(cpu['flags']) or 'none of ' + ', '.join(REPORTED_FLAGS)}")
    if "torch_error" in devices:
        print(f"  {devices['torch_error']}")
        return 0
    cuda = devices["cuda"]
    if cuda["available"]:
        for device in cuda["devices"]:
            print(
                f"  cuda:{device['index']:<7} {device['name']}, {device['memory_gib']} GiB"
                f"{', bf16' if device['bf16'] else ''}"
            )
    else:
        print(f"  cuda         not available (torch built with CUDA {cuda['torch_cuda_version'] or 'none'})")
        if "note" in cuda:
            print(f"               note: {cuda['note']}")
    print(f"  mps          {'available' if devices['mps']['available'] else 'not available'}")
    return 0
