"""The colour options of stylizing: luminance-only transfer (``preserve_color``) and
strength (``blend``, also per pixel: a mask), applied to the network's output by ``Finish``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# ITU-R BT.601 luma and chroma (YCbCr without offsets), as in Gatys et al. (2017),
# "Controlling Perceptual Factors in Neural Style Transfer", luminance-only transfer.
_RGB_TO_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC)


def rgb_to_ycc(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB to luma and two chroma channels (chroma centred on 0)."""
    return torch.einsum("ij,...jhw->...ihw", _RGB_TO_YCC.to(image), image)


def ycc_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _YCC_TO_RGB.to(image), image)


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the content's chroma: the style's strokes and texture
    in the photo's own colours."""
    y = rgb_to_ycc(stylized)[..., :1, :, :]
    chroma = rgb_to_ycc(content)[..., 1:, :, :]
    return ycc_to_rgb(torch.cat([y, chroma], dim=-3)).clamp(0, 1)


def blend(
    stylized: torch.Tensor, content: torch.Tensor, strength: float | torch.Tensor
) -> torch.Tensor:
    """``strength`` 1 is the full stylization, 0 the photo itself; a tensor broadcast to
    the image ((1, H, W), a mask) sets it pixel by pixel."""
    if isinstance(strength, torch.Tensor):
        return torch.lerp(content, stylized, strength.to(stylized))
    if strength >= 1:
        return stylized
    return torch.lerp(content, stylized, strength)


@dataclass
class Finish:
    """What is done to the network's output: colour preservation, then strength, times
    the mask where there is one (``nst_fast.regions``)."""

    strength: float = 1.0
    preserve_color: bool = False

    def __call__(
        self, stylized: torch.Tensor, content: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.preserve_color:
            stylized = preserve_color(stylized, content)
        return blend(stylized, content, self.strength if mask is None else self.strength * mask)
