"""Inference keeps sizes, tiles without seams, and preserves colour on request."""

from collections import Counter
from itertools import pairwise

import pytest
import torch
from torch import nn

from nst_fast.fast import FastInstanceNorm
from nst_fast.inference import (
    Stylizer,
    blend,
    forward,
    prepare,
    prepared,
    preserve_color,
    ramp,
    rgb_to_ycc,
    stylize,
    tile_starts,
)
from nst_fast.models.transformer import transformer_net
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return transformer_net(channels=[8, 16, 32], residual_blocks=1).eval()


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (50, 21), (17, 18)])
def test_stylize_keeps_the_size_of_single_images_and_batches(net, size):
    image = make_photo(size, 0)
    assert stylize(net, image).shape == image.shape
    assert stylize(net, torch.stack([image, image])).shape == (2, *image.shape)


def test_stylized_values_are_an_image_in_0_1(net):
    out = stylize(net, make_photo((40, 40), 1))
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1


def test_stylize_without_the_fast_modules_gives_the_same_image(net):
    image = make_photo((45, 61), 2)
    plain = stylize(net, image, half=False, fast=False)
    torch.testing.assert_close(stylize(net, image, half=False), plain, rtol=1e-4, atol=1e-5)


def test_the_plain_preparation_runs_torchs_own_modules_but_for_the_tile_sharing_norms(net):
    plain = prepare(net, "cpu", torch.float32, fast=False)
    expected = Counter(type(m) for m in net.modules())
    expected[FastInstanceNorm] = expected.pop(nn.InstanceNorm2d)
    assert Counter(type(m) for m in plain.modules()) == expected
    norms = [m for m in plain.modules() if type(m) is FastInstanceNorm]
    assert norms and not any(norm.cpu_training_kernel for norm in norms)


def test_stylize_keeps_the_fast_and_the_plain_copy_apart(net):
    cpu = torch.device("cpu")
    fast, plain = (prepared(net, cpu, torch.float32, fast=f) for f in (True, False))
    assert fast is not plain
    assert prepared(net, cpu, torch.float32, fast=False) is plain


def test_prepare_leaves_the_given_network_untouched(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prepare(net, "cpu", torch.float32)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert next(net.parameters()).is_contiguous()


def test_tiles_cover_the_image_at_multiples_of_four_and_end_flush():
    starts = tile_starts(400, 128, 32)
    assert starts[0] == 0 and starts[-1] + 128 == 400
    assert all(s % 4 == 0 for s in starts)
    assert all(b - a <= 128 - 32 for a, b in pairwise(starts))


def test_facing_blend_ramps_sum_to_one():
    falling = ramp(64, 16, rise=False, fall=True)[-16:]
    rising = ramp(64, 16, rise=True, fall=False)[:16]
    assert torch.allclose(falling + rising, torch.ones(16))


@pytest.mark.parametrize("fast", [True, False])
def test_tiled_equals_untiled_when_the_tiles_share_the_image_statistics(net, fast):
    image = make_photo((230, 270), 3)  # not a multiple of 4 on either side
    ready = prepare(net, "cpu", torch.float32, fast=fast)
    whole = forward(ready, image[None])
    # the overlap exceeds what this small network sees around a pixel (~22 px)
    run = Stylizer(lambda b: forward(ready, b), 10**9, ready, tile=160, overlap=96)
    tiled = run(image[None])
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 2e-3


def test_images_over_the_memory_budget_are_tiled_automatically(net):
    image = make_photo((120, 100), 4)[None]
    fast = prepare(net, "cpu", torch.float32)
    calls = []

    def run(batch):
        calls.append(batch.shape[-2:])
        return forward(fast, batch)

    out = Stylizer(run, max_pixels=80 * 80, net=fast, overlap=16)(image)
    assert out.shape == image.shape
    # the statistics pass on a downscaled copy, then tiles: never the whole image at once
    assert all(h * w <= 80 * 80 for h, w in calls) and len(calls) > 2


def test_preserve_color_keeps_the_content_chroma_and_the_stylized_luminance():
    # muted colours, so the recombined image stays inside the RGB cube (no clamping)
    content = 0.5 + 0.2 * (make_photo((32, 40), 5) - 0.5)
    stylized = 0.5 + 0.2 * (make_photo((32, 40), 6) - 0.5)
    out = preserve_color(stylized, content)
    ycc, content_ycc, stylized_ycc = rgb_to_ycc(out), rgb_to_ycc(content), rgb_to_ycc(stylized)
    assert torch.allclose(ycc[1:], content_ycc[1:], atol=1e-5)
    assert torch.allclose(ycc[0], stylized_ycc[0], atol=1e-5)


def test_strength_blends_between_the_photo_and_the_stylization():
    content, stylized = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    assert torch.equal(blend(stylized, content, 1.0), stylized)
    assert torch.equal(blend(stylized, content, 0.0), content)
    assert torch.allclose(blend(stylized, content, 0.25), torch.full((3, 4, 4), 0.25))


def test_stylize_prepares_a_network_once_until_its_weights_change():
    torch.manual_seed(0)
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1).eval()
    image = make_photo((24, 24), 4)
    first = stylize(net, image)
    assert prepared(net, torch.device("cpu"), torch.float32) is prepared(
        net, torch.device("cpu"), torch.float32
    )
    cached = prepared(net, torch.device("cpu"), torch.float32)
    with torch.no_grad():  # as an optimizer step does: in place
        net.decoder[-1][1].bias.add_(0.5)
    assert prepared(net, torch.device("cpu"), torch.float32) is not cached
    assert not torch.allclose(stylize(net, image), first)
