"""The work of each figure and the machine's peak: FLOPs per image (counted on the plain
modules, so both modes are held to the same work) and the matmul peak they are shares of.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

import torch

from benchmark_parts.setups import Setup, config_groups, project_config, pyramid
from benchmark_parts.stylizing import plain_transformer
from benchmark_parts.timing import time_calls
from nst_fast.losses.build import build_criterion
from nst_fast.losses.network import LossNetwork


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# FLOPs are counted on a small image and scaled by the pixel count: every layer is
# convolutional (and the Gram matrices are C x HW x C products), so the count per pixel
# does not depend on the size (sizes divisible by 8).
COUNT_SIZE = 64


def training_flops_per_image(
    size: int, reference: bool, style_scales: tuple[float, ...] = (1,), antialias: bool = False
) -> float:
    """FLOPs of one training image (CPU, plain modules, counted at 64 px and scaled).

    The project's step computes the photo's VGG features only up to the content layer;
    the reference's (pytorch/examples) runs the photo through VGG up to relu4_3 as well:
    its count is the same step with that one difference. ``style_scales``: the project's
    style pyramid (the reference has none). ``antialias``: the project's anti-aliased
    network (its filters' work counted too).
    """
    loss, style = config_groups(project_config("random", *pyramid(style_scales)), "loss", "style")
    net = plain_transformer(antialias)
    criterion = build_criterion(loss, style, net.multiple)
    network: LossNetwork = criterion.network
    photo = torch.rand(1, 3, COUNT_SIZE, COUNT_SIZE)
    criterion.set_style(photo)

    def step() -> None:
        criterion(net(photo), photo)["total"].backward()

    flops = count_flops(step)
    if reference:  # the photo's features up to relu4_3, not only up to the content layer
        with torch.no_grad():
            flops += count_flops(lambda: network(photo))
            flops -= count_flops(lambda: network(photo, upto=loss["content_layer"]))
    return flops * (size / COUNT_SIZE) ** 2


def stylize_flops(size: int, antialias: bool = False) -> float:
    net = plain_transformer(antialias)
    with torch.no_grad():
        flops = count_flops(lambda: net(torch.rand(1, 3, COUNT_SIZE, COUNT_SIZE)))
    return flops * (size / COUNT_SIZE) ** 2


def matmul_peak(device: str, dtype: torch.dtype = torch.float32, n: int = 2048) -> dict:
    """GFLOP/s of an n x n matmul: best and median of several repeats."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeats = 10 if device == "cpu" else 50
    times = time_calls(lambda: a @ b, device, warmup=2, repeats=repeats)
    flops = 2 * n**3
    return {"best": flops / min(times) / 1e9, "median": flops / statistics.median(times) / 1e9}


@dataclass
class Peaks:
    fp32: dict  # best and median GFLOP/s of the fp32 matmul
    half: float | None = None  # the autocast dtype's best; None without autocast


@dataclass
class Work:
    """FLOPs per image of each figure (the plain modules' count, in either mode)."""

    train: float
    ref_train: float
    stylize: dict[int, float]


def measure_peaks(setup: Setup, n: int = 2048) -> Peaks:
    peak = matmul_peak(setup.device, n=n)
    print(
        f"  fp32 matmul {n}^3: best {peak['best']:.1f} GFLOP/s, "
        f"median {peak['median']:.1f} (the peak below is the best)",
        flush=True,
    )
    peaks = Peaks(peak)
    if setup.amp is not None:
        peaks.half = matmul_peak(setup.device, setup.amp, n)["best"]
        print(f"  {setup.amp} matmul peak: best {peaks.half:.1f} GFLOP/s", flush=True)
    return peaks


def remeasure_peaks(setup: Setup, before: Peaks, n: int = 2048) -> Peaks:
    """The machine's peaks: the best seen before or after the figures."""
    again = matmul_peak(setup.device, n=n)
    print(f"  fp32 matmul peak again at the end: best {again['best']:.1f} GFLOP/s")
    peaks = Peaks({**before.fp32, "best": max(before.fp32["best"], again["best"])}, before.half)
    if setup.amp is not None:
        peaks.half = max(before.half or 0.0, matmul_peak(setup.device, setup.amp, n)["best"])
        print(f"  {setup.amp} peak, best of both: {peaks.half:.1f} GFLOP/s", flush=True)
    return peaks


def count_work(args: argparse.Namespace) -> Work:
    scales = tuple(args.style_scales)
    work = Work(
        training_flops_per_image(
            args.size, reference=False, style_scales=scales, antialias=args.antialias
        ),
        training_flops_per_image(args.size, reference=True),
        {size: stylize_flops(size, args.antialias) for size in args.stylize_sizes},
    )
    print(
        f"  work: {work.train / 1e9:.0f} GFLOP per training image at {args.size} px "
        f"(reference's step: {work.ref_train / 1e9:.0f}); stylize "
        + ", ".join(f"{s} px {f / 1e9:.0f}" for s, f in work.stylize.items())
        + " GFLOP",
        flush=True,
    )
    return work
