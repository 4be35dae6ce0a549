"""Running inside a section's time box: the box itself, commands ended with everything
they started when it runs out, and the small timers and formats the sections share.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from gpu_check_parts.context import (
    ROOT,
    CommandFailed,
    Context,
    TimeBoxExceeded,
)


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise TimeBoxExceeded in this (main) thread after ``seconds``: in-process work
    stops at its next Python line, commands are ended by run_command."""

    def expire(*_: object) -> None:
        raise TimeBoxExceeded(f"ran past its time box of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_command(ctx: Context, argv: list[str], limit: float | None = None) -> str:
    """Run ``argv`` in the checkout, its output into the log; its output. A command past
    the section's time (or ``limit``) is ended with everything it started."""
    limit = min(limit or math.inf, ctx.left() - 1)
    if limit <= 1:
        raise TimeBoxExceeded(f"no time left in the box for: {shlex.join(argv[:4])} ...")
    ctx.log(f"\n$ {shlex.join(argv)}")
    start = time.monotonic()
    # A session of its own: a time-out ends the command's children too (DDP, loaders).
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=ctx.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=limit)
    except BaseException as err:  # its own time-out, or the section's box
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        ctx.log(out or "")
        if isinstance(err, subprocess.TimeoutExpired):
            raise TimeBoxExceeded(f"{command_name(argv)} ran past {limit:.0f} s") from err
        raise
    ctx.log((out or "") + f"[exit {proc.returncode} after {time.monotonic() - start:.1f} s]")
    if proc.returncode:
        tail = " | ".join(line for line in out.strip().splitlines()[-3:])
        raise CommandFailed(f"{command_name(argv)} exited {proc.returncode}: {tail[-600:]}")
    return out


def command_name(argv: list[str]) -> str:
    words = [Path(argv[0]).name, *argv[1:4]]
    return " ".join(Path(w).name if "/" in w else w for w in words)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def use_benchmark_parts() -> None:
    """Makes scripts/bench/benchmark_parts importable: the benchmark's set-ups, steps and
    timers, the ones the figures elsewhere come from."""
    scripts = str(ROOT / "scripts" / "bench")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
