"""Stylizing files: photos, folders, globs and videos in, stylized files out.

``stylize_paths`` is what ``nst-fast stylize`` runs, callable from Python without argv::

    from nst_fast.batch import stylize_paths

    report = stylize_paths("model.pt", ["photos/"], "out/", size=1024)
    print(report.summary(), report.errors)

It checks the options (``nst_fast.stylize_options``), plans every output first (names,
suffixes, clashes: nothing is written when the plan fails; ``nst_fast.output_plan``),
loads the model and its chosen styles (``nst_fast.model_loading``), then runs the jobs
(``nst_fast.stylize_jobs``): images read two ahead on background threads, consecutive
images of one size stylized together, each result written atomically. A file that cannot
be read or written is one line in the report; the others go on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from nst_fast.colour import Finish
from nst_fast.errors import NstFastError
from nst_fast.output_plan import check_distinct, labelled, plan
from nst_fast.regions import Where, parse_regions
from nst_fast.stylize_jobs import Echo, Report, Run, stylize_images, stylize_videos
from nst_fast.stylize_options import KEYWORDS, Spelling, check_options, pick_dtype
from nst_fast.tiling import DEFAULT_OVERLAP

if TYPE_CHECKING:
    from nst_fast.model_loading import LoadedModel


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
    mask: str | Path | None = None,
    regions: str | None = None,
    stroke: float = 1.0,
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
    ``photo_STYLE.jpg``). ``mask`` (an image of the photo's shape, or a folder of them
    named as the photos) stylizes where it is white and keeps the photo where it is
    black; ``regions`` gives a model.pt of several styles a style per part of each photo,
    ``wave=sky.png,the_scream``: each style with its mask (file or folder), at most one
    without, which takes the rest (``nst_fast.regions``). ``stroke`` draws the painting's
    strokes that many times larger (or finer, below 1) than the network does
    (``nst_fast.stroke``). ``steady`` (0 < momentum < 1)
    stylizes videos with steady instance-norm statistics
    (``inference.steady_statistics``; model.pt and checkpoints only), started afresh at
    each scene cut. ``progress`` shows a progress bar;
    ``echo(kind, text)`` hears of each problem as it happens ("error" and a line, or "kept"
    and an existing output's path).

    Raises ``NstFastError`` before writing anything for options, outputs or a model file
    that cannot work; files that fail one by one are in the returned ``Report``.
    """
    from nst_fast.device import pick_device
    from nst_fast.memory import max_pixels
    from nst_fast.model_loading import FP32_FORMATS, load_for_inference, style_choices
    from nst_fast.tiling import Stylizer

    check_options(
        size=size, scale=scale, strength=strength, batch_size=batch_size, tile=tile,
        tile_overlap=tile_overlap, ext=ext, stroke=stroke, spelling=spelling,
    )  # fmt: skip
    if steady is not None and steady > 0 and stroke > 1:
        # Steady statistics carry one pass's statistics from frame to frame; larger
        # strokes run two passes of different sizes on every frame.
        raise NstFastError(
            f"{spelling.name('steady')} and {spelling.value('stroke', stroke)}: larger strokes "
            "run two passes a frame, whose statistics cannot be carried together; give one"
        )
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
    where = placed(loaded, mask, regions, style, spelling)
    if where.regions:
        assert loaded.mapped is not None
        choices: list[tuple[str | None, LoadedModel]] = [(None, loaded.mapped())]
    else:
        choices = style_choices(style, loaded, spelling.value("style", style))
    where.check([(job.source, job.relative) for job in jobs if not job.video])
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
                # onnxruntime and ExecuTorch compute in fp32 whatever the precision:
                # budget their memory so.
                max_pixels(
                    device,
                    chosen.channels,
                    torch.float32 if chosen.format in FP32_FORMATS else dtype,
                ),
                net=chosen.net,
                multiple=chosen.multiple,
                tile=tile,
                overlap=tile_overlap,
            )
            run = Run(stylizer, Finish(strength, preserve_color), report, bar, dtype, overwrite,
                      spelling, where, stroke)  # fmt: skip
            mine = [job for job in own if job in todo]
            images = [job for job in mine if not job.video]
            stylize_images(
                images, run, batch_size or (1 if device.type == "cpu" else 4), size, scale
            )
            videos = [job for job in mine if job.video]
            stylize_videos(videos, run, batch_size or 8, progress, steady)
            report.tiled_alone += stylizer.tiled_alone
    return report


def placed(
    loaded: LoadedModel,
    mask: str | Path | None,
    regions: str | None,
    style: str | None,
    spelling: Spelling = KEYWORDS,
) -> Where:
    """The ``Where`` of the ``mask`` and ``regions`` options, checked against the model:
    an ``NstFastError`` naming the option that cannot work with it."""
    said = {"mask": spelling.name("mask"), "regions": spelling.value("regions", regions)}
    if mask is not None and not Path(mask).exists():
        raise NstFastError(f"{spelling.value('mask', mask)}: no such mask file or folder")
    where = Where(None if mask is None else Path(mask), said=said)
    if regions is None:
        return where
    if style is not None:
        raise NstFastError(
            f"{spelling.name('regions')} and {spelling.name('style')}: give one "
            "(regions name their styles)"
        )
    if not loaded.styles:
        raise NstFastError(
            f"{said['regions']}: this model has one style, {loaded.style}; "
            f"{spelling.name('mask')} stylizes a part of the photo"
        )
    if loaded.mapped is None:
        raise NstFastError(
            f"{said['regions']}: per-pixel styles need the model.pt (or a checkpoint); "
            f"a {loaded.format} file takes one style or blend per photo "
            f"({spelling.name('style')})"
        )
    where.regions = parse_regions(regions, loaded.styles, said["regions"])
    where.styles = len(loaded.styles)
    return where
