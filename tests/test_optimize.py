"""Gatys-style pixel optimization lowers the perceptual loss."""

import pytest
import torch

from nst_fast.errors import NstFastError
from nst_fast.losses.network import LossNetwork
from nst_fast.losses.perceptual import PerceptualLoss
from nst_fast.losses.vgg import IMAGENET_MEAN
from nst_fast.optimize import optimize_image, start_image

from .conftest import make_photo


def criterion() -> PerceptualLoss:
    torch.manual_seed(0)
    network = LossNetwork("vgg16", ["relu1_2", "relu2_2"], weights="random")
    loss = PerceptualLoss(
        network,
        "relu2_2",
        {"relu1_2": 1.0, "relu2_2": 1.0},
        {"content": 1.0, "style": 5.0, "tv": 0.01},
    )
    loss.set_style(make_photo((40, 40), 7)[None])
    return loss


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer,init", [("lbfgs", "content"), ("adam", "noise"), ("lbfgs", "mean")]
)
def test_optimization_lowers_the_loss(optimizer, init):
    loss, content = criterion(), make_photo((32, 32), 1)[None]
    history = []
    image, snapshots = optimize_image(
        loss,
        content,
        steps=12,
        optimizer=optimizer,
        init=init,
        snapshots=[5, 12],
        progress=lambda i, terms, _: history.append(terms["total"]),
    )
    assert image.shape == content.shape and image.min() >= 0 and image.max() <= 1
    assert len(history) == 12 and history[-1] < history[0]
    assert sorted(snapshots) == [5, 12] and torch.equal(snapshots[12], image)


def test_starts_are_the_photo_uniform_noise_or_the_faintly_noisy_mean_colour():
    photo = make_photo((16, 16), 1)[None]
    assert torch.equal(start_image(photo, "content"), photo)
    noise = start_image(photo, "noise")
    assert noise.min() >= 0 and noise.max() <= 1 and noise.std() > 0.25
    mean = start_image(photo, "mean")
    offset = mean - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert 0 < offset.std() < 1e-5  # neural-style's std 0.001 on the 0-255 scale
    assert torch.equal(start_image(photo, "mean", seed=3), start_image(photo, "mean", seed=3))


def test_bad_options_are_named():
    with pytest.raises(NstFastError, match="--optimizer"):
        optimize_image(criterion(), torch.rand(1, 3, 8, 8), optimizer="sgd")
    with pytest.raises(NstFastError, match="--init"):
        optimize_image(criterion(), torch.rand(1, 3, 8, 8), init="zeros")


def test_an_overshooting_optimizer_returns_the_best_image_it_saw():
    # Adam at lr 5 throws the image to the box's corners: every later iterate is worse
    # than the photo it started from, so the photo itself is what comes back.
    loss, content = criterion(), make_photo((32, 32), 1)[None]
    history = []
    image, snapshots = optimize_image(
        loss,
        content,
        steps=6,
        optimizer="adam",
        init="content",
        lr=5.0,
        snapshots=[3],
        progress=lambda i, terms, _: history.append(terms["total"]),
    )
    with torch.no_grad():
        returned = loss(image, content)["total"].item()
        at_three = loss(snapshots[3], content)["total"].item()
    assert max(history[1:]) > history[0]  # the run itself got worse
    assert returned <= min(history) * (1 + 1e-5)
    assert at_three <= min(history[:3]) * (1 + 1e-5)
