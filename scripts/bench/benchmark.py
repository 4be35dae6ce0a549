#!/usr/bin/env python3
"""nst-fast's performance figures beside the reference implementation's, in one run.

    python scripts/bench/benchmark.py            # the full run; writes docs/benchmark-latest.md
    python scripts/bench/benchmark.py --quick    # a smoke run (fewer steps and sizes; no file)
    python scripts/bench/benchmark.py --plain    # the same figures with nst_fast.fast switched off
    python scripts/bench/benchmark.py --styles 4 # training a network of 4 styles (Dumoulin et al.)

Prints one table (figure, project, reference, project/reference, fraction of the
machine's peak) with the machine, torch version and date:

* training images/s at 256 px, batch 4 and 8: the full optimizer step (transform network
  forward and backward, loss network on output and photo, Adam), on random photos (the
  data pipeline is measured on its own, as the reference's benchmark does);
* the data pipeline alone: images/s the PhotoDataModule delivers from a folder of
  full-size JPEGs, and from a copy pre-resized by scripts/data/prepare_data.py;
* stylizing at 512 and 1024 px (s/img), through ``nst_fast.inference.stylize``;
* peak memory (CPU: the process's peak RSS, each figure from a fresh process; CUDA: max
  allocated) for training and for stylizing at 1024 and 2048 px;
* the fp32 matmul peak of the machine, measured in the same run, and each figure's
  GFLOP/s as a fraction of it (FLOPs counted by torch.utils.flop_counter on the plain
  modules, so that both modes are held to the same work);
* a profiler table of one training step.

``--plain`` measures nst-fast with its speed work switched off (``fast=false`` for
training, ``stylize(..., fast=False)``), for A/B figures; every table says which mode ran.
``--styles N`` trains a network of N styles (conditional instance norm, a style per
batch in turn) and stylizes with one of its styles, to set beside the one-style figures.
A full run (no --quick, no --plain) writes the table as Markdown to
docs/benchmark-latest.md; ``--write-md PATH`` writes it elsewhere (or for any run).

The reference is pytorch/examples' fast_neural_style, timed by ../shared/bench/peer_bench.py
in a subprocess of this run when ../shared is present. The VGG16 weights are
../shared/weights/vgg16_imagenet_features.pt when present, else a random init (same
speed, said in the output). On CPU one setup runs (the default training runs with: bf16
autocast where the CPU computes bf16 natively, else fp32; --cpu-precision picks); on CUDA two:
eager fp32 and the optimized default (channels_last, bf16 autocast, torch.compile,
cudnn.benchmark); ``--cuda-setups`` picks one, and ``--compile off`` makes the optimized one
eager bf16. ``--shared DIR`` reads the reference, weights and photos from a copy of ../shared
(what scripts/gpu/gpu_bundle.py sends to a lent GPU machine).

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
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from nst_fast.config import compose  # noqa: E402
from nst_fast.device import inference_dtype, keep_freed_memory, training_precision  # noqa: E402
from nst_fast.inference import stylize  # noqa: E402
from nst_fast.losses.build import build_criterion  # noqa: E402
from nst_fast.losses.network import LossNetwork  # noqa: E402
from nst_fast.models.transformer import TransformerConfig, TransformerNet  # noqa: E402
from nst_fast.training.module import StyleTransferModule  # noqa: E402

# ../shared, or the copy that --shared names (a lent GPU machine gets scripts/gpu/gpu_bundle.py's
# copy inside the checkout, since ../shared does not travel there). The memory children read
# the variable, so they time the same reference.
SHARED_ENV = "NST_FAST_SHARED"


def use_shared(folder: Path, children: bool = True) -> None:
    """Read the reference, the weights and the photos from ``folder``, laid out as
    ../shared, in this process and (``children``) in the children it starts."""
    global SHARED, PEER_BENCH, PEER_DIR, SHARED_WEIGHTS, COCO
    SHARED = folder.resolve()
    PEER_BENCH = SHARED / "bench" / "peer_bench.py"
    PEER_DIR = SHARED / "peers" / "pytorch_examples_fast_neural_style"
    SHARED_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pt"
    COCO = SHARED / "coco128" / "train2017"
    if children:
        os.environ[SHARED_ENV] = str(SHARED)


use_shared(Path(os.environ.get(SHARED_ENV) or ROOT.parent / "shared"), children=False)
LATEST_MD = ROOT / "docs" / "benchmark-latest.md"

warnings.filterwarnings("ignore", message=".*self.log.*")
warnings.filterwarnings("ignore", message=".*TF32.*")


# --------------------------------------------------------------------------- set-ups


@dataclass
class Setup:
    """One way of running the project: device, memory format, compilation, precision,
    and whether nst_fast.fast's modules are swapped in (``fast``; False: ``--plain``)."""

    name: str
    device: str
    channels_last: bool
    compile: tuple[str, ...] = ()  # "transformer", "loss"
    amp: torch.dtype | None = None  # autocast dtype (bf16 on GPUs), None: fp32
    cudnn_benchmark: bool = False
    fast: bool = True
    styles: int = 1  # a network of several styles (conditional instance norm) when > 1
    stability: bool = False  # training with both video stability terms on
    style_scales: tuple[float, ...] = (1,)  # loss.style_scales: the style pyramid's sizes

    def describe(self) -> str:
        parts = [
            "channels_last" if self.channels_last else "NCHW",
            "compile=" + ("+".join(self.compile) or "off"),
            str(self.amp).removeprefix("torch.") + " autocast" if self.amp else "fp32",
        ]
        if self.cudnn_benchmark:
            parts.append("cudnn.benchmark")
        parts.append(mode_name(self.fast))
        if self.styles > 1:
            parts.append(f"{self.styles} styles")
        if self.stability:
            parts.append("stability terms on")
        if self.style_scales != (1,):
            parts.append("style scales " + ",".join(f"{f:g}" for f in self.style_scales))
        return ", ".join(parts)


def mode_name(fast: bool) -> str:
    return "nst_fast.fast on" if fast else "plain modules (--plain)"


def mode_text(fast: bool) -> str:
    """Which nst-fast was measured, for the header of the output and of the Markdown."""
    if fast:
        return "nst-fast as it ships: nst_fast.fast's modules swapped in (fast=true)"
    return "nst-fast plain (--plain): fast=false for training, stylize(..., fast=False)"


# The CPU default (why: docs/performance.md): channels_last pays once instance norm keeps
# that layout; torch.compile on CPU did not pay back its compile time.
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

    fast = not args.plain
    out = []
    several = {
        "fast": fast,
        "styles": args.styles,
        "stability": args.stability,
        "style_scales": tuple(args.style_scales),
    }
    if args.device in ("auto", "cpu") or (args.device == "all"):
        out.append(Setup("cpu", "cpu", **cpu_options(), **several))
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda", "all")
    if cuda and "fp32" in args.cuda_setups:
        out.append(Setup("cuda eager fp32", "cuda", channels_last=False, **several))
    if cuda and "optimized" in args.cuda_setups:
        compiled = ("transformer", "loss") if args.compile == "auto" else args.compile
        out.append(
            Setup(
                "cuda optimized",
                "cuda",
                channels_last=args.channels_last != "off",
                compile=compile_parts(compiled) if isinstance(compiled, str) else compiled,
                amp=inference_dtype(torch.device("cuda")),  # bf16 from Ampere on, else fp16
                cudnn_benchmark=True,
                **several,
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


def project_config(weights: str, *overrides: str) -> DictConfig:
    """The config ``nst-fast train`` composes, with a generated style and ``overrides``."""
    style = ["style.name=bench", "style.image=generated:mosaic", "style.size=256"]
    return compose([f"loss.weights={weights}", *style, *overrides])


def style_list(styles: int) -> list[str]:
    """The override of a network of ``styles`` styles: copies of the generated mosaic, each
    turned, written once into the cache; none for one style."""
    if styles == 1:
        return []
    from nst_fast.data.samples import GENERATED_STYLES
    from nst_fast.files import cache_dir
    from nst_fast.images import save_image

    paths = []
    for i in range(styles):
        path = cache_dir("bench_styles") / f"mosaic_{i}.png"
        if not path.exists():
            save_image(GENERATED_STYLES["mosaic"]().rot90(i % 4, (1, 2)), path)
        paths.append(str(path))
    return [f"styles=[{','.join(paths)}]"]


def config_groups(cfg: DictConfig, *groups: str) -> tuple[dict, ...]:
    return tuple(OmegaConf.to_container(cfg[g], resolve=True) for g in groups)


def vgg_weights() -> str:
    return str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random"


# --------------------------------------------------------------------------- training


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
        f"loss.style_scales=[{','.join(f'{f:g}' for f in setup.style_scales)}]",
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


# --------------------------------------------------------------------------- stylizing


def plain_transformer() -> TransformerNet:
    """The transform network ``nst-fast train`` builds, untrained, on the CPU."""
    (model,) = config_groups(project_config("random"), "model")
    return TransformerNet(TransformerConfig.of(model))


def make_transformer(setup: Setup) -> torch.nn.Module:
    """The network to stylize with; ``stylize`` itself picks the layout and, with
    ``fast``, swaps nst_fast.fast's modules in, as ``nst-fast stylize`` runs it. For a
    network of several styles, one of them, as ``nst-fast stylize --style`` runs it."""
    net = plain_transformer()
    if setup.styles > 1:
        several = TransformerNet(net.config, setup.styles)
        net = several.single_style(torch.eye(setup.styles)[0])
    net = net.to(setup.device).eval()
    if "transformer" in setup.compile:
        net = torch.compile(net, dynamic=False)
    return net


def bench_stylize(setup: Setup, size: int, repeats: int) -> float:
    net = make_transformer(setup)
    image = torch.rand(3, size, size)
    half = setup.amp is not None
    times = time_calls(
        lambda: stylize(net, image, half=half, fast=setup.fast),
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


def training_flops_per_image(
    size: int, reference: bool, style_scales: tuple[float, ...] = (1,)
) -> float:
    """FLOPs of one training image (CPU, plain modules, counted at 64 px and scaled).

    The project's step computes the photo's VGG features only up to the content layer;
    the reference's (pytorch/examples) runs the photo through VGG up to relu4_3 as well:
    its count is the same step with that one difference. ``style_scales``: the project's
    style pyramid (the reference has none).
    """
    scales = f"loss.style_scales=[{','.join(f'{f:g}' for f in style_scales)}]"
    loss, style = config_groups(project_config("random", scales), "loss", "style")
    net = plain_transformer()
    criterion = build_criterion(loss, style, net.multiple)
    network: LossNetwork = criterion.network
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
    net = plain_transformer()
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


def bench_data(
    root: Path, size: int, batch: int, workers: int, epochs: int = 1, repeat: int = 1
) -> dict:
    """Images/s the PhotoDataModule delivers (worker start-up and first batch excluded);
    ``repeat`` passes a small folder several times an epoch, as ``data.repeat`` does."""
    from nst_fast.data.datamodule import PhotoDataModule

    data = PhotoDataModule(
        str(root), image_size=size, batch_size=batch, num_workers=workers, repeat=repeat
    )
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
    sys.path.insert(0, str(ROOT / "scripts" / "data"))
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
        setup = setup_from_spec(spec["setup"])
        module, optimizer = make_module(setup, spec["weights"])
        batch = random_photos(spec["batch"], spec["size"], device)
        step = train_step_fn(setup, module, optimizer, batch)
        for _ in range(2):
            step()
    elif spec["what"] == "stylize":
        setup = setup_from_spec(spec["setup"])
        setup.compile = ()  # compiling at 2048 px takes longer than it saves here
        net = make_transformer(setup)
        image = torch.rand(3, spec["size"], spec["size"])
        stylize(net, image, half=setup.amp is not None, fast=setup.fast)
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


def setup_from_spec(spec: dict) -> Setup:
    setup = Setup(**{k: v for k, v in spec.items() if k != "amp"})
    setup.amp = getattr(torch, spec["amp"]) if spec["amp"] else None
    setup.compile = tuple(setup.compile)
    setup.style_scales = tuple(setup.style_scales)
    return setup


def setup_spec(setup: Setup) -> dict:
    spec = dict(setup.__dict__)
    spec["amp"] = str(setup.amp).removeprefix("torch.") if setup.amp else None
    spec["compile"] = list(setup.compile)
    spec["style_scales"] = list(setup.style_scales)
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


def display_path(path: Path) -> str:
    """``path`` relative to the checkout where it lies beside it (../shared/...)."""
    if not path.is_absolute() or not path.resolve().is_relative_to(ROOT.parent):
        return str(path)
    return os.path.relpath(path.resolve(), ROOT)


# --------------------------------------------------------------------------- one run


@dataclass
class Peaks:
    fp32: dict  # best and median GFLOP/s of the fp32 matmul
    half: float | None = None  # the autocast dtype's best; None without autocast


@dataclass
class Work:
    """FLOPs per image of each figure (the plain modules' count, in either mode)."""

    train: float
    ref_train: float
    stylize: dict[int, float]


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
    run = Run(args, command_line(argv), vgg_weights(), PEER_BENCH.exists() and not args.no_peer)
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
    reference = f"{display_path(PEER_BENCH)} (subprocess)"
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


def measure_peaks(setup: Setup, n: int = 2048) -> Peaks:
    peak = matmul_peak(setup.device, n=n)
    print(
        f"  fp32 matmul {n}^3: best {peak['best']:.1f} GFLOP/s, "
        f"median {peak['median']:.1f} (the peak below is the best)",
        flush=True,
    )
    peaks = Peaks(peak)
    if setup.amp is not None:
        peaks.half = matmul_peak(setup.device, setup.amp, n)["best"]
        print(f"  {setup.amp} matmul peak: best {peaks.half:.1f} GFLOP/s", flush=True)
    return peaks


def remeasure_peaks(setup: Setup, before: Peaks, n: int = 2048) -> Peaks:
    """The machine's peaks: the best seen before or after the figures."""
    again = matmul_peak(setup.device, n=n)
    print(f"  fp32 matmul peak again at the end: best {again['best']:.1f} GFLOP/s")
    peaks = Peaks({**before.fp32, "best": max(before.fp32["best"], again["best"])}, before.half)
    if setup.amp is not None:
        peaks.half = max(before.half or 0.0, matmul_peak(setup.device, setup.amp, n)["best"])
        print(f"  {setup.amp} peak, best of both: {peaks.half:.1f} GFLOP/s", flush=True)
    return peaks


def count_work(args: argparse.Namespace) -> Work:
    scales = tuple(args.style_scales)
    work = Work(
        training_flops_per_image(args.size, reference=False, style_scales=scales),
        training_flops_per_image(args.size, reference=True),
        {size: stylize_flops(size) for size in args.stylize_sizes},
    )
    print(
        f"  work: {work.train / 1e9:.0f} GFLOP per training image at {args.size} px "
        f"(reference's step: {work.ref_train / 1e9:.0f}); stylize "
        + ", ".join(f"{s} px {f / 1e9:.0f}" for s, f in work.stylize.items())
        + " GFLOP",
        flush=True,
    )
    return work


# --------------------------------------------------------------------------- figure groups

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


def measure_data(args: argparse.Namespace) -> tuple[dict, dict, str]:
    """The data module's img/s from full-size JPEGs and from a prepare_data.py copy."""
    batch, workers = args.batches[0], args.data_workers
    with tempfile.TemporaryDirectory(prefix="nst_bench_") as tmp:
        if COCO.is_dir():
            src, label = COCO, "coco128 (full-size JPEGs)"
        else:
            src, label = synthetic_photos(Path(tmp) / "photos"), "synthetic 640x480 JPEGs"
        full = bench_data(src, args.size, batch, workers)
        prep_s = prepare_copy(src, Path(tmp) / "prepared", args.size)
        small = bench_data(Path(tmp) / "prepared", args.size, batch, workers)
    print(
        f"  data: {full['img_per_s']:.0f} img/s from {label}, "
        f"{small['img_per_s']:.0f} img/s pre-resized (prepare_data.py took {prep_s:.1f} s)",
        flush=True,
    )
    return full, small, label


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
    if key not in run.ref_memory and PEER_DIR.is_dir() and not run.args.no_peer:
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


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer steps and sizes")
    p.add_argument(
        "--plain",
        action="store_true",
        help="switch nst-fast's speed work off (fast=false, stylize fast=False), for A/B",
    )
    add_figure_options(p)
    add_setup_options(p)
    add_output_options(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.steps = [4], 1
        args.stylize_sizes, args.stylize_repeats = [512], 1
        args.memory_sizes = [1024]
        args.size = min(args.size, 128)
        args.profile_rows = 10
    return args


def add_figure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=256, help="training size in px (256)")
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="training batches")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (3)")
    p.add_argument("--styles", type=int, default=1, help="train a network of this many styles (1)")
    p.add_argument(
        "--stability", action="store_true", help="train with the video stability terms on"
    )
    p.add_argument(
        "--style-scales",
        type=float,
        nargs="+",
        default=[1],
        metavar="FACTOR",
        help="train with the style term on this pyramid (loss.style_scales; 1: full size only)",
    )
    p.add_argument(
        "--stylize-sizes", type=int, nargs="+", default=[512, 1024], help="timed stylize sizes"
    )
    p.add_argument("--stylize-repeats", type=int, default=3)
    p.add_argument(
        "--memory-sizes", type=int, nargs="+", default=[1024, 2048], help="stylize memory sizes"
    )
    p.add_argument("--data-workers", type=int, default=2, help="DataLoader workers (2)")
    p.add_argument("--no-peer", action="store_true", help="skip the reference")
    p.add_argument("--no-data", action="store_true", help="skip the data pipeline")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory figures")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler table")
    p.add_argument("--profile-rows", type=int, default=20)
    p.add_argument(
        "--matmul-size",
        type=int,
        default=2048,
        help="n of the n x n matmul that measures the machine's peak (2048; smaller for a "
        "smoke run: the peak is then understated)",
    )


def add_setup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "all"])
    p.add_argument(
        "--cuda-setups",
        nargs="+",
        default=["fp32", "optimized"],
        choices=["fp32", "optimized"],
        help="the CUDA set-ups to run: eager fp32, the optimized one (with --compile off: "
        "eager bf16), or both (default)",
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
    p.add_argument(
        "--free-memory",
        action="store_true",
        help="let malloc return freed memory to the OS, as before keep_freed_memory()",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument(
        "--shared",
        type=Path,
        metavar="DIR",
        help="read the reference, the VGG16 weights and coco128 from DIR, laid out as "
        "../shared (default: ../shared)",
    )


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    md = p.add_mutually_exclusive_group()
    md.add_argument(
        "--write-md",
        type=Path,
        metavar="PATH",
        help="write the table as Markdown to PATH (default for a full run without --plain: "
        f"{display_path(LATEST_MD)}; never that file for --quick)",
    )
    md.add_argument("--no-write-md", action="store_true", help="write no Markdown table")


def markdown_path(args: argparse.Namespace) -> Path | None:
    """Where the Markdown table goes: --write-md, else docs/benchmark-latest.md for a full
    run of the default mode. A --quick run never replaces that file."""
    if args.write_md is not None:
        if args.quick and args.write_md.resolve() == LATEST_MD.resolve():
            raise SystemExit(
                f"--quick: a smoke run does not replace {display_path(LATEST_MD)}; "
                "run without --quick, or --write-md another path"
            )
        return args.write_md
    variant = args.plain or args.styles > 1 or args.stability or args.style_scales != [1]
    if args.quick or variant or args.no_write_md:
        return None
    return LATEST_MD


def child_entry(spec_json: str) -> int:
    spec = json.loads(spec_json)
    # The reference runs as shipped; the project as its command line runs it.
    if not spec["what"].startswith("peer") and not spec.get("free_memory"):
        keep_freed_memory()
    print(json.dumps(child_main(spec)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.shared:
        use_shared(args.shared)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child_entry(args.child)
    md_path = markdown_path(args)  # a refused path fails before the run, not after
    started = time.perf_counter()
    run = start_run(args, argv)
    for setup in setups(args):
        bench_setup(run, setup)
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(run.results, indent=2, default=str))
    if md_path is not None:
        write_markdown(md_path, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
