"""Side-by-side benchmark of one training step: MedSegCNN's U-Net vs MONAI's DynUNet, in one run.

A training step is forward + loss (cross-entropy + soft Dice, written here, the same for both) + backward +
SGD step (Nesterov momentum 0.99). Both networks have the same architecture (features, depth, kernels,
strides, instance norm, LeakyReLU 0.01, transposed-convolution upsampling, no bias before normalizations; the
script checks that the parameter counts agree) and see the same input. Variants are run round-robin (one step
each in turn) after a warm-up, so that the load of a shared machine spreads over all of them; the script
prints per variant the median and minimum time per step, the achieved GFLOP/s (training counted as 3x the
forward FLOPs from ``torch.utils.flop_counter``) and the ratio MONAI (default layout) / variant. Run by hand::

    pip install -e ".[bench]"
    python Testing/Benchmarks/bench_train_step.py [--patch 64 64 64] [--batch 2] [--features 32 64 128 256 320]
        [--variants medsegcnn-cl monai ...] [--steps 4] [--results DIR]

The settings, every step's seconds per variant and the printed figures go to
``Testing/Benchmarks/results/train_step-<UTC date-time>.json`` (``recording.RunRecord``), rewritten after each
variant's warm-up and after each round of timed steps.

Variants: ``medsegcnn`` / ``monai`` (default contiguous layout), ``medsegcnn-cl`` / ``monai-cl`` (model and input
in channels-last layout), ``medsegcnn-cl-compiled`` (plus ``torch.compile``; compile time printed separately).

What a run measured is in its results file, with the CPU it ran on: machines differ (the ratio depends on the
CPU's vector units and on the allocator: glibc maps allocations over 32 MiB anew each time and unmaps them on free,
and the page faults of fresh 64-128 MiB tensors weigh on MONAI's InstanceNorm copies most; see
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``). What each choice of the U-Net's blocks gives is in
``MedSegCNNLib/networks/blocks.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet
from recording import RESULTS, RunRecord
from torch.utils.flop_counter import FlopCounterMode

from MedSegCNNLib.networks import build_network

VARIANTS = ("medsegcnn-cl", "medsegcnn", "monai", "monai-cl", "medsegcnn-cl-compiled")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, nargs="+", default=[64, 64, 64], help="patch size, array order")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128, 256, 320])
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results file")
    return parser.parse_args()


def build(variant: str, args: argparse.Namespace) -> torch.nn.Module:
    dims, levels = len(args.patch), len(args.features)
    torch.manual_seed(0)
    if variant.startswith("monai"):
        return DynUNet(
            dims,
            1,
            args.classes,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),
            upsample_kernel_size=[2] * (levels - 1),
            filters=args.features,
            norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        )
    return build_network(
        {
            "name": "unet",
            "spatial_dims": dims,
            "in_channels": 1,
            "out_channels": args.classes,
            "features": args.features,
        }
    )


def loss_function(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice averaged over foreground classes and the batch)."""
    probabilities = logits.softmax(1)
    one_hot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    axes = tuple(range(2, logits.dim()))
    intersection = (probabilities * one_hot).sum(axes)
    total = probabilities.sum(axes) + one_hot.sum(axes)
    dice = (2 * intersection + 1e-5) / (total + 1e-5)
    return F.cross_entropy(logits, target) + 1 - dice[:, 1:].mean()


def make_step(variant: str, args: argparse.Namespace, image: torch.Tensor, target: torch.Tensor) -> Callable:
    network = build(variant, args)
    if "-cl" in variant:
        memory_format = torch.channels_last_3d if image.dim() == 5 else torch.channels_last
        network = network.to(memory_format=memory_format)
        image = image.contiguous(memory_format=memory_format)
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    forward = torch.compile(network) if variant.endswith("compiled") else network

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_function(forward(image), target).backward()
        optimizer.step()

    step.network = network
    return step


def forward_flops(network: torch.nn.Module, image: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(image)
    return counter.get_total_flops()


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")  # inductor's own deprecations
    torch.set_num_threads(args.threads)
    record = RunRecord(
        "train_step",
        {
            **vars(args),
            "optimizer": "SGD lr 0.01 momentum 0.99 nesterov",
            "loss": "cross-entropy + (1 - soft Dice)",
            "training_flops": "3x forward",
        },
        results=args.results,
    )
    record.data["variants"] = {}
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(args.batch, 1, *args.patch, generator=generator)
    target = torch.randint(0, args.classes, (args.batch, *args.patch), generator=generator)
    print(
        f"{len(args.patch)}D patch {args.patch}, batch {args.batch}, features {args.features}, {args.classes} classes, "
        f"{args.threads} threads, torch {torch.__version__}; {args.warmup} warm-up + {args.steps} timed steps each"
    )
    steps, times, flops = {}, {}, {}
    for variant in args.variants:
        step = make_step(variant, args, image, target)
        parameters = sum(p.numel() for p in step.network.parameters())
        flops[variant] = forward_flops(step.network, image)
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        print(
            f"  {variant:22s} {parameters:>10,d} parameters, forward {flops[variant] / 1e9:.1f} GFLOP, "
            f"warm-up{' incl. compilation' if variant.endswith('compiled') else ''} {time.perf_counter() - start:.1f} s"
        )
        steps[variant], times[variant] = step, []
        record.data["variants"][variant] = {
            "parameters": parameters,
            "forward_flops": flops[variant],
            "warmup_s": time.perf_counter() - start,
            "step_s": times[variant],
        }
        record.write()
    for _ in range(args.steps):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
        record.data["figures"] = figures(times, flops)
        record.write()
    print(f"\n{record.describe_machine()}; results: {record.path}")
    print(f"{'variant':22s} {'median s':>9s} {'min s':>7s} {'GFLOP/s':>8s}  ratio monai/variant (median)")
    for variant, figure in record.data["figures"].items():
        ratio = "-" if figure["ratio_monai_over_variant"] is None else f"{figure['ratio_monai_over_variant']:.2f}x"
        print(f"{variant:22s} {figure['median_s']:9.3f} {figure['min_s']:7.3f} {figure['gflops']:8.1f}  {ratio}")


def figures(times: dict[str, list[float]], flops: dict[str, int]) -> dict[str, dict[str, float | None]]:
    """Per variant: the median and minimum seconds per step, the achieved GFLOP/s at the median (training counted
    as 3x the forward FLOPs) and MONAI's (contiguous) median / the variant's (None without the monai variant)."""
    reference = statistics.median(times["monai"]) if "monai" in times else None
    result = {}
    for variant, measured in times.items():
        median = statistics.median(measured)
        result[variant] = {"median_s": median, "min_s": min(measured), "gflops": 3 * flops[variant] / median / 1e9,
                           "ratio_monai_over_variant": None if reference is None else reference / median}  # fmt: skip
    return result


if __name__ == "__main__":
    main()
