"""The results file every benchmark writes: what ran, where, on what, with which settings, and every raw number.

A benchmark builds one :class:`RunRecord` when it starts, adds its arms' settings and per-case numbers as it goes
(``record.data``), puts the figures it prints into ``record.data["figures"]`` (computed from those numbers, not
typed in), and calls :meth:`RunRecord.write` after each arm, so that a run stopped half-way keeps what it measured.
The file is ``Testing/Benchmarks/results/<benchmark>-<UTC date-time>.json``: the README quotes only files committed
there, and ``Testing/test_readme_figures.py`` checks every quoted number against them.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from MedSegCNNLib.atomic import write_text_atomic
from MedSegCNNLib.runtime import REPORTED_FLAGS, cpu_info

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
#: The packages whose versions every record lists (those not installed are listed as None).
PACKAGES = ("medsegcnn", "torch", "numpy", "SimpleITK", "monai", "openvino", "nncf", "nnunetv2", "onnxruntime",
            "slicer-core", "vtk", "scipy")  # fmt: skip


def git_state() -> dict[str, Any]:
    """The repository's commit and branch, and the tracked files that differ from that commit."""

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD") or None, "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
            "dirty": bool(changed), "changed": changed.splitlines()}  # fmt: skip


def machine() -> dict[str, Any]:
    """The CPU (model, the flags that decide speed, every flag), the cores, torch's threads, Python and the
    versions of :data:`PACKAGES`."""
    import torch

    cpu = cpu_info()
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": cpu.model,
        "cpu_flags_reported": {flag: flag in cpu.flags for flag in REPORTED_FLAGS},
        "cpu_flags": sorted(cpu.flags),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": versions,
    }


class RunRecord:
    """One run of a benchmark: ``data`` is the JSON written (``command``, ``date``, ``git``, ``machine``,
    ``settings``, then whatever the benchmark adds: ``arms``, ``cases``, ``figures``...)."""

    def __init__(self, benchmark: str, settings: dict[str, Any], *, argv: Sequence[str] | None = None,
                 results: Path = RESULTS, suffix: str = "") -> None:  # fmt: skip
        stamp = datetime.datetime.now(datetime.UTC)
        self.path = results / f"{benchmark}-{stamp:%Y%m%dT%H%M%SZ}{suffix}.json"
        self.data: dict[str, Any] = {
            "benchmark": benchmark,
            "command": [sys.executable, *(sys.argv if argv is None else [sys.argv[0], *argv])],
            "date": stamp.isoformat(),
            "git": git_state(),
            "machine": machine(),
            "settings": {key: plain(value) for key, value in settings.items()},
        }

    def describe_machine(self) -> str:
        """One line to print with every figure: the CPU model, its cores and the flags that decide speed."""
        return f"CPU: {cpu_info().describe()}; torch threads {self.data['machine']['torch_threads']}"

    def write(self) -> Path:
        """Write the record (atomically: a reader never sees half a file) and return its path."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.data, indent=1, default=plain) + "\n", overwrite=True)
        return self.path


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: paths and other objects as text, tuples and sets as lists."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(item) for item in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
