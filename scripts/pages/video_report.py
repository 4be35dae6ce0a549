#!/usr/bin/env python3
"""Measure flicker with and without its remedies and write the video page with its pictures.

    python scripts/pages/video_report.py NAME=MODEL [NAME=MODEL ...] --content PHOTOS \\
        -o docs/video [--size 128] [--limit 8] [--clip CLIP [--frames N]] [loss.weights=PATH ...]

Each MODEL is a model.pt or training checkpoint, NAME its label on the page (say
``scream`` and ``scream+stability`` for the same style trained with and without the
stability terms). For each, ``nst_fast.evaluate.evaluate_model`` (what ``nst-fast
evaluate --temporal`` runs) scores it on the held-out photos: content and style loss, and
the warping error of frame-by-frame stylizing and of steady statistics on clips of known
motion (and on ``--clip``, through estimated flow). This script then writes ``OUT/README.md``
with one table for all, and for each model a strip of consecutive frames of a slow pan
with the difference heatmap between each frame and the previous one warped onto it, and
``OUT/pan.gif``: the pan, the photo beside every model's frames.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from torchvision.utils import make_grid  # noqa: E402

from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import (  # noqa: E402
    VIDEO_FRAMES,
    YARDSTICK_SCALES,
    column_name,
    evaluate_model,
    load_photos,
    markdown_table,
    named_models,
)
from nst_fast.export import load_network  # noqa: E402
from nst_fast.files import atomic_write  # noqa: E402
from nst_fast.images import resize, save_image, to_pil  # noqa: E402
from nst_fast.inference import stylize_frames  # noqa: E402
from nst_fast.losses.perceptual import scale_name  # noqa: E402
from nst_fast.temporal import (  # noqa: E402
    MARGIN,
    MOTIONS,
    STEADY_MOMENTUM,
    known_motion_clip,
    map_points,
    pixel_grid,
    sample,
)

# Consecutive frames shown in a strip, and in the GIF.
STRIP_FRAMES = 4
GIF_FRAMES = 12
# The GIF's frames at most this many px a side: stylized texture barely compresses, and
# the pan at 256 px for five columns is over 3 MB (at 128 px, under 1 MB).
GIF_SIZE = 128
# Differences are magnified this much in the heatmaps (a difference of 1/HEAT or more
# is full heat).
HEAT = 8.0
# The style error with the output and the painting both shrunk, as evaluate's table names
# its columns: where stability bought by washing out the strokes' large shapes would show.
COARSE = tuple(column_name(scale_name(factor)) for factor in YARDSTICK_SCALES)
REMEDIES = {"per frame": None, f"steady statistics ({STEADY_MOMENTUM})": STEADY_MOMENTUM}


def stability_text(extra: dict) -> str:
    """How the stability terms were set in training, from the model's record."""
    settings = extra.get("stability")
    if not settings:
        return "off"
    weights = [f"{k.removesuffix('_weight')} {settings[k]:g}" for k in ("temporal_weight",
               "noise_weight") if settings.get(k)]  # fmt: skip
    if not weights:
        return "off"
    start, ramp = settings.get("start_step", 0), settings.get("ramp_steps", 0)
    when = f" from step {start}" if start else ""
    when += f", ramped over {ramp}" if ramp else ""
    return ", ".join(weights) + when


def evaluate(name: str, model: Path, out: Path, args: argparse.Namespace) -> list[list[str]]:
    """The page's table rows for one model, one per remedy."""
    evaluate_model(
        model, args.content, out / name, size=args.size, limit=args.limit, iterations=[],
        overrides=args.overrides, temporal=True, video=args.clip, video_frames=args.frames,
    )  # fmt: skip
    _, info = load_network(model)
    with open(out / name / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    video = [c for c in rows[0] if c.startswith("video")]
    arch = info.arch
    network = f"anti-aliased, {arch['antialias_taps']} taps" if arch["antialias"] else "plain"
    body = []
    for remedy, row in zip(REMEDIES, rows, strict=True):
        cells = [name, str(info.step), network, stability_text(info.extra), remedy]
        cells += [row["temporal"], row["temporal floor"], *(row[c] for c in video)]
        cells += [row.get(c, "-") for c in ("content loss", "style loss", *COARSE, "total loss")]
        body.append(cells)
    return body


def heat(difference: torch.Tensor) -> torch.Tensor:
    """A (H, W) difference in [0, 1] as a black-red-yellow image (3, H, W)."""
    h = (difference * HEAT).clamp(0, 1)
    return torch.stack([(2 * h).clamp(0, 1), (2 * h - 1).clamp(0, 1), torch.zeros_like(h)])


def warped_differences(frames: torch.Tensor, clip) -> list[torch.Tensor]:
    """For each frame after the first: |frame - previous frame warped onto it| (H, W),
    0 where the previous frame did not show the pixel."""
    points = pixel_grid(frames.shape[-1])
    out = []
    for t in range(1, len(frames)):
        onto = torch.linalg.solve(clip.to_photo[t - 1], clip.to_photo[t])
        warped, visible = sample(frames[t - 1].float(), map_points(onto, points))
        out.append((frames[t].float() - warped).abs().mean(0) * visible)
    return out


def strip(net, clip, momentum: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """STRIP_FRAMES consecutive stylized frames over their difference heatmaps (the first
    frame's is blank), and all the stylized frames."""
    frames = stylize_frames(net, clip.frames, momentum).cpu()
    differences = warped_differences(frames[:STRIP_FRAMES], clip)
    heats = [torch.zeros_like(frames[0]), *(heat(d) for d in differences)]
    return make_grid([*frames[:STRIP_FRAMES], *heats], nrow=STRIP_FRAMES, padding=2), frames


def pictures(models: dict[str, Path], out: Path, args: argparse.Namespace) -> list[str]:
    """Strips per model and remedy, and the GIF; the page's lines for them."""
    [(_, photo)] = load_photos(args.content, round(args.size * MARGIN), 1)
    clip = known_motion_clip(photo, MOTIONS["pan"], frames=GIF_FRAMES, size=args.size, seed=0)
    lines, gif = [], [list(clip.frames)]
    for name, model in models.items():
        net, _ = load_network(model)
        for remedy, momentum in REMEDIES.items():
            image, frames = strip(net, clip, momentum)
            file = f"strip_{name}_{'steady' if momentum else 'per_frame'}.jpg"
            save_image(image, out / file, quality=90)
            lines += [f"**{name}, {remedy}**", "", f"![{name}, {remedy}]({file})", ""]
            if momentum is None:
                gif.append(list(frames))
    side = min(args.size, GIF_SIZE)
    tiles = [make_grid([resize(column[t], side, None) for column in gif], nrow=len(gif), padding=2)
             for t in range(GIF_FRAMES)]  # fmt: skip
    images = [to_pil(tile) for tile in tiles]
    with atomic_write(out / "pan.gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=125, loop=0)  # fmt: skip
    return lines


def clip_text(args: argparse.Namespace) -> list[str]:
    """The page's line on the real clip, if one was given."""
    if not args.clip:
        return []
    return [
        f"video: the same warping error on the first {args.frames} frames of `{args.clip.name}`, "
        f"a real clip (shorter side {args.size} px), each stylized frame warped onto the next "
        "by optical flow estimated between the input frames, occlusions left out; its floor: "
        "the clip itself."
    ]


def write_page(body: list[list[str]], lines: list[str], models: dict, out: Path, args) -> Path:
    video = [f"{c} (estimated flow)" for c in ("video", "video floor")] if args.clip else []
    header = ["model", "steps", "network", "stability terms", "stylizing", "temporal",
              "temporal floor", *video, "content loss", "style loss", *COARSE,
              "total loss"]  # fmt: skip
    page = [
        "# Video: flicker with and without its remedies",
        "",
        "Generated by `python scripts/pages/video_report.py` (its docstring has the command).",
        f"Held-out photos: {args.limit or 'all'} from `{args.content.name}/` at {args.size} px, "
        "never seen in training. temporal: the warping error (Lai et al. 2018) of the "
        "stylized clips of known motion made from them (a pan, a zoom, a rotation, with "
        "noise), in grey levels, lower is steadier; floor: the same for the input clips. "
        "Losses as `nst-fast evaluate` gives them (lower is better; style 1/2 and 1/4: the "
        "style term with the output and the painting shrunk 2x and 4x, where the large shapes "
        "show): stability must not be bought by erasing the style. network: anti-aliased "
        "(`model.antialias=true`, which `stability=video` sets; its filter's taps, "
        "`model.antialias_taps`) or plain.",
        *clip_text(args),
        "",
        *markdown_table(header, body),
        "",
        f"The pan: the photo, then {', '.join(models)}, each frame by frame.",
        "",
        "![the pan](pan.gif)",
        "",
        f"Strips: {STRIP_FRAMES} consecutive frames of the pan, and under each the difference "
        f"from the frame before it warped onto it (black: none; yellow: {1 / HEAT:.2f} or more "
        "of the 0-1 range). What moves with the picture leaves no heat; flicker does.",
        "",
        *lines,
    ]
    path = out / "README.md"
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(page))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=MODEL entries, then any loss overrides")
    parser.add_argument("--content", type=Path, required=True, help="folder of held-out photos")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/video"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=8, help="held-out photos (0: all)")
    parser.add_argument("--clip", type=Path, help="also a real clip, through estimated flow")
    parser.add_argument(
        "--frames", type=int, default=VIDEO_FRAMES,
        help=f"frames of --clip, from its first (default {VIDEO_FRAMES}; stop before a cut)",
    )  # fmt: skip
    args = parser.parse_intermixed_args(argv)
    args.limit = args.limit or None
    try:
        named, args.overrides = named_models(args.models, "scream=runs/scream/model.pt")
        models = dict(named)
        args.output.mkdir(parents=True, exist_ok=True)
        body = [row for name, model in models.items()
                for row in evaluate(name, model, args.output, args)]  # fmt: skip
        page = write_page(body, pictures(models, args.output, args), models, args.output, args)
    except NstFastError as err:
        print(f"video_report: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
