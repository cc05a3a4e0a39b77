"""Models that leave as files for other runtimes: a model folder's network as ONNX or OpenVINO IR with a JSON sidecar
(:mod:`.sidecar`) that says how to feed it and read its output, optionally checked against the engine
(:mod:`.check`). :func:`export_model` (:mod:`.exporter`) is the entry point; torch is imported on first use."""

from .sidecar import ExportFormat

_NAMES = ("ExportResult", "export_model")


def __getattr__(name: str):
    if name in _NAMES:  # imported on first use, so that importing the package does not import torch
        from . import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ExportFormat", *_NAMES]
