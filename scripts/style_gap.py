#!/usr/bin/env python3
"""Where a network's style loss comes from: size or direction of its Gram matrices.

    python scripts/style_gap.py MODEL --content PHOTOS [--size 128] [--limit 3] \\
        [--lbfgs 50] [--style STYLE] [OVERRIDES ...]

A style term ||G - G_s||^2 / ||G_s||^2 is large when the output's Gram matrix G has the
wrong magnitude (too little or too much texture energy) or points the wrong way (the
wrong combinations of features). For each style layer this prints |G| / |G_s| and the
cosine between G and G_s, mean over the held-out photos, for the network's output and
for Gatys L-BFGS after ``--lbfgs`` iterations from white noise, with the loss the model
was trained with (as ``nst-fast evaluate`` scores it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import criterion_as_trained, gatys_snapshots, load_photos  # noqa: E402
from nst_fast.export import load_network  # noqa: E402
from nst_fast.inference import stylize  # noqa: E402
from nst_fast.losses.perceptual import PerceptualLoss, gram_matrix  # noqa: E402

Agreement = dict[str, tuple[float, float]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="model.pt or a training checkpoint")
    parser.add_argument("--content", type=Path, required=True, help="folder of held-out photos")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--lbfgs", type=int, default=50, help="L-BFGS iterations (0: none)")
    parser.add_argument("--style", help="style name or image (default: the model's own)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. loss.weights=PATH")
    args = parser.parse_intermixed_args(argv)
    if args.lbfgs < 0:
        parser.error("--lbfgs must not be negative")
    return args


@torch.no_grad()
def gram_agreement(criterion: PerceptualLoss, image: torch.Tensor) -> Agreement:
    """Per style layer: (|G| / |G_s|, cosine(G, G_s)) of one (1, 3, H, W) image."""
    features = criterion.network(image)
    result = {}
    for name in criterion.style_layers:
        gram = gram_matrix(features[name]).flatten()
        target = criterion.style_grams[name].flatten().to(gram.device)
        cosine = torch.dot(gram, target) / (gram.norm() * target.norm()).clamp_min(1e-12)
        result[name] = ((gram.norm() / target.norm()).item(), cosine.item())
    return result


def mean_agreement(rows: list[Agreement]) -> str:
    parts = []
    for name in rows[0]:
        size = sum(row[name][0] for row in rows) / len(rows)
        cosine = sum(row[name][1] for row in rows) / len(rows)
        parts.append(f"{name} |G|/|Gs| {size:.2f} cos {cosine:.3f}")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        net, info = load_network(args.model)
        photos = load_photos(args.content, args.size, args.limit) if args.content.is_dir() else []
        if not photos:
            raise NstFastError(f"--content {args.content}: no photos found")
        criterion = criterion_as_trained(args.model, info, args.style, args.overrides)
    except NstFastError as err:
        print(f"style_gap: {err}", file=sys.stderr)
        return 2
    network, gatys = [], []
    for _, photo in photos:
        content = photo[None]
        network.append(gram_agreement(criterion, stylize(net, content, half=False)))
        if args.lbfgs:
            image, _ = gatys_snapshots(criterion, content, [args.lbfgs], "noise")[args.lbfgs]
            gatys.append(gram_agreement(criterion, image))
    print(f"network      {mean_agreement(network)}")
    if gatys:
        print(f"L-BFGS {args.lbfgs:<5} {mean_agreement(gatys)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
