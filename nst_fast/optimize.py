"""Gatys et al. (2015): stylize one photo by optimizing its pixels against the loss.

Slow (hundreds of loss-network passes per image) but the quality reference for the
feed-forward network, and a quick way to preview a style's loss settings before a long
training run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from nst_fast.errors import NstFastError
from nst_fast.losses.perceptual import PerceptualLoss
from nst_fast.losses.vgg import IMAGENET_MEAN

OPTIMIZERS = ("lbfgs", "adam")
# content: the photo; noise: each pixel uniform in [0, 1]; mean: jcjohnson/neural-style's
# "-init random", the loss network's mean colour plus noise of std 0.001 on its 0-255 scale.
INITS = ("content", "noise", "mean")

# Called after every iteration with (iteration, loss terms, current image).
Progress = Callable[[int, dict[str, float], torch.Tensor], None]


def optimize_image(
    criterion: PerceptualLoss,
    content: torch.Tensor,
    steps: int = 200,
    optimizer: str = "lbfgs",
    init: str = "content",
    lr: float | None = None,
    snapshots: Iterable[int] = (),
    progress: Progress | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Optimize an image for ``criterion`` (whose style is set) against ``content``.

    ``content`` is (1, 3, H, W) in [0, 1]. Returns the lowest-loss image seen and, for each
    iteration n listed in ``snapshots``, the lowest-loss image of iterations 0..n.
    ``progress`` sees every iteration's own loss. ``lr`` defaults to 1 for L-BFGS (its line
    search scale) and 0.02 for Adam.
    """
    if optimizer not in OPTIMIZERS:
        raise NstFastError(f"--optimizer {optimizer}: expected one of {', '.join(OPTIMIZERS)}")
    if init not in INITS:
        raise NstFastError(f"--init {init}: expected one of {', '.join(INITS)}")
    if steps <= 0:
        raise NstFastError(f"--steps {steps}: must be positive")
    image = start_image(content, init, seed).requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([image], lr=lr or 1.0, max_iter=1, history_size=50)
    else:
        opt = torch.optim.Adam([image], lr=lr or 0.02)
    # L-BFGS without a line search (Gatys' and Johnson et al.'s setting) is not monotone:
    # once converged it can take a wild step (Starry Night at 128 px: 0.49 at iteration
    # 300, 1.04 at 500). Every closure call measures the current image, so the lowest-loss
    # image seen is kept and returned; a snapshot at n is the best of iterations 0..n.
    best = _Best()
    wanted, kept = set(snapshots), {}
    terms: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        nonlocal terms
        opt.zero_grad()
        terms = criterion(image, content)
        terms["total"].backward()
        best.offer(terms, image)  # the image before this step, as measured
        # L-BFGS flattens gradients with .view(); a channels_last loss network hands
        # back a channels_last gradient.
        image.grad = image.grad.contiguous()
        return terms["total"]

    for iteration in range(1, steps + 1):
        opt.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)  # stay a displayable image, as Gatys' box constraint
        if not torch.isfinite(terms["total"]):
            raise NstFastError(
                f"the loss became {terms['total'].item()} at iteration {iteration}; "
                "lower --lr or the loss weights"
            )
        if iteration in wanted or iteration == steps:
            with torch.no_grad():
                best.offer(criterion(image, content), image)
            if iteration in wanted:
                kept[iteration] = best.image.clone()
        if progress is not None:
            progress(iteration, {k: v.item() for k, v in terms.items()}, image.detach())
    return best.image, kept


def start_image(content: torch.Tensor, init: str, seed: int = 0) -> torch.Tensor:
    """The image optimization starts from (one of ``INITS``), on the photo's device; the
    noise is drawn on the CPU, so a seed gives the same start on every device."""
    if init == "content":
        return content.detach().clone()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if init == "noise":
        start = torch.rand(content.shape, generator=generator)
    else:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        start = mean + torch.randn(content.shape, generator=generator) * (0.001 / 255)
    return start.to(content.device)


class _Best:
    """The lowest-loss image offered so far."""

    def __init__(self) -> None:
        self.loss = float("inf")
        self.image = torch.empty(0)

    def offer(self, terms: dict[str, torch.Tensor], image: torch.Tensor) -> None:
        loss = terms["total"].item()
        if loss < self.loss:
            self.loss = loss
            self.image = image.detach().clone()


# --- from files and config (what `nst-fast optimize` runs) -------------------------------


def to_dict(node) -> dict:
    """A config node as plain dicts and lists, interpolations resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def style_override(style: str) -> list[str]:
    """A style given by name or path: a name from conf/style, else an image (or URL)."""
    from nst_fast.config_files import config_dir

    if (config_dir() / "style" / f"{style}.yaml").is_file():
        return [f"style={style}"]
    return [f"style.image={style}", f"style.name={Path(style).stem}"]


def style_criterion(
    cfg, device: torch.device | str = "cpu", style: torch.Tensor | None = None
) -> PerceptualLoss:
    """The loss a composed config describes, on ``device``, its style targets set from
    ``style`` (default: the config's style image, read before the loss network may
    download)."""
    from nst_fast.losses.build import build_criterion, check_style_image
    from nst_fast.styles import load_style_image

    if style is None:
        style = load_style_image(cfg.style.image, cfg.style.size)
    check_style_image(to_dict(cfg.loss), style, cfg.style.image)
    criterion = build_criterion(to_dict(cfg.loss), to_dict(cfg.style)).to(device)
    criterion.set_style(style[None].to(device))
    return criterion


def optimize_file(
    content: str | os.PathLike,
    style: str,
    output: str | os.PathLike,
    *,
    size: int | None = 512,
    steps: int = 300,
    optimizer: str = "lbfgs",
    init: str = "content",
    lr: float | None = None,
    device: str | torch.device = "auto",
    overrides: Iterable[str] = (),
    tensorboard: str | os.PathLike | None = None,
    log_every: int = 25,
    progress: bool = False,
) -> Path:
    """Gatys et al. on one photo file: resized so that its longer side is ``size`` px
    (None: as it is), optimized ``steps`` iterations against ``style`` (a name from
    conf/style, an image path or URL) with config ``overrides`` (e.g. ``loss=vgg19``),
    written to ``output``. ``tensorboard``: a folder for the losses and, every
    ``log_every`` iterations, the image."""
    from tqdm import tqdm

    from nst_fast.config import compose
    from nst_fast.device import pick_device
    from nst_fast.images import read_image, resize, save_image
    from nst_fast.losses.build import check_scale_sizes
    from nst_fast.styles import load_style_image

    cfg = compose([*style_override(style), *overrides])
    device = pick_device(str(device))
    # Inputs first: a wrong path must fail before the loss network downloads.
    style_image = load_style_image(cfg.style.image, cfg.style.size)
    photo = resize(read_image(content), size, None)[None].to(device)
    side = min(photo.shape[-2:])
    check_scale_sizes(to_dict(cfg.loss), {f"the photo {content} at {side} px": side})
    criterion = style_criterion(cfg, device, style_image)
    writer = None
    if tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard))
    bar = tqdm(total=steps, desc="optimize", unit="it", disable=not progress)

    def report(iteration: int, terms: dict[str, float], image: torch.Tensor) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{terms['total']:.4g}")
        if writer is not None:
            for name, value in terms.items():
                writer.add_scalar(f"loss/{name}", value, iteration)
            if iteration % log_every == 0 or iteration == steps:
                writer.add_image("image", image[0].clamp(0, 1).cpu(), iteration)

    try:
        image, _ = optimize_image(
            criterion, photo, steps=steps, optimizer=optimizer, init=init, lr=lr, progress=report
        )
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return save_image(image[0], output)
