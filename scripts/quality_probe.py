#!/usr/bin/env python3
"""Held-out loss curve of a short training run, for trying recipes before a long one.

    python scripts/quality_probe.py [--steps 600] [--every 200] \\
        [--pretrain N] [--noise K] [--held-out PHOTOS] [--size 128] [--limit 3] \\
        [--lbfgs 50,100] [--save DIR] [OVERRIDES ...]

OVERRIDES are the training config's (``data.root=... style=wave optim.lr=4e-3
optim.schedule=cosine model.channels=[32,64,256] loss.normalize=false ...``). The loop is
a plain one over the project's own data module, transform network and loss, so a recipe
that is not (yet) a config option can be tried in a few lines (the learning rate follows
``optim.*`` as in training, warm-up and schedule): ``--pretrain`` first trains the network
for N steps to reproduce its input (pixel MSE, no loss network); ``--noise`` feeds the
network K channels of uniform noise beside the photo (Ulyanov et al.'s texture networks:
a source of variation to paint strokes from in flat regions). Every ``--every`` steps
it prints the mean training loss since the last report and the held-out loss per term;
``--lbfgs`` adds Gatys L-BFGS (white-noise start) on the same held-out photos, the bar;
``--save`` writes the network's held-out pictures at each report (``step=N_K.jpg``).
The README's "Quality, measured" figures for recipes came from this script.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nst_fast.config import compose  # noqa: E402
from nst_fast.data.datamodule import PhotoDataModule  # noqa: E402
from nst_fast.data.samples import sample_photos_dir  # noqa: E402
from nst_fast.device import is_channels_last  # noqa: E402
from nst_fast.errors import NstFastError  # noqa: E402
from nst_fast.evaluate import Row, gatys_snapshots, load_photos  # noqa: E402
from nst_fast.images import save_image  # noqa: E402
from nst_fast.losses.build import build_criterion  # noqa: E402
from nst_fast.models.transformer import ConvBlock, TransformerConfig, TransformerNet  # noqa: E402
from nst_fast.optimize import to_dict  # noqa: E402
from nst_fast.styles import load_style_image  # noqa: E402
from nst_fast.training.module import rate_factor  # noqa: E402

Terms = dict[str, float]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200, help="report interval in steps")
    parser.add_argument("--pretrain", type=int, default=0, help="identity pre-training steps")
    parser.add_argument("--noise", type=int, default=0, help="noise channels beside the photo")
    parser.add_argument(
        "--held-out", type=Path, help="photos never trained on (default: the bundled sample photos)"
    )
    parser.add_argument("--size", type=int, default=128, help="held-out photo size")
    parser.add_argument("--limit", type=int, default=3, help="held-out photos used")
    parser.add_argument("--lbfgs", default="", help="L-BFGS iteration counts, e.g. 50,100")
    parser.add_argument("--save", type=Path, help="folder for the held-out pictures per report")
    parser.add_argument("overrides", nargs="*", help="training config overrides")
    args = parser.parse_args(argv)
    for name in ("steps", "every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    for name in ("pretrain", "noise"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative")
    return args


class NoiseInputNet(TransformerNet):
    """The transform network with ``noise`` uniform-noise channels appended to its input
    (fresh noise every call)."""

    def __init__(self, config: TransformerConfig, noise: int) -> None:
        super().__init__(config)
        self.noise = noise
        self.encoder[0] = ConvBlock(3 + noise, config.channels[0], 9, norm=config.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(x.shape[0], self.noise, *x.shape[-2:], device=x.device)
        channels_last = is_channels_last(x)  # torch.cat would hand back NCHW
        x = torch.cat([x, noise], 1)
        return super().forward(
            x.contiguous(memory_format=torch.channels_last) if channels_last else x
        )


def batches(data: PhotoDataModule, channels_last: bool) -> Iterator[torch.Tensor]:
    """Training batches without end, each epoch with its own shuffle and random crops
    (``itertools.cycle`` would replay the first epoch's batches)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    loader = data.train_dataloader()
    while True:
        for batch in loader:
            if batch["image"].numel():
                yield batch["image"].contiguous(memory_format=layout)


def mean_terms(
    criterion, net: TransformerNet, photos: list[torch.Tensor], save: Path | None = None
) -> Terms:
    """Each loss term averaged over the photos, each scored alone (as ``evaluate`` does);
    ``save``: the outputs' path prefix (``_K.jpg`` is appended)."""
    row = Row("network")
    net.eval()
    with torch.no_grad():
        for k, photo in enumerate(photos):
            start = time.perf_counter()
            output = net(photo[None])
            row.add(criterion(output, photo[None]), time.perf_counter() - start)
            if save is not None:
                save_image(output[0], save.with_name(f"{save.name}_{k}.jpg"))
    net.train()
    return row.means()


def lbfgs_terms(criterion, photos: list[torch.Tensor], counts: list[int]) -> dict[int, Terms]:
    """Gatys L-BFGS from white noise, one run per photo, scored after each of ``counts``."""
    rows = {n: Row(f"L-BFGS {n}") for n in counts}
    for photo in photos:
        snapshots = gatys_snapshots(criterion, photo[None], counts, "noise")
        with torch.no_grad():
            for n, (image, seconds) in snapshots.items():
                rows[n].add(criterion(image, photo[None]), seconds)
    return {n: row.means() for n, row in rows.items()}


def show(terms: Terms) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in terms.items())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = compose(args.overrides)
        torch.manual_seed(cfg.seed)
        criterion = build_criterion(to_dict(cfg.loss), to_dict(cfg.style))
        criterion.set_style(load_style_image(cfg.style.image, cfg.style.size)[None])
        data = PhotoDataModule(**to_dict(cfg.data))
        held_out = args.held_out or sample_photos_dir()
        photos = [p for _, p in load_photos(held_out, args.size, args.limit)]
        if not photos:
            raise NstFastError(f"--held-out {held_out}: no photos there")
        counts = sorted({int(n) for n in args.lbfgs.split(",") if n.strip()})
    except ValueError as err:
        print(f"quality_probe: --lbfgs {args.lbfgs}: {err}", file=sys.stderr)
        return 2
    except NstFastError as err:
        print(f"quality_probe: {err}", file=sys.stderr)
        return 2
    config = TransformerConfig.of(to_dict(cfg.model))
    net = NoiseInputNet(config, args.noise) if args.noise else TransformerNet(config)
    criterion.grid_period = net.multiple
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
        criterion.to(memory_format=torch.channels_last)
    stream = batches(data, cfg.channels_last)
    start = time.perf_counter()
    if args.pretrain:
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr)
        for _ in range(args.pretrain):
            images = next(stream)
            loss = (net(images) - images).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(
            f"pretrain {args.pretrain} steps, {time.perf_counter() - start:.0f} s, "
            f"pixel mse {loss.item():.4g}; held-out {show(mean_terms(criterion, net, photos))}"
        )
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr)
    running: list[float] = []
    warmup, schedule = cfg.optim.warmup_steps, cfg.optim.schedule
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = cfg.optim.lr * rate_factor(step - 1, warmup, schedule, args.steps)
        images = next(stream)
        loss = criterion(net(images), images)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            train = sum(running) / len(running)
            save = args.save / f"step={step}" if args.save else None
            print(
                f"step {step}, {time.perf_counter() - start:.0f} s, train {train:.4g}; "
                f"held-out {show(mean_terms(criterion, net, photos, save))}",
                flush=True,
            )
            running.clear()
    for n, terms in (lbfgs_terms(criterion, photos, counts) if counts else {}).items():
        print(f"L-BFGS {n} (noise init): {show(terms)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
