"""One run: what its set-ups share (options, the header that says where and how the
figures were taken, the reference's runs, the results) and how it starts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark_parts import paths
from benchmark_parts.paths import display_path, vgg_weights
from benchmark_parts.report import cpu_capability, cpu_name
from benchmark_parts.setups import Setup, mode_text
from nst_fast.device import keep_freed_memory


@dataclass
class Run:
    """What every set-up of one run shares: options, header, reference runs, results."""

    args: argparse.Namespace
    command: str
    weights: str
    peer_ok: bool
    header: list[tuple[str, str]] = field(default_factory=list)
    peer_cache: dict[tuple[str, int], dict] = field(default_factory=dict)
    ref_memory: dict[tuple[str, int], float] = field(default_factory=dict)
    results: dict = field(default_factory=lambda: {"setups": {}})
    sections: list[str] = field(default_factory=list)  # Markdown, one per set-up

    def figures(self, setup: Setup) -> dict:
        return self.results["setups"].setdefault(setup.name, {})


def start_run(args: argparse.Namespace, argv: list[str] | None) -> Run:
    """Sets the allocator, prints the run's header; the state the set-ups share."""
    if args.free_memory:
        allocator = "glibc default"
    elif keep_freed_memory():
        allocator = "freed memory kept"
    else:
        allocator = "system default (not glibc)"
    run = Run(
        args, command_line(argv), vgg_weights(), paths.PEER_BENCH.exists() and not args.no_peer
    )
    run.results["args"] = {k: str(v) for k, v in vars(args).items()}
    run.header = header_lines(run, allocator)
    print("nst-fast benchmark")
    for label, value in run.header:
        host = f"{platform.node()}: " if label == "machine" else ""
        print(f"  {label:<9} {host}{value}")
    print()
    return run


def header_lines(run: Run, allocator: str) -> list[tuple[str, str]]:
    """Date (UTC), machine, software, mode, and how the figures were taken."""
    now = datetime.datetime.now(datetime.timezone.utc)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    threads = f"{torch.get_num_threads()} torch threads"
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {threads}, {cpu_capability()}"
    weights = run.weights if run.weights == "random" else display_path(Path(run.weights))
    reference = f"{display_path(paths.PEER_BENCH)} (subprocess)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    quick = "  [--quick: smoke run, not the figures]" if run.args.quick else ""
    return [
        ("date", now.strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", machine),
        ("gpu", gpu),
        ("software", f"torch {torch.__version__}, Python {platform.python_version()}"),
        ("measured", mode_text(not run.args.plain)),
        ("allocator", f"{allocator} (the reference: as shipped)"),
        ("VGG16", "random init (no ../shared/weights)" if weights == "random" else weights),
        ("reference", reference if run.peer_ok else "not run (no ../shared or --no-peer)"),
        ("load", f"{load:.2f} (1-min load average at start)"),
        ("command", run.command + quick),
    ]


def command_line(argv: list[str] | None) -> str:
    """The command as typed (``argv`` None), else as ``main(argv)`` was called."""
    if argv is None:
        return shlex.join([Path(sys.executable).name, *sys.argv])
    return shlex.join(["python", "scripts/bench/benchmark.py", *argv])
