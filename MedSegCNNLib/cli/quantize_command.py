"""``medsegcnn quantize``: the int8 version of a model (OpenVINO + NNCF), calibrated on a few of its cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "quantize",
        parents=parents,
        help="make the int8 version of a model (for --precision int8)",
        description=(
            "Quantise a model to int8 with NNCF, calibrated on a few cases like those it will segment (e.g. its "
            "training or validation cases), and store the result in the model folder's int8/ subfolder, which "
            "'medsegcnn predict --precision int8' uses. Needs: pip install \"medsegcnn[int8]\"."
        ),
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="model folder (or registry name)")
    parser.add_argument(
        "--calibration", required=True, metavar="DIR", help="dataset folder, or folder of images, to calibrate on"
    )
    parser.add_argument("--cases", type=int, default=16, help="calibrate on the first N cases (default 16)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing int8 version")
    parser.add_argument("--cache-dir", metavar="DIR", help="where the fp32 conversion is cached (default: per user)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.openvino_backend import INT8_RECORD
    from ..inference.quantization import quantize_model

    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    folder = quantize_model(
        args.model, args.calibration, cases=args.cases, overwrite=args.overwrite, cache_folder=cache
    )
    check = json.loads((folder / INT8_RECORD).read_text(encoding="utf-8"))["check"]
    if check["accepted"]:
        print(f"Wrote the int8 version to {folder}; use it with: medsegcnn predict --precision int8 ...")
    else:
        print(
            f"Wrote the int8 version to {folder}, but it changes the segmentation of its calibration cases (lowest "
            f"Dice {min(check['min_dice'].values()):.4f} < {check['required']}): --precision int8 will run at fp32."
        )
    return 0
