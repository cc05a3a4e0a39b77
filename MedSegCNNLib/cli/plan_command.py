"""``medsegcnn plan``: the training plan for a dataset, this device and a time budget, without training."""

from __future__ import annotations

import argparse
import json

from ..training.arguments import add_plan_arguments, build_config


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "plan",
        parents=parents,
        help="show the training plan (network, patch, batch, precision, steps, time) without training",
        description=(
            "Plan a training run as `medsegcnn train` would with the same options: read the dataset, measure the "
            "step time of the candidate networks on the device (cached per machine), and print the network, "
            "patch, batch, precision, schedule, number of steps and the expected time."
        ),
    )
    add_plan_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..training.planner import plan_dataset  # imports torch

    plan, preprocessing = plan_dataset(args.data, build_config(args))
    if args.json:
        print(json.dumps({**plan.to_dict(), "preprocessing": preprocessing.to_dict()}, indent=1))
    else:
        print(plan.describe())
    return 0
