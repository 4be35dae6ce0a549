#!/usr/bin/env python3
"""nst-fast's performance figures beside the reference implementation's, in one run.

    python scripts/bench/benchmark.py            # the full run; writes docs/benchmark-latest.md
    python scripts/bench/benchmark.py --quick    # a smoke run (fewer steps and sizes; no file)
    python scripts/bench/benchmark.py --plain    # the same figures with nst_fast.fast switched off
    python scripts/bench/benchmark.py --styles 4 # training a network of 4 styles (Dumoulin et al.)

Prints one table (figure, project, reference, project/reference, fraction of the
machine's peak) with the machine, torch version and date:

* training images/s at 256 px, batch 4 and 8: the full optimizer step (transform network
  forward and backward, loss network on output and photo, Adam), on random photos (the
  data pipeline is measured on its own, as the reference's benchmark does);
* the data pipeline alone: images/s the PhotoDataModule delivers from a folder of
  full-size JPEGs, and from a copy pre-resized by scripts/data/prepare_data.py;
* stylizing at 512 and 1024 px (s/img), through ``nst_fast.inference.stylize``;
* peak memory (CPU: the process's peak RSS, each figure from a fresh process; CUDA: max
  allocated) for training and for stylizing at 1024 and 2048 px;
* the fp32 matmul peak of the machine, measured in the same run, and each figure's
  GFLOP/s as a fraction of it (FLOPs counted by torch.utils.flop_counter on the plain
  modules, so that both modes are held to the same work);
* a profiler table of one training step.

``--plain`` measures nst-fast with its speed work switched off (``fast=false`` for
training, ``stylize(..., fast=False)``), for A/B figures; every table says which mode ran.
``--styles N`` trains a network of N styles (conditional instance norm, a style per
batch in turn) and stylizes with one of its styles, to set beside the one-style figures.
A full run (no --quick, no --plain) writes the table as Markdown to
docs/benchmark-latest.md; ``--write-md PATH`` writes it elsewhere (or for any run).

The reference is pytorch/examples' fast_neural_style, timed by ../shared/bench/peer_bench.py
in a subprocess of this run when ../shared is present. The VGG16 weights are
../shared/weights/vgg16_imagenet_features.pt when present, else a random init (same
speed, said in the output). On CPU one setup runs (the default training runs with: bf16
autocast where the CPU computes bf16 natively, else fp32; --cpu-precision picks); on CUDA two:
eager fp32 and the optimized default (channels_last, bf16 autocast, torch.compile,
cudnn.benchmark); ``--cuda-setups`` picks one, and ``--compile off`` makes the optimized one
eager bf16. ``--shared DIR`` reads the reference, weights and photos from a copy of ../shared
(what scripts/gpu/gpu_bundle.py sends to a lent GPU machine).

Timings are medians of the timed repeats; on a shared or busy machine they are noisy.

This file is the command line; the figures are taken by the modules of
scripts/bench/benchmark_parts/, one concept each (its ``__init__`` lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (ROOT, HERE):  # the checkout without `pip install -e .`; the parts beside this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchmark_parts.figure_groups import bench_setup  # noqa: E402
from benchmark_parts.memory import child_main  # noqa: E402
from benchmark_parts.paths import LATEST_MD, display_path, use_shared  # noqa: E402
from benchmark_parts.report import write_markdown  # noqa: E402
from benchmark_parts.run import start_run  # noqa: E402
from benchmark_parts.setups import setups  # noqa: E402

from nst_fast.device import keep_freed_memory  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer steps and sizes")
    p.add_argument(
        "--plain",
        action="store_true",
        help="switch nst-fast's speed work off (fast=false, stylize fast=False), for A/B",
    )
    add_figure_options(p)
    add_setup_options(p)
    add_output_options(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.steps = [4], 1
        args.stylize_sizes, args.stylize_repeats = [512], 1
        args.memory_sizes = [1024]
        args.size = min(args.size, 128)
        args.profile_rows = 10
    return args


def add_figure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=256, help="training size in px (256)")
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="training batches")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (3)")
    p.add_argument("--styles", type=int, default=1, help="train a network of this many styles (1)")
    p.add_argument(
        "--stability", action="store_true", help="train with the video stability terms on"
    )
    p.add_argument(
        "--antialias", action="store_true", help="the anti-aliased network (model.antialias)"
    )
    p.add_argument(
        "--style-scales",
        type=float,
        nargs="+",
        default=[1],
        metavar="FACTOR",
        help="train with the style term on this pyramid (loss.style_scales; 1: full size only)",
    )
    p.add_argument(
        "--stylize-sizes", type=int, nargs="+", default=[512, 1024], help="timed stylize sizes"
    )
    p.add_argument("--stylize-repeats", type=int, default=3)
    p.add_argument(
        "--memory-sizes", type=int, nargs="+", default=[1024, 2048], help="stylize memory sizes"
    )
    p.add_argument("--data-workers", type=int, default=2, help="DataLoader workers (2)")
    p.add_argument("--no-peer", action="store_true", help="skip the reference")
    p.add_argument("--no-data", action="store_true", help="skip the data pipeline")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory figures")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler table")
    p.add_argument("--profile-rows", type=int, default=20)
    p.add_argument(
        "--matmul-size",
        type=int,
        default=2048,
        help="n of the n x n matmul that measures the machine's peak (2048; smaller for a "
        "smoke run: the peak is then understated)",
    )


def add_setup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "all"])
    p.add_argument(
        "--cuda-setups",
        nargs="+",
        default=["fp32", "optimized"],
        choices=["fp32", "optimized"],
        help="the CUDA set-ups to run: eager fp32, the optimized one (with --compile off: "
        "eager bf16), or both (default)",
    )
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument(
        "--cpu-precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="CPU training autocast (auto: bf16 where the CPU has it natively, as training)",
    )
    p.add_argument(
        "--compile", default="auto", choices=["auto", "off", "on", "transformer", "loss"]
    )
    p.add_argument(
        "--free-memory",
        action="store_true",
        help="let malloc return freed memory to the OS, as before keep_freed_memory()",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument(
        "--shared",
        type=Path,
        metavar="DIR",
        help="read the reference, the VGG16 weights and coco128 from DIR, laid out as "
        "../shared (default: ../shared)",
    )


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    md = p.add_mutually_exclusive_group()
    md.add_argument(
        "--write-md",
        type=Path,
        metavar="PATH",
        help="write the table as Markdown to PATH (default for a full run without --plain: "
        f"{display_path(LATEST_MD)}; never that file for --quick)",
    )
    md.add_argument("--no-write-md", action="store_true", help="write no Markdown table")


def markdown_path(args: argparse.Namespace) -> Path | None:
    """Where the Markdown table goes: --write-md, else docs/benchmark-latest.md for a full
    run of the default mode. A --quick run never replaces that file."""
    if args.write_md is not None:
        if args.quick and args.write_md.resolve() == LATEST_MD.resolve():
            raise SystemExit(
                f"--quick: a smoke run does not replace {display_path(LATEST_MD)}; "
                "run without --quick, or --write-md another path"
            )
        return args.write_md
    variant = (
        args.plain
        or args.styles > 1
        or args.stability
        or args.antialias
        or args.style_scales != [1]
    )
    if args.quick or variant or args.no_write_md:
        return None
    return LATEST_MD


def child_entry(spec_json: str) -> int:
    spec = json.loads(spec_json)
    # The reference runs as shipped; the project as its command line runs it.
    if not spec["what"].startswith("peer") and not spec.get("free_memory"):
        keep_freed_memory()
    print(json.dumps(child_main(spec)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.shared:
        use_shared(args.shared)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child_entry(args.child)
    md_path = markdown_path(args)  # a refused path fails before the run, not after
    started = time.perf_counter()
    run = start_run(args, argv)
    for setup in setups(args):
        bench_setup(run, setup)
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(run.results, indent=2, default=str))
    if md_path is not None:
        write_markdown(md_path, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
