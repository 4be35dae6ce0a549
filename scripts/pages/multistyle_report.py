#!/usr/bin/env python3
"""Score networks of several styles beside one-style networks and write their page.

    python scripts/pages/multistyle_report.py NAME=MODEL [NAME=MODEL ...] --content PHOTOS \\
        -o docs/quality/multistyle [--size 128] [--limit 16] [--show 4] \\
        [--title TITLE --findings SECTION --against first] [loss.weights=PATH ...]

Each MODEL is a model.pt or training checkpoint, of one style or of several, NAME its
label on the page (say ``4-style`` and ``one-style``: several one-style models may share
a label, one per style). ``nst_fast.evaluate.evaluate_model`` (what ``nst-fast evaluate``
runs) scores each style of each model on the held-out photos with the loss it was trained
with. This script then writes ``OUT/README.md``: a table with a row
per style and model (styles are matched by the style image they were trained on) and,
per style, a grid of the first ``--show`` photos, each beside every model's stylization.
The same page compares any models of the same styles (``--title``, ``--against first``:
e.g. the style pyramid's networks beside today's defaults, docs/quality/scales).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from torchvision.utils import make_grid  # noqa: E402

from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import (  # noqa: E402
    evaluate_model,
    load_photos,
    markdown_table,
    named_models,
)
from nst_fast.export import load_network, recorded_style_specs  # noqa: E402
from nst_fast.files import atomic_write  # noqa: E402
from nst_fast.images import list_images, save_image  # noqa: E402
from nst_fast.inference import stylize  # noqa: E402

EXAMPLE = "4-style=runs/four/model.pt"


@dataclass
class Scored:
    """One style of one model: its network and its held-out figures."""

    label: str
    model: Path
    styles: int  # how many the model carries
    steps: int
    net: torch.nn.Module
    figures: dict[str, str]  # table.csv's row


def score(label: str, model: Path, out: Path, args: argparse.Namespace) -> dict[str, Scored]:
    """Each style of ``model``, keyed by its style image, scored into ``out``."""
    net, info = load_network(model)
    specs = recorded_style_specs(info)
    if any(spec.get("image") is None for spec in specs):
        raise NstFastError(f"{model}: records no style image to match its styles by")
    evaluate_model(
        model, args.content, out, size=args.size, limit=args.limit, iterations=[],
        overrides=args.overrides,
    )  # fmt: skip
    scored = {}
    for spec, one in zip(specs, net.each_style(), strict=True):
        table = out / spec["name"] / "table.csv" if len(specs) > 1 else out / "table.csv"
        with open(table, newline="") as f:
            figures = next(csv.DictReader(f))
        scored[str(spec["image"])] = Scored(label, model, len(specs), info.step, one, figures)
    return scored


def style_label(image: str) -> str:
    return Path(image.split("?")[0]).stem


# Stylized texture is all fine detail, which JPEG keeps only at a cost: at 95 four photos
# at 512 px beside two models took 1.6 MB; 85 keeps a docs page's grid under 1 MB.
GRID_QUALITY = 85

# The style term at coarser sizes, where a painting's large shapes show (evaluation.md).
SCALE_COLUMNS = ("style 1/2", "style 1/4")


def table(by_style: dict[str, list[Scored]], against: str) -> list[str]:
    """A row per style and model; the total's change against the first model of the
    style that ``against`` picks ("one-style": the first with one style, "first": the
    first given)."""
    header = ["style", "model", "styles in it", "steps", "content loss", "style loss",
              *SCALE_COLUMNS, "total loss", f"total against {against}"]  # fmt: skip
    body = []
    for image, scored in by_style.items():
        if against == "first":
            baseline = scored[0]
        else:
            baseline = next((s for s in scored if s.styles == 1), None)
        for s in scored:
            total = float(s.figures["total loss"])
            change = "-"
            if baseline is not None and s is not baseline:
                change = f"{100 * (total / float(baseline.figures['total loss']) - 1):+.1f}%"
            scales = [s.figures.get(column, "-") for column in SCALE_COLUMNS]
            body.append([style_label(image), s.label, str(s.styles), str(s.steps),
                         s.figures["content loss"], s.figures["style loss"], *scales,
                         s.figures["total loss"], change])  # fmt: skip
    return markdown_table(header, body)


def grids(by_style: dict[str, list[Scored]], out: Path, args: argparse.Namespace) -> list[str]:
    """A grid per style: each shown photo, then every model's stylization of it."""
    photos = [photo for _, photo in load_photos(args.content, args.size, args.show)]
    lines = []
    for image, scored in by_style.items():
        tiles = []
        for photo in photos:
            tiles += [photo, *(stylize(s.net, photo, half=False) for s in scored)]
        name = style_label(image)
        grid = make_grid(tiles, nrow=1 + len(scored), padding=4)
        save_image(grid, out / f"{name}.jpg", quality=GRID_QUALITY)
        columns = ", ".join(["photo", *(s.label for s in scored)])
        lines += [f"**{name}** ({columns})", "", f"![{name}]({name}.jpg)", ""]
    return lines


def write_page(by_style: dict[str, list[Scored]], lines: list[str], out: Path, args) -> Path:
    n_photos = len(list_images(args.content)[: args.limit])  # as evaluate_model reads them
    page = [
        f"# {args.title}",
        "",
        "Generated by `python scripts/pages/multistyle_report.py` (its docstring has the command; "
        f'docs/quality/findings.md, "{args.findings}", has the runs\').',
        f"Held-out photos: {n_photos} from `{args.content.name}/` at {args.size} px, never "
        "seen in training. Losses as `nst-fast evaluate` gives them, each style against its "
        "own style image and the single full-size style term, whatever pyramid it trained "
        "on (lower is better); style 1/2 and 1/4: the style term with "
        "the output and the painting both shrunk 2x and 4x, where large shapes show. steps: "
        "the model's training steps, all its styles together.",
        "",
        *table(by_style, args.against),
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
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/quality/multistyle"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=16, help="held-out photos scored (0: all)")
    parser.add_argument("--show", type=int, default=4, help="photos in each style's grid")
    parser.add_argument(
        "--title", default="Several styles in one network, beside one-style networks"
    )
    parser.add_argument(
        "--findings",
        default="Several styles in one network",
        help="the section of docs/quality/findings.md with the runs' commands",
    )
    parser.add_argument(
        "--against",
        choices=["one-style", "first"],
        default="one-style",
        help="each total's change against the style's first one-style model, or first model",
    )
    args = parser.parse_intermixed_args(argv)
    args.limit = args.limit or None
    try:
        models, args.overrides = named_models(args.models, EXAMPLE, shared_names=True)
        args.output.mkdir(parents=True, exist_ok=True)
        by_style: dict[str, list[Scored]] = {}
        # Each model's own evaluation (tables, grids beside the photos) is a step on the
        # way: the page carries its figures.
        with tempfile.TemporaryDirectory() as scores:
            for i, (label, model) in enumerate(models):
                for image, scored in score(label, model, Path(scores) / str(i), args).items():
                    by_style.setdefault(image, []).append(scored)
        page = write_page(by_style, grids(by_style, args.output, args), args.output, args)
    except NstFastError as err:
        print(f"multistyle_report: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
