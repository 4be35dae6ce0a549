"""The ``nst-fast`` command: train (Hydra), stylize, export, optimize and evaluate."""

from __future__ import annotations

import argparse
import glob
import math
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from nst_fast import __version__
from nst_fast.device import keep_freed_memory
from nst_fast.errors import NstFastError

if TYPE_CHECKING:
    from nst_fast.export import ModelInfo
    from nst_fast.losses.perceptual import PerceptualLoss

USAGE = f"""nst-fast {__version__}: fast neural style transfer

usage:
  nst-fast train [KEY=VALUE ...] [-m] [--cfg job] [hydra flags]
                            train a style network (Hydra overrides, e.g. style=wave)
  nst-fast stylize MODEL INPUT [INPUT ...] -o OUT
                            stylize photos, folders, globs or videos with a model
                            (model.pt, or an exported .ts / .onnx)
  nst-fast export MODEL --format torchscript|onnx|pt [-o FILE]
                            write model.pt (or a checkpoint) as TorchScript, ONNX or model.pt
  nst-fast optimize CONTENT STYLE -o OUT [KEY=VALUE ...]
                            Gatys et al.: optimize one photo's pixels (L-BFGS or Adam)
  nst-fast evaluate MODEL --content DIR [--style STYLE] [-o DIR]
                            loss on held-out photos beside Gatys L-BFGS at 50..500 its
  nst-fast --version

'nst-fast train --help' lists the config groups and their options,
'nst-fast stylize --help' and 'nst-fast export --help' theirs.
"""

# Formats Pillow writes; anything else read (GIF, ...) is written as PNG.
WRITABLE = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
KEEPS_ALPHA = (".png", ".webp", ".tif", ".tiff")


# --- stylize: options -----------------------------------------------------------------


def stylize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst-fast stylize",
        description="Stylize photos and videos in one forward pass of a style network.",
    )
    parser.add_argument(
        "model", type=Path, help="model.pt, a training checkpoint (.ckpt), or a .ts / .onnx file"
    )
    parser.add_argument(
        "inputs", nargs="+", help="image files, folders (recursively), globs, or videos"
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True,
        help="output folder; or a file name for a single image or video",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:1...")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
        help="auto: bf16 or fp16 on GPUs, bf16 on CPUs with native bf16, else fp32",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="images of one size per forward pass (default 4 on GPU, 1 on CPU; videos 8)",
    )  # fmt: skip
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="resize so the longer side is SIZE px first")
    size.add_argument("--scale", type=float, help="resize by this factor first")
    parser.add_argument(
        "--tile", default="auto",
        help="auto: tile images too large for memory; off; or a tile size in px",
    )  # fmt: skip
    parser.add_argument("--tile-overlap", type=int, default=128, help="px shared by tiles")
    parser.add_argument(
        "--preserve-color", action="store_true",
        help="keep the photo's colours: transfer the style to the luminance only",
    )  # fmt: skip
    parser.add_argument(
        "--strength", type=float, default=1.0,
        help="0..1: blend between the photo (0) and the full stylization (1)",
    )  # fmt: skip
    parser.add_argument("--ext", help="output format for images, e.g. jpg or png")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def check_options(args: argparse.Namespace) -> None:
    if not 0 <= args.strength <= 1:
        raise NstFastError(f"--strength {args.strength}: expected a number from 0 to 1")
    if args.size is not None and args.size < 8:
        raise NstFastError(f"--size {args.size}: expected at least 8 (px, the longer side)")
    if args.scale is not None and not (0 < args.scale < math.inf):
        raise NstFastError(f"--scale {args.scale}: expected a positive factor, e.g. 0.5")
    if args.batch_size is not None and args.batch_size < 1:
        raise NstFastError(f"--batch-size {args.batch_size}: expected 1 or more")
    if args.tile not in ("auto", "off") and not (args.tile.isdigit() and int(args.tile) >= 64):
        raise NstFastError(f"--tile {args.tile}: expected auto, off or a size of 64 px or more")
    if args.tile_overlap < 0:
        raise NstFastError(f"--tile-overlap {args.tile_overlap}: expected 0 or more px")
    if args.ext is not None and f".{args.ext.lower().lstrip('.')}" not in WRITABLE:
        raise NstFastError(f"--ext {args.ext}: expected one of {', '.join(WRITABLE)}")


def tile_option(value: str) -> int | None:
    return {"auto": None, "off": 0}.get(value, int(value) if value.isdigit() else None)


def pick_dtype(device: torch.device, precision: str) -> torch.dtype:
    from nst_fast.device import inference_dtype

    if precision == "auto":
        return inference_dtype(device, half=True)
    if precision == "fp16" and device.type == "cpu":
        raise NstFastError("--precision fp16: not on the CPU; use fp32 or bf16")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


# --- stylize: what to write where -------------------------------------------------------


@dataclass
class Job:
    source: Path
    target: Path
    video: bool = False


def expand(item: str, output: Path) -> list[tuple[Path, Path]] | None:
    """(file, its name relative to what was given) for a file, a folder or a glob;
    None when nothing matches. A folder's scan leaves out an ``output`` folder inside it,
    so a second run does not stylize the first one's results."""
    from nst_fast.images import IMAGE_SUFFIXES, list_images
    from nst_fast.video import VIDEO_SUFFIXES

    path = Path(item)
    if path.is_dir():
        root, out = path.resolve(), output.resolve()
        skip = out if out != root and out.is_relative_to(root) else None
        files = [p for p in list_images(path) if not (skip and p.resolve().is_relative_to(skip))]
        return [(p, p.relative_to(path)) for p in files] or None
    if path.exists():
        return [(path, Path(path.name))]
    if glob.has_magic(item):
        matches = sorted(
            Path(p)
            for p in glob.glob(item, recursive=True)
            if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
        )
        return [(p, Path(p.name)) for p in matches] or None
    return None


def output_suffix(source: Path, ext: str | None) -> str:
    from nst_fast.video import is_video

    if is_video(source):
        return source.suffix
    if ext is not None:
        return f".{ext.lower().lstrip('.')}"
    return source.suffix if source.suffix.lower() in WRITABLE else ".png"


def plan(inputs: list[str], output: Path, ext: str | None) -> tuple[list[Job], list[str]]:
    """Jobs in input order, and one error line for each input that names nothing."""
    from nst_fast.images import IMAGE_SUFFIXES
    from nst_fast.video import VIDEO_SUFFIXES, is_video

    found, errors = [], []
    for item in inputs:
        files = expand(item, output)
        if files is not None:
            found += files
        elif Path(item).is_dir():
            errors.append(f"{item}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
        elif glob.has_magic(item):
            errors.append(f"{item}: no images or videos match the pattern")
        else:
            errors.append(f"{item}: no such file, folder, or files matching the pattern")
    file_name = output.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and not output.is_dir()
    if file_name and len(found) > 1:
        raise NstFastError(
            f"-o {output}: {len(found)} inputs need an output folder; name a folder, "
            "or give a single input for a single output file"
        )
    as_file = file_name and len(found) == 1
    if not as_file and output.is_file():
        raise NstFastError(f"-o {output}: is a file; name a folder for the outputs")
    jobs = [
        Job(
            source,
            output if as_file else output / name.with_suffix(output_suffix(source, ext)),
            is_video(source),
        )
        for source, name in found
    ]
    check_distinct(jobs)
    return jobs, errors


def check_distinct(jobs: list[Job]) -> None:
    """Every input gets its own output, and none is written over an input."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.target.exists() and job.target.resolve() == job.source.resolve():
            raise NstFastError(
                f"{job.source}: its output would be written over it; choose another -o"
            )
        if job.target in seen:
            raise NstFastError(
                f"{seen[job.target]} and {job.source} would both be written to {job.target}; "
                "stylize them in separate runs with different -o folders"
            )
        seen[job.target] = job.source


# --- stylize: running -------------------------------------------------------------------


class Report:
    """Counts outcomes and prints one line per problem, above the progress bar."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.written = self.skipped = self.failed = 0

    def error(self, message: str) -> None:
        self.failed += 1
        self.bar.write(f"nst-fast stylize: error: {message}", file=sys.stderr)

    def skip(self, target: Path) -> None:
        self.skipped += 1
        self.bar.write(
            f"nst-fast stylize: {target} exists, kept (--overwrite replaces it)", file=sys.stderr
        )

    def cannot_write(self, target: Path, err: OSError) -> None:
        self.error(cannot_write(target, err))

    def summary(self) -> str:
        parts = [f"{self.written} written"]
        if self.skipped:
            parts.append(f"{self.skipped} kept (existing)")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return "nst-fast stylize: " + ", ".join(parts)


def cannot_write(target: Path, err: OSError) -> str:
    """One line for a failed write, naming the folder the system refused (not a temp file)."""
    culprit = Path(err.filename) if err.filename else None
    where = f": {culprit}" if culprit is not None and culprit in target.parents else ""
    return f"{target}: cannot write ({err.strerror or err}{where})"


@dataclass
class Loaded:
    """An image read and resized, ready to batch."""

    job: Job
    image: torch.Tensor
    alpha: torch.Tensor | None


def resize(image: torch.Tensor, size: int | None, scale: float | None) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    h, w = image.shape[-2:]
    if size is not None:
        factor = size / max(h, w)
    elif scale is not None:
        factor = scale
    else:
        return image
    new = [max(1, round(h * factor)), max(1, round(w * factor))]
    return F.resize(image, new, antialias=True) if new != [h, w] else image


def load(job: Job, size: int | None, scale: float | None) -> Loaded:
    from nst_fast.images import read_alpha, read_image

    image = resize(read_image(job.source), size, scale)
    alpha = read_alpha(job.source)
    return Loaded(job, image, None if alpha is None else resize(alpha, size, scale))


def prefetch(jobs: list[Job], size, scale, report: Report) -> Iterator[Loaded]:
    """Images decoded two ahead on background threads, in order; unreadable ones reported."""
    from nst_fast.images import ImageReadError

    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[tuple[Job, Future]] = deque()
        queue = iter(jobs)
        for job in queue:
            pending.append((job, pool.submit(load, job, size, scale)))
            if len(pending) > 2:
                yield from _result(*pending.popleft(), report, ImageReadError)
        while pending:
            yield from _result(*pending.popleft(), report, ImageReadError)


def _result(job: Job, future: Future, report: Report, error: type) -> Iterator[Loaded]:
    try:
        yield future.result()
    except error as err:
        report.error(str(err))
        report.bar.update(1)


def same_size_batches(items: Iterator[Loaded], size: int) -> Iterator[list[Loaded]]:
    """Consecutive images of one size, up to ``size`` at a time."""
    batch: list[Loaded] = []
    for item in items:
        if batch and (len(batch) == size or item.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def finish(stylized: torch.Tensor, content: torch.Tensor, args: argparse.Namespace):
    """Colour preservation and strength, applied to the network's output."""
    from nst_fast.inference import blend, preserve_color

    if args.preserve_color:
        stylized = preserve_color(stylized, content)
    return blend(stylized, content, args.strength)


def save(item: Loaded, stylized: torch.Tensor, overwrite: bool, report: Report) -> None:
    from nst_fast.images import save_image

    target = item.job.target
    if item.alpha is not None:
        stylized = torch.cat([stylized, item.alpha])
        if target.suffix.lower() not in KEEPS_ALPHA:
            target = target.with_suffix(".png")  # JPEG cannot hold the alpha channel
            if target.exists() and not overwrite:
                report.skip(target)
                return
    try:
        save_image(stylized, target)
    except OSError as err:
        report.cannot_write(target, err)
        return
    except NstFastError as err:
        report.error(f"{target}: cannot write ({err})")
        return
    report.written += 1


def stylize_images(jobs: list[Job], stylizer, args, batch_size: int, report: Report) -> None:
    for batch in same_size_batches(prefetch(jobs, args.size, args.scale, report), batch_size):
        content = torch.stack([item.image for item in batch])
        try:
            stylized = finish(stylizer(content), content, args)
        except torch.OutOfMemoryError as err:
            for item in batch:
                report.error(f"{item.job.source}: out of memory ({err}); try --tile 512")
            continue
        for item, image in zip(batch, stylized, strict=True):
            save(item, image, args.overwrite, report)
            report.bar.update(1)


def stylize_videos(jobs: list[Job], stylizer, args, report: Report) -> None:
    from nst_fast.video import stylize_video

    def process(frames: torch.Tensor) -> torch.Tensor:
        return finish(stylizer(frames), frames, args)

    for job in jobs:
        try:
            stylize_video(
                job.source, job.target, process, args.batch_size or 8, progress=not args.quiet
            )
        except NstFastError as err:
            report.error(str(err))
        except OSError as err:
            report.cannot_write(job.target, err)
        else:
            report.written += 1
        report.bar.update(1)


def stylize_main(argv: list[str]) -> int:

    from nst_fast.device import pick_device
    from nst_fast.formats import load_for_inference
    from nst_fast.inference import Stylizer, max_pixels

    args = stylize_parser().parse_args(argv)
    check_options(args)
    jobs, missing = plan(args.inputs, args.output, args.ext)
    if (args.size or args.scale) and any(job.video for job in jobs):
        raise NstFastError("--size/--scale: not for videos; resize the video first (ffmpeg)")
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.precision)
    model = load_for_inference(args.model, device, dtype)
    stylizer = Stylizer(
        model.run,
        # onnxruntime computes in fp32 whatever --precision says: budget its memory so.
        max_pixels(device, model.channels, torch.float32 if model.format == "onnx" else dtype),
        net=model.net,
        multiple=model.multiple,
        tile=tile_option(args.tile),
        overlap=args.tile_overlap,
    )
    todo = [job for job in jobs if args.overwrite or not job.target.exists()]
    bar = tqdm(total=len(todo), unit="file", disable=args.quiet or len(todo) < 2)
    report = Report(bar)
    for line in missing:
        report.error(line)
    for job in jobs:
        if job not in todo:
            report.skip(job.target)
    batch_size = args.batch_size or (1 if device.type == "cpu" else 4)
    stylize_images([j for j in todo if not j.video], stylizer, args, batch_size, report)
    stylize_videos([j for j in todo if j.video], stylizer, args, report)
    bar.close()
    if stylizer.tiled_alone:
        print(
            f"nst-fast stylize: note: {stylizer.tiled_alone} image(s) stylized in tiles, each "
            f"tile normalized on its own as {args.model.suffix} models must; seams can show "
            "(model.pt tiles seamlessly)",
            file=sys.stderr,
        )
    print(report.summary(), file=sys.stderr)
    return 1 if report.failed else 0


# --- export ---------------------------------------------------------------------------


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nst-fast export",
        description="Write a model.pt, or a training checkpoint, as TorchScript, ONNX or model.pt.",
    )
    parser.add_argument(
        "model", type=Path, help="an exported model.pt, or a checkpoint RUN/checkpoints/*.ckpt"
    )
    parser.add_argument("--format", required=True, choices=("pt", "torchscript", "onnx"))
    parser.add_argument("-o", "--output", type=Path, help="default: MODEL with .pt / .ts / .onnx")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    return parser


def export_main(argv: list[str]) -> int:
    from nst_fast import formats
    from nst_fast.export import load_network, save_model

    args = export_parser().parse_args(argv)
    suffix = ".pt" if args.format == "pt" else formats.SUFFIXES[args.format]
    target = args.output or args.model.with_suffix(suffix)
    if (target.suffix.lower() == ".onnx") != (args.format == "onnx"):
        # Readers tell ONNX files by this suffix; anything else is opened as PyTorch's.
        raise NstFastError(
            f"-o {target}: an ONNX file, and only an ONNX file, ends in .onnx; "
            f"name it {target.with_suffix(suffix).name}"
        )
    if target.is_dir():
        raise NstFastError(f"-o {target}: is a folder; name the file to write")
    if target.exists() and target.resolve() == args.model.resolve():
        raise NstFastError(f"{target} is the model being exported; -o names another file")
    if target.exists() and not args.overwrite:
        raise NstFastError(f"{target} exists; --overwrite replaces it, -o names another file")
    net, info = load_network(args.model)
    write = {
        "pt": lambda net, info, target: save_model(
            net, target, style=info.style, step=info.step, extra=info.extra
        ),
        "torchscript": formats.export_torchscript,
        "onnx": formats.export_onnx,
    }
    try:
        write[args.format](net, info, target)
    except OSError as err:
        raise NstFastError(cannot_write(target, err)) from err
    print(target)
    if args.format == "pt":
        print(f"style {info.style}, step {info.step}")
        return 0
    print(check_export(target, net, args.format))
    return 0


def check_export(target: Path, net, fmt: str) -> str:
    """Run the written file beside the eager network and say how far apart they are."""
    from nst_fast.formats import check_against_eager, load_for_inference

    try:
        loaded = load_for_inference(target, torch.device("cpu"), torch.float32)
    except NstFastError as err:
        if fmt == "onnx" and "onnxruntime" in str(err):
            return "not checked: onnxruntime is not installed (pip install 'nst-fast[onnx]')"
        raise
    diff = check_against_eager(loaded.run, net)
    return f"checked: max |{fmt} - pytorch| = {diff:.2e} on 1x67x93 and 2x128x96 inputs"


# --- optimize and evaluate (Gatys baseline) ----------------------------------------


def optimize_main(argv: list[str]) -> int:
    from nst_fast.config import compose
    from nst_fast.device import pick_device
    from nst_fast.images import read_image, save_image
    from nst_fast.optimize import INITS, OPTIMIZERS, optimize_image
    from nst_fast.styles import load_style_image
    from nst_fast.training.module import build_criterion

    parser = argparse.ArgumentParser(
        prog="nst-fast optimize",
        description="Gatys et al. (2015): optimize the photo's pixels against the loss.",
    )
    parser.add_argument("content", type=Path, help="the photo")
    parser.add_argument("style", help="a style name from conf/style, an image path or URL")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output image")
    parser.add_argument("--size", type=int, default=512, help="shorter side (default 512)")
    parser.add_argument("--steps", type=int, default=300, help="iterations (default 300)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    parser.add_argument("--init", choices=INITS, default="content")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tensorboard", type=Path, help="log losses and images to this folder")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. loss=vgg19")
    args = parser.parse_intermixed_args(argv)
    # Checked before the work: a bad -o found at the end would throw the result away.
    if args.output.suffix.lower() not in WRITABLE or args.output.is_dir():
        raise NstFastError(
            f"-o {args.output}: expected an image file, one of {', '.join(WRITABLE)}"
        )
    check_positive(size=(args.size, 8), steps=(args.steps, 1), log_every=(args.log_every, 1))
    if args.lr is not None and not args.lr > 0:
        raise NstFastError(f"--lr {args.lr}: expected a positive rate")

    cfg = compose([*style_override(args.style), *args.overrides])
    device = pick_device(args.device)
    # Inputs first: a wrong path must fail before the loss network downloads.
    style = load_style_image(cfg.style.image, cfg.style.size)[None].to(device)
    content = read_image(args.content, size=args.size)[None].to(device)
    criterion = build_criterion(to_dict(cfg.loss), to_dict(cfg.style)).to(device)
    criterion.set_style(style)
    writer = None
    if args.tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(args.tensorboard))
    bar = tqdm(total=args.steps, desc="optimize", unit="it")

    def progress(iteration: int, terms: dict[str, float], image) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{terms['total']:.4g}")
        if writer is not None:
            for name, value in terms.items():
                writer.add_scalar(f"loss/{name}", value, iteration)
            if iteration % args.log_every == 0 or iteration == args.steps:
                writer.add_image("image", image[0].clamp(0, 1).cpu(), iteration)

    image, _ = optimize_image(
        criterion,
        content,
        steps=args.steps,
        optimizer=args.optimizer,
        init=args.init,
        lr=args.lr,
        progress=progress,
    )
    bar.close()
    if writer is not None:
        writer.close()
    print(save_image(image[0], args.output))
    return 0


def evaluate_main(argv: list[str]) -> int:
    from nst_fast.device import pick_device
    from nst_fast.evaluate import evaluate, load_photos
    from nst_fast.export import load_network
    from nst_fast.optimize import INITS

    parser = argparse.ArgumentParser(
        prog="nst-fast evaluate",
        description="Loss of a trained network beside Gatys L-BFGS on held-out photos.",
    )
    parser.add_argument("model", type=Path, help="model.pt or a training checkpoint (.ckpt)")
    parser.add_argument("--content", type=Path, required=True, help="folder of held-out photos")
    parser.add_argument("--style", help="style name or image (default: the model's own)")
    parser.add_argument("-o", "--output", type=Path, default=Path("evaluation"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos")
    parser.add_argument(
        "--iterations",
        default="50,100,200,500",
        help="L-BFGS counts to compare with, or 'none': the network alone (e.g. each "
        "checkpoint of a run, against a bar measured once)",
    )
    parser.add_argument(
        "--init",
        default="noise",
        help="Gatys starts, comma-separated: noise (uniform, as Johnson et al.), mean "
        "(neural-style's -init random: mean colour + faint noise), content",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. loss.weights=PATH")
    args = parser.parse_intermixed_args(argv)

    check_positive(size=(args.size, 8), limit=(args.limit, 1))
    iterations = parse_iterations(args.iterations)
    inits = tuple(dict.fromkeys(args.init.split(",")))
    if not set(inits) <= set(INITS):
        raise NstFastError(f"--init {args.init}: comma-separated choices of {', '.join(INITS)}")
    if not args.content.is_dir():
        raise NstFastError(f"--content {args.content}: no such folder of held-out photos")
    output_folder(args.output)
    device = pick_device(args.device)
    net, info = load_network(args.model)
    net.to(device)
    photos = load_photos(args.content, args.size, args.limit)
    if not photos:
        raise NstFastError(f"--content {args.content}: no photos found")
    criterion = criterion_as_trained(args.model, info, args.style, args.overrides, device)
    criterion.grid_period = net.multiple
    evaluate(net, criterion, photos, iterations, args.output, inits)
    print((args.output / "table.md").read_text())
    print(f"table: {args.output / 'table.md'} and table.csv; grid: {args.output / 'grid.jpg'}")
    return 0


def check_positive(**options: tuple[int | None, int]) -> None:
    """``name=(value, least)`` for integer options: a value under its least is refused."""
    for name, (value, least) in options.items():
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise NstFastError(f"{flag} {value}: expected {least} or more")


def output_folder(folder: Path) -> None:
    """Create the output folder now, so a bad -o fails before the work, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NstFastError(f"-o {folder}: cannot make this folder ({err.strerror or err})") from err


def parse_iterations(text: str) -> list[int]:
    """``--iterations``: sorted positive counts, or none (``[]``: the network alone)."""
    if text == "none":
        return []
    try:
        iterations = sorted({int(n) for n in text.split(",")})
    except ValueError:
        iterations = [0]
    if iterations[0] <= 0:
        raise NstFastError(f"--iterations {text}: positive numbers, e.g. 50,100,200, or none")
    return iterations


def criterion_as_trained(
    model: Path,
    info: ModelInfo,
    style: str | None,
    overrides: list[str],
    device: torch.device | str = "cpu",
) -> PerceptualLoss:
    """The loss ``model`` was trained with (its recorded style image, size and per-style
    weights), or against ``style`` instead, with config ``overrides`` on top; on
    ``device``, its style targets set."""
    from nst_fast.config import compose
    from nst_fast.styles import load_style_image
    from nst_fast.training.module import build_criterion

    recorded = info.extra.get("style", {})
    if style is None and recorded.get("image") is None:
        raise NstFastError(f"{model}: records no style image; pass --style")
    # The style as trained: the same image size and per-style weights.
    as_trained = [] if style else recorded_style_overrides(recorded)
    cfg = compose([*style_override(style or recorded["image"]), *as_trained, *overrides])
    criterion = build_criterion(to_dict(cfg.loss), to_dict(cfg.style)).to(device)
    criterion.set_style(load_style_image(cfg.style.image, cfg.style.size)[None].to(device))
    return criterion


def style_override(style: str) -> list[str]:
    """A style given on the command line: a name from conf/style, else an image."""
    from nst_fast.config import config_dir

    if (config_dir() / "style" / f"{style}.yaml").is_file():
        return [f"style={style}"]
    return [f"style.image={style}", f"style.name={Path(style).stem}"]


def recorded_style_overrides(style: dict) -> list[str]:
    """Overrides that restore a model's recorded style settings (size, per-style weights)."""
    keys = ("size", "content_weight", "style_weight", "tv_weight")
    return [f"style.{k}={'null' if style[k] is None else style[k]}" for k in keys if k in style]


def to_dict(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"nst-fast {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    keep_freed_memory()
    try:
        if command == "train":
            from nst_fast.training.train import run_from_cli

            run_from_cli(rest)
            return 0
        if command == "stylize":
            return stylize_main(rest)
        if command == "optimize":
            return optimize_main(rest)
        if command == "evaluate":
            return evaluate_main(rest)
        if command == "export":
            return export_main(rest)
    except NstFastError as err:
        print(f"nst-fast {command}: error: {err}", file=sys.stderr)
        return 2
    print(f"nst-fast: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
