"""``medsegcnn project``: the annotation loop from the command line (see :mod:`MedSegCNNLib.annotation`).

``init`` creates a project, ``next`` gives the next case with the newest model's prediction, ``accept`` stores the
corrected segmentation and starts learning in the background, ``skip`` passes a case over, ``status`` reports.
With ``--json`` each prints one JSON line (the scripting interface).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "project",
        parents=parents,
        help="annotation projects: segment, correct, accept, and learn from every correction",
        description=(
            "An annotation project: the next case comes segmented by the newest model, you correct and accept it, "
            "and the model learns from every accepted case in the background (see the README's 'Annotation loop')."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    init = actions.add_parser("init", parents=parents, help="create a project from a folder of images")
    init.add_argument("project", metavar="PROJECT", help="the new (or empty) project folder")
    init.add_argument("--images", required=True, metavar="DIR", help="the images (nnU-Net _0000 channel files too)")
    init.add_argument("--labels", metavar="DIR", help="label maps of some cases, matched by case name: accepted")
    init.add_argument("--model", metavar="MODEL", help="a registry name or model folder to start from (version 0)")
    init.add_argument("--dims", type=int, choices=(2, 3), help="2D or 3D models (default: the images' or model's)")
    init.add_argument("--label-names", metavar="NAMES", help="foreground label names 1, 2, ... (e.g. liver,tumour)")
    init.add_argument(
        "--learn-budget", type=float, default=60.0, metavar="SECONDS", help="seconds of learning per round (default 60)"
    )
    init.add_argument("--no-learning", action="store_true", help="store accepted cases without learning")
    init.add_argument("--seed", type=int, default=0, help="seed of the cases' random order")
    init.add_argument("--json", action="store_true", help="print the status as one JSON line")
    init.set_defaults(run=run_init)

    next_case = actions.add_parser("next", parents=parents, help="the next case, segmented by the newest model")
    next_case.add_argument("project", metavar="PROJECT")
    next_case.add_argument(
        "--strategy",
        choices=("random", "entropy"),
        default="random",
        help="random order (default) or the most uncertain of the next few",
    )
    next_case.add_argument("--case", metavar="ID", help="this case instead")
    next_case.add_argument("--json", action="store_true", help="print one JSON line")
    next_case.set_defaults(run=run_next)

    accept = actions.add_parser("accept", parents=parents, help="store a case's corrected segmentation and learn")
    accept.add_argument("project", metavar="PROJECT")
    accept.add_argument("case", metavar="CASE")
    accept.add_argument("labelmap", metavar="LABELMAP", help="the corrected label map, on the case's grid")
    accept.add_argument("--learn-budget", type=float, metavar="SECONDS", help="seconds of learning per round from now")
    accept.add_argument("--wait", action="store_true", help="return once a version has learned this case")
    accept.add_argument("--json", action="store_true", help="print one JSON line")
    accept.set_defaults(run=run_accept)

    skip = actions.add_parser("skip", parents=parents, help="pass a case over")
    skip.add_argument("project", metavar="PROJECT")
    skip.add_argument("case", metavar="CASE")
    skip.set_defaults(run=run_skip)

    status = actions.add_parser("status", parents=parents, help="cases, versions, running Dice, learning")
    status.add_argument("project", metavar="PROJECT")
    status.add_argument("--json", action="store_true", help="print one JSON line")
    status.set_defaults(run=run_status)


def run_init(args: argparse.Namespace) -> int:
    from ..annotation import AnnotationProject

    names = None
    if args.label_names:
        names = {index: name.strip() for index, name in enumerate(args.label_names.split(","), start=1)}
    with AnnotationProject.create(
        args.project,
        args.images,
        labels=args.labels,
        model=args.model,
        dims=args.dims,
        label_names=names,
        learn_budget_s=args.learn_budget,
        learning=not args.no_learning,
        seed=args.seed,
        holder="medsegcnn project init",
    ) as project:
        status = project.status()
    if args.json:
        return _print_json(status.to_dict())
    counts = status.to_dict()["cases"]
    print(
        f"Created {args.project}: {sum(counts.values())} cases ({counts['accepted']} accepted); "
        f"learning {status.learning['state'] if status.learning['enabled'] else 'off'}."
    )
    print(f"Next: medsegcnn project next {args.project}")
    return 0


def run_next(args: argparse.Namespace) -> int:
    from ..annotation import AnnotationProject

    with AnnotationProject.open(args.project, holder="medsegcnn project next") as project:
        case = project.next_case(args.strategy, args.case)
    if args.json:
        return _print_json(case.to_dict())
    made = (
        "no model yet: segment it by hand"
        if case.prediction is None
        else (f"prediction of version {case.model_version}: {case.prediction}")
    )
    print(f"Case {case.case} ({', '.join(str(path) for path in case.images)}); {made}")
    return 0


def run_accept(args: argparse.Namespace) -> int:
    from ..annotation import AnnotationProject

    with AnnotationProject.open(args.project, holder="medsegcnn project accept") as project:
        result = project.accept(args.case, args.labelmap, learn_budget_s=args.learn_budget, wait=args.wait)
    if args.json:
        return _print_json(result.to_dict())
    scored = (
        ""
        if result.round.mean_dice is None
        else (
            f"; the prediction scored Dice {result.round.mean_dice:.3f}, {result.round.voxels_changed} voxels changed"
        )
    )
    learned = f"; version {result.version} has learned it" if result.version is not None else ""
    print(f"Accepted {result.case} (revision {result.revision}){scored}; learning {result.learning}{learned}.")
    return 0


def run_skip(args: argparse.Namespace) -> int:
    from ..annotation import AnnotationProject

    with AnnotationProject.open(args.project, holder="medsegcnn project skip") as project:
        project.skip(args.case)
    print(f"Skipped {args.case}.")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ..annotation import AnnotationProject

    with AnnotationProject.open(args.project, holder="medsegcnn project status") as project:
        status = project.status()
    data = status.to_dict()
    if args.json:
        return _print_json(data)
    counts = ", ".join(f"{count} {state}" for state, count in data["cases"].items())
    print(f"{args.project}: {counts}")
    for version in data["versions"]:
        dice = (
            "no predictions scored"
            if version["running_dice"] is None
            else (f"running Dice {version['running_dice']:.3f} over {version['predictions_scored']} case(s)")
        )
        print(f"  version {version['version']}: learned {version['cases']} case(s); {dice}")
    learning = data["learning"]
    progress = f" (step {learning['step']} of {learning['total_steps']})" if learning["state"] == "running" else ""
    print(f"  learning: {learning['state']}{progress} {learning['message']}".rstrip())
    for case, paths in data["missing_images"].items():
        print(f"  case {case}: image(s) moved or vanished: {', '.join(paths)}")
    return 0


def _print_json(data: Any) -> int:
    json.dump(data, sys.stdout, separators=(",", ":"), allow_nan=False)
    sys.stdout.write("\n")
    return 0
