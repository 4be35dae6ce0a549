#!/usr/bin/env python3
"""Evaluate trained runs against Gatys L-BFGS and write the quality page with its grids.

    python scripts/pages/quality_report.py RUN_DIR [RUN_DIR ...] -o docs/quality \\
        [--content PHOTOS] [--size 128] [--limit 3] [--iterations 50,100,200,500] \\
        [--init noise] [--reuse] [loss.weights=PATH ...]

Each RUN_DIR is a training run directory (its ``model.pt``, and its TensorBoard events for
the step count and training time). For each run, ``nst_fast.evaluate.evaluate_model``
(what ``nst-fast evaluate`` runs) writes ``OUT/<run name>/table.md``, ``table.csv`` and
``grid.jpg``; this script then writes ``OUT/README.md``: one summary row per run (network
loss beside L-BFGS after each iteration count, and the fewest iterations whose loss the
network matches) and the grids.
``--reuse`` keeps an evaluation already written and newer than its model (they take
minutes each). Held-out photos default to the scikit-image photos bundled with nst-fast,
which no run trains on unless told to.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nst_fast.data.samples import sample_photos_dir  # noqa: E402
from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import evaluate_model, markdown_table  # noqa: E402
from nst_fast.export import load_model  # noqa: E402
from nst_fast.files import atomic_write  # noqa: E402


@dataclass
class RunSummary:
    name: str
    style: str
    steps: int
    train_minutes: float | None
    rows: dict[str, dict[str, str]]  # method -> table.csv row


def training_minutes(run_dir: Path) -> float | None:
    """Training time from the run's TensorBoard events (see ``active_minutes``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tensorboard").is_dir():
        return None
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    if "loss/total" not in events.Tags()["scalars"]:
        return None
    return active_minutes([(e.step, e.wall_time) for e in events.Scalars("loss/total")])


def active_minutes(points: list[tuple[int, float]]) -> float | None:
    """Minutes spent training, from (step, wall time) pairs of the logged loss.

    The sum of the intervals between logged steps in wall-time order, where an interval
    slower per step than 3x the median (the run stopped, paused, or resumed from an
    earlier checkpoint) counts at the median rate instead: wall clock alone would count
    the pauses.
    """
    points = sorted(points, key=lambda p: p[1])
    spans = [(s1 - s0, t1 - t0) for (s0, t0), (s1, t1) in pairwise(points) if s1 > s0]
    if not spans:
        return None
    median = statistics.median(t / n for n, t in spans)
    return sum(t if t <= 3 * median * n else median * n for n, t in spans) / 60


def evaluate_run(run_dir: Path, out_dir: Path, args: argparse.Namespace) -> RunSummary:
    model = run_dir / "model.pt"
    if not model.is_file():
        raise NstFastError(f"{run_dir}: no model.pt; is it a finished training run?")
    table = out_dir / "table.csv"
    if args.reuse and table.is_file() and table.stat().st_mtime > model.stat().st_mtime:
        print(f"{run_dir.name}: reusing {table}")
    else:
        evaluate(model, out_dir, args)
    _, info = load_model(model)
    with open(table, newline="") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    return RunSummary(run_dir.name, info.style, info.step, training_minutes(run_dir), rows)


def evaluate(model: Path, out_dir: Path, args: argparse.Namespace) -> None:
    """What ``nst-fast evaluate`` does for one model, called as a library function."""
    counts = [] if args.iterations == "none" else args.iterations.split(",")
    try:
        iterations = [int(n) for n in counts]
    except ValueError as err:
        raise NstFastError(
            f"--iterations {args.iterations}: numbers, e.g. 50,100,200, or none"
        ) from err
    evaluate_model(
        model,
        args.content,
        out_dir,
        size=args.size,
        limit=args.limit or None,
        iterations=iterations,
        inits=args.init.split(","),
        overrides=args.overrides,
    )
    print(f"{model}: evaluated into {out_dir}")


def row_total(summary: RunSummary, method: str) -> str:
    return summary.rows[method]["total loss"]


def matched(summary: RunSummary) -> str:
    """The last Gatys row (most iterations) whose total loss the network's is at or below."""
    network = float(row_total(summary, "network"))
    gatys = [m for m in summary.rows if m != "network"]
    beaten = [m for m in gatys if network <= float(row_total(summary, m))]
    return beaten[-1].removeprefix("gatys ") if beaten else "none"


def write_page(summaries: list[RunSummary], out: Path, args: argparse.Namespace) -> Path:
    methods = [m for m in summaries[0].rows if m != "network"]
    header = ["run", "style", "steps", "train min", "network", *methods, "network matches"]
    lines = [
        "# Quality: trained networks beside Gatys optimization",
        "",
        "Generated by `python scripts/pages/quality_report.py`"
        " (see its docstring for the command).",
        f"Held-out photos: {args.limit or 'all'} from `{args.content.name}/`, {args.size} px,"
        " never seen in training. Total loss (the training loss: content + style + tv + grid"
        " penalty), mean over the photos; lower is better.",
        "",
    ]
    body = []
    for s in summaries:
        minutes = "" if s.train_minutes is None else f"{s.train_minutes:.0f}"
        totals = [row_total(s, m) for m in ["network", *methods]]
        body.append([s.name, s.style, str(s.steps), minutes, *totals, matched(s)])
    lines += markdown_table(header, body)
    lines += ["", "Per run: photo, network output, then Gatys after each iteration count.", ""]
    for s in summaries:
        lines += [f"## {s.name}", "", f"![{s.name}]({s.name}/grid.jpg)", ""]
        lines += [*(out / s.name / "table.md").read_text().splitlines(), ""]
    page = out / "README.md"
    with atomic_write(page) as tmp:
        tmp.write_text("\n".join(lines))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", nargs="+", help="training run directories, then any KEY=VALUE loss overrides"
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/quality"))
    parser.add_argument("--content", type=Path, default=None, help="held-out photos")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--iterations", default="50,100,200,500")
    parser.add_argument("--init", default="noise")
    parser.add_argument(
        "--reuse", action="store_true", help="keep evaluations newer than their model.pt"
    )
    args = parser.parse_intermixed_args(argv)
    args.overrides = [a for a in args.runs if "=" in a]  # e.g. loss.weights=PATH
    args.runs = [Path(a) for a in args.runs if "=" not in a]
    args.content = args.content or sample_photos_dir()
    try:
        summaries = [evaluate_run(run, args.output / run.name, args) for run in args.runs]
        page = write_page(summaries, args.output, args)
    except NstFastError as err:
        print(f"quality_report: error: {err}", file=sys.stderr)
        return 2
    print(page.read_text())
    print(f"written: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
