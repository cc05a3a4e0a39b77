"""Devices and numeric precision: the one place that names them, resolves them and describes the machine (its
CPU, and the per-user cache folder that measurements and converted networks are kept in).

- **Devices**: ``auto`` (CUDA if available, else Apple MPS, else CPU), ``cpu``, ``cuda`` (or ``cuda:N``), ``mps``.
- **Precisions**: ``fp32``; ``bf16`` and ``fp16`` run the network under ``torch.autocast`` of that type (weights,
  optimiser state and accumulations stay fp32); ``auto`` is resolved per device by :func:`resolve_precision`.
- **Inference backends**: ``torch`` (CPU, CUDA, MPS) and ``openvino`` (CPU; the optional extra
  ``medsegcnn[openvino]``); ``auto`` is resolved by :func:`resolve_backend`. For prediction, ``auto`` precision
  on the CPU is bf16 where the CPU has bf16 units (:func:`inference_precision`); whether its segmentations are
  good enough is checked per model by :mod:`MedSegCNNLib.inference.precision_gate`.
- **CPU bf16 units**: a CPU computes bf16 quickly only when it has matrix or dot-product units for it (x86:
  ``amx_bf16``, ``avx512_bf16``; ARM: ``bf16``). Without them bf16 autocast emulates through fp32 and is
  usually slower. Whether it pays off also depends on the network and shapes, so training *measures* it
  (:mod:`MedSegCNNLib.training.speed`) instead of trusting the flags alone; the flags only decide whether the
  measurement is worth making.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from .errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used, so that option records can be read without it
    import torch

Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Backend = Literal["auto", "torch", "openvino"]
DEVICES: tuple[Device, ...] = get_args(Device)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
BACKENDS: tuple[Backend, ...] = get_args(Backend)
InferencePrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
#: Prediction's precisions: the training ones and ``int8`` (a quantised model on the OpenVINO backend).
INFERENCE_PRECISIONS: tuple[InferencePrecision, ...] = get_args(InferencePrecision)
#: How to get the OpenVINO backend when it is missing.
OPENVINO_INSTALL = 'pip install "medsegcnn[openvino]" (or: pip install openvino)'

#: CPU feature flags (as Linux's /proc/cpuinfo and macOS' sysctl name them) that compute bf16 natively.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
#: Flags worth printing beside any speed figure.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "bf16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and feature flags (lower case), as far as the operating system tells them."""

    model: str
    flags: frozenset[str]

    @property
    def bf16_units(self) -> tuple[str, ...]:
        """The bf16 flags this CPU has (empty: bf16 would be emulated)."""
        return tuple(flag for flag in BF16_FLAGS if flag in self.flags)

    def describe(self) -> str:
        """One line for logs and benchmark output: model, cores and the flags in :data:`REPORTED_FLAGS`."""
        present = [flag for flag in REPORTED_FLAGS if flag in self.flags]
        return f"{self.model} ({os.cpu_count()} logical CPUs; flags: {' '.join(present) or 'none of interest'})"


@functools.cache
def cpu_info() -> CpuInfo:
    """The CPU's model and flags: ``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS, ``platform`` elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
        if match := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
            model = match.group(1).strip()
        if match := re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE):
            flags = set(match.group(1).lower().split())
    elif platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or model
        if _sysctl("hw.optional.arm.FEAT_BF16") == "1":
            flags.add("bf16")
    return CpuInfo(model=model, flags=frozenset(flags))


def user_cache_folder() -> Path:
    """The per-user cache folder (not created here): ``medsegcnn`` in ``%LOCALAPPDATA%`` on Windows,
    ``~/Library/Caches`` on macOS, ``$XDG_CACHE_HOME`` (default ``~/.cache``) elsewhere."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medsegcnn"


def user_data_folder() -> Path:
    """The per-user data folder (not created here): ``medsegcnn`` in ``%APPDATA%`` on Windows,
    ``~/Library/Application Support`` on macOS, ``$XDG_DATA_HOME`` (default ``~/.local/share``) elsewhere."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "medsegcnn"


def _sysctl(name: str) -> str | None:
    try:
        result = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 units that torch's CPU kernels (oneDNN) can use."""
    import torch

    if not cpu_info().bf16_units:
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else True


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto``: CUDA if available, else Apple MPS, else CPU. Asking for a missing device is an error."""
    import torch

    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("MPS was asked for but is not available; use --device cpu or auto.")
    if choice not in DEVICES and not choice.startswith("cuda:"):
        raise InputError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICES)}.")
    return torch.device(choice)


def resolve_precision(choice: str, device: torch.device) -> str:
    """A concrete precision for ``choice`` on ``device`` without measuring.

    ``auto``: bf16 on CUDA GPUs that support it, else fp16 on CUDA; fp32 on CPU and MPS (training measures
    CPU bf16 instead, see :mod:`MedSegCNNLib.training.speed`).
    """
    import torch

    if choice not in PRECISIONS:
        raise InputError(f"Unknown precision {choice!r}; choose one of {', '.join(PRECISIONS)}.")
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def inference_precision(choice: str, device: torch.device) -> str:
    """The precision a prediction runs at: :func:`resolve_precision`, except that ``auto`` on the CPU is bf16 when
    :func:`cpu_has_bf16` (fp32 otherwise), and ``int8`` is kept (the OpenVINO backend checks it)."""
    if choice == "int8":
        return choice
    if choice == "auto" and device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return resolve_precision(choice, device)


def openvino_version() -> str | None:
    """The installed OpenVINO's version (e.g. ``2026.4.1``), or None when it is not installed (not imported)."""
    try:
        if importlib.util.find_spec("openvino") is None:
            return None
        return importlib.metadata.version("openvino")
    except (ValueError, importlib.metadata.PackageNotFoundError):  # ValueError: blocked in sys.modules
        return None


def resolve_backend(choice: str, device: torch.device) -> str:
    """``auto``: OpenVINO on the CPU when it is installed, else torch. ``openvino`` runs on the CPU only and must be
    installed; asking for it otherwise is an error that says what to do."""
    if choice not in BACKENDS:
        raise InputError(f"Unknown backend {choice!r}; choose one of {', '.join(BACKENDS)}.")
    if choice == "auto":
        return "openvino" if device.type == "cpu" and openvino_version() is not None else "torch"
    if choice == "openvino":
        if device.type != "cpu":
            raise InputError(f"The OpenVINO backend runs on the CPU; use --device cpu or --backend torch on {device}.")
        if openvino_version() is None:
            raise InputError(f"The OpenVINO backend is not installed; install it with: {OPENVINO_INSTALL}.")
    return choice


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_device(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model, threads and flags."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"{cpu_info().describe()}, {torch.get_num_threads()} torch threads"


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory a run on ``device`` can use, in bytes: a CUDA GPU's memory, else the machine's physical memory
    (``None`` where it cannot be read)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if sys.platform == "win32":
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong)]
            _fields_ += [
                (name, ctypes.c_ulonglong) for name in ("free", "page", "free_page", "virtual", "free_virtual")
            ]
            _fields_ += [("extended", ctypes.c_ulonglong)]

        status = MemoryStatus(length=ctypes.sizeof(MemoryStatus))
        return int(status.total) if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)) else None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
