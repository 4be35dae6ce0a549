"""The speed sections: scripts/bench/benchmark.py in eager bf16 beside the reference,
and a 3840x2160 frame stylized in one pass, fast and plain.
"""

from __future__ import annotations

import json
import statistics
import sys

import torch

from gpu_check_parts.context import (
    ROOT,
    Context,
    Section,
)
from gpu_check_parts.running import (
    fmt,
    peak_mib,
    reset_peak,
    run_command,
    use_benchmark_parts,
)


def section_benchmark(ctx: Context, sec: Section) -> None:
    """scripts/bench/benchmark.py in eager bf16 (the optimized set-up with compile off), once as
    nst-fast ships (fast=true, beside the reference) and once plain (fast=false)."""
    sizes = ctx.sizes
    argv = [sys.executable, str(ROOT / "scripts" / "bench" / "benchmark.py"), "--no-data"]
    argv += ["--size", str(sizes.train_size), "--steps", str(sizes.steps)]
    argv += ["--batches", *map(str, sizes.batches)]
    argv += ["--stylize-sizes", *map(str, sizes.stylize_sizes)]
    argv += ["--stylize-repeats", str(sizes.stylize_repeats)]
    argv += ["--memory-sizes", *map(str, sizes.memory_sizes)]
    if ctx.device == "cuda":
        argv += ["--device", "cuda", "--cuda-setups", "optimized", "--compile", "off"]
    else:  # the CPU's peak at 2048, and a process for each memory figure, take longer
        # than every other figure of a rehearsal
        argv += ["--device", "cpu", "--cpu-precision", "bf16", "--no-profile"]
        argv += ["--matmul-size", "256", "--no-memory"]
    if ctx.shared is not None and not ctx.rehearse:
        argv += ["--shared", str(ctx.shared)]
    else:  # the rehearsal's VGG is random and ../shared's reference is not timed
        argv += ["--no-peer"]
    figures = {}
    plain = ["--plain", "--no-peer", "--no-profile"]
    for mode, extra in (("fast", []), ("plain", plain)):
        md, js = ctx.work / f"benchmark_{mode}.md", ctx.work / f"benchmark_{mode}.json"
        run_command(ctx, [*argv, *extra, "--json", str(js), "--write-md", str(md)])
        figures[mode] = json.loads(js.read_text())
        sec.data[f"{mode}_markdown"] = md.read_text()
    sec.data["figures"] = figures
    rows = benchmark_rows(figures)
    sec.data["rows"] = rows
    sec.lines = [
        "| figure | unit | fast=true | fast=false | reference | fast/plain | fast vs ref. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        sec.lines.append(
            f"| {r['figure']} | {r['unit']} | {fmt(r['fast'])} | {fmt(r['plain'])} | "
            f"{fmt(r['reference'])} | {fmt(r['fast_over_plain'])}x | {fmt(r['speedup'])}x |"
        )
    sec.lines += ["", "benchmark.py's own table (fast=true):", "", sec.data["fast_markdown"]]
    train = [r for r in rows if r["figure"].startswith("train")]
    sec.summary = "; ".join(
        f"{r['figure'].removeprefix('train ')} {fmt(r['fast'])} img/s "
        f"(plain {fmt(r['plain'])}, ref. {fmt(r['reference'])})"
        for r in train
    )


def benchmark_rows(figures: dict[str, dict]) -> list[dict]:
    """The fast run's rows beside the plain run's: each figure's speed-ups, in the
    direction that is better (img/s up, s/img and MiB down)."""

    def rows(mode: str) -> dict[str, dict]:
        out = {}
        for setup in figures[mode]["setups"].values():
            for row in setup.get("rows", []):
                out[row["figure"]] = row
        return out

    fast, plain = rows("fast"), rows("plain")
    table = []
    for name, row in fast.items():
        other = plain.get(name, {})
        better = row.get("higher_is_better", True)

        def ratio(a: float | None, b: float | None, better: bool = better) -> float | None:
            if not a or not b:
                return None
            return a / b if better else b / a

        table.append(
            {
                "figure": name,
                "unit": row["unit"],
                "fast": row["project"],
                "plain": other.get("project"),
                "reference": row.get("reference"),
                "fast_over_plain": ratio(row["project"], other.get("project")),
                "speedup": ratio(row["project"], row.get("reference")),
            }
        )
    return table


def section_stylize_4k(ctx: Context, sec: Section) -> None:
    """A 3840x2160 frame through ``inference.stylize`` in one pass (bf16), fast and plain:
    seconds per frame, CPU to GPU and back included, and peak memory."""
    from nst_fast.inference import stylize

    use_benchmark_parts()
    from benchmark_parts.setups import Setup
    from benchmark_parts.stylizing import make_transformer
    from benchmark_parts.timing import time_calls

    height, width = ctx.sizes.uhd
    image = torch.rand(3, height, width)
    for fast in (True, False):
        setup = Setup(
            f"{height}p",
            ctx.device,
            channels_last=True,
            amp=torch.bfloat16,
            cudnn_benchmark=ctx.device == "cuda",
            fast=fast,
        )
        net = make_transformer(setup)
        reset_peak(ctx.device)
        times = time_calls(
            lambda net=net, fast=fast: stylize(net, image, half=True, fast=fast),
            ctx.device,
            warmup=1,
            repeats=ctx.sizes.stylize_repeats,
        )
        mode = "fast" if fast else "plain"
        sec.data[mode] = {"s_per_frame": statistics.median(times), "peak_mib": peak_mib(ctx.device)}
        del net
    fast, plain = sec.data["fast"], sec.data["plain"]
    sec.summary = (
        f"{width}x{height}: {fmt(fast['s_per_frame'])} s/frame fast, "
        f"{fmt(plain['s_per_frame'])} plain; peak {fmt(fast['peak_mib'])} MiB fast, "
        f"{fmt(plain['peak_mib'])} plain"
    )
    sec.lines = [f"- {sec.summary} (bf16, channels_last, one pass, no tiles)"]
