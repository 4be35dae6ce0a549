"""Stability on video, learnt from still photos (Wang et al., AAAI 2020, "Consistent Video
Style Transfer via Compound Regularization").

A video frame is the previous frame moved a little, with new noise. A network whose output
moves with its input and ignores the noise does not flicker. Without video or optical
flow, both are asked of it on still photos: for a photo x, a random smooth warp W and
Gaussian noise n, n',

    temporal = | F(W(x) + n) - W(F(x)) |^2     (Wang et al.'s compound regularization)
    noise    = | F(x + n') - F(x) |^2          (noise resilience)

each the mean squared difference over pixels and channels in [0, 1] units, leaving out
the pixels that W brings in from outside the photo. A network that commutes with the warp
and is blind to the noise pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Motion sizes are given for a 256 px photo and scale with its shorter side.
REFERENCE_SIDE = 256
# The smooth local motion is drawn on a coarse grid of cells this many px wide (at 256 px)
# and interpolated: motion that varies over objects, not from pixel to pixel.
FLOW_CELL = 64


@dataclass(frozen=True)
class RandomMotion:
    """The largest random motion between two frames, drawn anew for each photo: a shift
    (px either way), a rotation (degrees either way), a zoom (relative, either way), a
    smooth local displacement (px), and the noise's standard deviation ([0, 1] units)."""

    shift: float
    degrees: float
    zoom: float
    flow: float
    noise: float


@dataclass
class Warp:
    """Where each pixel of the moved photos comes from: a grid_sample grid (B, H, W, 2),
    and the mask (B, 1, H, W) of pixels that come from inside the photo."""

    grid: torch.Tensor
    inside: torch.Tensor

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` moved, in fp32: a half-precision grid would be off by up to half a
        pixel (bf16 keeps 8 bits), more than the motion it measures."""
        # Reflection fills the pixels from outside the photo with something photo-like
        # for the network to see; the loss leaves them out.
        with torch.autocast(images.device.type, enabled=False):
            return F.grid_sample(
                images.float(), self.grid.float(), mode="bilinear", padding_mode="reflection",
                align_corners=True,
            )  # fmt: skip


def random_warp(images: torch.Tensor, motion: RandomMotion, generator: torch.Generator) -> Warp:
    """A random ``motion`` for each of ``images`` (B, C, H, W): rotation and zoom about the
    centre, a shift, and a smooth local displacement, in pixels."""
    b, _, h, w = images.shape
    device = images.device
    scale = min(h, w) / REFERENCE_SIDE

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1]
        return 2 * torch.rand(shape, generator=generator, device=device) - 1

    angle = torch.deg2rad(motion.degrees * uniform(b)).view(b, 1, 1)
    zoom = (1 + motion.zoom * uniform(b)).view(b, 1, 1)
    shift = motion.shift * scale * uniform(b, 2).view(b, 1, 1, 2)
    cells = max(2, round(min(h, w) / (FLOW_CELL * scale)) + 1)
    coarse = motion.flow * scale * uniform(b, 2, cells, cells)
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)

    # Pixel coordinates about the centre; each output pixel samples the photo at the
    # rotated and zoomed point, shifted and displaced.
    ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    source = torch.stack([cos * x - sin * y, sin * x + cos * y], -1) + shift
    source = source + flow.permute(0, 2, 3, 1)
    # To grid_sample's [-1, 1], pixel centres at the ends (align_corners=True).
    half = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=device)
    grid = source / half
    inside = (grid.abs() <= 1).all(-1).unsqueeze(1)
    return Warp(grid, inside)


def masked_mean_square(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of (a - b)^2 over channels and the pixels where ``mask`` (B, 1, H, W) holds."""
    squared = (a.float() - b.float()).pow(2) * mask
    return squared.sum() / (mask.sum() * a.shape[1]).clamp_min(1)


@dataclass
class Perturbed:
    """The inputs the stability terms add to a training batch, and the warp they used."""

    moved: torch.Tensor | None
    noisy: torch.Tensor | None
    warp: Warp | None

    @property
    def inputs(self) -> list[torch.Tensor]:
        return [x for x in (self.moved, self.noisy) if x is not None]


@dataclass(frozen=True)
class StabilitySchedule:
    """How much of the stability terms' weights a step trains with: none before ``start``,
    then a linear rise over ``ramp`` steps to all of them (at once for 0). Counted on the
    global step alone, so a resumed run follows the schedule an unbroken one does."""

    start: int = 0
    ramp: int = 0

    def factor(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if self.ramp == 0:
            return 1.0
        return min(1.0, (step - self.start + 1) / self.ramp)


class StabilityLoss:
    """Wang et al.'s compound regularization (``temporal_weight``) and the noise term
    (``noise_weight``): ``perturb`` makes the extra inputs for a batch, the network runs
    on them with the batch, and the call compares the outputs."""

    def __init__(
        self,
        motion: RandomMotion,
        temporal_weight: float,
        noise_weight: float,
        schedule: StabilitySchedule | None = None,
    ) -> None:
        self.motion = motion
        self.weights = {"temporal": temporal_weight, "noise": noise_weight}
        self.schedule = schedule or StabilitySchedule()

    @property
    def active(self) -> bool:
        return any(weight > 0 for weight in self.weights.values())

    def perturb(self, images: torch.Tensor, generator: torch.Generator) -> Perturbed:
        """Moved and noised copies of ``images`` (the temporal term's), and noised copies
        (the noise term's), each only where its weight is above 0."""

        def noised(x: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            return (x + self.motion.noise * noise.to(x.dtype)).clamp(0, 1)

        moved = warp = noisy = None
        if self.weights["temporal"] > 0:
            warp = random_warp(images, self.motion, generator)
            moved = noised(warp(images))
        if self.weights["noise"] > 0:
            noisy = noised(images)
        return Perturbed(moved, noisy, warp)

    def __call__(
        self,
        output: torch.Tensor,
        perturbed: Perturbed,
        outputs: list[torch.Tensor],
        factor: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """The terms, and their weighted sum times ``factor`` (the schedule's), for the
        network's ``output`` on the batch and its ``outputs`` on ``perturbed.inputs``, in
        that order."""
        terms, rest = {}, iter(outputs)
        if perturbed.moved is not None:
            warp = perturbed.warp
            terms["temporal"] = masked_mean_square(next(rest), warp(output), warp.inside)
        if perturbed.noisy is not None:
            everywhere = torch.ones_like(output[:, :1])
            terms["noise"] = masked_mean_square(next(rest), output, everywhere)
        terms["stability"] = factor * sum(self.weights[name] * term for name, term in terms.items())
        return terms


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The random stream of one training step on one process: a function of the run's
    seed, the process and the step, so that a resumed run draws what it would have."""
    generator = torch.Generator(device=device)
    # Distinct streams for each (seed, rank, step); the odd multipliers keep them apart.
    generator.manual_seed((seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1))
    return generator
