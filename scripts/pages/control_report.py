#!/usr/bin/env python3
"""Write the page of where and how big: a masked photo, two styles in two regions, and
stroke sizes, with their figures (docs/quality/control).

    python scripts/pages/control_report.py --model ONE.pt --two-styles TWO.pt \\
        --sizes-model SIZES.pt --sizes NAME=FACTOR,... --content PHOTOS \\
        -o docs/quality/control [--size 512] [--limit 16] [--show 3] [loss.weights=PATH ...]

ONE.pt is a network of one style; TWO.pt one of two styles (regions); SIZES.pt, optional,
a network of several styles that are one painting at several sizes, ``--sizes`` naming
each style's stroke factor (``starry_s256=0.5,starry_s512=1,starry_s1024=2``: the style
image at 256 px paints strokes half as large as at 512). Stroke sizes are scored against
ONE.pt's own style (``nst_fast.evaluate.criterion_as_trained``) on the held-out photos:
content and style error as ``nst-fast evaluate`` scores them (full size, 1/2, 1/4), the
style error of the output shrunk by its stroke factor (strokes that grew by the factor
then match the painting again), and seconds per photo on this machine.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from torchvision.utils import make_grid  # noqa: E402

from nst_fast.evaluate import (  # noqa: E402
    criterion_as_trained,
    load_photos,
    markdown_table,
    scores,
)
from nst_fast.export import load_network  # noqa: E402
from nst_fast.files import atomic_write  # noqa: E402
from nst_fast.images import save_image  # noqa: E402
from nst_fast.inference import stylize  # noqa: E402
from nst_fast.losses.perceptual import downscale, scale_name  # noqa: E402
from nst_fast.prepared import forward, prepared  # noqa: E402
from nst_fast.stroke import METHODS  # noqa: E402

GRID_QUALITY = 85
STROKES = (0.5, 1.0, 2.0)
SOFT = 96  # px over which the soft border of two regions ramps, at 512 px


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--two-styles", type=Path, required=True)
    parser.add_argument("--sizes-model", type=Path)
    parser.add_argument("--sizes", default="", help="NAME=FACTOR,... for --sizes-model")
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--show", type=int, default=3)
    return parser.parse_known_args(argv)


def ramp(length: int, start: float, width: float) -> torch.Tensor:
    """0 before ``start``, 1 after ``start + width``, linear between (a hard step at 0)."""
    x = torch.arange(length, dtype=torch.float32) + 0.5
    if width == 0:
        return (x >= start).float()
    return ((x - start) / width).clamp(0, 1)


def masked_section(net, photos, out: Path) -> list[str]:
    """A photo stylized inside a soft ellipse, beside the full stylization."""
    tiles = []
    for photo in photos:
        h, w = photo.shape[-2:]
        y = (torch.arange(h) + 0.5 - h / 2) / (0.35 * h)
        x = (torch.arange(w) + 0.5 - w / 2) / (0.35 * w)
        radius = (y[:, None] ** 2 + x[None, :] ** 2).sqrt()
        mask = (1 - (radius - 0.8) / 0.4).clamp(0, 1)[None]  # soft edge from 0.8 to 1.2
        full = stylize(net, photo, half=False)
        tiles += [photo, mask.expand(3, -1, -1), torch.lerp(photo, full, mask)]
    save_image(make_grid(tiles, nrow=3, padding=4), out / "mask.jpg", quality=GRID_QUALITY)
    return [
        "## Where: a mask",
        "",
        "`nst-fast stylize ONE.pt photo.jpg -o out.jpg --mask ellipse.png` (photo | mask |"
        " result): stylized where the mask is white, the photo where it is black, a blend"
        " over the grey edge.",
        "",
        "![mask](mask.jpg)",
        "",
    ]


def seam(image: torch.Tensor, column: int, band: int = 2) -> float:
    """How much the image jumps across ``column`` against its own texture: the mean
    horizontal step across the column, over the mean step of the columns elsewhere."""
    steps = (image[..., 1:] - image[..., :-1]).abs().mean(dim=(0, 1))  # per column pair
    near = steps[column - band : column + band].mean()
    away = torch.cat([steps[: column - 32], steps[column + 32 :]]).mean()
    return float(near / away)


def regions_section(net, names: list[str], photos, out: Path) -> list[str]:
    """Two styles meeting across a hard and a soft border, in feature space (per-pixel
    style weights) and pasted (the two one-style outputs cut or cross-faded)."""
    tiles, rows = [], []
    figures: dict[str, list[float]] = {}
    for photo in photos:
        h, w = photo.shape[-2:]
        first, second = (stylize(net, photo, half=False, style=torch.eye(2)[i]) for i in (0, 1))
        for border, width in (("hard", 0), ("soft", SOFT)):
            right = ramp(w, w / 2 - width / 2, width).expand(h, w)
            weights = torch.stack([1 - right, right])
            mixed = stylize(net, photo, half=False, style=weights)
            pasted = torch.lerp(first, second, right)
            for how, image in (("feature space", mixed), ("pasted", pasted)):
                figures.setdefault(f"{border}|{how}", []).append(seam(image, w // 2))
            if photo is photos[0]:
                crop = slice(w // 2 - 96, w // 2 + 96)
                tiles += [mixed[..., crop], pasted[..., crop]]
            if border == "soft":
                rows.append([photo, first, second, mixed, pasted])
    mean = {key: sum(values) / len(values) for key, values in figures.items()}
    save_image(make_grid([t for r in rows[:3] for t in r], nrow=5, padding=4),
               out / "regions.jpg", quality=GRID_QUALITY)  # fmt: skip
    save_image(make_grid(tiles, nrow=2, padding=4), out / "border.jpg", quality=GRID_QUALITY)
    table = markdown_table(
        ["border", "in feature space (--regions)", "pasted (two outputs cut / cross-faded)"],
        [
            [b, f"{mean[f'{b}|feature space']:.2f}", f"{mean[f'{b}|pasted']:.2f}"]
            for b in ("hard", "soft")
        ],
    )
    return [
        "## Where: two styles, two regions",
        "",
        f"{names[0]} on the left, {names[1]} on the right of each photo:"
        f" `--regions {names[0]}=left.png,{names[1]}`. Photo | {names[0]} | {names[1]} |"
        f" regions with a soft border ({SOFT} px ramp) in feature space | the two outputs"
        " cross-faded over the same ramp:",
        "",
        "![regions](regions.jpg)",
        "",
        "The border of the first photo, 192 px wide (feature space | pasted), hard border"
        " above, soft below:",
        "",
        "![border](border.jpg)",
        "",
        "The seam figure: the mean step between neighbouring columns across the border (4"
        " columns) over the mean step between neighbouring columns away from it (1 is no"
        f" seam), mean over {len(photos)} held-out photos at {photos[0].shape[-1]} px:",
        "",
        *table,
        "",
    ]


def stroke_runs(args, sizes: dict[str, float]) -> list[tuple[str, float, object]]:
    """(method, stroke, function of a photo batch) for every candidate and size."""
    net, _ = load_network(args.model)
    ready = prepared(net, torch.device("cpu"), torch.float32)

    def run(batch: torch.Tensor) -> torch.Tensor:
        return forward(ready, batch)

    candidates = []
    for name, method in METHODS.items():
        for stroke in STROKES:
            if name == "detail" and stroke <= 1:
                continue  # the same as resample there
            candidates.append((name, stroke, lambda b, m=method, s=stroke: m(run, b, s)))
    if args.sizes_model is not None:
        multi, info = load_network(args.sizes_model)
        for style, stroke in sizes.items():
            one = multi.single_style(torch.eye(len(info.styles))[info.styles.index(style)])
            ready_one = prepared(one, torch.device("cpu"), torch.float32)
            candidates.append(("sizes network", stroke, lambda b, r=ready_one: forward(r, b)))
    return candidates


def strokes_section(args, overrides: list[str], photos, out: Path) -> list[str]:
    sizes = {}
    for part in filter(None, args.sizes.split(",")):
        name, _, factor = part.partition("=")
        sizes[name.strip()] = float(factor)
    _, info = load_network(args.model)
    criterion = criterion_as_trained(args.model, info, overrides=overrides)
    candidates = stroke_runs(args, sizes)
    sums: list[dict[str, float]] = [{} for _ in candidates]
    shown: list[list[torch.Tensor]] = [[] for _ in photos[: args.show]]
    for p, (_, photo) in enumerate(photos):
        content = photo[None]
        for i, (_, stroke, fn) in enumerate(candidates):
            start = time.perf_counter()
            with torch.inference_mode():
                image = fn(content)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                terms = scores(criterion, image, content)
                matched = criterion(downscale(image, stroke), downscale(content, stroke))
            figures = {"content": float(terms["content"]), "style": float(terms["style"])}
            for factor in (2, 4):
                figures[scale_name(factor)] = float(terms.get(scale_name(factor), math.nan))
            figures["matched"] = float(matched["style"])
            figures["seconds"] = seconds
            for key, value in figures.items():
                sums[i][key] = sums[i].get(key, 0.0) + value / len(photos)
            if p < args.show:
                shown[p].append(image[0])
    header = ["method", "stroke", "content", "style (full)", "style 1/2", "style 1/4",
              "style of the output shrunk by the stroke", "s / photo"]  # fmt: skip
    body = [
        [name, f"{stroke:g}", *(f"{sums[i][k]:.3f}" for k in
         ("content", "style", scale_name(2), scale_name(4), "matched")),
         f"{sums[i]['seconds']:.2f}"]
        for i, (name, stroke, _) in enumerate(candidates)
    ]  # fmt: skip
    # A picture per photo: one grid of all of them would be over a megabyte at 512 px.
    pictures = []
    for i, ((_, photo), row) in enumerate(zip(photos, shown, strict=False), 1):
        grid = make_grid([photo, *row], nrow=1 + len(candidates), padding=4)
        save_image(grid, out / f"strokes_{i}.jpg", quality=GRID_QUALITY)
        pictures += [f"![strokes, photo {i}](strokes_{i}.jpg)", ""]
    columns = ", ".join(["photo", *(f"{n} {s:g}" for n, s, _ in candidates)])
    return [
        "## How big: stroke size",
        "",
        f"Scored against {info.style} as {args.model.name} trained on it, on {len(photos)}"
        f" held-out photos at {args.size} px (mean; `scores` of nst_fast.evaluate, the single"
        " full-size style term and its coarse sizes). Seconds per photo: fp32 on this"
        f" machine's CPU ({platform.processor() or platform.machine()},"
        f" {torch.get_num_threads()} threads).",
        "",
        *markdown_table(header, body),
        "",
        f"Columns: {columns}.",
        "",
        *pictures,
        "resample: the network on the photo resized by 1/stroke, its output resized back;"
        " detail: that, plus the fine band of a full-size pass (nst_fast.stroke); sizes"
        " network: one network trained on the painting at several sizes as its styles"
        f" ({', '.join(f'{n} for {f:g}' for n, f in sizes.items()) or 'none given'}),"
        " each size its stroke. `--stroke` runs `stroke_sized`: detail above 1, resample"
        " below.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    photos = load_photos(args.content, args.size, args.limit)
    shown = [photo for _, photo in photos[: args.show]]
    one, _ = load_network(args.model)
    two, two_info = load_network(args.two_styles)
    lines = [
        "# Control: where and how big",
        "",
        "Generated by `python scripts/pages/control_report.py` (its docstring has the"
        ' command; docs/quality/findings.md, "Where and how big", has the runs). How to'
        " use the options: [docs/control.md](../../control.md).",
        "",
        *masked_section(one.eval(), shown, args.output),
        *regions_section(two.eval(), two_info.styles, [p for _, p in photos], args.output),
        *strokes_section(args, overrides, photos, args.output),
    ]
    with atomic_write(args.output / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    print(args.output / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
