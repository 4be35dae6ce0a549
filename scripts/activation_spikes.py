#!/usr/bin/env python3
"""Where a transform network hides a spike in its feature maps: the "droplet" test.

    python scripts/activation_spikes.py MODEL [MODEL ...] [--content PHOTOS] [--size 256]
        [--limit 3]

MODEL is a model.pt or a training checkpoint (.ckpt). For each residual block's and
each upsampling block's output, on each held-out photo, it prints the share of the
map's variance (summed over channels) that sits in its top 1% of pixels, and where the
peak is. A natural feature map spreads its variance; a map with much of it in 1% of
the pixels holds a spike.

Karras et al. (StyleGAN2, 2020) traced their generator's "droplet" artefacts to
per-channel normalization: a network whose every layer is normalized by its own
statistics can scale the rest of a feature map at will by planting one strong, local
spike that dominates the mean and variance. The 256 px nst-fast networks with instance
norm after every convolution paint such spikes as bright discs (docs/quality/findings.md,
"The blown-out glow"); this script measures them.

It also counts each upsampling block's live channels: those above zero somewhere on the
photos. Without norms in the decoder (``model.norm_scope=residual``) a channel pushed
below zero everywhere passes no gradient again; when all of the last block's are, the
output is one flat colour (findings.md, "The flat-colour collapse").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nst_fast.data.samples import sample_photos_dir  # noqa: E402
from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import load_photos  # noqa: E402
from nst_fast.export import load_network  # noqa: E402
from nst_fast.models.transformer import TransformerNet  # noqa: E402


def spike_share(features: torch.Tensor) -> tuple[float, int, int]:
    """Share of a (C, H, W) map's variance, summed over channels, that sits in its top 1%
    of pixels, and the peak pixel (x, y).

    Summed over channels so that a near-dead channel (zero but for a few pixels, common
    after a ReLU) does not count as a spike; a spike that steers the statistics is
    strong in many channels at once.
    """
    c, _, w = features.shape
    flat = features.reshape(c, -1).double()
    energy = (flat - flat.mean(1, keepdim=True)).pow(2).sum(0)
    top = energy.topk(max(1, energy.numel() // 100)).values.sum()
    peak = int(energy.argmax())
    return float(top / energy.sum().clamp_min(1e-30)), peak % w, peak // w


def probed_blocks(net: TransformerNet) -> dict[str, nn.Module]:
    """The blocks whose outputs are measured: every residual block and upsampling block."""
    blocks = {f"residuals.{i}": block for i, block in enumerate(net.residuals)}
    blocks.update({f"decoder.{i}": block for i, block in enumerate(net.decoder[:-1])})
    return blocks


def measure(net: TransformerNet, image: torch.Tensor) -> dict[str, tuple[float, int, int]]:
    """``spike_share`` of each probed block's output for one (3, H, W) image; peaks are
    given in the image's pixels."""
    found: dict[str, tuple[float, int, int]] = {}
    size = image.shape[-1]

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            share, x, y = spike_share(output[0])
            scale = size / output.shape[-1]
            found[name] = (share, round(x * scale), round(y * scale))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in probed_blocks(net).items()]
    try:
        with torch.no_grad():
            net(image[None])
    finally:
        for handle in handles:
            handle.remove()
    return found


def live_channels(net: TransformerNet, photos: list[torch.Tensor]) -> dict[str, tuple[int, int]]:
    """(live, all) channels of each upsampling block's output over ``photos``: a channel
    is live if it is above zero at some pixel of some photo."""
    live: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            above = (output[0] > 0).flatten(1).any(1)
            live[name] = live[name] | above if name in live else above

        return record

    blocks = {n: m for n, m in probed_blocks(net).items() if n.startswith("decoder.")}
    handles = [m.register_forward_hook(hook(n)) for n, m in blocks.items()]
    try:
        with torch.no_grad():
            for photo in photos:
                net(photo[None])
    finally:
        for handle in handles:
            handle.remove()
    return {name: (int(above.sum()), above.numel()) for name, above in live.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model.pt or .ckpt files")
    parser.add_argument("--content", type=Path, help="photos (default: the sample photos)")
    parser.add_argument("--size", type=int, default=256, help="photo size")
    parser.add_argument("--limit", type=int, default=3, help="photos used")
    args = parser.parse_args(argv)
    try:
        photos = load_photos(args.content or sample_photos_dir(), args.size, args.limit)
        if not photos:
            raise NstFastError(f"--content {args.content}: no photos there")
        for path in args.models:
            net, info = load_network(path)
            # A network of several styles, one style at a time.
            for style, one in zip(info.styles or [None], net.each_style(), strict=True):
                label = f"{path} [{style}]" if style else str(path)
                print(f"{label}: variance share of the top 1% of pixels per block (x, y of peak)")
                for name, photo in photos:
                    found = measure(one, photo).items()
                    print(
                        f"  {name}: "
                        + ", ".join(f"{b} {s:.2f} ({x},{y})" for b, (s, x, y) in found)
                    )
                counts = live_channels(one, [photo for _, photo in photos]).items()
                print("  live channels: " + ", ".join(f"{b} {n}/{t}" for b, (n, t) in counts))
    except NstFastError as err:
        print(f"activation_spikes: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
