#!/usr/bin/env python3
"""nst-fast's performance figures beside the reference implementation's, in one run.

    python scripts/benchmark.py            # the full run (about 5 minutes on 2 CPU cores)
    python scripts/benchmark.py --quick    # a smoke run (about 1-2 minutes)

Prints one table (figure, project, reference, project/reference, fraction of the
machine's peak) with the machine, torch version and date:

* training images/s at 256 px, batch 4 and 8: the full optimizer step (transform network
  forward and backward, loss network on output and photo, Adam), on random photos (the
  data pipeline is measured on its own, as the reference's benchmark does);
* the data pipeline alone: images/s the PhotoDataModule delivers from a folder of
  full-size JPEGs, and from a copy pre-resized by scripts/prepare_data.py;
* stylizing at 512 and 1024 px (s/img), through ``nst_fast.inference.stylize``;
* peak memory (CPU: the process's peak RSS, each figure from a fresh process; CUDA: max
  allocated) for training and for stylizing at 1024 and 2048 px;
* the fp32 matmul peak of the machine, measured in the same run, and each figure's
  GFLOP/s as a fraction of it (FLOPs counted by torch.utils.flop_counter);
* a profiler table of one training step.

The reference is pytorch/examples' fast_neural_style, timed by ../shared/bench/peer_bench.py
in a subprocess of this run when ../shared is present. The VGG16 weights are
../shared/weights/vgg16_imagenet_features.pt when present, else a random init (same
speed, said in the output). On CPU one setup runs (the default training runs with: bf16
autocast where the CPU computes bf16 natively, else fp32; --cpu-precision picks); on CUDA two:
eager fp32 and the optimized default (channels_last, bf16 autocast, torch.compile,
cudnn.benchmark).

Timings are medians of the timed repeats; on a shared or busy machine they are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

from nst_fast.config import compose  # noqa: E402
from nst_fast.device import inference_dtype, keep_freed_memory, training_precision  # noqa: E402
from nst_fast.inference import stylize  # noqa: E402
from nst_fast.losses.network import LossNetwork  # noqa: E402
from nst_fast.losses.perceptual import PerceptualLoss  # noqa: E402
from nst_fast.models.transformer import TransformerConfig, TransformerNet  # noqa: E402

SHARED = ROOT.parent / "shared"
PEER_BENCH = SHARED / "bench" / "peer_bench.py"
PEER_DIR = SHARED / "peers" / "pytorch_examples_fast_neural_style"
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pt"
COCO = SHARED / "coco128" / "train2017"

warnings.filterwarnings("ignore", message=".*self.log.*")
warnings.filterwarnings("ignore", message=".*TF32.*")


# --------------------------------------------------------------------------- set-ups


@dataclass
class Setup:
    """One way of running the project: device, memory format, compilation, precision."""

    name: str
    device: str
    channels_last: bool
    compile: tuple[str, ...] = ()  # "transformer", "loss"
    amp: torch.dtype | None = None  # autocast dtype (bf16 on GPUs), None: fp32
    cudnn_benchmark: bool = False

    def describe(self) -> str:
        parts = [
            "channels_last" if self.channels_last else "NCHW",
            "compile=" + ("+".join(self.compile) or "off"),
            str(self.amp).removeprefix("torch.") + " autocast" if self.amp else "fp32",
        ]
        if self.cudnn_benchmark:
            parts.append("cudnn.benchmark")
        return ", ".join(parts)


# The CPU default, from measurements on a 2-core AVX2 machine (see the report in the
# merge request): channels_last pays once instance norm runs as a group norm (1.3-2x on
# the transform network), torch.compile on CPU did not pay back its compile time.
CPU_DEFAULT = {"channels_last": True, "compile": ()}


def setups(args: argparse.Namespace) -> list[Setup]:
    def cpu_options() -> dict:
        options = dict(CPU_DEFAULT)
        if args.channels_last != "auto":
            options["channels_last"] = args.channels_last == "on"
        if args.compile != "auto":
            options["compile"] = compile_parts(args.compile)
        precision = args.cpu_precision
        if precision == "auto":  # as `nst-fast train trainer=cpu` would run
            precision = "bf16" if training_precision("cpu") == "bf16-mixed" else "fp32"
        options["amp"] = torch.bfloat16 if precision == "bf16" else None
        return options

    out = []
    if args.device in ("auto", "cpu") or (args.device == "all"):
        out.append(Setup("cpu", "cpu", **cpu_options()))
    if torch.cuda.is_available() and args.device in ("auto", "cuda", "all"):
        out.append(Setup("cuda eager fp32", "cuda", channels_last=False))
        compiled = ("transformer", "loss") if args.compile == "auto" else args.compile
        out.append(
            Setup(
                "cuda optimized",
                "cuda",
                channels_last=args.channels_last != "off",
                compile=compile_parts(compiled) if isinstance(compiled, str) else compiled,
                amp=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
                cudnn_benchmark=True,
            )
        )
    if not out:
        raise SystemExit(f"--device {args.device}: not available on this machine")
    return out


def compile_parts(option: str) -> tuple[str, ...]:
    return {
        "off": (),
        "on": ("transformer", "loss"),
        "both": ("transformer", "loss"),
        "transformer": ("transformer",),
        "loss": ("loss",),
    }[option]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(setup: Setup):
    if setup.amp is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device, dtype=setup.amp)


def project_config(weights: str) -> tuple[dict, dict, dict]:
    """The model and loss config groups of a default run, and a generated style."""
    style = ["style.name=bench", "style.image=generated:mosaic", "style.size=256"]
    cfg = compose([f"loss.weights={weights}", *style])
    return tuple(OmegaConf.to_container(cfg[g], resolve=True) for g in ("model", "loss", "style"))


def vgg_weights() -> str:
    return str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random"


# --------------------------------------------------------------------------- training


def make_module(setup: Setup, weights: str):
    """A StyleTransferModule prepared as Lightning prepares it for fit, and its optimizer."""
    from nst_fast.training.module import StyleTransferModule

    model, loss, style = project_config(weights)
    module = StyleTransferModule(
        model,
        loss,
        style,
        channels_last=setup.channels_last,
        compile="transformer" in setup.compile,
    )
    module.setup("fit")
    module.to(setup.device)
    if "loss" in setup.compile:
        module.criterion.network = torch.compile(module.criterion.network)
    torch.backends.cudnn.benchmark = setup.cudnn_benchmark
    module.on_fit_start()
    module.train()
    return module, module.configure_optimizers()


def train_step_fn(setup: Setup, module, optimizer, batch: dict):
    """One optimizer step as Lightning's automatic optimization runs it."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(setup):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    return step


def random_photos(n: int, size: int, device: str) -> dict:
    torch.manual_seed(0)
    return {"image": torch.rand(n, 3, size, size, device=device), "skipped": 0}


def time_calls(fn, device: str, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


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
    from torch.profiler import ProfilerActivity, profile, record_function

    module, optimizer = make_module(setup, weights)
    images = random_photos(batch, size, setup.device)["image"]
    images = images.contiguous(memory_format=module.memory_format)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(setup):
            with record_function("## transform net forward"):
                output = module.step_net(images)
            with record_function("## loss (VGG on output and photo, Gram, TV)"):
                losses = module.criterion(output, images)
        with record_function("## backward"):
            losses["total"].backward()
        with record_function("## optimizer (Adam)"):
            optimizer.step()
        sync(setup.device)

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
    lines = [f"phases of one step ({setup.name}, batch {batch}, {size} px):"]
    for e in phases:
        share = 100 * e.cpu_time_total / total
        lines.append(f"  {e.key[3:]:<48} {e.cpu_time_total / 1e6:7.3f} s  {share:5.1f}%")
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)
    return "\n".join(lines) + "\n" + table


# --------------------------------------------------------------------------- stylizing


def make_transformer(setup: Setup) -> torch.nn.Module:
    model, _, _ = project_config("random")
    net = TransformerNet(TransformerConfig(**model)).to(setup.device).eval()
    if setup.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if "transformer" in setup.compile:
        net = torch.compile(net, dynamic=False)
    return net


def bench_stylize(setup: Setup, size: int, repeats: int) -> float:
    net = make_transformer(setup)
    image = torch.rand(3, size, size)
    half = setup.amp is not None
    times = time_calls(
        lambda: stylize(net, image, half=half),
        setup.device,
        warmup=2 if setup.compile else 1,
        repeats=repeats,
    )
    return statistics.median(times)


# --------------------------------------------------------------------------- FLOPs, peak


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# FLOPs are counted on a small image and scaled by the pixel count: every layer is
# convolutional (and the Gram matrices are C x HW x C products), so the count per pixel
# does not depend on the size (sizes divisible by 8).
COUNT_SIZE = 64


def training_flops_per_image(size: int, reference: bool) -> float:
    """FLOPs of one training image (CPU, counted at 64 px and scaled).

    The project's step computes the photo's VGG features only up to the content layer;
    the reference's (pytorch/examples) runs the photo through VGG up to relu4_3 as well:
    its count is the same step with that one difference.
    """
    model, loss, _ = project_config("random")
    layers = [loss["content_layer"], *loss["style_layers"]]
    net = TransformerNet(TransformerConfig(**model))
    network = LossNetwork("vgg16", layers, "random")
    criterion = PerceptualLoss(network, loss["content_layer"], loss["style_layers"], 1.0, 1.0, 1.0)
    photo = torch.rand(1, 3, COUNT_SIZE, COUNT_SIZE)
    criterion.set_style(photo)

    def step() -> None:
        criterion(net(photo), photo)["total"].backward()

    flops = count_flops(step)
    if reference:  # the photo's features up to relu4_3, not only up to the content layer
        with torch.no_grad():
            flops += count_flops(lambda: network(photo))
            flops -= count_flops(lambda: network(photo, upto=loss["content_layer"]))
    return flops * (size / COUNT_SIZE) ** 2


def stylize_flops(size: int) -> float:
    model, _, _ = project_config("random")
    net = TransformerNet(TransformerConfig(**model))
    with torch.no_grad():
        flops = count_flops(lambda: net(torch.rand(1, 3, COUNT_SIZE, COUNT_SIZE)))
    return flops * (size / COUNT_SIZE) ** 2


def matmul_peak(device: str, dtype: torch.dtype = torch.float32, n: int = 2048) -> dict:
    """GFLOP/s of an n x n matmul: best and median of several repeats."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeats = 10 if device == "cpu" else 50
    times = time_calls(lambda: a @ b, device, warmup=2, repeats=repeats)
    flops = 2 * n**3
    return {"best": flops / min(times) / 1e9, "median": flops / statistics.median(times) / 1e9}


# --------------------------------------------------------------------------- data pipeline


def bench_data(root: Path, size: int, batch: int, workers: int, epochs: int = 1) -> dict:
    """Images/s the PhotoDataModule delivers (worker start-up and first batch excluded)."""
    from nst_fast.data.datamodule import PhotoDataModule

    data = PhotoDataModule(str(root), image_size=size, batch_size=batch, num_workers=workers)
    loader = data.train_dataloader()
    images, start = 0, None
    for _ in range(epochs):
        for item in loader:
            if start is None:  # the first batch pays the workers' start-up
                start = time.perf_counter()
                continue
            images += item["image"].shape[0]
    elapsed = time.perf_counter() - start
    return {"img_per_s": images / elapsed, "images": images, "workers": workers}


def synthetic_photos(folder: Path, n: int = 48) -> Path:
    """Full-size (640x480) smooth random JPEGs, when ../shared/coco128 is absent."""
    from nst_fast.images import save_image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        low = torch.rand(3, 12, 16, generator=g)
        image = torch.nn.functional.interpolate(low[None], size=(480, 640), mode="bicubic")[0]
        image = image + 0.05 * torch.rand(3, 480, 640, generator=g)
        save_image(image.clamp(0, 1), folder / f"{i:012d}.jpg")
    return folder


def prepare_copy(src: Path, dst: Path, size: int) -> float:
    sys.path.insert(0, str(ROOT / "scripts"))
    from prepare_data import prepare

    start = time.perf_counter()
    summary = prepare(src, dst, size=size, workers=os.cpu_count() or 1)
    if summary.unreadable:
        print(f"  prepare_data: {summary.unreadable} unreadable photos skipped")
    return time.perf_counter() - start


# --------------------------------------------------------------------------- memory (children)


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM, which exec resets (ru_maxrss would carry over the
    parent's high-water mark into a child), else ru_maxrss."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# Runs peer_bench.py unchanged in this interpreter, then prints the process's peak RSS.
PEER_WRAPPER = """
import atexit, runpy, sys
sys.argv = sys.argv[1:]
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(f"peak_rss_kib {line.split()[1]}", flush=True)
atexit.register(report)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def child_main(spec: dict) -> dict:
    """Run one memory measurement in this fresh process; returns the peak."""
    device = spec["device"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = peak_rss_mib()
    if spec["what"] == "train":
        setup = Setup(**{k: v for k, v in spec["setup"].items() if k != "amp"})
        setup.amp = getattr(torch, spec["setup"]["amp"]) if spec["setup"]["amp"] else None
        setup.compile = tuple(setup.compile)
        module, optimizer = make_module(setup, spec["weights"])
        batch = random_photos(spec["batch"], spec["size"], device)
        step = train_step_fn(setup, module, optimizer, batch)
        for _ in range(2):
            step()
    elif spec["what"] == "stylize":
        setup = Setup(**{k: v for k, v in spec["setup"].items() if k != "amp"})
        setup.amp = getattr(torch, spec["setup"]["amp"]) if spec["setup"]["amp"] else None
        setup.compile = ()  # compiling at 2048 px takes longer than it saves here
        net = make_transformer(setup)
        stylize(net, torch.rand(3, spec["size"], spec["size"]), half=setup.amp is not None)
    elif spec["what"] == "peer-stylize":
        # The reference's own network, imported read-only from ../shared, as its
        # neural_style.py stylize() runs it: eval, no_grad, pixels in [0, 255].
        sys.path.insert(0, str(PEER_DIR))
        from transformer_net import TransformerNet as PeerNet

        net = PeerNet().to(device).eval()
        with torch.no_grad():
            net(torch.rand(1, 3, spec["size"], spec["size"], device=device) * 255).cpu()
    sync(device)
    if device == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "base_mib": 0.0}
    return {"peak_mib": peak_rss_mib(), "base_mib": base}


def setup_spec(setup: Setup) -> dict:
    spec = dict(setup.__dict__)
    spec["amp"] = str(setup.amp).removeprefix("torch.") if setup.amp else None
    spec["compile"] = list(setup.compile)
    return spec


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"memory child {spec['what']} failed:\n{out.stderr[-2000:]}")


# --------------------------------------------------------------------------- reference


PEER_TRAIN = re.compile(r"peer train (\d+)px: ([\d.]+) img/s")
PEER_STYLIZE = re.compile(r"peer stylize (\d+)px: ([\d.]+) s/img")


def run_peer(device: str, batch: int, size: int, steps: int) -> dict:
    """Run ../shared/bench/peer_bench.py once: its figures, and its process's peak RSS."""
    cmd = [sys.executable, "-c", PEER_WRAPPER, str(PEER_BENCH), "--device", device]
    cmd += ["--steps", str(steps), "--batch", str(batch), "--size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{PEER_BENCH} failed:\n{out.stderr[-2000:]}")
    stdout = out.stdout
    result: dict = {"lines": [line for line in stdout.splitlines() if line.startswith("peer")]}
    for m in PEER_TRAIN.finditer(stdout):
        result["img_per_s"] = float(m.group(2))
    result["stylize"] = {int(m.group(1)): float(m.group(2)) for m in PEER_STYLIZE.finditer(stdout)}
    rss = re.search(r"peak_rss_kib (\d+)", stdout)
    if rss:
        result["peak_rss_mib"] = int(rss.group(1)) / 1024
    return result


# --------------------------------------------------------------------------- report


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


def print_table(rows: list[Row], peak: float, half_peak: float | None = None) -> None:
    """``peak``: the fp32 matmul peak (the reference's, and the project's fp32 rows);
    ``half_peak``: the autocast dtype's, for the project's rows that ran under it."""
    head = (
        f"{'figure':<44} {'unit':<6} {'project':>9} {'reference':>9} "
        f"{'proj/ref':>8} {'speed-up':>8} {'target':>7}  {'% peak proj':>11} {'% peak ref':>10}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        ratio = row.project / row.reference if row.project and row.reference else None
        speedup = row.speedup()
        target = ""
        if row.target is not None and speedup is not None:
            target = f"{row.target:.1f}x " + ("ok" if speedup >= row.target else "MISS")
        elif row.target is not None:
            target = f"{row.target:.1f}x"
        fp = gflops_per_s(row.project, row.unit, row.flops)
        fr = gflops_per_s(row.reference, row.unit, row.ref_flops or row.flops)
        own_peak = half_peak if row.half and half_peak else peak
        pp = f"{100 * fp / own_peak:.0f}%" if fp is not None else ""
        pr = f"{100 * fr / peak:.0f}%" if fr is not None and row.reference else ""
        print(
            f"{row.figure:<44} {row.unit:<6} {fmt(row.project):>9} {fmt(row.reference):>9} "
            f"{fmt(ratio):>8} {(fmt(speedup) + 'x') if speedup else '-':>8} {target:>7}  "
            f"{pp:>11} {pr:>10}"
        )
        for note in row.notes:
            print(f"{'':<4}{note}")


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer steps and sizes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "all"])
    p.add_argument("--size", type=int, default=256, help="training size in px (256)")
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="training batches")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (3)")
    p.add_argument(
        "--stylize-sizes", type=int, nargs="+", default=[512, 1024], help="timed stylize sizes"
    )
    p.add_argument("--stylize-repeats", type=int, default=3)
    p.add_argument(
        "--memory-sizes", type=int, nargs="+", default=[1024, 2048], help="stylize memory sizes"
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
    p.add_argument("--data-workers", type=int, default=2, help="DataLoader workers (2)")
    p.add_argument("--no-peer", action="store_true", help="skip the reference")
    p.add_argument("--no-data", action="store_true", help="skip the data pipeline")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory figures")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler table")
    p.add_argument("--profile-rows", type=int, default=20)
    p.add_argument(
        "--free-memory",
        action="store_true",
        help="let malloc return freed memory to the OS, as before keep_freed_memory()",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.steps = [4], 1
        args.stylize_sizes, args.stylize_repeats = [512], 1
        args.memory_sizes = [1024]
        args.size = min(args.size, 128)
        args.profile_rows = 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        spec = json.loads(args.child)
        # The reference runs as shipped; the project as its command line runs it.
        if not spec["what"].startswith("peer") and not spec.get("free_memory"):
            keep_freed_memory()
        print(json.dumps(child_main(spec)))
        return 0
    allocator = "glibc default" if args.free_memory else "freed memory kept"
    if not args.free_memory and not keep_freed_memory():
        allocator = "system default (not glibc)"
    started = time.perf_counter()
    weights = vgg_weights()
    peer_ok = PEER_BENCH.exists() and not args.no_peer
    print("nst-fast benchmark")
    print(f"  date      {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"  machine   {platform.node()}: {cpu_name()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, {torch.backends.cpu.get_cpu_capability()}"
    )
    if torch.cuda.is_available():
        print(f"  gpu       {torch.cuda.get_device_name()}")
    print(f"  software  torch {torch.__version__}, Python {platform.python_version()}")
    print(f"  allocator {allocator} (the reference: as shipped)")
    print(
        "  VGG16     "
        + (f"{weights}" if weights != "random" else "random init (no ../shared/weights)")
    )
    print(
        "  reference "
        + (f"{PEER_BENCH} (subprocess)" if peer_ok else "not run (no ../shared or --no-peer)")
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  load      {load:.2f} (1-min load average at start)")
    print(
        f"  command   {' '.join([Path(sys.executable).name, *sys.argv])}"
        + ("  [--quick: smoke run, not the figures]" if args.quick else "")
    )
    print()
    peer_cache: dict[tuple[str, int], dict] = {}
    ref_memory: dict[tuple[str, int], float] = {}
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "setups": {}}

    for setup in setups(args):
        dev = setup.device
        print(f"== {setup.name}: {setup.describe()}", flush=True)
        peak = matmul_peak(dev)
        half_gf = None
        print(
            f"  fp32 matmul 2048^3: best {peak['best']:.1f} GFLOP/s, "
            f"median {peak['median']:.1f} (the peak below is the best)",
            flush=True,
        )
        if setup.amp is not None:
            half = matmul_peak(dev, setup.amp)
            print(f"  {setup.amp} matmul peak: best {half['best']:.1f} GFLOP/s", flush=True)
            half_gf = half["best"]
        rows: list[Row] = []
        train_flops = training_flops_per_image(args.size, reference=False)
        ref_train_flops = training_flops_per_image(args.size, reference=True)
        print(
            f"  work: {train_flops / 1e9:.0f} GFLOP per training image at {args.size} px "
            f"(reference's step: {ref_train_flops / 1e9:.0f}); stylize "
            + ", ".join(f"{s} px {stylize_flops(s) / 1e9:.0f}" for s in args.stylize_sizes)
            + " GFLOP",
            flush=True,
        )
        peer_runs: dict[int, dict] = {}
        for batch in args.batches:
            t0 = time.perf_counter()
            train = bench_training(setup, batch, args.size, args.steps, weights)
            print(
                f"  train batch {batch}: {train['s_per_step']:.2f} s/step "
                f"(steps {', '.join(f'{t:.2f}' for t in train['times'])}; first "
                f"{train['first_step_s']:.1f} s) [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
            peer = None
            if peer_ok:
                t0 = time.perf_counter()
                key = (dev, batch)  # one reference run per device serves every setup
                if key not in peer_cache:
                    peer_cache[key] = run_peer(dev, batch, args.size, args.steps)
                peer = peer_runs[batch] = peer_cache[key]
                print(
                    f"  reference batch {batch}: {peer['lines']} "
                    f"[{time.perf_counter() - t0:.0f} s]",
                    flush=True,
                )
            rows.append(
                Row(
                    f"train {args.size}px batch {batch}",
                    train["img_per_s"],
                    peer and peer.get("img_per_s"),
                    "img/s",
                    flops=train_flops,
                    ref_flops=ref_train_flops,
                    target=1.7 if batch == 4 else None,
                    half=setup.amp is not None,
                )
            )
            results["setups"].setdefault(setup.name, {})[f"train_b{batch}"] = train
            if peer:
                results["setups"][setup.name][f"peer_b{batch}"] = peer
        peer = next(iter(peer_runs.values()), None)
        # Each reference run also stylizes: keep its best time per size (conservative).
        peer_stylize: dict[int, float] = {}
        for run in peer_runs.values():
            for size, seconds in run["stylize"].items():
                peer_stylize[size] = min(seconds, peer_stylize.get(size, seconds))
        targets = {512: 1.3, 1024: 2.0}
        for size in args.stylize_sizes:
            seconds = bench_stylize(setup, size, args.stylize_repeats)
            print(f"  stylize {size} px: {seconds:.3f} s/img", flush=True)
            rows.append(
                Row(
                    f"stylize {size}px",
                    seconds,
                    peer_stylize.get(size),
                    "s/img",
                    higher_is_better=False,
                    flops=stylize_flops(size),
                    target=targets.get(size),
                    half=inference_dtype(torch.device(dev), setup.amp is not None) != torch.float32,
                )
            )
            results["setups"][setup.name][f"stylize_{size}"] = seconds

        if not args.no_data and (dev == "cpu" or setup.name == "cuda optimized"):
            with tempfile.TemporaryDirectory(prefix="nst_bench_") as tmp:
                if COCO.is_dir():
                    src, label = COCO, "coco128 (full-size JPEGs)"
                else:
                    src, label = synthetic_photos(Path(tmp) / "photos"), "synthetic 640x480 JPEGs"
                full = bench_data(src, args.size, args.batches[0], args.data_workers)
                prep_s = prepare_copy(src, Path(tmp) / "prepared", args.size)
                small = bench_data(
                    Path(tmp) / "prepared", args.size, args.batches[0], args.data_workers
                )
            print(
                f"  data: {full['img_per_s']:.0f} img/s from {label}, "
                f"{small['img_per_s']:.0f} img/s pre-resized "
                f"(prepare_data.py took {prep_s:.1f} s)",
                flush=True,
            )
            need = rows[0].project or 1.0
            for name, figures, source in (
                (f"full-size JPEGs ({args.data_workers} workers)", full, f" ({label})"),
                (f"prepare_data.py copy ({args.data_workers} w.)", small, ""),
            ):
                speed = figures["img_per_s"]
                rows.append(
                    Row(
                        f"data pipeline, {name}",
                        speed,
                        unit="img/s",
                        notes=[f"{speed / need:.0f}x the training step's need{source}"],
                    )
                )
            results["setups"][setup.name]["data"] = {"full": full, "prepared": small}

        if not args.no_memory:
            spec = {"device": dev, "setup": setup_spec(setup), "weights": weights}
            spec["free_memory"] = args.free_memory
            mem = run_child({**spec, "what": "train", "batch": args.batches[0], "size": args.size})
            unit = "MiB"
            kind = "max allocated" if dev == "cuda" else "peak RSS"
            ref_train = peer.get("peak_rss_mib") if peer and dev == "cpu" else None
            print(f"  memory train: {mem['peak_mib']:.0f} MiB (reference {fmt(ref_train)})")
            rows.append(
                Row(
                    f"memory: train {args.size}px b{args.batches[0]} ({kind})",
                    mem["peak_mib"],
                    ref_train,
                    unit,
                    higher_is_better=False,
                    notes=[
                        "reference: peak RSS of its peer_bench.py process (training, "
                        "then stylizing at 512/1024 px)"
                    ]
                    if ref_train
                    else [],
                )
            )
            for size in args.memory_sizes:
                mem = run_child({**spec, "what": "stylize", "size": size})
                ref = ref_memory.get((dev, size))
                if ref is None and PEER_DIR.is_dir() and not args.no_peer:
                    ref = run_child({**spec, "what": "peer-stylize", "size": size})["peak_mib"]
                    ref_memory[(dev, size)] = ref
                rows.append(
                    Row(
                        f"memory: stylize {size}px ({kind})",
                        mem["peak_mib"],
                        ref,
                        unit,
                        higher_is_better=False,
                    )
                )
                print(
                    f"  memory stylize {size}: {mem['peak_mib']:.0f} MiB (reference {fmt(ref)})",
                    flush=True,
                )
            if dev == "cpu":
                rows[-1].notes.append(
                    f"CPU figures include the Python + torch process itself "
                    f"(~{mem['base_mib']:.0f} MiB after imports)"
                )

        # The machine's peaks: the best seen before or after the figures.
        again = matmul_peak(dev)
        print(f"  fp32 matmul peak again at the end: best {again['best']:.1f} GFLOP/s")
        peak = {**peak, "best": max(peak["best"], again["best"])}
        if setup.amp is not None:
            half_gf = max(half_gf, matmul_peak(dev, setup.amp)["best"])
            print(f"  {setup.amp} peak, best of both: {half_gf:.1f} GFLOP/s", flush=True)
        print()
        print(
            f"-- {setup.name} ({setup.describe()}); fp32 matmul peak "
            f"{peak['best']:.0f} GFLOP/s"
            + (f", {setup.amp} {half_gf:.0f}" if half_gf else "")
            + "; speed-up = how many times better the project is"
        )
        print_table(rows, peak["best"], half_gf)
        print()
        results["setups"][setup.name]["peak_gflops"] = peak
        results["setups"][setup.name]["rows"] = [r.__dict__ for r in rows]

        if not args.no_profile:
            print(profile_training(setup, args.batches[0], args.size, weights, args.profile_rows))

    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
