"""Measure a trained network against Gatys optimization on held-out photos.

Johnson et al. (2016) report that the feed-forward network's loss on held-out images is
about that of 50-100 L-BFGS iterations of Gatys' method; this module puts the same
figures side by side for any model.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torchvision.utils import make_grid

from nst_fast.errors import NstFastError
from nst_fast.export import ModelInfo, recorded_style_specs
from nst_fast.files import atomic_write
from nst_fast.flow import flow_warping_error, import_cv2, pair_flows
from nst_fast.images import list_images, read_square, save_image
from nst_fast.inference import stylize, stylize_frames
from nst_fast.losses.grid import GRID_PERIOD, grid_offsets
from nst_fast.losses.perceptual import PerceptualLoss, scale_name
from nst_fast.losses.vgg import MIN_IMAGE_SIZE
from nst_fast.models.transformer import TransformerNet
from nst_fast.optimize import optimize_image, style_criterion, style_override
from nst_fast.temporal import MARGIN, STEADY_MOMENTUM, temporal_errors

# Frames of a real clip read for its flicker (``--video``): a couple of seconds.
VIDEO_FRAMES = 60


@dataclass
class Row:
    """Mean loss terms of one method over the evaluated photos."""

    method: str
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, terms: dict[str, torch.Tensor], seconds: float) -> None:
        for name, value in [*terms.items(), ("seconds", seconds)]:
            self.values.setdefault(name, []).append(float(value))

    def means(self) -> dict[str, float]:
        return {name: sum(v) / len(v) for name, v in self.values.items()}


def grid_strength(image: torch.Tensor, period: int = GRID_PERIOD) -> float:
    """How much of an image's fine detail repeats with the pixel's position mod ``period``.

    The standard deviation of the grey detail's mean at each of the period x period pixel
    phases (``grid_offsets``) over the detail's own. Random detail scores about period /
    sqrt(pixels) (0.016 at 256 x 256); photos and Gatys outputs at 256 px 0.004-0.017; a
    grid that shows at 1:1, 0.05 and more (docs/quality/findings.md, "Four styles at 256
    px").
    """
    gray = image.float().mean(dim=-3, keepdim=True).reshape(-1, 1, *image.shape[-2:])
    detail, phases = grid_offsets(gray, period)
    return float(phases.std() / detail.std().clamp_min(1e-12))


def load_photos(folder: Path, size: int, limit: int | None) -> list[tuple[str, torch.Tensor]]:
    """Held-out photos, centre-cropped square, ``size`` px a side (shorter side resized
    to ``size``, then cropped: the square's sides are ``size``)."""
    photos = []
    for path in list_images(folder)[:limit]:
        photos.append((path.stem, read_square(path, size)))
    return photos


def evaluate(
    net: TransformerNet,
    criterion: PerceptualLoss,
    photos: list[tuple[str, torch.Tensor]],
    iterations: list[int],
    out_dir: Path,
    inits: tuple[str, ...] = ("noise",),
    temporal: list[torch.Tensor] | None = None,
    video: torch.Tensor | None = None,
) -> list[Row]:
    """Loss of the network and of Gatys L-BFGS after each of ``iterations`` per photo
    (none: the network alone); with ``temporal`` (photos a little larger than the
    evaluated squares, ``temporal.MARGIN`` times), the network's flicker on clips of
    known motion made from them (``temporal.temporal_errors``); with ``video`` (a real
    clip's frames (T, 3, H, W)), its flicker there, through estimated flow
    (``flow.flow_warping_error``).

    One L-BFGS run per photo and start in ``inits``: "noise" is Johnson et al.'s
    comparison (white noise, projected L-BFGS), "mean" the start of their baseline's code
    (mean colour, faint noise), "content" the photo, a much stronger baseline at few
    iterations. Each count gets the run's best image so far.
    Writes ``table.md``, ``table.csv`` and ``grid.jpg`` (photo, network, Gatys outputs)
    into ``out_dir`` and returns the rows.
    """
    device = next(net.parameters()).device
    runs = [(init, n) for init in inits for n in iterations]
    starts = dict.fromkeys(init for init, _ in runs)  # none without iteration counts
    rows = [Row("network")] + [Row(f"gatys L-BFGS {n} ({init} init)") for init, n in runs]
    tiles = []
    for _, photo in photos:
        content = photo[None].to(device)
        start = time.perf_counter()
        output = stylize(net, content, half=False).to(device)
        elapsed = time.perf_counter() - start
        with torch.no_grad():
            rows[0].add(scores(criterion, output, content), elapsed)
        tiles += [photo, output[0].cpu()]
        snapshots = {init: gatys_snapshots(criterion, content, iterations, init) for init in starts}
        for row, (init, n) in zip(rows[1:], runs, strict=True):
            image, seconds = snapshots[init][n]
            with torch.no_grad():
                row.add(scores(criterion, image, content), seconds)
            tiles.append(image[0].cpu())
    if temporal or video is not None:
        rows.insert(1, Row(f"network, steady statistics (momentum {STEADY_MOMENTUM})"))
        size = photos[0][1].shape[-1]
        # Frame by frame as `nst-fast stylize` runs a video, and with steady statistics.
        stylizers = [
            (rows[0], lambda frames: stylize_frames(net, frames)),
            (rows[1], lambda frames: stylize_frames(net, frames, STEADY_MOMENTUM)),
        ]
        if video is not None:  # the clip's flow and floor, once for both rows
            pairs = pair_flows(video)
            floor = flow_warping_error(video, pairs)
        for row, run in stylizers:
            if temporal:
                add_temporal(row, temporal_errors(run, temporal, size=size))
            if video is not None:
                row.values[VIDEO] = [flow_warping_error(run(video.to(device)).cpu(), pairs)]
                row.values[VIDEO_FLOOR] = [floor]
    write_table(rows, out_dir, len(photos))
    save_image(make_grid(tiles, nrow=2 + len(runs), padding=4), out_dir / "grid.jpg")
    return rows


# The warping error on a real clip, through estimated flow (nst_fast.flow).
VIDEO, VIDEO_FLOOR = "video (estimated flow)", "video floor (estimated flow)"


def add_temporal(row: Row, figures: dict[str, tuple[float, float]]) -> None:
    """The warping errors of ``temporal_errors`` into ``row``: their mean over the motions,
    the floor's, and each motion's."""
    row.values["temporal"] = [sum(e for e, _ in figures.values()) / len(figures)]
    row.values["temporal floor"] = [sum(f for _, f in figures.values()) / len(figures)]
    for name, (error, _) in figures.items():
        row.values[f"temporal {name}"] = [error]


# The style error is also reported with the image and the style image both shrunk by
# these factors: full-size Gram matrices mostly see fine texture, and a painting's large
# shapes fill VGG's receptive fields only at coarser scales (docs/evaluation.md).
YARDSTICK_SCALES = (2, 4)
# Scores take the papers' single full-size style term, whatever pyramid a model trained
# on (loss.style_scales): its `style loss` column and total then mean the same for every
# model and every earlier table, and the coarse sizes have their own columns.
FULL_SIZE_STYLE = ("loss.style_scales=[1]", "loss.style_scale_weights=null")


def scores(
    criterion: PerceptualLoss, image: torch.Tensor, content: torch.Tensor
) -> dict[str, torch.Tensor | float]:
    """The loss terms of one image; its style term at each of ``YARDSTICK_SCALES``'
    coarser sizes (``style@1/2``), and per layer (``style@1/2/relu1_2``), weighted as the
    full-size term; and the grid strength (at the period the loss penalizes)."""
    terms = criterion(image, content)
    smallest = min(*image.shape[-2:], *criterion.style_image.shape[-2:])
    for factor in YARDSTICK_SCALES:
        if smallest / factor < MIN_IMAGE_SIZE:  # too small for VGG at that size: no figure
            continue
        errors = criterion.style_errors(image, factor)
        name = scale_name(factor)
        terms[name] = criterion.layer_weighted(errors)
        terms.update({f"{name}/{layer}": error for layer, error in errors.items()})
    return {**terms, "grid": grid_strength(image, criterion.grid_period)}


def gatys_snapshots(
    criterion: PerceptualLoss, content: torch.Tensor, iterations: list[int], init: str
) -> dict[int, tuple[torch.Tensor, float]]:
    """One L-BFGS run; the image and elapsed seconds at each of ``iterations``."""
    start, elapsed = time.perf_counter(), {}

    def note_time(iteration: int, terms: dict, image: torch.Tensor) -> None:
        elapsed[iteration] = time.perf_counter() - start

    _, images = optimize_image(
        criterion,
        content,
        steps=max(iterations),
        init=init,
        snapshots=iterations,
        progress=note_time,
    )
    return {n: (images[n], elapsed[n]) for n in iterations}


def write_table(rows: list[Row], out_dir: Path, n_photos: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(rows[0].values)
    scales = [name for name in names if name.startswith("style@") and name.count("/") == 1]
    layers = [name for name in names if name.startswith("style/")]
    layers += [name for name in names if name.startswith("style@") and name.count("/") == 2]
    temporal = [name for name in names if name.startswith(("temporal", "video"))]
    header = ["method", "content loss", "style loss", "total loss", "seconds/photo", "grid"]
    header += [column_name(name) for name in scales + layers] + temporal
    body = []
    for row in rows:
        m = row.means()

        def cell(name: str, spec: str, m: dict = m) -> str:
            return format(m[name], spec) if name in m else "-"

        values = [cell(k, ".4g") for k in ("content", "style", "total")]
        values += [cell("seconds", ".3g"), cell("grid", ".3f")]
        values += [cell(name, ".4g") for name in scales + layers]
        values += [cell(name, ".3f") for name in temporal]
        body.append([row.method, *values])
    with atomic_write(out_dir / "table.csv") as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    lines = [
        f"Mean over {n_photos} held-out photo(s). Per-layer style terms are unweighted. "
        "style 1/2, style 1/4: the style term with the photo's output and the style image "
        "both shrunk 2x and 4x, where a painting's large shapes show (full size mostly "
        "sees fine texture). "
        "grid: strength of a grid at the network's stride, 4 px by default (photos about 0.01,"
        " a visible grid 0.05 and more)."
        + (
            " temporal: the warping error (Lai et al. 2018) of frame-by-frame stylizing on"
            " clips of known motion made from the photos (a pan, a zoom, a rotation, with"
            " sensor-like noise), in grey levels; floor: the same for the clips themselves."
            if any(name.startswith("temporal") for name in temporal)
            else ""
        )
        + (
            " video: the same on the given clip, each stylized frame warped onto the next by"
            " OpenCV's DIS optical flow between the input frames, leaving out occluded pixels"
            " and motion boundaries (an estimate, not exact motion); floor: the clip itself."
            if VIDEO in temporal
            else ""
        ),
        "",
        *markdown_table(header, body),
    ]
    with atomic_write(out_dir / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def column_name(term: str) -> str:
    """The table's column of a style term: 'style@1/2' -> 'style 1/2', per layer
    'style/relu1_2' -> 'style relu1_2' and 'style@1/2/relu1_2' -> 'style 1/2 relu1_2'."""
    name = term.replace("@", " ")
    head, _, last = name.rpartition("/")
    return f"{head} {last}" if head and not last.isdigit() else name


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table."""
    return [f"| {' | '.join(line)} |" for line in [header, ["---"] * len(header), *rows]]


# --- a model file against its own loss (what `nst-fast evaluate` runs) ------------------


def recorded_style_overrides(style: dict) -> list[str]:
    """Overrides that restore a model's recorded style settings (size, per-style weights)."""
    keys = ("size", "content_weight", "style_weight", "tv_weight")
    return [f"style.{k}={'null' if style[k] is None else style[k]}" for k in keys if k in style]


def criterion_as_trained(
    model: str | os.PathLike,
    info: ModelInfo,
    style: str | None = None,
    overrides: Iterable[str] = (),
    device: torch.device | str = "cpu",
) -> PerceptualLoss:
    """The loss ``model`` was trained with (its recorded style image, size and per-style
    weights; the single full-size style term, ``FULL_SIZE_STYLE``), or against ``style``
    instead, with config ``overrides`` on top; on ``device``, its style targets set."""
    from nst_fast.config import compose

    recorded = info.extra.get("style", {})
    if style is None and recorded.get("image") is None:
        raise NstFastError(f"{model}: records no style image; pass --style")
    # The style as trained: the same image size and per-style weights.
    as_trained = [] if style else recorded_style_overrides(recorded)
    cfg = compose(
        [*style_override(style or recorded["image"]), *as_trained, *FULL_SIZE_STYLE, *overrides]
    )
    return style_criterion(cfg, device)


def evaluate_model(
    model: str | os.PathLike,
    content: str | os.PathLike,
    output: str | os.PathLike,
    *,
    style: str | None = None,
    size: int = 256,
    limit: int | None = None,
    iterations: Iterable[int] = (50, 100, 200, 500),
    inits: Iterable[str] = ("noise",),
    device: str | torch.device = "auto",
    overrides: Iterable[str] = (),
    temporal: bool = False,
    video: str | os.PathLike | None = None,
    video_frames: int = VIDEO_FRAMES,
) -> list[Row]:
    """``evaluate`` a model.pt or training checkpoint on the photos of the folder
    ``content``, each centre-cropped square and resized to ``size`` px a side (so
    ``size`` is the longer side here too), at most ``limit`` of them, with the loss it
    was trained with (or against ``style``; config ``overrides`` on top); ``temporal``
    adds the network's flicker on clips of known motion (``nst_fast.temporal``), ``video``
    on the first ``video_frames`` frames of that clip, its shorter side resized to
    ``size`` (``nst_fast.flow``). Writes ``table.md``, ``table.csv`` and ``grid.jpg``
    into the folder ``output``."""
    from nst_fast.device import pick_device
    from nst_fast.export import load_network

    content, output = Path(content), Path(output)
    if not content.is_dir():
        raise NstFastError(f"{content}: no such folder of held-out photos")
    device = pick_device(str(device))
    net, info = load_network(model)
    try:  # now, so that a bad output fails before the work, not after it
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NstFastError(f"{output}: cannot make this folder ({err.strerror or err})") from err
    net.to(device)
    photos = load_photos(content, size, limit)
    # The clips of the temporal figure pan, zoom and turn over a larger square.
    clips = [p for _, p in load_photos(content, round(size * MARGIN), limit)] if temporal else None
    if not photos:
        raise NstFastError(f"{content}: no photos found")
    frames = None
    if video is not None:
        from nst_fast.video import read_frames

        import_cv2()  # before the work: a missing extra is one line, not a late failure
        frames = read_frames(video, video_frames, size)
    iterations, inits = sorted(set(iterations)), tuple(inits)
    if net.styles == 1:
        criterion = criterion_as_trained(model, info, style, overrides, device)
        criterion.grid_period = net.multiple
        return evaluate(net, criterion, photos, iterations, output, inits, clips, frames)
    if style is not None:
        raise NstFastError(f"{model}: a model of several styles is evaluated on each of its own")
    # Each style as the network of that style alone, against the loss it was trained with,
    # into output/STYLE/; output/table.md has a row per style.
    summary = []
    for spec, one in zip(recorded_style_specs(info), net.each_style(), strict=True):
        as_trained = replace(info, style=spec["name"], styles=[], extra={"style": spec})
        criterion = criterion_as_trained(model, as_trained, None, overrides, device)
        criterion.grid_period = net.multiple
        folder = output / spec["name"]
        rows = evaluate(one, criterion, photos, iterations, folder, inits, clips, frames)
        summary.append(replace(rows[0], method=spec["name"]))
    write_table(summary, output, len(photos))
    return summary


def named_models(
    entries: list[str], example: str, shared_names: bool = False
) -> tuple[list[tuple[str, Path]], list[str]]:
    """The report scripts' arguments: NAME=MODEL entries, as (NAME, MODEL) in order, and
    config overrides (a dotted key, ``loss.weights=PATH``), told apart by the dot, which
    names do not take. Each name labels one model, or with ``shared_names`` any number
    (each model given once). One-line errors cite ``example``, an entry of the right form."""
    overrides = [e for e in entries if "=" in e and "." in e.partition("=")[0]]
    models: list[tuple[str, Path]] = []
    for entry in entries:
        if entry in overrides:
            continue
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise NstFastError(f"{entry}: expected NAME=MODEL, e.g. {example}")
        if not Path(path).is_file():
            raise NstFastError(f"{path}: no such model file")
        if not shared_names and name in dict(models):
            raise NstFastError(f"{name}: named twice; give each model its own name")
        if Path(path) in [known for _, known in models]:
            raise NstFastError(f"{path}: given twice; give each model once")
        models.append((name, Path(path)))
    if not models:
        raise NstFastError(f"no models: give NAME=MODEL entries, e.g. {example}")
    return models, overrides
