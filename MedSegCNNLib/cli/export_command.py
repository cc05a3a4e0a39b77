"""``medsegcnn export``: a model's network as an ONNX file or an OpenVINO IR, with a JSON sidecar for its users."""

from __future__ import annotations

import argparse

from ..export.sidecar import ExportFormat


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export",
        parents=parents,
        help="export a model's network as ONNX or OpenVINO IR, with a JSON sidecar",
        description=(
            "Export the network of a model (a folder, .zip or registry name; an imported nnU-Net model too) as one "
            "ONNX file or an OpenVINO IR folder (network.xml + network.bin), with a sidecar <name>.medsegcnn.json "
            "beside the network file: input name and shape, channels, patch size, target spacing, normalisation, "
            "axis conventions, labels, output, licence, the source weights' SHA-256 and the MedSegCNN version. "
            "--check runs the exported network in onnxruntime (or OpenVINO) and compares it with MedSegCNN's engine."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model folder, .zip or registry name")
    parser.add_argument(
        "--format",
        required=True,
        choices=[item.value for item in ExportFormat],
        help="onnx: one .onnx file; openvino: a folder",
    )
    parser.add_argument(
        "--output", "-o", required=True, metavar="PATH", help="the .onnx file, or the OpenVINO folder, to write"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the exported network on a case and require the engine's segmentation (Dice 1.0 per label)",
    )
    parser.add_argument(
        "--check-image",
        nargs="+",
        metavar="FILE",
        help="the case to check on (one file, or one per channel; default: a synthetic sample case)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..export.exporter import export_model

    result = export_model(
        args.model, args.format, args.output, check=args.check,
        check_image_files=args.check_image, overwrite=args.overwrite,
    )  # fmt: skip
    print(f"Wrote {', '.join(str(path) for path in result.files)} and the sidecar {result.sidecar}.")
    if result.check is not None:
        print(result.check.describe())
        print("Check passed: the exported network segments the case as MedSegCNN does.")
    return 0
