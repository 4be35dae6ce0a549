"""The tables: one row per figure beside the reference's, speed-ups, shares of the
machine's peak; printed, and written as the Markdown of docs/benchmark-latest.md.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from benchmark_parts.paths import display_path
from benchmark_parts.setups import Setup

if TYPE_CHECKING:
    from benchmark_parts.flops import Peaks
    from benchmark_parts.run import Run


@dataclass
class Row:
    figure: str
    project: float | None
    reference: float | None = None
    unit: str = ""
    higher_is_better: bool = True
    flops: float | None = None  # per unit of work, for the fraction of peak
    ref_flops: float | None = None
    target: float | None = None  # required speed-up over the reference
    notes: list[str] = field(default_factory=list)
    half: bool = False  # the project's figure ran under autocast: its peak is the half one

    def speedup(self) -> float | None:
        if not self.project or not self.reference:
            return None
        ratio = self.project / self.reference
        return ratio if self.higher_is_better else 1 / ratio


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def gflops_per_s(value: float | None, unit: str, flops: float | None) -> float | None:
    """Achieved GFLOP/s from a figure: img/s times FLOPs/img, or FLOPs/img over s/img."""
    if value is None or flops is None:
        return None
    if unit == "img/s":
        return value * flops / 1e9
    if unit == "s/img":
        return flops / value / 1e9
    return None


def table_cells(row: Row, peak: float, half_peak: float | None = None) -> list[str]:
    """One row's cells, in COLUMNS order. ``peak``: the fp32 matmul peak (the reference's,
    and the project's fp32 rows); ``half_peak``: the autocast dtype's, for the project's
    rows that ran under it."""
    ratio = row.project / row.reference if row.project and row.reference else None
    speedup = row.speedup()
    target = ""
    if row.target is not None:
        target = f"{row.target:.1f}x"
        if speedup is not None:
            target += " ok" if speedup >= row.target else " MISS"
    fp = gflops_per_s(row.project, row.unit, row.flops)
    fr = gflops_per_s(row.reference, row.unit, row.ref_flops or row.flops)
    own_peak = half_peak if row.half and half_peak else peak
    pp = f"{100 * fp / own_peak:.0f}%" if fp is not None else ""
    pr = f"{100 * fr / peak:.0f}%" if fr is not None and row.reference else ""
    speed = (fmt(speedup) + "x") if speedup else "-"
    cells = [row.figure, row.unit, fmt(row.project), fmt(row.reference), fmt(ratio), speed]
    return [*cells, target, pp, pr]


# name, width (negative: left-aligned) of the printed table's columns
COLUMNS = (
    ("figure", -44),
    ("unit", -6),
    ("project", 9),
    ("reference", 9),
    ("proj/ref", 8),
    ("speed-up", 8),
    ("target", 7),
    ("% peak proj", 11),
    ("% peak ref", 10),
)


def text_line(cells: list[str]) -> str:
    parts = [
        f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)
    ]
    return " ".join(parts[:7]) + "  " + " ".join(parts[7:])


def print_table(rows: list[Row], peak: float, half_peak: float | None = None) -> None:
    head = text_line([name for name, _ in COLUMNS])
    print(head)
    print("-" * len(head))
    for row in rows:
        print(text_line(table_cells(row, peak, half_peak)))
        for note in row.notes:
            print(f"{'':<4}{note}")


def markdown_table(rows: list[Row], peaks: Peaks, fast: bool) -> list[str]:
    who = "nst-fast" if fast else "nst-fast plain"
    head = ["figure", "unit", who, "reference", f"{who} / ref.", "speed-up", "target"]
    head += [f"% of peak, {who}", "% of peak, ref."]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(table_cells(row, peaks.fp32["best"], peaks.half)) + " |")
    return lines


def markdown_section(setup: Setup, rows: list[Row], peaks: Peaks) -> str:
    """One set-up's table, its peaks and its rows' notes, as Markdown."""
    text = [f"## {setup.name}: {setup.describe()}", "", peaks_text(setup, peaks) + "."]
    if peaks.half:
        text[-1] += (
            f" nst-fast's rows under autocast are shares of the {dtype_name(setup.amp)} peak, "
            "the others of the fp32 one."
        )
    text[-1] += " Speed-up: how many times better nst-fast is than the reference."
    notes = [f"- {row.figure}: {note}" for row in rows for note in row.notes]
    return "\n".join([*text, "", *markdown_table(rows, peaks, setup.fast), "", *notes, ""])


def write_markdown(path: Path, run: Run) -> None:
    """The run's tables as Markdown, marked as generated, with the run's header."""
    text = [
        "# Latest benchmark",
        "",
        "Generated by `python scripts/bench/benchmark.py`; do not edit. A full run (`make bench`)",
        "replaces this file; docs/performance.md explains the figures and the options.",
        "",
    ]
    for label, value in run.header:
        text.append(f"- {label}: `{value}`" if label == "command" else f"- {label}: {value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*text, "", *run.sections]).rstrip() + "\n")
    print(f"wrote {display_path(path)}")


def peaks_text(setup: Setup, peaks: Peaks) -> str:
    half = f", {dtype_name(setup.amp)} {peaks.half:.0f}" if peaks.half else ""
    return f"fp32 matmul peak {peaks.fp32['best']:.0f} GFLOP/s{half}"


def dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.")


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()
