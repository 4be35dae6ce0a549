"""The training figure: the full optimizer step of the module ``nst-fast train`` builds,
timed on random photos, and a profiler table of one step with its phases annotated.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmark_parts.setups import (
    Setup,
    autocast,
    mode_name,
    project_config,
    pyramid,
    style_list,
)
from benchmark_parts.timing import sync, time_calls
from nst_fast.training.module import StyleTransferModule


def make_module(setup: Setup, weights: str) -> tuple[StyleTransferModule, torch.optim.Optimizer]:
    """A StyleTransferModule built as ``nst-fast train`` builds it and prepared as
    Lightning prepares it for fit (on its device before ``setup``, which picks the fast
    modules for that device), and its optimizer."""
    cfg = project_config(
        weights,
        f"channels_last={setup.channels_last}",
        f"compile={'transformer' in setup.compile}",
        f"fast={setup.fast}",
        *style_list(setup.styles),
        *(STABILITY_ON if setup.stability else ()),
        f"model.antialias={setup.antialias}",
        *pyramid(setup.style_scales),
    )
    module = StyleTransferModule.from_config(cfg)
    module.to(setup.device)
    module.setup("fit")
    if "loss" in setup.compile:
        module.criteria[0].network = torch.compile(module.criteria[0].network)
    torch.backends.cudnn.benchmark = setup.cudnn_benchmark
    module.on_fit_start()
    module.train()
    optimizers = module.configure_optimizers()  # with a schedule, Lightning's dict form
    return module, optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers


# Both video stability terms (docs/video.md): the network runs on three times the images.
STABILITY_ON = ("stability.temporal_weight=1000", "stability.noise_weight=1000")


def train_step_fn(setup: Setup, module, optimizer, batch: dict):
    """One optimizer step as Lightning's automatic optimization runs it."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(setup):
            loss = module.training_step(batch, 0)["loss"]
        loss.backward()
        optimizer.step()

    return step


def random_photos(n: int, size: int, device: str) -> dict:
    """A batch as the data module collates it: images, and no unreadable photos."""
    torch.manual_seed(0)
    return {"image": torch.rand(n, 3, size, size, device=device), "skipped": []}


def bench_training(setup: Setup, batch: int, size: int, steps: int, weights: str) -> dict:
    module, optimizer = make_module(setup, weights)
    step = train_step_fn(setup, module, optimizer, random_photos(batch, size, setup.device))
    warmup = 2 if setup.compile else 1  # the first compiled call compiles
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = time_calls(step, setup.device, warmup - 1, steps)
    median = statistics.median(times)
    return {
        "s_per_step": median,
        "img_per_s": batch / median,
        "first_step_s": first,
        "times": times,
    }


def profile_training(setup: Setup, batch: int, size: int, weights: str, rows: int) -> str:
    """torch.profiler table of one training step, phases annotated."""
    from torch.profiler import ProfilerActivity, profile

    module, optimizer = make_module(setup, weights)
    images = random_photos(batch, size, setup.device)["image"]
    images = images.contiguous(memory_format=module.memory_format)
    step = annotated_step(setup, module, optimizer, images)
    step()
    step()
    activities = [ProfilerActivity.CPU]
    if setup.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
    key = "self_cuda_time_total" if setup.device == "cuda" else "self_cpu_time_total"
    phases = [e for e in prof.key_averages() if e.key.startswith("## ")]
    total = sum(e.cpu_time_total for e in phases) or 1.0
    lines = [
        f"phases of one step ({setup.name}, {mode_name(setup.fast)}, batch {batch}, {size} px):"
    ]
    for e in phases:
        share = 100 * e.cpu_time_total / total
        lines.append(f"  {e.key[3:]:<48} {e.cpu_time_total / 1e6:7.3f} s  {share:5.1f}%")
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)
    return "\n".join(lines) + "\n" + table


def annotated_step(setup: Setup, module, optimizer, images: torch.Tensor):
    """The training step's phases, each a record_function range for the profiler."""
    from torch.profiler import record_function

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(setup):
            with record_function("## transform net forward"):
                output = module.step_net(images)
            with record_function("## loss (VGG on output and photo, Gram, TV)"):
                losses = module.criteria[0](output, images)
        with record_function("## backward"):
            losses["total"].backward()
        with record_function("## optimizer (Adam)"):
            optimizer.step()
        sync(setup.device)

    return step
