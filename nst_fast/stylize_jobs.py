"""Stylizing the planned jobs: images read two ahead on background threads, consecutive
images of one size stylized together, each result saved atomically; videos frame batch
by frame batch. A file that fails is one line in the ``Report``; the others go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from nst_fast.colour import Finish
from nst_fast.errors import NstFastError
from nst_fast.files import cannot_write
from nst_fast.images import read_alpha, read_image, resize, save_image
from nst_fast.inference import steady_statistics
from nst_fast.memory import is_out_of_memory
from nst_fast.output_plan import Job
from nst_fast.regions import Where
from nst_fast.stroke import stroke_sized
from nst_fast.stylize_options import KEYWORDS, Spelling

# Formats that keep an alpha channel; an image with one is written as PNG otherwise.
KEEPS_ALPHA = (".png", ".webp", ".tif", ".tiff")

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


@dataclass
class Loaded:
    """An image read and resized, ready to batch, with its mask and style map where the
    run has them (``nst_fast.regions``)."""

    job: Job
    image: torch.Tensor
    alpha: torch.Tensor | None
    mask: torch.Tensor | None = None
    style_map: torch.Tensor | None = None


def load(job: Job, size: int | None, scale: float | None, where: Where | None = None) -> Loaded:
    image = resize(read_image(job.source), size, scale)
    alpha = read_alpha(job.source)
    loaded = Loaded(job, image, None if alpha is None else resize(alpha, size, scale))
    if where is not None and where.anything:
        loaded.mask, loaded.style_map = where.load(job.source, job.relative, image.shape[-2:])
    return loaded


def prefetch(
    jobs: list[Job],
    size: int | None,
    scale: float | None,
    report: Report,
    bar: tqdm,
    where: Where | None = None,
) -> Iterator[Loaded]:
    """Images decoded two ahead on background threads, in order; unreadable ones reported."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque[tuple[Job, Future]] = deque()
        for job in jobs:
            pending.append((job, pool.submit(load, job, size, scale, where)))
            if len(pending) > 2:
                yield from _result(pending.popleft()[1], report, bar)
        while pending:
            yield from _result(pending.popleft()[1], report, bar)


def _result(future: Future, report: Report, bar: tqdm) -> Iterator[Loaded]:
    try:
        yield future.result()
    except NstFastError as err:  # an unreadable photo, or its mask
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
    """What stylizing each batch needs: the network, the finish, where each photo is
    stylized and in which style (``where``), and where to report."""

    stylizer: Callable[[torch.Tensor], torch.Tensor]
    finish: Finish
    report: Report
    bar: tqdm
    dtype: torch.dtype = torch.float32
    overwrite: bool = False
    spelling: Spelling = KEYWORDS
    where: Where | None = None
    stroke: float = 1.0

    def __call__(
        self,
        content: torch.Tensor,
        mask: torch.Tensor | None = None,
        style_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) photos, their masks (B, 1, H, W) and style maps (B, styles, H, W)
        where the run has them, to their finished stylizations."""
        x = content if style_map is None else torch.cat([content, style_map], dim=1)
        return self.finish(stroke_sized(self.stylizer, x, self.stroke), content, mask)


def stacked(items: list[Loaded], key: str) -> torch.Tensor | None:
    """The items' masks or style maps as one batch; None when they have none."""
    parts = [getattr(item, key) for item in items]
    return None if parts[0] is None else torch.stack(parts)


def stylize_images(
    jobs: list[Job], run: Run, batch_size: int, size: int | None, scale: float | None
) -> None:
    report, bar = run.report, run.bar
    loaded = prefetch(jobs, size, scale, report, bar, run.where)
    for batch in same_size_batches(loaded, batch_size):
        content = torch.stack([item.image for item in batch])
        try:
            stylized = run(content, stacked(batch, "mask"), stacked(batch, "style_map"))
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


def clip_maps(where: Where | None, job: Job, frames: torch.Tensor) -> dict[str, torch.Tensor]:
    """The masks and style maps of a clip's next ``frames``, for ``Run``: from one image
    for the whole clip, or from the next frames of a mask video."""
    if where is None or not where.anything:
        return {}
    size = frames.shape[-2:]
    if where.per_frame(job.relative):
        loaded = [where.load(job.source, job.relative, size, True) for _ in frames]
    else:
        loaded = [where.load(job.source, job.relative, size, True)] * len(frames)
    found = {}
    for i, key in enumerate(("mask", "style_map")):
        if loaded[0][i] is not None:
            found[key] = torch.stack([parts[i] for parts in loaded])
    return found


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
            def finish(part: torch.Tensor) -> torch.Tensor:
                return run(part, **clip_maps(run.where, job, part))

            if reset is None:  # each frame on its own: batches as they come
                out = finish(frames)
            else:  # steady statistics, started afresh at each cut
                parts = []
                for new_scene, part in cuts.split(frames):
                    if new_scene:
                        reset()
                    parts.append(finish(part))
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
