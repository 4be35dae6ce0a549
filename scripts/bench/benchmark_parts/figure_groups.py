"""Each set-up's figure groups, in order: training beside the reference, stylizing, the
data pipeline, peak memory; then its table and its profile.
"""

from __future__ import annotations

import time

import torch

from benchmark_parts import paths
from benchmark_parts.data_pipeline import measure_data
from benchmark_parts.flops import Peaks, Work, count_work, measure_peaks, remeasure_peaks
from benchmark_parts.memory import run_child
from benchmark_parts.reference import run_peer
from benchmark_parts.report import Row, fmt, markdown_section, peaks_text, print_table
from benchmark_parts.run import Run
from benchmark_parts.setups import Setup, setup_spec
from benchmark_parts.stylizing import bench_stylize
from benchmark_parts.training import bench_training, profile_training
from nst_fast.device import inference_dtype

# The speed-ups over the reference the project set out to reach, by batch and by size.
TRAIN_TARGETS = {4: 1.7}
STYLIZE_TARGETS = {512: 1.3, 1024: 2.0}


def training_rows(run: Run, setup: Setup, work: Work) -> tuple[list[Row], dict[int, dict]]:
    """Training img/s per batch beside the reference's; and the reference's runs."""
    args, rows, peer_runs = run.args, [], {}
    for batch in args.batches:
        t0 = time.perf_counter()
        train = bench_training(setup, batch, args.size, args.steps, run.weights)
        print(
            f"  train batch {batch}: {train['s_per_step']:.2f} s/step "
            f"(steps {', '.join(f'{t:.2f}' for t in train['times'])}; first "
            f"{train['first_step_s']:.1f} s) [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
        run.figures(setup)[f"train_b{batch}"] = train
        peer = reference_training(run, setup.device, batch) if run.peer_ok else None
        if peer:
            peer_runs[batch] = run.figures(setup)[f"peer_b{batch}"] = peer
        rows.append(
            Row(
                f"train {args.size}px batch {batch}",
                train["img_per_s"],
                peer and peer.get("img_per_s"),
                "img/s",
                flops=work.train,
                ref_flops=work.ref_train,
                target=TRAIN_TARGETS.get(batch),
                half=setup.amp is not None,
            )
        )
    return rows, peer_runs


def reference_training(run: Run, device: str, batch: int) -> dict:
    """The reference's run at ``batch``: one per device serves every set-up."""
    t0 = time.perf_counter()
    key = (device, batch)
    if key not in run.peer_cache:
        run.peer_cache[key] = run_peer(device, batch, run.args.size, run.args.steps)
    peer = run.peer_cache[key]
    elapsed = time.perf_counter() - t0
    print(f"  reference batch {batch}: {peer['lines']} [{elapsed:.0f} s]", flush=True)
    return peer


def reference_stylize(peer_runs: dict[int, dict]) -> dict[int, float]:
    """Each reference run also stylizes: its best time per size (conservative)."""
    best: dict[int, float] = {}
    for peer in peer_runs.values():
        for size, seconds in peer["stylize"].items():
            best[size] = min(seconds, best.get(size, seconds))
    return best


def stylize_rows(run: Run, setup: Setup, peer_runs: dict[int, dict], work: Work) -> list[Row]:
    """Stylize s/img per size, beside the reference's."""
    reference = reference_stylize(peer_runs)
    half = inference_dtype(torch.device(setup.device), setup.amp is not None) != torch.float32
    rows = []
    for size in run.args.stylize_sizes:
        seconds = bench_stylize(setup, size, run.args.stylize_repeats)
        print(f"  stylize {size} px: {seconds:.3f} s/img", flush=True)
        run.figures(setup)[f"stylize_{size}"] = seconds
        rows.append(
            Row(
                f"stylize {size}px",
                seconds,
                reference.get(size),
                "s/img",
                higher_is_better=False,
                flops=work.stylize[size],
                target=STYLIZE_TARGETS.get(size),
                half=half,
            )
        )
    return rows


def data_rows(run: Run, setup: Setup, need: float) -> list[Row]:
    """The data pipeline's img/s, and its multiple of what the training step takes."""
    full, small, label = measure_data(run.args)
    run.figures(setup)["data"] = {"full": full, "prepared": small}
    workers = run.args.data_workers
    rows = []
    for name, figures, source in (
        (f"full-size JPEGs ({workers} workers)", full, f" ({label})"),
        (f"prepare_data.py copy ({workers} w.)", small, ""),
    ):
        speed = figures["img_per_s"]
        note = f"{speed / need:.0f}x the training step's need{source}"
        rows.append(Row(f"data pipeline, {name}", speed, unit="img/s", notes=[note]))
    return rows


def memory_rows(run: Run, setup: Setup, peer: dict | None) -> list[Row]:
    """Peak memory of training and of stylizing, each figure from a fresh process."""
    spec = {"device": setup.device, "setup": setup_spec(setup), "weights": run.weights}
    spec["free_memory"] = run.args.free_memory
    kind = "max allocated" if setup.device == "cuda" else "peak RSS"
    row, mem = train_memory_row(run, spec, kind, peer)
    rows = [row]
    for size in run.args.memory_sizes:
        mem = run_child({**spec, "what": "stylize", "size": size})
        ref = reference_stylize_memory(run, spec, size)
        figure = f"memory: stylize {size}px ({kind})"
        rows.append(Row(figure, mem["peak_mib"], ref, "MiB", higher_is_better=False))
        print(
            f"  memory stylize {size}: {mem['peak_mib']:.0f} MiB (reference {fmt(ref)})",
            flush=True,
        )
    if setup.device == "cpu":
        rows[-1].notes.append(
            f"CPU figures include the Python + torch process itself "
            f"(~{mem['base_mib']:.0f} MiB after imports)"
        )
    return rows


def train_memory_row(run: Run, spec: dict, kind: str, peer: dict | None) -> tuple[Row, dict]:
    args = run.args
    mem = run_child({**spec, "what": "train", "batch": args.batches[0], "size": args.size})
    ref = peer.get("peak_rss_mib") if peer and spec["device"] == "cpu" else None
    print(f"  memory train: {mem['peak_mib']:.0f} MiB (reference {fmt(ref)})")
    notes = []
    if ref:
        notes.append(
            "reference: peak RSS of its peer_bench.py process (training, "
            "then stylizing at 512/1024 px)"
        )
    figure = f"memory: train {args.size}px b{args.batches[0]} ({kind})"
    return Row(figure, mem["peak_mib"], ref, "MiB", higher_is_better=False, notes=notes), mem


def reference_stylize_memory(run: Run, spec: dict, size: int) -> float | None:
    """The reference network's peak stylizing at ``size``, once per device and size."""
    key = (spec["device"], size)
    if key not in run.ref_memory and paths.PEER_DIR.is_dir() and not run.args.no_peer:
        child = run_child({**spec, "what": "peer-stylize", "size": size})
        run.ref_memory[key] = child["peak_mib"]
    return run.ref_memory.get(key)


def report_setup(run: Run, setup: Setup, rows: list[Row], peaks: Peaks) -> None:
    """Print one set-up's table; keep its figures for --json and its Markdown section."""
    print(
        f"-- {setup.name} ({setup.describe()}); {peaks_text(setup, peaks)}"
        "; speed-up = how many times better the project is"
    )
    print_table(rows, peaks.fp32["best"], peaks.half)
    print()
    run.figures(setup)["peak_gflops"] = peaks.fp32
    run.figures(setup)["rows"] = [r.__dict__ for r in rows]
    run.sections.append(markdown_section(setup, rows, peaks))


def bench_setup(run: Run, setup: Setup) -> None:
    """Every figure group of one set-up, its table, and its profile."""
    args = run.args
    print(f"== {setup.name}: {setup.describe()}", flush=True)
    peaks = measure_peaks(setup, args.matmul_size)
    work = count_work(args)
    rows, peer_runs = training_rows(run, setup, work)
    rows += stylize_rows(run, setup, peer_runs, work)
    if not args.no_data and (setup.device == "cpu" or setup.name == "cuda optimized"):
        rows += data_rows(run, setup, need=rows[0].project or 1.0)
    if not args.no_memory:
        rows += memory_rows(run, setup, next(iter(peer_runs.values()), None))
    peaks = remeasure_peaks(setup, peaks, args.matmul_size)
    print()
    report_setup(run, setup, rows, peaks)
    if not args.no_profile:
        print(profile_training(setup, args.batches[0], args.size, run.weights, args.profile_rows))
