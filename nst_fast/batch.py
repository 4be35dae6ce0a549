"""Stylizing files: photos, folders, globs and videos in, stylized files out.

``stylize_paths`` is what ``nst-fast stylize`` runs, callable from Python without argv::

    from nst_fast.batch import stylize_paths

    report = stylize_paths("model.pt", ["photos/"], "out/", size=1024)
    print(report.summary(), report.errors)

It plans every output first (names, suffixes, clashes: nothing is written when the plan
fails), reads images two ahead on background threads, stylizes consecutive images of
one size together, and writes each result atomically. A file that cannot be read or
written is one line in the report; the others go on.
"""

from __future__ import annotations

import glob
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from nst_fast.errors import NstFastError
from nst_fast.files import cannot_write
from nst_fast.images import IMAGE_SUFFIXES, ImageReadError
from nst_fast.inference import steady_statistics
from nst_fast.memory import is_out_of_memory
from nst_fast.tiling import DEFAULT_OVERLAP
from nst_fast.video import VIDEO_SUFFIXES, is_video

# Formats Pillow writes; anything else read (GIF, ...) is written as PNG.
WRITABLE = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
KEEPS_ALPHA = (".png", ".webp", ".tif", ".tiff")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_SIZE = 8  # px, the longer side
MIN_TILE = 64  # px


@dataclass(frozen=True)
class Spelling:
    """How messages name an option: as the keyword of a Python call (``strength=2.0``)
    or, for the command line, as its flag (``--strength 2.0``, ``-o out``)."""

    flags: dict[str, str] | None = None

    def name(self, key: str) -> str:
        if self.flags is None:
            return key
        return self.flags.get(key, "--" + key.replace("_", "-"))

    def value(self, key: str, value: object) -> str:
        if self.flags is None:
            return f"{key}={value!r}"
        return f"{self.name(key)} {value}"


KEYWORDS = Spelling()


# --- options ----------------------------------------------------------------------------


def check_options(
    *,
    size: int | None = None,
    scale: float | None = None,
    strength: float = 1.0,
    batch_size: int | None = None,
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    ext: str | None = None,
    spelling: Spelling = KEYWORDS,
) -> None:
    """``NstFastError`` naming the first option ``stylize_paths`` cannot use."""
    say = spelling.value
    if size is not None and scale is not None:
        raise NstFastError(f"{spelling.name('size')} and {spelling.name('scale')}: give one")
    if not 0 <= strength <= 1:
        raise NstFastError(f"{say('strength', strength)}: expected a number from 0 to 1")
    if size is not None and size < MIN_SIZE:
        raise NstFastError(
            f"{say('size', size)}: expected at least {MIN_SIZE} (px, the longer side)"
        )
    if scale is not None and not (0 < scale < math.inf):
        raise NstFastError(f"{say('scale', scale)}: expected a positive factor, e.g. 0.5")
    if batch_size is not None and batch_size < 1:
        raise NstFastError(f"{say('batch_size', batch_size)}: expected 1 or more")
    if tile is not None and tile != 0 and tile < MIN_TILE:
        raise NstFastError(
            f"{say('tile', tile)}: expected a size of {MIN_TILE} px or more "
            f"({'auto, off' if spelling.flags is not None else 'None: auto, 0: off'})"
        )
    if tile_overlap < 0:
        raise NstFastError(f"{say('tile_overlap', tile_overlap)}: expected 0 or more px")
    if ext is not None and f".{ext.lower().lstrip('.')}" not in WRITABLE:
        raise NstFastError(f"{say('ext', ext)}: expected one of {', '.join(WRITABLE)}")


def pick_dtype(device: torch.device, precision: str, spelling: Spelling = KEYWORDS) -> torch.dtype:
    """``auto`` (half precision where the hardware computes in it), fp32, fp16 or bf16."""
    from nst_fast.device import inference_dtype

    if precision == "auto":
        return inference_dtype(device, half=True)
    if precision not in PRECISIONS:
        raise NstFastError(
            f"{spelling.value('precision', precision)}: expected auto, {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and device.type == "cpu":
        raise NstFastError(
            f"{spelling.value('precision', precision)}: not on the CPU; use fp32 or bf16"
        )
    return PRECISIONS[precision]


# --- what to write where ------------------------------------------------------------------


@dataclass
class Job:
    source: Path
    target: Path
    video: bool = False


def expand(item: str, output: Path) -> list[tuple[Path, Path]] | None:
    """(file, its name relative to what was given) for a file, a folder or a glob;
    None when nothing matches. A folder's scan leaves out an ``output`` folder inside it,
    so a second run does not stylize the first one's results."""
    from nst_fast.images import list_images

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
    if is_video(source):
        return source.suffix
    if ext is not None:
        return f".{ext.lower().lstrip('.')}"
    return source.suffix if source.suffix.lower() in WRITABLE else ".png"


def plan(
    inputs: Iterable[str], output: Path, ext: str | None, spelling: Spelling = KEYWORDS
) -> tuple[list[Job], list[str]]:
    """Jobs in input order, and one error line for each input that names nothing."""
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
    out = spelling.value("output", output)
    file_name = output.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and not output.is_dir()
    if file_name and len(found) > 1:
        raise NstFastError(
            f"{out}: {len(found)} inputs need an output folder; name a folder, "
            "or give a single input for a single output file"
        )
    as_file = file_name and len(found) == 1
    if not as_file and output.is_file():
        raise NstFastError(f"{out}: is a file; name a folder for the outputs")
    jobs = [
        Job(
            source,
            output if as_file else output / name.with_suffix(output_suffix(source, ext)),
            is_video(source),
        )
        for source, name in found
    ]
    check_distinct(jobs, spelling)
    return jobs, errors


def check_distinct(jobs: list[Job], spelling: Spelling = KEYWORDS) -> None:
    """Every input gets its own output, and none is written over an input."""
    seen: dict[Path, Path] = {}
    other = spelling.name("output")
    for job in jobs:
        if job.target.exists() and job.target.resolve() == job.source.resolve():
            raise NstFastError(
                f"{job.source}: its output would be written over it; choose another {other}"
            )
        if job.target in seen:
            raise NstFastError(
                f"{seen[job.target]} and {job.source} would both be written to {job.target}; "
                f"stylize them in separate runs with different {other} folders"
            )
        seen[job.target] = job.source


# --- the report ---------------------------------------------------------------------------

# Told each problem as it happens: ("error", one line) or ("kept", an existing output).
Echo = Callable[[str, str], None]


@dataclass
class Report:
    """What a run did: files written, existing outputs kept, one line per failure."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Images tiled with each tile normalized alone (exported formats): seams can show.
    tiled_alone: int = 0
    echo: Echo | None = field(default=None, repr=False)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def error(self, message: str) -> None:
        self.errors.append(message)
        if self.echo is not None:
            self.echo("error", message)

    def keep(self, target: Path) -> None:
        self.kept.append(target)
        if self.echo is not None:
            self.echo("kept", str(target))

    def cannot_write(self, target: Path, err: OSError) -> None:
        self.error(cannot_write(target, err))

    def summary(self) -> str:
        parts = [f"{len(self.written)} written"]
        if self.kept:
            parts.append(f"{len(self.kept)} kept (existing)")
        if self.errors:
            parts.append(f"{len(self.errors)} failed")
        return ", ".join(parts)


# --- running ------------------------------------------------------------------------------


@dataclass
class Finish:
    """What is done to the network's output: colour preservation, then strength."""

    strength: float = 1.0
    preserve_color: bool = False

    def __call__(self, stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        from nst_fast.colour import blend, preserve_color

        if self.preserve_color:
            stylized = preserve_color(stylized, content)
        return blend(stylized, content, self.strength)


@dataclass
class Loaded:
    """An image read and resized, ready to batch."""

    job: Job
    image: torch.Tensor
    alpha: torch.Tensor | None


def resize(image: torch.Tensor, size: int | None, scale: float | None) -> torch.Tensor:
    """Resized so that the longer side is ``size`` px, or by the factor ``scale``."""
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


def prefetch(
    jobs: list[Job], size: int | None, scale: float | None, report: Report, bar: tqdm
) -> Iterator[Loaded]:
    """Images decoded two ahead on background threads, in order; unreadable ones reported."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[tuple[Job, Future]] = deque()
        for job in jobs:
            pending.append((job, pool.submit(load, job, size, scale)))
            if len(pending) > 2:
                yield from _result(pending.popleft()[1], report, bar)
        while pending:
            yield from _result(pending.popleft()[1], report, bar)


def _result(future: Future, report: Report, bar: tqdm) -> Iterator[Loaded]:
    try:
        yield future.result()
    except ImageReadError as err:
        report.error(str(err))
        bar.update(1)


def same_size_batches(items: Iterable[Loaded], size: int) -> Iterator[list[Loaded]]:
    """Consecutive images of one size, up to ``size`` at a time."""
    batch: list[Loaded] = []
    for item in items:
        if batch and (len(batch) == size or item.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def save(item: Loaded, stylized: torch.Tensor, overwrite: bool, report: Report) -> None:
    from nst_fast.images import save_image

    target = item.job.target
    if item.alpha is not None:
        stylized = torch.cat([stylized, item.alpha])
        if target.suffix.lower() not in KEEPS_ALPHA:
            target = target.with_suffix(".png")  # JPEG cannot hold the alpha channel
            if target.exists() and not overwrite:
                report.keep(target)
                return
    try:
        save_image(stylized, target)
    except OSError as err:
        report.cannot_write(target, err)
        return
    except NstFastError as err:
        report.error(f"{target}: cannot write ({err})")
        return
    report.written.append(target)


def last_line(err: BaseException) -> str:
    """The last line of an error's message: what failed, where TorchScript's traceback
    comes first; the type's name for an error with no message."""
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def not_finite(source: Path, dtype: torch.dtype, spelling: Spelling) -> str:
    """The line for an output of NaN or infinite values, which would be a black image."""
    hint = f"; try {spelling.value('precision', 'fp32')}" if dtype != torch.float32 else ""
    return f"{source}: the model computed NaN or infinite values (nothing written){hint}"


@dataclass
class Run:
    """What stylizing each batch needs: the network, the finish, and where to report."""

    stylizer: Callable[[torch.Tensor], torch.Tensor]
    finish: Finish
    report: Report
    bar: tqdm
    dtype: torch.dtype = torch.float32
    overwrite: bool = False
    spelling: Spelling = KEYWORDS

    def __call__(self, content: torch.Tensor) -> torch.Tensor:
        return self.finish(self.stylizer(content), content)


def stylize_images(
    jobs: list[Job], run: Run, batch_size: int, size: int | None, scale: float | None
) -> None:
    report, bar = run.report, run.bar
    for batch in same_size_batches(prefetch(jobs, size, scale, report, bar), batch_size):
        content = torch.stack([item.image for item in batch])
        try:
            stylized = run(content)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            tile, said = run.spelling.value("tile", 512), last_line(err)
            for item in batch:
                report.error(f"{item.job.source}: out of memory ({said}); try {tile}")
                bar.update(1)
            continue
        for item, image in zip(batch, stylized, strict=True):
            if image.isfinite().all():
                save(item, image, run.overwrite, report)
            else:
                report.error(not_finite(item.job.source, run.dtype, run.spelling))
            bar.update(1)


def stylize_videos(
    jobs: list[Job], run: Run, batch_size: int, progress: bool, steady: float | None = None
) -> None:
    """Stylize the videos of ``jobs``; with ``steady``, and a network whose statistics
    can be carried (a model.pt or checkpoint), with steady statistics of that momentum,
    started afresh at each scene cut."""
    from nst_fast.video import SceneCuts, stylize_video

    report = run.report
    net = getattr(run.stylizer, "net", None)
    carried = steady is not None and steady > 0 and net is not None
    for job in jobs:
        cuts = SceneCuts()

        def process(
            frames: torch.Tensor, job: Job = job, cuts: SceneCuts = cuts, reset=None
        ) -> torch.Tensor:
            if reset is None:  # each frame on its own: batches as they come
                out = run(frames)
            else:  # steady statistics, started afresh at each cut
                parts = []
                for new_scene, part in cuts.split(frames):
                    if new_scene:
                        reset()
                    parts.append(run(part))
                out = torch.cat(parts)
            if not out.isfinite().all():
                raise NstFastError(not_finite(job.source, run.dtype, run.spelling))
            return out

        try:
            with steady_statistics(net, steady) if carried else nullcontext() as reset:
                stylize = partial(process, reset=reset)
                stylize_video(job.source, job.target, stylize, batch_size, progress=progress)
        except NstFastError as err:
            report.error(str(err))
        except OSError as err:
            report.cannot_write(job.target, err)
        else:
            report.written.append(job.target)
        run.bar.update(1)


def stylize_paths(
    model: str | Path,
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    size: int | None = None,
    scale: float | None = None,
    strength: float = 1.0,
    preserve_color: bool = False,
    ext: str | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    tile: int | None = None,
    tile_overlap: int = DEFAULT_OVERLAP,
    device: str | torch.device = "auto",
    precision: str = "auto",
    fast: bool = True,
    style: str | None = None,
    steady: float | None = None,
    progress: bool = False,
    echo: Echo | None = None,
    spelling: Spelling = KEYWORDS,
) -> Report:
    """Stylize image files, folders (recursively), globs and videos with ``model`` (a
    model.pt, training checkpoint, .ts or .onnx file) into ``output``: a folder (names
    and subfolders kept), or a file name for a single input.

    ``size``: resize first so that the longer side is ``size`` px, or by the factor
    ``scale``; ``strength`` 0..1 blends the photo (0) with the stylization (1);
    ``preserve_color`` keeps the photo's colours. ``ext`` picks the image format of the
    outputs (default: the input's where Pillow writes it, else PNG). ``batch_size``
    images of one size per forward pass (default 1 on CPU, 4 on GPU; 8 frames of video).
    Existing outputs are kept unless ``overwrite``. ``tile``: None tiles only images too
    large for memory, 0 never, N in N px tiles overlapping by ``tile_overlap``.
    ``device``: auto, cpu, cuda:1 ...; ``precision``: auto, fp32, fp16 or bf16. ``fast``
    False runs the plain PyTorch modules, without nst-fast's speed work (debugging, A/B
    timing). ``style`` picks from a model of several styles: a name, a blend
    ``a=0.7,b=0.3``, or ``all`` (the default: one output per style, named
    ``photo_STYLE.jpg``). ``steady`` (0 < momentum < 1) stylizes videos with steady
    instance-norm statistics (``inference.steady_statistics``; model.pt and checkpoints
    only), started afresh at each scene cut. ``progress`` shows a progress bar;
    ``echo(kind, text)`` hears of each problem as it happens ("error" and a line, or "kept"
    and an existing output's path).

    Raises ``NstFastError`` before writing anything for options, outputs or a model file
    that cannot work; files that fail one by one are in the returned ``Report``.
    """
    from nst_fast.device import pick_device
    from nst_fast.formats import load_for_inference, style_choices
    from nst_fast.memory import max_pixels
    from nst_fast.tiling import Stylizer

    check_options(
        size=size, scale=scale, strength=strength, batch_size=batch_size, tile=tile,
        tile_overlap=tile_overlap, ext=ext, spelling=spelling,
    )  # fmt: skip
    output = Path(output)
    jobs, missing = plan([str(item) for item in inputs], output, ext, spelling)
    if (size or scale) and any(job.video for job in jobs):
        raise NstFastError(
            f"{spelling.name('size')}/{spelling.name('scale')}: not for videos; "
            "resize the video first (ffmpeg)"
        )
    device = pick_device(str(device))
    dtype = pick_dtype(device, precision, spelling)
    loaded = load_for_inference(model, device, dtype, fast=fast)
    choices = style_choices(style, loaded, spelling.value("style", style))
    # Each chosen model with its jobs; with several, each output is named with its style.
    runs = [
        (
            chosen,
            jobs if label is None else [replace(j, target=labelled(j.target, label)) for j in jobs],
        )
        for label, chosen in choices
    ]
    jobs = [job for _, own in runs for job in own]
    if len(runs) > 1:
        check_distinct(jobs, spelling)
    report = Report(echo=echo)
    todo = [job for job in jobs if overwrite or not job.target.exists()]
    with tqdm(total=len(todo), unit="file", disable=not progress or len(todo) < 2) as bar:
        for line in missing:
            report.error(line)
        for job in jobs:
            if job not in todo:
                report.keep(job.target)
        for chosen, own in runs:
            stylizer = Stylizer(
                chosen.run,
                # onnxruntime computes in fp32 whatever the precision: budget its memory so.
                max_pixels(
                    device, chosen.channels, torch.float32 if chosen.format == "onnx" else dtype
                ),
                net=chosen.net,
                multiple=chosen.multiple,
                tile=tile,
                overlap=tile_overlap,
            )
            run = Run(stylizer, Finish(strength, preserve_color), report, bar, dtype, overwrite,
                      spelling)  # fmt: skip
            mine = [job for job in own if job in todo]
            images = [job for job in mine if not job.video]
            stylize_images(
                images, run, batch_size or (1 if device.type == "cpu" else 4), size, scale
            )
            videos = [job for job in mine if job.video]
            stylize_videos(videos, run, batch_size or 8, progress, steady)
            report.tiled_alone += stylizer.tiled_alone
    return report


def labelled(target: Path, label: str) -> Path:
    """``out/photo.jpg`` -> ``out/photo_wave.jpg``: an output named with its style."""
    return target.with_name(f"{target.stem}_{label}{target.suffix}")
