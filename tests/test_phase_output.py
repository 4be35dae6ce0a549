"""The CPU inference rewrite of the decoder's last layers computes the same function."""

import pytest
import torch
import torch.nn.functional as F

from nst_fast.inference import ChannelsLastInstanceNorm, forward, prepare
from nst_fast.models.phase_output import PhaseOutput, phase_statistics, space_to_depth_kernel
from nst_fast.models.transformer import phase_kernel, transformer_net


def small_net(norm_scope: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = transformer_net(
        channels=(8, 16, 32), residual_blocks=1, output="linear", norm_scope=norm_scope
    ).eval()
    for norm in (m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)):
        norm.weight.data.uniform_(0.5, 1.5)  # not the identity affine of a fresh network
        norm.bias.data.uniform_(-0.5, 0.5)
    return net


@pytest.fixture(scope="module", params=["all", "residual", "encoder"])
def net(request):
    """Normalized after every convolution, up to the decoder, or only in the encoder."""
    return small_net(request.param)


def test_prepare_puts_the_phase_output_in_place_of_the_last_two_layers_on_cpu(net):
    fast = prepare(net, "cpu", torch.float32)
    assert isinstance(fast.decoder[-1], PhaseOutput) and len(fast.decoder) == len(net.decoder) - 1


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 45, 61), (1, 3, 9, 14), (1, 3, 5, 7)])
def test_the_prepared_network_matches_the_plain_one_at_any_size(net, shape):
    # (5, 7) is padded to 8x8, the smallest the 9x9 input layer takes: the phases are 4x4.
    torch.manual_seed(1)
    image = torch.rand(shape)
    with torch.no_grad():
        expected = net(image)
    out = prepare(net, "cpu", torch.float32)(image.contiguous(memory_format=torch.channels_last))
    assert out.shape == expected.shape
    assert (out - expected).abs().max() < 1e-4 * expected.abs().max()


def test_each_sample_of_a_batch_is_normalized_by_its_own_statistics(net):
    torch.manual_seed(2)
    batch = torch.rand(2, 3, 32, 40) * torch.tensor([1.0, 0.2]).view(2, 1, 1, 1)
    fast = prepare(net, "cpu", torch.float32)
    together = forward(fast, batch)
    alone = torch.cat([forward(fast, image[None]) for image in batch])
    assert (together - alone).abs().max() < 1e-5


def test_space_to_depth_kernel_convolves_the_phases_like_the_9x9_kernel():
    torch.manual_seed(3)
    x, weight, bias = torch.randn(2, 5, 12, 16), torch.randn(3, 5, 9, 9), torch.randn(3)
    expected = F.conv2d(F.pad(x, (4, 4, 4, 4)), weight, bias)  # zero padding: no reflection
    kernel, out_bias = space_to_depth_kernel(weight, bias)
    phases = torch.cat([x[:, :, p::2, q::2] for p in (0, 1) for q in (0, 1)], dim=1)
    out = F.conv2d(phases, kernel, out_bias, padding=2)  # (2, 16, 6, 8)
    for r in (0, 1):
        for s in (0, 1):
            got = out[:, (2 * r + s) * 4 : (2 * r + s) * 4 + 3]
            assert torch.allclose(got, expected[:, :, r::2, s::2], atol=1e-4)


def test_phase_statistics_are_those_of_the_interleaved_map():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(6, 4, 3)
    x = torch.randn(2, 6, 7, 9) * 3 + 1
    kernel, bias = phase_kernel(conv)
    grid = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias)
    full = conv(F.pad(F.interpolate(x, scale_factor=2.0), (1, 1, 1, 1), mode="reflect"))
    mean, var = phase_statistics(grid, 7, 9)
    expected_var, expected_mean = torch.var_mean(full, dim=(2, 3), correction=0)
    assert torch.allclose(mean[:, 0], expected_mean, atol=1e-5)
    assert torch.allclose(var[:, 0], expected_var, rtol=1e-4)


def test_tiles_share_the_phase_outputs_statistics_too():
    fast = prepare(small_net("all"), "cpu", torch.float32)
    norm = fast.decoder[-1].norm
    assert isinstance(norm, ChannelsLastInstanceNorm)
    norm.shared = (torch.zeros(1, 1, 8), torch.ones(1, 1, 8))
    try:
        out = fast(torch.rand(1, 3, 32, 32).contiguous(memory_format=torch.channels_last))
        other = fast(torch.rand(1, 3, 32, 32).contiguous(memory_format=torch.channels_last) * 5)
    finally:
        norm.shared = None
    assert out.shape == other.shape == (1, 3, 32, 32)
    # With statistics fixed, a 5x brighter input is not normalized back: outputs differ.
    assert (out - other).abs().max() > 1e-2
