#!/usr/bin/env python3
"""The GPU check: what a lent CUDA machine has to confirm, in one run of under 8 minutes,
written as a report (gpu_check.md, gpu_check.json and the full gpu_check.log) under --out.

    python scripts/gpu/gpu_check.py --out DIR              # on a CUDA machine: make gpu-check
    python scripts/gpu/gpu_check.py --out DIR --rehearse   # the same sections on the CPU, tiny

Nothing in the project has ever run on a GPU and a machine is lent rarely, for minutes: so
the whole check is one prepared command, and ``--rehearse`` runs every section on the CPU
at tiny sizes (random VGG weights, photos it makes) so that tests/test_gpu_check.py keeps
the script from rotting between loans. The sections, in order:

* environment: the GPU, the software, what nst-fast picks there (precision, workers), and
  the bundle's weights unpacked (scripts/gpu/gpu_bundle.py: what travels to the machine);
* cuda tests: the tests that skip without CUDA, run with pytest;
* train steps: the training step finite under bf16 and fp16 autocast, and with
  ``compile=true``;
* benchmark: scripts/bench/benchmark.py in eager bf16, fast=true and fast=false, training img/s
  at 256 px batch 4 and 16, stylize at 512 and 1024 px, peak memory, beside the reference;
* stylize 4K: a 3840x2160 frame through ``inference.stylize``, fast and plain, peak memory;
* training run: ``nst-fast train experiment=johnson2016`` on coco128, time-boxed, with
  Lightning's SimpleProfiler and the data pipeline timed on its own (data against compute);
* export: ``nst-fast export`` to TorchScript and ONNX, each file checked on the GPU;
* stylize folder, stylize video: ``nst-fast stylize`` of a folder of photos and of a clip.

Each section has a time box and runs apart from the others: one that fails or runs out of
time records why in the report and the next one starts. The report is rewritten after each
section, so a run stopped from outside still leaves what it had measured.

This file is the command line and the order of the sections; the sections and what they
share are the modules of scripts/gpu/gpu_check_parts/ (its ``__init__`` lists them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (ROOT, HERE):  # the checkout without `pip install -e .`; the parts beside this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from gpu_check_parts.commands import (  # noqa: E402
    section_export,
    section_stylize_folder,
    section_stylize_video,
)
from gpu_check_parts.context import (  # noqa: E402
    BUNDLE,
    GPU,
    REHEARSAL,
    REPORT,
    Context,
    Section,
    Sizes,
    TimeBoxExceeded,
)
from gpu_check_parts.cuda_tests import section_cuda_tests  # noqa: E402
from gpu_check_parts.environment import (  # noqa: E402
    find_inputs,
    install_wheels,
    section_environment,
)
from gpu_check_parts.report import write_report  # noqa: E402
from gpu_check_parts.running import time_box  # noqa: E402
from gpu_check_parts.speed import section_benchmark, section_stylize_4k  # noqa: E402
from gpu_check_parts.training import section_train_steps, section_training_run  # noqa: E402

# name, title, function, time box on a GPU (s), in a rehearsal (s). Ordered so that the
# figures the issue asks for come first; boxes add up to about the GPU budget.
SECTIONS: list[tuple[str, str, Callable[[Context, Section], None], int, int]] = [
    ("environment", "Environment", section_environment, 30, 30),
    ("cuda_tests", "CUDA tests", section_cuda_tests, 60, 60),
    ("train_steps", "Training steps: bf16, fp16, compile", section_train_steps, 90, 90),
    ("benchmark", "Benchmark against the reference", section_benchmark, 150, 120),
    ("stylize_4k", "Stylize 4K", section_stylize_4k, 25, 30),
    ("training_run", "Training run: experiment=johnson2016", section_training_run, 100, 90),
    ("export", "Export: TorchScript and ONNX", section_export, 40, 60),
    ("stylize_folder", "nst-fast stylize: a folder", section_stylize_folder, 25, 40),
    ("stylize_video", "nst-fast stylize: a video", section_stylize_video, 25, 40),
]
# Seconds kept for each section still to come when an earlier one may run long.
RESERVE_S = 15


def run_sections(ctx: Context, names: list[str] | None, started: float) -> list[Section]:
    chosen = [s for s in SECTIONS if names is None or s[0] in names]
    sections = [Section(name, title) for name, title, *_ in chosen]
    end = started + ctx.sizes.budget_s
    for i, ((_, _, fn, gpu_box, rehearsal_box), sec) in enumerate(
        zip(chosen, sections, strict=True)
    ):
        later = len(chosen) - i - 1
        box = min(rehearsal_box if ctx.rehearse else gpu_box, end - time.monotonic())
        box = min(box, end - time.monotonic() - RESERVE_S * later) if later else box
        sec.box_s = box
        print(f"[{time.monotonic() - started:5.0f} s] {sec.title} (box {box:.0f} s)", flush=True)
        ctx.log(f"\n===== {sec.title} (box {box:.0f} s)")
        if box < 1:
            sec.status, sec.error = "skipped", "no time left in the run's budget"
        else:
            run_one(ctx, fn, sec, box)
        print(f"        {sec.status}: {sec.error or sec.summary}", flush=True)
        write_report(ctx, sections, started)
    return sections


def run_one(ctx: Context, fn: Callable[[Context, Section], None], sec: Section, box: float) -> None:
    """One section in its time box; its error, never the run's."""
    start = time.monotonic()
    ctx.section_end = start + box
    try:
        with time_box(box):
            fn(ctx, sec)
        sec.status = "ok"
    except TimeBoxExceeded as err:
        sec.status, sec.error = "timed out", str(err)
    except Exception as err:
        sec.status, sec.error = "failed", f"{type(err).__name__}: {str(err).strip()[:800]}"
        ctx.log(traceback.format_exc())
    finally:
        sec.seconds = time.monotonic() - start
        if ctx.device == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()


def child_env(site: Path | None) -> dict[str, str]:
    """The commands' environment: this checkout (and the bundle's packages) importable
    without an install, output unbuffered for the log."""
    env = dict(os.environ)
    paths = [str(site)] if site else []
    paths += [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the report")
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="run every section on the CPU at tiny sizes, in about a minute",
    )
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument(
        "--shared",
        type=Path,
        help="../shared or a copy in its layout (default: the bundle's, else ../shared)",
    )
    p.add_argument("--budget", type=float, help="seconds for the whole run (GPU 450)")
    p.add_argument(
        "--sections", nargs="+", choices=[s[0] for s in SECTIONS], help="only these sections"
    )
    return p.parse_args(argv)


def default_shared() -> Path | None:
    for folder in (BUNDLE / "shared", ROOT.parent / "shared"):
        if folder.is_dir():
            return folder
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not args.rehearse else "cpu"
    if device == "cpu" and not args.rehearse:
        raise SystemExit("gpu_check: no CUDA device here; --rehearse runs it on the CPU")
    sizes = REHEARSAL if args.rehearse else GPU
    if args.budget:
        sizes = Sizes(**{**sizes.__dict__, "budget_s": args.budget})
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="nst_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    site = work / "site"
    installed = [] if args.rehearse else install_wheels(BUNDLE, site)
    ctx = Context(
        out=args.out,
        work=work,
        rehearse=args.rehearse,
        sizes=sizes,
        device=device,
        shared=args.shared or default_shared(),
        log_path=args.out / f"{REPORT}.log",
        env=child_env(site if installed else None),
    )
    if args.rehearse:  # tiny tensors: a second thread only spins, on cores others share
        torch.set_num_threads(1)
        ctx.env["OMP_NUM_THREADS"] = "1"
    ctx.log_path.write_text(f"nst-fast GPU check, {ctx.sizes}\nwheels installed: {installed}\n")
    # The cache of generated styles and downloads, away from the user's.
    ctx.env["NST_FAST_CACHE"] = os.environ["NST_FAST_CACHE"] = str(work / "cache")
    find_inputs(ctx)
    sections = run_sections(ctx, args.sections, started)
    failed = [s.name for s in sections if s.status != "ok"]
    print(f"report: {ctx.out / (REPORT + '.md')} ({time.monotonic() - started:.0f} s)")
    if failed:
        print(f"not ok: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
