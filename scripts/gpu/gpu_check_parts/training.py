"""The training sections: the training step finite under bf16 and fp16 autocast and with
``compile=true``, and a time-boxed ``nst-fast train`` run with Lightning's SimpleProfiler
(data against compute).
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from gpu_check_parts.context import (
    Context,
    Section,
)
from gpu_check_parts.running import (
    fmt,
    run_command,
    sync,
    timed,
    use_benchmark_parts,
)


def section_train_steps(ctx: Context, sec: Section) -> None:
    """Training steps of the module ``nst-fast train`` builds, finite under bf16 and fp16
    autocast (fp16 with a gradient scaler, as Lightning's 16-mixed runs it), and with
    ``compile=true``; the first step (compiling) and the median step timed."""
    use_benchmark_parts()
    from benchmark_parts.setups import Setup
    from benchmark_parts.training import make_module

    sizes = ctx.sizes
    failed = []
    cuda = ctx.device == "cuda"  # cuDNN autotuning as trainer=gpu trains
    plain = Setup("eager", ctx.device, channels_last=True, cudnn_benchmark=cuda)
    compiled = Setup(
        "compile", ctx.device, channels_last=True, compile=("transformer",), cudnn_benchmark=cuda
    )
    eager_module = make_module(plain, ctx.weights)  # both autocasts train it in turn
    cases = [
        ("bf16 autocast", torch.bfloat16, plain, eager_module),
        ("fp16 autocast", torch.float16, plain, eager_module),
        ("compile=true, bf16 autocast", torch.bfloat16, compiled, None),
    ]
    for name, dtype, setup, module in cases:
        setup.amp = dtype
        # A rehearsal compiles with dynamo's eager backend: it traces the network as
        # inductor would be given it, without the minutes of C++ builds on two cores.
        patch = (
            compile_backend("eager") if ctx.rehearse and setup.compile else contextlib.nullcontext()
        )
        with patch:
            module = module or make_module(setup, ctx.weights)
            result = checked_steps(setup, module, sizes.train_size, sizes.batches[0])
        sec.data[name] = result
        if not result["finite"]:
            failed.append(name)
        sec.lines.append(
            f"- {name}: {'finite' if result['finite'] else 'NOT FINITE'}; losses "
            f"{', '.join(fmt(v) for v in result['losses'])}; first step "
            f"{result['first_step_s']:.2f} s, then {fmt(result['step_s'])} s/step "
            f"(batch {sizes.batches[0]}, {sizes.train_size} px)"
            + (f"; scaler scale {result['scale']:g}" if "scale" in result else "")
        )
    sec.summary = "all finite" if not failed else f"not finite: {', '.join(failed)}"
    if failed:
        raise RuntimeError(sec.summary)


@contextlib.contextmanager
def compile_backend(backend: str) -> Iterator[None]:
    original = torch.compile
    torch.compile = functools.partial(original, backend=backend)
    try:
        yield
    finally:
        torch.compile = original


def checked_steps(setup: Any, built: tuple, size: int, batch: int) -> dict:
    """Steps of ``built`` (benchmark_parts.training.make_module's module and optimizer) under
    ``setup``'s
    autocast: losses, whether they and the weights stay finite, the first step's time
    (compiling, where it compiles) and the median of the others."""
    from benchmark_parts.setups import autocast
    from benchmark_parts.training import random_photos

    module, optimizer = built
    photos = random_photos(batch, size, setup.device)
    steps = 2 if setup.device == "cpu" else 6  # fp16 on a CPU takes seconds a step
    scaler = torch.amp.GradScaler(setup.device, enabled=setup.amp == torch.float16)
    losses, times = [], []
    for i in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(setup):
            loss = module.training_step(photos, i)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        sync(setup.device)
        times.append(time.perf_counter() - start)
    weights_finite = all(p.isfinite().all().item() for p in module.transformer.parameters())
    result = {
        "finite": weights_finite and all(math.isfinite(v) for v in losses),
        "losses": losses,
        "first_step_s": times[0],
        "step_s": statistics.median(times[1:]) if len(times) > 1 else None,
    }
    if scaler.is_enabled():
        result["scale"] = scaler.get_scale()
    return result


# SimpleProfiler's rows that say where a training step's time goes.
PROFILE_ROWS = {
    "run_training_batch": "the step (forward, backward, optimizer)",
    "[_TrainingEpochLoop].train_dataloader_next": "waiting for the next batch (data)",
    "[Strategy]SingleDeviceStrategy.batch_to_device": "moving the batch to the device",
    "[Strategy]SingleDeviceStrategy.training_step": "training_step (forward and loss)",
    "[Strategy]SingleDeviceStrategy.backward": "backward",
    "[Strategy]SingleDeviceStrategy.validation_step": "validation",
}


def profiler_rows(output: str) -> dict[str, dict[str, float]]:
    """SimpleProfiler's table out of a run's output: {action: mean, calls, total}."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in PROFILE_ROWS:
            with contextlib.suppress(ValueError):
                mean, calls, total = float(cells[1]), int(cells[2]), float(cells[3])
                rows[cells[0]] = {"mean_s": mean, "calls": calls, "total_s": total}
    return rows


def section_training_run(ctx: Context, sec: Section) -> None:
    """``nst-fast train experiment=johnson2016`` on the photos, stopped by steps or time,
    with SimpleProfiler; then the data pipeline alone at the same batch and workers."""
    from nst_fast.device import loader_workers

    use_benchmark_parts()
    from benchmark_parts.data_pipeline import bench_data

    run_dir = ctx.work / "train"
    # Time for start-up before, and validation and export after the steps.
    max_time = max(int(ctx.left() - (20 if ctx.rehearse else 45)), 10)
    argv = [sys.executable, "-m", "nst_fast", "train", "experiment=johnson2016"]
    argv += [f"data.root={ctx.photos}", f"loss.weights={ctx.weights}"]
    argv += [f"style.image={ctx.style}", f"trainer.max_steps={ctx.sizes.run_steps}"]
    argv += [f"+trainer.max_time={{seconds: {max_time}}}", "+trainer.profiler=simple"]
    argv += ["trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    if ctx.style.startswith("generated:"):
        argv += [f"style.name={ctx.style.split(':')[1]}"]
    batch, size = 4, 256
    # The bundle has a few dozen photos: passed several times an epoch, the run never
    # waits at an epoch's end for the loader's workers to start again.
    photos, held_out = len(list(ctx.photos.glob("*.jpg"))), 4
    repeat = max(1, math.ceil(ctx.sizes.run_steps * batch / max(photos - held_out, 1)))
    if not ctx.rehearse:
        argv += [f"data.val_images={held_out}", f"data.repeat={repeat}"]
    else:
        batch, size = 2, ctx.sizes.train_size
        argv += ["trainer=cpu", f"data.image_size={size}", f"data.batch_size={batch}"]
        argv += ["style.size=48", "data.num_workers=0", "data.val_images=0"]
        argv += ["data.preview_images=2"]
    output, wall = timed(lambda: run_command(ctx, argv))
    model = run_dir / "model.pt"
    if model.is_file():
        ctx.model = model
    rows = profiler_rows(output)
    step = rows.get("run_training_batch")
    if not step:
        raise RuntimeError("no SimpleProfiler table in the output (see the log)")
    data_wait = rows.get("[_TrainingEpochLoop].train_dataloader_next", {}).get("total_s", 0.0)
    images = step["calls"] * batch
    loop_s = step["total_s"] + data_wait
    workers = 0 if ctx.rehearse else loader_workers(4)
    pipeline = bench_data(ctx.photos, size, batch, workers, repeat=repeat)
    result = {
        "steps": step["calls"],
        "images": images,
        "wall_s": wall,
        "img_per_s": images / loop_s,
        "compute_img_per_s": images / step["total_s"],
        "data_wait_share": data_wait / loop_s,
        "pipeline_img_per_s": pipeline["img_per_s"],
        "workers": workers,
        "profile": rows,
    }
    sec.data = result
    bound = "data" if pipeline["img_per_s"] < result["compute_img_per_s"] else "compute"
    sec.summary = (
        f"{result['steps']} steps, {fmt(result['img_per_s'])} img/s "
        f"({100 * result['data_wait_share']:.0f}% waiting for data); the pipeline alone "
        f"{fmt(pipeline['img_per_s'])} img/s with {workers} workers: {bound}-bound"
    )
    sec.lines = [
        f"- {sec.summary}",
        f"- batch {batch} at {size} px; the step alone {fmt(result['compute_img_per_s'])} "
        f"img/s; the whole command {wall:.0f} s (start-up, validation, export included)",
        "",
        "| SimpleProfiler action | what | calls | mean s | total s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for action, row in rows.items():
        sec.lines.append(
            f"| `{action}` | {PROFILE_ROWS[action]} | {row['calls']} | {fmt(row['mean_s'])} "
            f"| {fmt(row['total_s'])} |"
        )
