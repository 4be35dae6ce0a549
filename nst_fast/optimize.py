"""Gatys et al. (2015): stylize one photo by optimizing its pixels against the loss.

Slow (hundreds of loss-network passes per image) but the quality reference for the
feed-forward network, and a quick way to preview a style's loss settings before a long
training run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from nst_fast.errors import NstFastError
from nst_fast.losses.perceptual import PerceptualLoss

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")

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

    ``content`` is (1, 3, H, W) in [0, 1]. Returns the final image and copies of it after
    each iteration listed in ``snapshots``. ``lr`` defaults to 1 for L-BFGS (its line
    search scale) and 0.02 for Adam.
    """
    if optimizer not in OPTIMIZERS:
        raise NstFastError(f"--optimizer {optimizer}: expected one of {', '.join(OPTIMIZERS)}")
    if init not in INITS:
        raise NstFastError(f"--init {init}: expected one of {', '.join(INITS)}")
    if steps <= 0:
        raise NstFastError(f"--steps {steps}: must be positive")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    start = content if init == "content" else torch.rand(content.shape, generator=generator)
    image = start.detach().clone().to(content.device).requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([image], lr=lr or 1.0, max_iter=1, history_size=50)
    else:
        opt = torch.optim.Adam([image], lr=lr or 0.02)
    wanted, kept = set(snapshots), {}
    terms: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        nonlocal terms
        opt.zero_grad()
        terms = criterion(image, content)
        terms["total"].backward()
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
        if iteration in wanted:
            kept[iteration] = image.detach().clone()
        if progress is not None:
            progress(iteration, {k: v.item() for k, v in terms.items()}, image.detach())
    return image.detach(), kept
