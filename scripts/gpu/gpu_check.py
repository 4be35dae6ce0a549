#!/usr/bin/env python3
"""The GPU check: what a lent CUDA machine has to confirm, in one run of under 8 minutes,
written as a report (gpu_check.md, gpu_check.json and the full gpu_check.log) under --out.

    python scripts/gpu/gpu_check.py --out DIR              # on a CUDA machine: make gpu-check
    python scripts/gpu/gpu_check.py --out DIR --rehearse   # the same sections on the CPU, tiny

Nothing in the project has ever run on a GPU and a machine is lent rarely, for minutes: so
the whole check is one prepared command, and ``--rehearse`` runs every section on the CPU
at tiny sizes (random VGG weights, photos it makes) so that tests/test_gpu_check.py keeps
the script from rotting between loans. The sections, in order:

* environment: the GPU, the software, what nst-fast picks there (precision, workers), and
  the bundle's weights unpacked (scripts/gpu/gpu_bundle.py: what travels to the machine);
* cuda tests: the tests that skip without CUDA, run with pytest;
* train steps: the training step finite under bf16 and fp16 autocast, and with
  ``compile=true``;
* benchmark: scripts/bench/benchmark.py in eager bf16, fast=true and fast=false, training img/s
  at 256 px batch 4 and 16, stylize at 512 and 1024 px, peak memory, beside the reference;
* stylize 4K: a 3840x2160 frame through ``inference.stylize``, fast and plain, peak memory;
* training run: ``nst-fast train experiment=johnson2016`` on coco128, time-boxed, with
  Lightning's SimpleProfiler and the data pipeline timed on its own (data against compute);
* export: ``nst-fast export`` to TorchScript and ONNX, each file checked on the GPU;
* stylize folder, stylize video: ``nst-fast stylize`` of a folder of photos and of a clip.

Each section has a time box and runs apart from the others: one that fails or runs out of
time records why in the report and the next one starts. The report is rewritten after each
section, so a run stopped from outside still leaves what it had measured.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import functools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

# What scripts/gpu/gpu_bundle.py writes, in an ignored folder of the checkout (carried to the
# machine): wheels of what the machine lacks, and shared/, a slice of ../shared in its layout.
BUNDLE = ROOT / ".gpu-bundle"
# The VGG16 convolutions up to the deepest layer the loss uses, stored in fp16 to fit the
# carry limit; unpacked on the machine into the file ../shared has (see unpack_weights).
PACKED_WEIGHTS = "vgg16_features_fp16_partial.pt"
FULL_WEIGHTS = "vgg16_imagenet_features.pt"
REPORT = "gpu_check"


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the GPU figures, or the rehearsal's few seconds."""

    budget_s: float  # the whole run; the sections' boxes are cut to fit it
    train_size: int
    batches: tuple[int, ...]
    steps: int  # training steps timed (benchmark) or checked (train steps)
    stylize_sizes: tuple[int, ...]
    stylize_repeats: int
    memory_sizes: tuple[int, ...]
    uhd: tuple[int, int]  # (height, width) of the "4K" frame
    run_steps: int  # the training run's max_steps (it is also cut by time)
    folder_photos: int
    clip: tuple[int, int, int]  # frames, height, width


GPU = Sizes(
    budget_s=450,
    train_size=256,
    batches=(4, 16),
    steps=5,
    stylize_sizes=(512, 1024),
    stylize_repeats=5,
    memory_sizes=(1024, 2048),
    uhd=(2160, 3840),
    run_steps=300,
    folder_photos=16,
    clip=(48, 360, 640),
)
# A rehearsal's boxes and budget are generous: on two busy cores a process takes seconds
# to start, and the test must fail on rot, not on a slow minute.
REHEARSAL = Sizes(
    budget_s=600,
    train_size=16,
    batches=(2,),
    steps=2,
    stylize_sizes=(64,),
    stylize_repeats=1,
    memory_sizes=(64,),
    uhd=(54, 96),
    run_steps=2,
    folder_photos=3,
    clip=(4, 48, 64),
)


class TimeBoxExceeded(Exception):
    """A section ran past its time box."""


class CommandFailed(Exception):
    """A command a section ran exited non-zero."""


@dataclass
class Section:
    """One section's outcome, as the report shows it."""

    name: str
    title: str
    status: str = "not run"  # ok, failed, timed out, skipped
    seconds: float = 0.0
    box_s: float = 0.0
    summary: str = ""
    lines: list[str] = field(default_factory=list)  # Markdown of the details
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Context:
    """What the sections share: options, places, the inputs found, the log."""

    out: Path
    work: Path
    rehearse: bool
    sizes: Sizes
    device: str
    shared: Path | None  # ../shared or the bundle's copy; None: make everything here
    log_path: Path
    env: dict[str, str]
    weights: str = "random"
    photos: Path | None = None
    style: str = "generated:mosaic"
    model: Path | None = None  # the training run's model.pt, for export and stylize
    inputs: dict[str, str] = field(default_factory=dict)
    inputs_error: str = ""
    section_end: float = 0.0

    def left(self) -> float:
        return self.section_end - time.monotonic()

    def log(self, text: str) -> None:
        with self.log_path.open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")


# --------------------------------------------------------------------------- running


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


# --------------------------------------------------------------------------- the bundle


def install_wheels(bundle: Path, site: Path) -> list[str]:
    """Install the bundle's wheels (what the lent machine lacks) into ``site``, offline,
    and put it on the path of this process; the names installed. A package the machine
    already has stays as it is there."""
    from importlib import metadata

    wanted = []
    for wheel in sorted((bundle / "wheels").glob("*.whl")):
        name = wheel.name.split("-")[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            wanted.append(wheel)
    if wanted:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
            + ["--no-compile", "--no-cache-dir", "--target", str(site)]
            + [str(w) for w in wanted],
            check=True,
        )
        sys.path.insert(0, str(site))
    return [w.name for w in wanted]


def unpack_weights(shared: Path) -> Path | None:
    """../shared's weights file, rebuilt from the bundle's fp16 partial copy where only
    that travelled: the layers it has converted back to fp32, the deeper ones (which the
    loss and the reference never run) left at a random init, so that both load it as
    torchvision's vgg16().features state dict. None where neither file is there."""
    full, packed = shared / "weights" / FULL_WEIGHTS, shared / "weights" / PACKED_WEIGHTS
    if full.is_file():
        return full
    if not packed.is_file():
        return None
    from nst_fast.files import load_tensors
    from nst_fast.losses.vgg import vgg_features

    torch.manual_seed(0)
    state = vgg_features("vgg16").state_dict()
    partial = load_tensors(packed)
    unknown = set(partial) - set(state)
    if unknown:
        raise ValueError(f"{packed}: not vgg16().features layers: {sorted(unknown)[:3]}")
    state.update({k: v.float() for k, v in partial.items()})
    torch.save(state, full)
    return full


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> Path:
    """``n`` smooth random JPEGs of ``size`` (height, width): the rehearsal's coco128."""
    from nst_fast.images import save_image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        low = torch.rand(1, 3, 6, 8, generator=g)
        image = torch.nn.functional.interpolate(low, size=size, mode="bilinear")[0]
        save_image(image.clamp(0, 1), folder / f"{i:012d}.jpg")
    return folder


# --------------------------------------------------------------------------- sections


def section_environment(ctx: Context, sec: Section) -> None:
    """The machine, the software, what nst-fast picks there, and the inputs found."""
    from importlib import metadata

    from nst_fast.device import inference_dtype, loader_workers, training_precision

    data: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cores": os.cpu_count(),
        "device": ctx.device,
    }
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        data |= {
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    data["nst_fast_training_precision"] = training_precision("auto")
    data["nst_fast_inference_dtype"] = str(inference_dtype(torch.device(ctx.device)))
    data["nst_fast_loader_workers"] = loader_workers(4)
    packages = {}
    for name in ("pytorch-lightning", "torchvision", "hydra-core", "omegaconf", "torchdata"):
        packages[name] = version_of(name, metadata)
    for name in ("onnx", "onnxruntime", "av"):
        packages[name] = version_of(name, metadata)
    data["packages"] = packages
    with contextlib.suppress(ImportError):
        import onnxruntime

        data["onnxruntime_providers"] = onnxruntime.get_available_providers()
    with contextlib.suppress(ImportError):
        import av

        data["av_h264"] = "libx264" in av.codecs_available
    data["inputs"] = ctx.inputs
    sec.data = data
    gpu = f"{data['gpu']} (compute capability {data['capability']})" if "gpu" in data else "none"
    sec.summary = f"{gpu}; torch {torch.__version__}; weights {Path(ctx.weights).name}"
    sec.lines = [f"- {k}: {v}" for k, v in data.items()]
    if ctx.inputs_error:
        raise RuntimeError(f"inputs: {ctx.inputs_error}")


def version_of(name: str, metadata: Any) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def find_inputs(ctx: Context) -> None:
    """The VGG weights, photos and style the sections use: the bundle's or ../shared's on
    a GPU machine; made here (random weights, generated photos) in a rehearsal, and
    wherever the bundle's are missing or fail to unpack (the environment section then
    says why)."""
    try:
        if ctx.shared is not None and not ctx.rehearse:
            coco = ctx.shared / "coco128" / "train2017"
            ctx.photos = coco if coco.is_dir() and any(coco.glob("*.jpg")) else None
            style = ctx.shared / "styles" / "starry_night.jpg"
            ctx.style = str(style) if style.is_file() else ctx.style
            weights = unpack_weights(ctx.shared)
            ctx.weights = str(weights) if weights else "random"
    except Exception as err:
        ctx.inputs_error = f"{type(err).__name__}: {err}"
        ctx.log(traceback.format_exc())
    if ctx.photos is None:
        size = (48, 64) if ctx.rehearse else (480, 640)
        ctx.photos = make_photos(ctx.work / "photos", 8 if ctx.rehearse else 64, size)
    photos = len(list(ctx.photos.glob("*.jpg")))
    ctx.inputs = {"weights": ctx.weights, "photos": f"{ctx.photos} ({photos})"}
    ctx.inputs["style"] = ctx.style


def cuda_test_ids(tests: Path) -> list[str]:
    """The tests that need CUDA: test functions under a skipif (or a mark assigned to a
    name, or a module's pytestmark) whose source names cuda, and tests that call
    pytest.skip beside a cuda check. Read from the source, so new ones join by themselves."""
    ids = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        marks, whole = set(), False
        for node in tree.body:
            if isinstance(node, ast.Assign) and is_cuda_skip(node.value):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                whole |= "pytestmark" in names
                marks |= names
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            marked = any(is_cuda_skip(d) or any(m in d for m in marks) for d in decorators)
            body = ast.unparse(node)
            skips = "pytest.skip" in body and "cuda.is_available" in body
            if whole or marked or skips:
                ids.append(f"{path.relative_to(tests.parent)}::{node.name}")
    return ids


def is_cuda_skip(node: ast.AST | str) -> bool:
    text = node if isinstance(node, str) else ast.unparse(node)
    return "skipif" in text and "cuda" in text


def section_cuda_tests(ctx: Context, sec: Section) -> None:
    """The tests that skip without CUDA, e.g. the fast modules against the plain ones on
    CUDA in value and gradient, run with pytest."""
    ids = cuda_test_ids(ROOT / "tests")
    if not ids:
        raise RuntimeError("found no CUDA tests under tests/ (skipif ... cuda)")
    xml = ctx.work / "cuda_tests.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    with contextlib.suppress(CommandFailed):  # the counts below say what failed
        run_command(ctx, [*argv, f"--junitxml={xml}", *ids])
    if not xml.is_file():
        raise RuntimeError("pytest wrote no results (see the log)")
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed", "error": "error"}.get(kind, kind)
                message = (found.get("message") or "").splitlines()[:1]
                outcome += f": {message[0][:200]}" if message else ""
                break
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    counts: dict[str, int] = {}
    for case in cases:
        key = case["outcome"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    sec.data = {"selected": ids, "cases": cases, "counts": counts}
    sec.summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    sec.lines = [f"- `{c['test']}`: {c['outcome']}" for c in cases]
    if counts.get("failed") or counts.get("error"):
        raise RuntimeError(sec.summary)
    if ctx.device == "cuda" and not counts.get("passed"):
        raise RuntimeError(f"no CUDA test ran on the GPU: {sec.summary}")


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


def model_to_check(ctx: Context) -> Path:
    """The training run's model.pt; an untrained one where that run did not get so far
    (export and stylize check the code path, not the picture)."""
    if ctx.model is not None and ctx.model.is_file():
        return ctx.model
    from nst_fast.export import save_model

    use_benchmark_parts()
    from benchmark_parts.stylizing import plain_transformer

    path = ctx.work / "untrained.pt"
    if not path.is_file():
        save_model(plain_transformer(), path, style="untrained", step=0)
    return path


def section_export(ctx: Context, sec: Section) -> None:
    """``nst-fast export`` to TorchScript and ONNX (each checks itself on the CPU), then
    each file loaded for the GPU in fp32 and in half precision against the eager network,
    and timed at 1024 px."""
    from nst_fast.export import load_network
    from nst_fast.formats import check_against_eager
    from nst_fast.model_loading import load_for_inference

    model = model_to_check(ctx)
    net, _ = load_network(model)
    device = torch.device(ctx.device)
    half = torch.bfloat16
    image = torch.rand(1, 3, 1024, 1024) if not ctx.rehearse else torch.rand(1, 3, 64, 64)
    for fmt_name, suffix in (("torchscript", ".ts"), ("onnx", ".onnx")):
        target = ctx.work / f"model{suffix}"
        argv = [sys.executable, "-m", "nst_fast", "export", str(model), "--format", fmt_name]
        output = run_command(ctx, [*argv, "-o", str(target), "--overwrite"])
        checked = [line.strip() for line in output.splitlines() if "checked" in line]
        entry: dict[str, Any] = {"cli_check": checked[-1] if checked else None}
        for dtype in (torch.float32, half):
            loaded = load_for_inference(target, device, dtype)
            diff = check_against_eager(loaded, net)
            loaded.run(image)
            _, seconds = timed(lambda loaded=loaded: loaded.run(image))
            entry[str(dtype).removeprefix("torch.")] = {
                "max_abs_diff": diff,
                "ran_as": loaded.description,
                "s_per_image": seconds,
            }
        sec.data[fmt_name] = entry
        for dtype, figures in entry.items():
            if dtype != "cli_check":
                sec.lines.append(
                    f"- {fmt_name} on {ctx.device} in {dtype}: max |file - eager| "
                    f"{figures['max_abs_diff']:.2e}, ran as {figures['ran_as']}, "
                    f"{fmt(figures['s_per_image'])} s at {image.shape[-1]} px"
                )
        sec.lines.append(f"- `nst-fast export --format {fmt_name}`: {entry['cli_check']}")
    # Garbage output differs by ~0.5; TF32 and half precision stay within a few 1e-2.
    worst = {
        f"{f} {d}": v[d]["max_abs_diff"]
        for f, v in sec.data.items()
        for d in ("float32", "bfloat16")
    }
    sec.summary = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    bad = [k for k, v in worst.items() if not v < 0.1]
    if bad:
        raise RuntimeError(f"far from the eager network: {', '.join(bad)}")


def section_stylize_folder(ctx: Context, sec: Section) -> None:
    """``nst-fast stylize MODEL FOLDER -o OUT`` on full-size photos."""
    model = model_to_check(ctx)
    folder = ctx.work / "folder"
    folder.mkdir(exist_ok=True)
    for photo in sorted(ctx.photos.glob("*.jpg"))[: ctx.sizes.folder_photos]:
        shutil.copy(photo, folder / photo.name)
    out = ctx.work / "stylized"
    argv = [sys.executable, "-m", "nst_fast", "stylize", str(model), str(folder)]
    argv += ["-o", str(out), "--device", ctx.device, "-q", "--overwrite"]
    _, wall = timed(lambda: run_command(ctx, argv))
    inputs, written = len(list(folder.iterdir())), len(list(out.glob("*"))) if out.is_dir() else 0
    sec.data = {"photos": inputs, "written": written, "wall_s": wall}
    sec.summary = f"{written} of {inputs} photos stylized in {wall:.1f} s (start-up included)"
    sec.lines = [f"- {sec.summary}"]
    if written != inputs:
        raise RuntimeError(sec.summary)


def write_clip(path: Path, photo: Path, frames: int, height: int, width: int) -> str:
    """A short clip panning across ``photo``, H.264 where PyAV has it; its codec."""
    import av
    import numpy as np

    from nst_fast.images import read_image

    image = read_image(photo)
    image = torch.nn.functional.interpolate(image[None], size=(height, width + frames * 4))[0]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as clip:
        stream = clip.add_stream(codec, rate=24)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for i in range(frames):
            crop = image[:, :, i * 4 : i * 4 + width]
            rgb = (crop.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            clip.mux(stream.encode(frame))
        clip.mux(stream.encode(None))
    return codec


def section_stylize_video(ctx: Context, sec: Section) -> None:
    """``nst-fast stylize MODEL CLIP -o OUT.mp4`` on a clip made here (PyAV)."""
    from nst_fast.video import count_frames

    model = model_to_check(ctx)
    frames, height, width = ctx.sizes.clip
    clip = ctx.work / "clip.mp4"
    photo = sorted(ctx.photos.glob("*.jpg"))[0]
    codec = write_clip(clip, photo, frames, height, width)
    out = ctx.work / "clip_stylized.mp4"
    argv = [sys.executable, "-m", "nst_fast", "stylize", str(model), str(clip)]
    argv += ["-o", str(out), "--device", ctx.device, "-q", "--overwrite"]
    _, wall = timed(lambda: run_command(ctx, argv))
    got, rate, shape = count_frames(out)
    sec.data = {"frames": frames, "written_frames": got, "size": list(shape), "wall_s": wall}
    sec.data |= {"codec": codec, "rate": str(rate)}
    sec.summary = (
        f"{got} of {frames} frames at {shape[1]}x{shape[0]} ({codec}) in {wall:.1f} s "
        "(start-up included)"
    )
    sec.lines = [f"- {sec.summary}"]
    if got != frames or tuple(shape) != (height, width):
        raise RuntimeError(sec.summary)


# name, title, function, time box on a GPU (s), in a rehearsal (s). Ordered so that the
# figures the issue asks for come first; boxes add up to about the GPU budget.
SECTIONS: list[tuple[str, str, Callable[[Context, Section], None], int, int]] = [
    ("environment", "Environment", section_environment, 30, 30),
    ("cuda_tests", "CUDA tests", section_cuda_tests, 60, 60),
    ("train_steps", "Training steps: bf16, fp16, compile", section_train_steps, 90, 90),
    ("benchmark", "Benchmark against the reference", section_benchmark, 150, 120),
    ("stylize_4k", "Stylize 4K", section_stylize_4k, 25, 30),
    ("training_run", "Training run: experiment=johnson2016", section_training_run, 100, 90),
    ("export", "Export: TorchScript and ONNX", section_export, 40, 60),
    ("stylize_folder", "nst-fast stylize: a folder", section_stylize_folder, 25, 40),
    ("stylize_video", "nst-fast stylize: a video", section_stylize_video, 25, 40),
]
# Seconds kept for each section still to come when an earlier one may run long.
RESERVE_S = 15


# --------------------------------------------------------------------------- the report


def report_meta(ctx: Context, started: float) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name() if ctx.device == "cuda" else "none"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "rehearsal on the CPU (tiny sizes)" if ctx.rehearse else "GPU check",
        "gpu": gpu,
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "software": f"torch {torch.__version__}, Python {platform.python_version()}",
        "commit": commit(),
        "bundle": bundle_manifest(),
        "elapsed_s": round(time.monotonic() - started, 1),
        "budget_s": ctx.sizes.budget_s,
    }


def commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
        )
        return out.stdout.decode().strip()
    return "unknown (no git here)"


def bundle_manifest() -> str:
    path = BUNDLE / "MANIFEST.json"
    if not path.is_file():
        return "none"
    manifest = json.loads(path.read_text())
    return f"built {manifest.get('built')} at commit {manifest.get('commit')}"


def write_report(ctx: Context, sections: list[Section], started: float) -> None:
    """gpu_check.json (everything) and gpu_check.md (what a person reads), rewritten
    after every section."""
    meta = report_meta(ctx, started)
    payload = {"meta": meta, "sections": {s.name: s.__dict__ for s in sections}}
    (ctx.out / f"{REPORT}.json").write_text(json.dumps(payload, indent=2, default=str))
    lines = ["# nst-fast GPU check", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| section | status | seconds | result |", "| --- | --- | --- | --- |"]
    for s in sections:
        result = s.summary if s.status == "ok" else f"{s.error or s.summary}"
        result = result.replace("|", "/").replace("\n", " ")
        lines.append(f"| {s.title} | {s.status} | {s.seconds:.0f} of {s.box_s:.0f} | {result} |")
    for s in sections:
        lines += ["", f"## {s.title}", "", f"Status: {s.status} ({s.seconds:.1f} s)."]
        if s.error:
            lines += ["", f"Error: `{s.error}`"]
        if s.lines:
            lines += ["", *s.lines]
    (ctx.out / f"{REPORT}.md").write_text("\n".join(lines).rstrip() + "\n")


def run_sections(ctx: Context, names: list[str] | None, started: float) -> list[Section]:
    chosen = [s for s in SECTIONS if names is None or s[0] in names]
    sections = [Section(name, title) for name, title, *_ in chosen]
    end = started + ctx.sizes.budget_s
    for i, ((_, _, fn, gpu_box, rehearsal_box), sec) in enumerate(
        zip(chosen, sections, strict=True)
    ):
        later = len(chosen) - i - 1
        box = min(rehearsal_box if ctx.rehearse else gpu_box, end - time.monotonic())
        box = min(box, end - time.monotonic() - RESERVE_S * later) if later else box
        sec.box_s = box
        print(f"[{time.monotonic() - started:5.0f} s] {sec.title} (box {box:.0f} s)", flush=True)
        ctx.log(f"\n===== {sec.title} (box {box:.0f} s)")
        if box < 1:
            sec.status, sec.error = "skipped", "no time left in the run's budget"
        else:
            run_one(ctx, fn, sec, box)
        print(f"        {sec.status}: {sec.error or sec.summary}", flush=True)
        write_report(ctx, sections, started)
    return sections


def run_one(ctx: Context, fn: Callable[[Context, Section], None], sec: Section, box: float) -> None:
    """One section in its time box; its error, never the run's."""
    start = time.monotonic()
    ctx.section_end = start + box
    try:
        with time_box(box):
            fn(ctx, sec)
        sec.status = "ok"
    except TimeBoxExceeded as err:
        sec.status, sec.error = "timed out", str(err)
    except Exception as err:
        sec.status, sec.error = "failed", f"{type(err).__name__}: {str(err).strip()[:800]}"
        ctx.log(traceback.format_exc())
    finally:
        sec.seconds = time.monotonic() - start
        if ctx.device == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()


def child_env(site: Path | None) -> dict[str, str]:
    """The commands' environment: this checkout (and the bundle's packages) importable
    without an install, output unbuffered for the log."""
    env = dict(os.environ)
    paths = [str(site)] if site else []
    paths += [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the report")
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="run every section on the CPU at tiny sizes, in about a minute",
    )
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument(
        "--shared",
        type=Path,
        help="../shared or a copy in its layout (default: the bundle's, else ../shared)",
    )
    p.add_argument("--budget", type=float, help="seconds for the whole run (GPU 450)")
    p.add_argument(
        "--sections", nargs="+", choices=[s[0] for s in SECTIONS], help="only these sections"
    )
    return p.parse_args(argv)


def default_shared() -> Path | None:
    for folder in (BUNDLE / "shared", ROOT.parent / "shared"):
        if folder.is_dir():
            return folder
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() and not args.rehearse else "cpu"
    if device == "cpu" and not args.rehearse:
        raise SystemExit("gpu_check: no CUDA device here; --rehearse runs it on the CPU")
    sizes = REHEARSAL if args.rehearse else GPU
    if args.budget:
        sizes = Sizes(**{**sizes.__dict__, "budget_s": args.budget})
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="nst_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    site = work / "site"
    installed = [] if args.rehearse else install_wheels(BUNDLE, site)
    ctx = Context(
        out=args.out,
        work=work,
        rehearse=args.rehearse,
        sizes=sizes,
        device=device,
        shared=args.shared or default_shared(),
        log_path=args.out / f"{REPORT}.log",
        env=child_env(site if installed else None),
    )
    if args.rehearse:  # tiny tensors: a second thread only spins, on cores others share
        torch.set_num_threads(1)
        ctx.env["OMP_NUM_THREADS"] = "1"
    ctx.log_path.write_text(f"nst-fast GPU check, {ctx.sizes}\nwheels installed: {installed}\n")
    # The cache of generated styles and downloads, away from the user's.
    ctx.env["NST_FAST_CACHE"] = os.environ["NST_FAST_CACHE"] = str(work / "cache")
    find_inputs(ctx)
    sections = run_sections(ctx, args.sections, started)
    failed = [s.name for s in sections if s.status != "ok"]
    print(f"report: {ctx.out / (REPORT + '.md')} ({time.monotonic() - started:.0f} s)")
    if failed:
        print(f"not ok: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
