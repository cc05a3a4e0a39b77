"""Side-by-side benchmark of sliding-window inference: MedSegCNN vs ``monai.inferers.sliding_window_inference``.

Part 1 (``--part 1``): a 3D U-Net (DynUNet-equivalent: features [32, 64, 128, 256, 320], instance norm,
3 classes, random weights) over a 192x192x96 volume (where MONAI's window placement and ours coincide:
starts 0, 48, 96 in-plane, one window across z), 96^3 windows, overlap 0.5, Gaussian weights. Both
functions get the same network object and the same windows. MONAI runs with sw_batch_size 1 and 2 (the faster
counts); ours with its defaults, then on a channels-last copy of the same weights (fp32, bf16 autocast,
torch.compile). Printed per variant: time, ratio to MONAI, the share of time spent outside the network (the
network calls are timed), max |difference| of the averaged logits and argmax agreement with MONAI, and Dice
between the bf16 and fp32 segmentations (random weights: indicative only).

Part 2 (``--part 2``): a 512x512x300 volume, 14 classes, a tiny U-Net (features [4, 8, 16, 32]), 128^3 windows.
Each library runs in its own subprocess so that the peak RSS (``ru_maxrss`` of the child) is its own; MONAI
returns the full logits, ours ``output="labels"``; both one window per batch. Run by hand::

    python Testing/Benchmarks/bench_inference.py [--part 1 2] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import torch

from MedSegCNNLib.inference import sliding_window_inference
from MedSegCNNLib.networks import build_network

VARIANTS = ("monai-sw1", "monai-sw2", "medsegcnn", "medsegcnn-cl", "medsegcnn-cl-bf16", "medsegcnn-cl-compiled")


def monai_sliding_window_inference(*args, **kwargs):
    """MONAI's function, imported on first use: the MedSegCNN child of part 2 must not pay for importing MONAI
    (about 120 MiB of RSS)."""
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(*args, **kwargs)


class Timed:
    """Wraps a network and adds up the seconds spent in its calls."""

    def __init__(self, network) -> None:
        self.network, self.seconds = network, 0.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        result = self.network(batch)
        self.seconds += time.perf_counter() - start
        return result


def unet(features: list[int], classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = {"name": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": classes, "features": features}
    return build_network(config).eval()


def run_variant(
    variant: str, networks: dict, image: torch.Tensor, patch: list[int]
) -> tuple[torch.Tensor, float, float]:
    """(averaged logits, seconds, seconds in the network) of one variant."""
    network = networks["cl"] if "-cl" in variant else networks["plain"]
    if variant.endswith("compiled"):
        network = networks.setdefault("compiled", torch.compile(networks["cl"]))
    timed = Timed(network)
    start = time.perf_counter()
    with torch.inference_mode():
        if variant.startswith("monai"):
            batch = int(variant[-1])
            result = monai_sliding_window_inference(image, patch, batch, timed, overlap=0.5, mode="gaussian")
        else:
            precision = "bf16" if variant.endswith("bf16") else "fp32"
            result = sliding_window_inference(image, timed, patch, overlap=0.5, precision=precision)
    return result, time.perf_counter() - start, timed.seconds


def dice(a: torch.Tensor, b: torch.Tensor, classes: int) -> float:
    """Mean Dice over the foreground classes present in either segmentation."""
    scores = []
    for label in range(1, classes):
        x, y = a == label, b == label
        total = int(x.sum() + y.sum())
        if total:
            scores.append(2 * int((x & y).sum()) / total)
    return sum(scores) / max(len(scores), 1)


def part1(args: argparse.Namespace) -> None:
    classes, patch = 3, [96, 96, 96]
    image = torch.randn((1, 1, 96, 192, 192), generator=torch.Generator().manual_seed(0))
    plain = unet([32, 64, 128, 256, 320], classes)
    cl = unet([32, 64, 128, 256, 320], classes).to(memory_format=torch.channels_last_3d)
    cl.load_state_dict(plain.state_dict())
    networks = {"plain": plain, "cl": cl}
    if any(v.endswith("compiled") for v in args.variants):  # compilation outside the timing
        start = time.perf_counter()
        with torch.inference_mode():
            networks["compiled"] = torch.compile(cl)
            networks["compiled"](torch.zeros((4, 1, *patch)).contiguous(memory_format=torch.channels_last_3d))
        print(f"torch.compile warm-up: {time.perf_counter() - start:.1f} s")
    print(f"Part 1: U-Net 16.5 M parameters, 192x192x96 volume, 96^3 windows, overlap 0.5, {args.threads} threads")
    results = {}
    for variant in args.variants:
        results[variant] = run_variant(variant, networks, image, patch)
        logits, seconds, network = results[variant]
        outside = (seconds - network) / network
        print(f"  {variant:22s} {seconds:7.1f} s  network {network:7.1f} s  outside the network {outside:6.1%}")
    monai = [v for v in results if v.startswith("monai")]
    if not monai:
        return
    best = min(monai, key=lambda v: results[v][1])
    reference, reference_seconds, _ = results[best]
    fp32 = results.get("medsegcnn-cl", results.get("medsegcnn", (None,)))[0]
    print(f"\n{'variant':22s} {'ratio ' + best:>16s} {'max |diff|':>11s} {'argmax agreement':>17s}")
    for variant, (logits, seconds, _) in results.items():
        agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
        difference = (logits - reference).abs().max().item()
        print(f"{variant:22s} {reference_seconds / seconds:15.2f}x {difference:11.2e} {agreement:17.5f}")
    same_weights_check(networks["cl"], image, patch)
    if fp32 is not None and "medsegcnn-cl-bf16" in results:
        score = dice(results["medsegcnn-cl-bf16"][0].argmax(1), fp32.argmax(1), classes)
        print(f"Dice bf16 vs fp32 segmentation (random weights, indicative only): {score:.4f}")


def same_weights_check(network, image: torch.Tensor, patch: list[int]) -> None:
    """Both functions with constant window weights: the windows coincide, so the outputs must agree.

    MONAI 1.6's Gaussian map is clamped to at least 1e-3 at the window borders (ours keeps the Gaussian down
    to ~1e-10 in the corners), which moves near-ties of a random network's logits; with equal weights the
    remaining difference is float rounding."""
    with torch.inference_mode():
        monai = monai_sliding_window_inference(image, patch, 1, network, overlap=0.5, mode="constant")
        ours = sliding_window_inference(image, network, patch, overlap=0.5, mode="constant")
    agreement = (ours.argmax(1) == monai.argmax(1)).float().mean().item()
    difference = (ours - monai).abs().max().item()
    print(f"Constant weights: max |diff| {difference:.2e}, argmax agreement {agreement:.5f}")


def child(library: str) -> None:
    """Part 2 in this process: print a JSON line with the seconds and the peak RSS."""
    network = Timed(unet([4, 8, 16, 32], 14).to(memory_format=torch.channels_last_3d))
    image = torch.randn((1, 1, 300, 512, 512), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        if library == "monai":
            result = monai_sliding_window_inference(image, [128] * 3, 1, network, overlap=0.5, mode="gaussian")
            labels = result.argmax(1)
        else:
            labels = sliding_window_inference(image, network, [128] * 3, batch_size=1, output="labels")
    seconds = time.perf_counter() - start
    histogram = torch.bincount(labels.flatten().long(), minlength=14)[:14].tolist()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
    print(json.dumps({"seconds": seconds, "network_seconds": network.seconds, "peak_rss_gib": peak,
                      "histogram": histogram}))  # fmt: skip


def part2() -> None:
    print("\nPart 2: 512x512x300, 14 classes, tiny U-Net [4, 8, 16, 32], 128^3 windows (one subprocess each)")
    measured = {}
    for library in ("medsegcnn", "monai"):
        output = subprocess.run(
            [sys.executable, __file__, "--child", library], check=True, capture_output=True, text=True
        ).stdout
        result = measured[library] = json.loads(output.strip().splitlines()[-1])
        outside = result["seconds"] - result["network_seconds"]
        print(
            f"  {library:10s} {result['seconds']:7.1f} s  outside the network {outside:6.1f} s  "
            f"peak RSS {result['peak_rss_gib']:.2f} GiB"
        )
    ours, monai = measured["medsegcnn"], measured["monai"]
    agreement = sum(min(a, b) for a, b in zip(ours["histogram"], monai["histogram"], strict=True)) / sum(
        ours["histogram"]
    )
    outside = (monai["seconds"] - monai["network_seconds"]) / (ours["seconds"] - ours["network_seconds"])
    print(
        f"  speed-up {monai['seconds'] / ours['seconds']:.2f}x (outside the network {outside:.1f}x); "
        f"peak RSS {monai['peak_rss_gib'] / ours['peak_rss_gib']:.1f}x lower; label histogram overlap {agreement:.5f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", choices=("medsegcnn", "monai"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child)
        return
    if 1 in args.part:
        part1(args)
    if 2 in args.part:
        part2()


if __name__ == "__main__":
    main()
