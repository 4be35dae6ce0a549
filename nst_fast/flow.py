"""Optical flow between the frames of a real clip, for the warping error where the motion
is not known: OpenCV's DIS flow (Kroeger et al. 2016), an optional dependency
(``pip install 'nst-fast[flow]'``).

Each pair of frames gets the backward flow (where each pixel of the later frame was in
the earlier one) and the pixels it can be trusted at. As in Ruder et al. (2016) and Lai
et al. (2018), pixels are left out where the flow leaves the frame, where the forward and
backward flows disagree (occlusions: what the later frame shows was hidden before), and
at motion boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from nst_fast.errors import NstFastError
from nst_fast.temporal import sample


def import_cv2():
    try:
        import cv2
    except ImportError as err:
        raise NstFastError(
            "estimated flow needs OpenCV: pip install 'nst-fast[flow]' (or opencv-python-headless)"
        ) from err
    return cv2


@dataclass
class PairFlow:
    """For frame t+1: where each pixel was in frame t (pixel coordinates (H, W, 2), x then
    y), and the mask (H, W) of pixels that were visible there."""

    source: torch.Tensor
    visible: torch.Tensor


def grey8(frame: torch.Tensor):
    """A (3, H, W) frame in [0, 1] as the 8-bit grey image OpenCV's flow reads."""
    grey = frame.float().mul(torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
    return grey.mul(255).round().clamp(0, 255).to(torch.uint8).numpy()


def pair_flows(frames: torch.Tensor) -> list[PairFlow]:
    """The backward flow and its trusted pixels for each consecutive pair of ``frames``
    (T, 3, H, W) in [0, 1]."""
    cv2 = import_cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    h, w = frames.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pixels = torch.stack([xs, ys], -1).float()
    greys = [grey8(frame) for frame in frames]
    pairs = []
    for earlier, later in pairwise(greys):
        # OpenCV: calc(a, b)(p) is the move of a's pixel p into b.
        backward = torch.from_numpy(dis.calc(later, earlier, None))  # (H, W, 2)
        forward = torch.from_numpy(dis.calc(earlier, later, None))
        source = pixels + backward
        inside = (
            (source[..., 0] >= 0) & (source[..., 0] <= w - 1)
            & (source[..., 1] >= 0) & (source[..., 1] <= h - 1)
        )  # fmt: skip
        # Back and forth should come home; where it does not, the pixel was occluded.
        there = sample(forward.permute(2, 0, 1), source)[0].permute(1, 2, 0)
        round_trip = (there + backward).pow(2).sum(-1)
        magnitude = there.pow(2).sum(-1) + backward.pow(2).sum(-1)
        consistent = round_trip <= 0.01 * magnitude + 0.5
        pairs.append(PairFlow(source, inside & consistent & ~motion_boundaries(backward)))
    return pairs


def motion_boundaries(flow: torch.Tensor) -> torch.Tensor:
    """Where the flow (H, W, 2) changes fast between neighbours (Ruder et al.'s test):
    the edges of moving objects, where flow is least reliable."""
    dx = torch.zeros_like(flow)
    dy = torch.zeros_like(flow)
    dx[:, :-1] = flow[:, 1:] - flow[:, :-1]
    dy[:-1] = flow[1:] - flow[:-1]
    change = dx.pow(2).sum(-1) + dy.pow(2).sum(-1)
    return change > 0.01 * flow.pow(2).sum(-1) + 0.002


def flow_warping_error(frames: torch.Tensor, pairs: list[PairFlow]) -> float:
    """Lai et al.'s warping error of ``frames`` (T, 3, H, W) in [0, 1], each frame warped
    onto the next by ``pairs`` (the flows of the input clip), over the trusted pixels;
    in grey levels (0-255)."""
    errors = []
    for t, pair in enumerate(pairs):
        if not pair.visible.any():
            continue
        warped, _ = sample(frames[t].float(), pair.source)
        difference = (frames[t + 1].float() - warped).abs().mean(0)
        errors.append(float(difference[pair.visible].mean()))
    if not errors:
        raise NstFastError("no pixel of the clip could be followed from frame to frame")
    return 255 * sum(errors) / len(errors)
