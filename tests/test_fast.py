"""nst_fast.fast: every faster module computes the plain module's function, in value and in
gradient (the input's and the parameters'), and ``accelerate`` swaps them in without
changing the network's parameters.

Expected values always come from the plain torch modules (``nn.InstanceNorm2d``,
``nn.Conv2d``, ``ConvBlock(upsample=True)``, ``gram_matrix``, the plain network) or from
hand-computed formulas, never from the fast modules themselves.
"""

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nst_fast.fast as fast_package
from nst_fast.fast import accelerate, cpu_kernels_pay, share_parameters
from nst_fast.fast.conv import CpuTrainingConv2d
from nst_fast.fast.gram import FastGramMatrix
from nst_fast.fast.norm import (
    FastConditionalInstanceNorm,
    FastInstanceNorm,
    mean_var,
    phase_statistics,
    remove_moments,
)
from nst_fast.fast.phase_output import PhaseOutput, space_to_depth_kernel
from nst_fast.fast.upsample import PhaseUpsampleConv, phase_kernel, phase_rows, upsample_conv2d
from nst_fast.losses.network import LossNetwork
from nst_fast.losses.perceptual import GramMatrix, PerceptualLoss, gram_matrix
from nst_fast.models.transformer import (
    ConditionalInstanceNorm2d,
    ConvBlock,
    TransformerNet,
    default_transformer_config,
    transformer_net,
)
from nst_fast.prepared import forward, prepare
from tests.conftest import make_photo

LAYOUTS = [torch.contiguous_format, torch.channels_last]
CHANNELS_LAST = torch.channels_last
CPU = torch.device("cpu")
WEIGHTS = {"content": 1.0, "style": 1.0, "tv": 0.1}


@pytest.fixture(autouse=True)
def cpu_kernels(monkeypatch) -> None:
    """The capability check says the CPU kernels pay on the CPU, as on an x86 CPU with
    AVX2 or AVX-512, whatever this machine's answer: they are plain PyTorch ops that run
    on any CPU, so every machine tests them and where they are swapped in. The test of
    where they are not swapped in patches the check the other way."""
    monkeypatch.setattr(
        fast_package, "cpu_kernels_pay", lambda device: torch.device(device).type == "cpu"
    )


# --- helpers ----------------------------------------------------------------------------


def assert_same(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4, name: str = ""
) -> None:
    """Equal to float rounding: kernels that sum in another order differ by a few ulps of
    the tensor's largest values, so the absolute tolerance scales with them."""
    scale = max(expected.detach().abs().max().item(), 1.0)
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name} {m}"
    )


def upstream_like(y: torch.Tensor) -> torch.Tensor:
    """A fixed random upstream gradient: every output element weighted differently."""
    g = torch.Generator().manual_seed(1234)
    return torch.randn(y.shape, generator=g).to(y.device)


def value_and_grads(module, x: torch.Tensor, params: list[torch.Tensor]):
    """``module(x)`` and the gradients of a random projection of it with respect to ``x``
    (a fresh leaf in ``x``'s memory layout) and ``params``."""
    leaf = x.detach().clone().requires_grad_()
    y = module(leaf)
    grads = torch.autograd.grad((y.float() * upstream_like(y)).sum(), [leaf, *params])
    return y, grads


def assert_same_values_and_grads(fast, plain, x, params, rtol=1e-4):
    (y, grads), (y_plain, grads_plain) = (value_and_grads(m, x, params) for m in (fast, plain))
    assert_same(y, y_plain, rtol)
    for grad, grad_plain in zip(grads, grads_plain, strict=True):
        assert_same(grad, grad_plain, rtol)
    return y, grads


def assert_twin_equals_the_plain_network(
    twin: nn.Module, net: nn.Module, x: torch.Tensor, style: torch.Tensor | None = None
) -> None:
    """The twin's output, and the gradients of the input and of every parameter, equal
    the plain network's."""
    params = list(net.parameters())
    results = [value_and_grads(lambda t, m=m: m(t, style), x, params) for m in (twin, net)]
    (y, grads), (y_plain, grads_plain) = results
    assert_same(y, y_plain)
    names = [name for name, _ in net.named_parameters()]
    for name, grad, grad_plain in zip(["input", *names], grads, grads_plain, strict=True):
        assert_same(grad, grad_plain, rtol=1e-3, name=name)


def randomize_norms(net: nn.Module) -> nn.Module:
    """Instance norms with a scale and shift that are not a fresh network's identity."""
    norms = (nn.InstanceNorm2d, ConditionalInstanceNorm2d)
    for norm in (m for m in net.modules() if isinstance(m, norms)):
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -0.5, 0.5)
    return net


def small_net(
    norm_scope: str = "residual", output: str = "tanh", antialias: bool = False, taps: int = 3
) -> nn.Module:
    """A network as ``nst-fast train model.channels=[8,16,32] model.residual_blocks=1``
    builds it (the trained defaults), norms randomized."""
    torch.manual_seed(0)
    net = transformer_net(
        channels=[8, 16, 32],
        residual_blocks=1,
        norm_scope=norm_scope,
        output=output,
        antialias=antialias,
        antialias_taps=taps,
    )
    return randomize_norms(net)


def grad_fn_name(y: torch.Tensor) -> str:
    return type(y.grad_fn).__name__


# --- FastInstanceNorm -------------------------------------------------------------------


@pytest.mark.parametrize("cpu_training_kernel", [True, False])
@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_fast_instance_norm_equals_torchs_instance_norm_in_value_and_gradient(
    memory_format, cpu_training_kernel
):
    torch.manual_seed(0)
    norm = randomize_norms(nn.InstanceNorm2d(5, affine=True))
    fast = FastInstanceNorm(norm, cpu_training_kernel=cpu_training_kernel)
    x = (torch.randn(3, 5, 7, 6) * 4 + 2).contiguous(memory_format=memory_format)
    y, (grad_x, *_) = assert_same_values_and_grads(fast, norm, x, [norm.weight, norm.bias])
    if memory_format == CHANNELS_LAST:  # the point of it: no copy back to NCHW
        assert y.is_contiguous(memory_format=CHANNELS_LAST)
        assert grad_x.is_contiguous(memory_format=CHANNELS_LAST)


@pytest.mark.parametrize("cpu_training_kernel", [True, False])
@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_fast_conditional_norm_equals_the_plain_one_in_value_and_gradient(
    memory_format, cpu_training_kernel
):
    torch.manual_seed(0)
    norm = randomize_norms(ConditionalInstanceNorm2d(5, styles=3))
    fast = FastConditionalInstanceNorm(norm, cpu_training_kernel=cpu_training_kernel)
    x = (torch.randn(2, 5, 7, 6) * 4 + 2).contiguous(memory_format=memory_format)
    style = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.2, 0.3]])
    params = [norm.weight, norm.bias]
    y, (grad_x, *_) = assert_same_values_and_grads(
        lambda t: fast(t, style), lambda t: norm(t, style), x, params
    )
    if memory_format == CHANNELS_LAST:
        assert y.is_contiguous(memory_format=CHANNELS_LAST)
        assert grad_x.is_contiguous(memory_format=CHANNELS_LAST)


def test_the_cpu_training_kernel_runs_for_channels_last_maps_under_autograd_only():
    norm = nn.InstanceNorm2d(4, affine=True)
    fast = FastInstanceNorm(norm, cpu_training_kernel=True)
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=CHANNELS_LAST)
    assert "_CpuInstanceNormFunction" in grad_fn_name(fast(x))
    assert "_CpuInstanceNormFunction" not in grad_fn_name(fast(x.contiguous()))
    assert "_CpuInstanceNormFunction" not in grad_fn_name(FastInstanceNorm(norm)(x))


def test_fast_instance_norm_holds_the_plain_norms_own_tensors():
    norm = nn.InstanceNorm2d(4, affine=True)
    fast = FastInstanceNorm(norm)
    assert fast.weight is norm.weight and fast.bias is norm.bias and fast.eps == norm.eps


def test_fast_instance_norm_in_half_precision_inference_normalizes_with_fp32_statistics():
    torch.manual_seed(0)
    norm = randomize_norms(nn.InstanceNorm2d(6, affine=True))
    x = (torch.randn(2, 6, 9, 7) * 2 + 3).bfloat16().contiguous(memory_format=CHANNELS_LAST)
    with torch.inference_mode():
        y = FastInstanceNorm(norm)(x)
        expected = norm(x.float())  # the same bf16 values, normalized in fp32
    assert y.dtype == torch.bfloat16
    assert_same(y.float(), expected, rtol=2e-2)  # bf16 rounding of the result


def test_recorded_statistics_normalize_later_inputs_as_the_recorded_one():
    # How tiles of one image share its statistics (tiling.shared_statistics).
    torch.manual_seed(0)
    norm = randomize_norms(nn.InstanceNorm2d(4, affine=True))
    fast = FastInstanceNorm(norm)
    whole, tile = torch.randn(1, 4, 8, 8) * 2 + 1, torch.randn(1, 4, 6, 10) * 5 - 3
    with torch.inference_mode():
        fast.recording = True
        recorded = fast(whole)
        fast.recording = False
        out = fast(tile)
        expected_recorded = norm(whole)
    var, mean = torch.var_mean(whole, dim=(2, 3), keepdim=True, correction=0)
    scale, shift = norm.weight.view(1, -1, 1, 1), norm.bias.view(1, -1, 1, 1)
    expected = (tile - mean) / torch.sqrt(var + norm.eps) * scale + shift
    assert_same(recorded, expected_recorded)
    assert_same(out, expected.detach())


def test_mean_var_gives_fp32_per_channel_mean_and_biased_variance_of_half_pixels():
    pixels = (torch.randn(2, 50, 3) * 3 + 100).bfloat16()
    mean, var = mean_var(pixels)
    expected_var, expected_mean = torch.var_mean(pixels.double(), dim=1, keepdim=True, correction=0)
    assert mean.dtype == var.dtype == torch.float32 and mean.shape == (2, 1, 3)
    torch.testing.assert_close(mean.double(), expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var.double(), expected_var, rtol=1e-4, atol=1e-6)


def test_remove_moments_gives_the_statistics_of_what_is_left():
    values = torch.randn(2, 3, 20) * 2 + 5
    count, mean = 20, values.mean(-1)
    m2 = (values - mean[..., None]).square().sum(-1)
    n_rest, mean_rest, m2_rest = remove_moments(count, mean, m2, values[..., 14:])
    rest = values[..., :14]
    assert n_rest == 14
    torch.testing.assert_close(mean_rest, rest.mean(-1))
    torch.testing.assert_close(m2_rest, (rest - rest.mean(-1, keepdim=True)).square().sum(-1))


def test_phase_statistics_are_those_of_the_interleaved_map():
    torch.manual_seed(4)
    conv = nn.Conv2d(6, 4, 3)
    x = torch.randn(2, 6, 7, 9) * 3 + 1
    kernel, bias = phase_kernel(conv)
    grid = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias)
    with torch.no_grad():
        full = ConvBlock(6, 4, 3, norm=None, relu=False, upsample=True)
        full[2] = conv
        expected_var, expected_mean = torch.var_mean(full(x), dim=(2, 3), correction=0)
    mean, var = phase_statistics(grid, 7, 9)
    assert_same(mean[:, 0], expected_mean)
    assert_same(var[:, 0], expected_var)


# --- CpuTrainingConv2d -------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_cpu_training_conv_equals_torchs_conv_in_value_and_gradient(memory_format, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, stride).to(memory_format=memory_format)
    fast = CpuTrainingConv2d(conv)
    x = torch.randn(2, 6, 11, 9).contiguous(memory_format=memory_format)
    y, (grad_x, *_) = assert_same_values_and_grads(fast, conv, x, [conv.weight, conv.bias])
    if memory_format == CHANNELS_LAST:
        assert "_CpuConv2dFunction" in grad_fn_name(fast(x.requires_grad_()))
        assert y.is_contiguous(memory_format=CHANNELS_LAST)
        assert grad_x.is_contiguous(memory_format=CHANNELS_LAST)


def test_cpu_training_conv_under_bf16_autocast_matches_autocasts_own_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3)
    fast = CpuTrainingConv2d(conv)
    x = torch.randn(2, 6, 11, 9).contiguous(memory_format=CHANNELS_LAST)
    results = []
    for module in (fast, conv):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(value_and_grads(module, x, [conv.weight, conv.bias]))
    (y, grads), (y_plain, grads_plain) = results
    assert y.dtype == torch.bfloat16
    assert [g.dtype for g in grads] == [torch.float32] * 3  # the leaves' own dtype
    for ours, plain in zip([y, *grads], [y_plain, *grads_plain], strict=True):
        assert_same(ours.float(), plain.float(), rtol=2e-2)


def test_cpu_training_conv_takes_only_unpadded_convolutions():
    with pytest.raises(ValueError, match="unpadded"):
        CpuTrainingConv2d(nn.Conv2d(3, 3, 3, padding=1))


# --- PhaseUpsampleConv -------------------------------------------------------------------


@pytest.mark.parametrize("norm", [None, "instance"])
@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_phase_upsample_conv_equals_the_plain_upsampling_block_in_value_and_gradient(
    memory_format, norm
):
    torch.manual_seed(0)
    block = randomize_norms(ConvBlock(6, 4, 3, norm=norm, upsample=True))
    block = block.to(memory_format=memory_format)
    fast = PhaseUpsampleConv(*block)
    if norm is not None:  # as accelerate swaps it (nn.InstanceNorm2d leaves channels_last)
        fast[3] = FastInstanceNorm(block[3], cpu_training_kernel=True)
    x = torch.randn(2, 6, 7, 10).contiguous(memory_format=memory_format)
    y, (grad_x, *_) = assert_same_values_and_grads(fast, block, x, list(block.parameters()))
    assert y.shape == (2, 4, 14, 20)
    assert y.is_contiguous(memory_format=memory_format)
    assert grad_x.is_contiguous(memory_format=memory_format)


def test_phase_upsample_conv_keeps_the_blocks_parameter_names():
    block = ConvBlock(6, 4, 3, upsample=True)
    fast = PhaseUpsampleConv(*block)
    assert list(fast.state_dict()) == list(block.state_dict())


@pytest.mark.parametrize("border", [0, 2])
def test_phase_rows_interleave_the_phases_in_the_plain_upsamplings_pixel_order(border):
    b, c, h, w = 2, 3, 5, 7
    x = torch.randn(b, c, h, w)
    # The phase convolution's grid: phase (p, q) of low-res pixel (m, n) at grid position
    # (m + p, n + q), phases last; the cells no phase reads are NaN.
    grid = torch.full((b, h + 1, w + 1, 2, 2, c), float("nan"))
    for p in (0, 1):
        for q in (0, 1):
            grid[:, p : p + h, q : q + w, p, q] = x.permute(0, 2, 3, 1)
    index = phase_rows(b, h, w, border, CPU).permute(0, 1, 3, 2, 4).flatten()
    side_h, side_w = 2 * (h + 2 * border), 2 * (w + 2 * border)
    out = grid.reshape(-1, c)[index].view(b, side_h, side_w, c).permute(0, 3, 1, 2)
    expected = nn.Upsample(scale_factor=2, mode="nearest")(x)
    expected = F.pad(expected, (2 * border,) * 4, mode="reflect")
    assert torch.equal(out, expected)


def test_upsampling_convolution_trains_after_running_in_inference_mode():
    conv = nn.Conv2d(6, 4, 3)
    x = torch.randn(1, 6, 3, 13)  # a size no other test uses: nothing cached before
    with torch.inference_mode():
        upsample_conv2d(x, conv)  # previews and sanity checks run like this mid-training
    upsample_conv2d(x, conv).sum().backward()
    assert conv.weight.grad is not None


# --- PhaseOutput ------------------------------------------------------------------------


def phase_output_of(net: nn.Module) -> PhaseOutput:
    """The decoder's last two layers as accelerate builds them for CPU inference: the
    upsampling block's norm, if any, made a FastInstanceNorm first."""
    upsample, output = copy.deepcopy(net.decoder[-2]), copy.deepcopy(net.decoder[-1])
    for i, layer in enumerate(upsample):
        if isinstance(layer, nn.InstanceNorm2d):
            upsample[i] = FastInstanceNorm(layer)
    return PhaseOutput(upsample, output)


@pytest.mark.parametrize("memory_format", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 16, 12, 10), (1, 16, 4, 4), (1, 16, 5, 9)])
@pytest.mark.parametrize("norm_scope", ["all", "residual"])
def test_phase_output_equals_the_plain_last_two_decoder_layers(norm_scope, shape, memory_format):
    net = small_net(norm_scope, output="linear").eval()
    tail = phase_output_of(net)
    x = (torch.randn(shape) * 2).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = net.decoder[-1](net.decoder[-2](x.clone()))
        out = tail(x)
    assert out.shape == expected.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
    assert_same(out, expected)


def test_phase_output_needs_a_norm_whose_statistics_tiles_can_share():
    net = small_net("all")
    assert not PhaseOutput.supports(net.decoder[-2], net.decoder[-1])  # nn.InstanceNorm2d
    with pytest.raises(ValueError, match="upsampling block"):
        PhaseOutput(net.decoder[-2], net.decoder[-1])


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
            assert_same(got, expected[:, :, r::2, s::2])


# --- FastGramMatrix ---------------------------------------------------------------------


@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_fast_gram_matrix_equals_gram_matrix_in_value_and_gradient(memory_format):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 7).contiguous(memory_format=memory_format)
    # The random upstream gradient is not symmetric: the backward pass must symmetrize it.
    assert_same_values_and_grads(FastGramMatrix(), gram_matrix, x, [])


def test_fast_gram_matrix_is_fp32_under_bf16_autocast_like_gram_matrix():
    torch.manual_seed(0)
    f = torch.rand(2, 4, 8, 8).bfloat16().contiguous(memory_format=CHANNELS_LAST)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (g, (grad,)), (g_plain, (grad_plain,)) = (
            value_and_grads(m, f, []) for m in (FastGramMatrix(), gram_matrix)
        )
    assert g.dtype == torch.float32 and g.shape == (2, 4, 4)
    assert grad.dtype == torch.bfloat16  # the features' own dtype
    assert_same(g, g_plain)
    assert_same(grad.float(), grad_plain.float(), rtol=1e-2)


def test_the_accelerated_perceptual_loss_equals_the_plain_one_in_value_and_gradient():
    torch.manual_seed(0)
    network = LossNetwork("vgg16", ["relu1_2", "relu2_2"], weights="random")
    plain = PerceptualLoss(network, "relu2_2", {"relu1_2": 1.0, "relu2_2": 0.5}, WEIGHTS)
    fast = accelerate(copy.deepcopy(plain), "training", CPU)
    style = torch.rand(1, 3, 32, 32)
    plain.set_style(style)
    fast.set_style(style)
    output, content = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    results = []
    for loss in (fast, plain):
        leaf = output.clone().requires_grad_()
        terms = loss(leaf, content)
        results.append((terms["total"], *torch.autograd.grad(terms["total"], leaf)))
    for ours, reference in zip(*results, strict=True):
        assert_same(ours, reference)


# --- the whole network ------------------------------------------------------------------


@pytest.mark.parametrize("memory_format", LAYOUTS)
@pytest.mark.parametrize("norm_scope", ["residual", "all"])
def test_the_accelerated_training_twin_equals_the_plain_network_in_value_and_gradients(
    norm_scope, memory_format
):
    net = small_net(norm_scope).to(memory_format=memory_format)
    twin = accelerate(share_parameters(net), "training", CPU)
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=memory_format)
    assert_twin_equals_the_plain_network(twin, net, x)


@pytest.mark.parametrize("taps", [3, 5])
@pytest.mark.parametrize("memory_format", LAYOUTS)
def test_the_accelerated_twin_of_an_antialiased_network_equals_it_in_value_and_gradients(
    memory_format, taps
):
    # Its smooth upsampling is not the phase convolution's nearest one: left plain.
    net = small_net(antialias=True, taps=taps).to(memory_format=memory_format)
    twin = accelerate(share_parameters(net), "training", CPU)
    assert not any(isinstance(m, PhaseUpsampleConv) for m in twin.modules())
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=memory_format)
    assert_twin_equals_the_plain_network(twin, net, x)


@pytest.mark.parametrize(("shape", "taps"), [((1, 3, 64, 64), 3), ((2, 3, 45, 61), 5)])
def test_the_accelerated_inference_copy_of_an_antialiased_network_equals_it(shape, taps):
    net = small_net(antialias=True, output="linear", taps=taps).eval()
    torch.manual_seed(1)
    image = torch.rand(shape)
    fast = accelerate(copy.deepcopy(net), "inference", CPU)
    assert not any(isinstance(m, (PhaseUpsampleConv, PhaseOutput)) for m in fast.modules())
    with torch.no_grad():
        assert_same(fast(image.contiguous(memory_format=CHANNELS_LAST)), net(image))


@pytest.mark.parametrize("memory_format", LAYOUTS)
@pytest.mark.parametrize("norm_scope", ["residual", "all"])
def test_the_accelerated_twin_of_a_network_of_several_styles_equals_it_in_value_and_gradients(
    norm_scope, memory_format
):
    torch.manual_seed(0)
    config = default_transformer_config(channels=[8, 16, 32], residual_blocks=1)
    config.norm_scope = norm_scope
    net = randomize_norms(TransformerNet(config, styles=3)).to(memory_format=memory_format)
    twin = accelerate(share_parameters(net), "training", CPU)
    assert any(isinstance(m, FastConditionalInstanceNorm) for m in twin.modules())
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=memory_format)
    style = torch.tensor([0.0, 0.0, 1.0])
    assert_twin_equals_the_plain_network(twin, net, x, style)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("styles", [1, 3])
def test_on_a_gpu_the_accelerated_networks_equal_the_plain_one_in_value_and_gradients(
    styles, monkeypatch
):
    # The swap on CUDA (which modules it picks there) in fp32 without TF32, channels_last
    # as training runs it: the training twin in value and gradients, the inference copy.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the network is convolutions
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    config = default_transformer_config(channels=[8, 16, 32], residual_blocks=1)
    net = randomize_norms(TransformerNet(config, styles=styles)).to(
        cuda, memory_format=CHANNELS_LAST
    )
    style = None if styles == 1 else torch.tensor([0.0, 1.0, 0.0], device=cuda)
    twin = accelerate(share_parameters(net), "training", cuda)
    x = torch.rand(2, 3, 48, 40, device=cuda).contiguous(memory_format=CHANNELS_LAST)
    assert_twin_equals_the_plain_network(twin, net, x, style)
    one = net.eval() if styles == 1 else net.single_style(style).eval()
    fast = accelerate(copy.deepcopy(one), "inference", cuda)
    with torch.no_grad():
        assert_same(fast(x), one(x))


def test_the_accelerated_twin_trains_channels_last_under_cpu_bf16_autocast_like_the_plain_one():
    net = small_net().to(memory_format=CHANNELS_LAST)
    twin = accelerate(share_parameters(net), "training", CPU)
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=CHANNELS_LAST)
    params = list(net.parameters())
    _, exact = value_and_grads(net, x, params)  # fp32
    results = []
    for module in (twin, net):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(value_and_grads(module, x, params))
    (y, grads), (y_plain, grads_plain) = results
    assert y.shape == x.shape
    assert_same(y.float(), y_plain.float(), rtol=2e-2)
    # bf16 gradients of a whole network are tens of percent off the fp32 ones, the plain
    # network's as much as the twin's: the twin's must be about as close as the plain's.
    largest = max(g.norm().item() for g in exact)
    names = ["input", *(name for name, _ in net.named_parameters())]
    for name, grad, grad_plain, grad_fp32 in zip(names, grads, grads_plain, exact, strict=True):
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        plain_error = (grad_plain - grad_fp32).norm().item()
        slack = 0.1 * grad_fp32.norm().item() + 1e-3 * largest
        assert (grad - grad_fp32).norm().item() <= 2 * plain_error + slack, name


@pytest.fixture(scope="module", params=["all", "residual", "encoder"])
def scoped_net(request):
    """Normalized after every convolution, up to the decoder, or only in the encoder; a
    linear output, so that no squashing hides a difference."""
    return small_net(request.param, output="linear").eval()


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 45, 61), (1, 3, 9, 14), (1, 3, 5, 7)])
def test_the_accelerated_inference_copy_equals_the_plain_network_at_any_size(scoped_net, shape):
    # (5, 7) is padded to 8x8, the smallest the 9x9 input layer takes: the phases are 4x4.
    torch.manual_seed(1)
    image = torch.rand(shape)
    fast = accelerate(copy.deepcopy(scoped_net), "inference", CPU)
    with torch.no_grad():
        expected = scoped_net(image)
        out = fast(image.contiguous(memory_format=CHANNELS_LAST))
    assert out.shape == expected.shape
    assert_same(out, expected)


def test_prepare_on_the_cpu_gives_the_plain_networks_image():
    net = small_net().eval()
    image = make_photo((45, 61), 2)[None]
    with torch.no_grad():
        expected = net(image).clamp(0, 1)
    assert_same(forward(prepare(net, CPU, torch.float32), image), expected)


def test_each_sample_of_a_batch_is_normalized_by_its_own_statistics(scoped_net):
    torch.manual_seed(2)
    batch = torch.rand(2, 3, 32, 40) * torch.tensor([1.0, 0.2]).view(2, 1, 1, 1)
    fast = prepare(scoped_net, CPU, torch.float32)
    together = forward(fast, batch)
    alone = torch.cat([forward(fast, image[None]) for image in batch])
    assert_same(together, alone)


def test_cpu_inference_puts_the_phase_output_in_place_of_the_last_two_layers(scoped_net):
    fast = accelerate(copy.deepcopy(scoped_net), "inference", CPU)
    assert isinstance(fast.decoder[-1], PhaseOutput)
    assert len(fast.decoder) == len(scoped_net.decoder) - 1
    assert all(isinstance(block, PhaseUpsampleConv) for block in fast.decoder[:-1])


def test_tiles_share_the_phase_outputs_statistics_too():
    fast = prepare(small_net("all"), CPU, torch.float32)
    norm = fast.decoder[-1].norm
    assert isinstance(norm, FastInstanceNorm)
    norm.shared = (torch.zeros(1, 1, 8), torch.ones(1, 1, 8))
    try:
        out = fast(torch.rand(1, 3, 32, 32).contiguous(memory_format=CHANNELS_LAST))
        other = fast(torch.rand(1, 3, 32, 32).contiguous(memory_format=CHANNELS_LAST) * 5)
    finally:
        norm.shared = None
    assert out.shape == other.shape == (1, 3, 32, 32)
    # With statistics fixed, a 5x brighter input is not normalized back: outputs differ.
    assert (out - other).abs().max() > 1e-2


def test_the_training_swap_keeps_every_state_dict_key_and_tensor():
    net = small_net("all")
    twin = accelerate(share_parameters(net), "training", CPU)
    plain_state, twin_state = net.state_dict(), twin.state_dict()
    assert list(twin_state) == list(plain_state)
    assert all(twin_state[k].data_ptr() == v.data_ptr() for k, v in plain_state.items())


def test_the_inference_swap_keeps_the_state_dict_keys_where_no_phase_output_is_used():
    # GPUs, and CPUs where the CPU kernels do not pay, keep the decoder's last two layers.
    net = small_net("all")
    fast = accelerate(copy.deepcopy(net), "inference", "cuda")
    assert list(fast.state_dict()) == list(net.state_dict())


def test_the_inference_swap_keeps_the_state_dict_keys_outside_the_output_layers():
    net = small_net("all")
    fast = accelerate(copy.deepcopy(net), "inference", CPU)
    last_two = tuple(f"decoder.{len(net.decoder) - i}." for i in (1, 2))
    kept = [k for k in net.state_dict() if not k.startswith(last_two)]
    assert [k for k in fast.state_dict() if not k.startswith(last_two)] == kept


def test_accelerate_leaves_the_plain_network_of_a_twin_plain():
    net = small_net("all")
    plain_types = Counter(type(m) for m in net.modules())
    accelerate(share_parameters(net), "training", CPU)
    assert Counter(type(m) for m in net.modules()) == plain_types


def test_an_optimizer_step_on_the_plain_parameters_moves_the_accelerated_twin():
    net = small_net()
    twin = accelerate(share_parameters(net), "training", CPU)
    x = torch.rand(1, 3, 32, 32)
    before = twin(x).detach()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    net(x).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        after, plain = twin(x), net(x)
    assert (after - before).abs().max() > 1e-3
    assert_same(after, plain)


def test_the_twins_gradients_land_on_the_plain_networks_parameters():
    net = small_net()
    twin = accelerate(share_parameters(net), "training", CPU)
    twin(torch.rand(1, 3, 16, 16)).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


# --- when the CPU kernels are swapped in ------------------------------------------------


@pytest.mark.parametrize(
    ("onednn", "capability", "pays"),
    [
        (True, "AVX2", True),
        (True, "AVX512", True),
        (True, "DEFAULT", False),  # x86 without AVX2
        (True, "SVE256", False),  # ARM
        (False, "AVX512", False),  # a torch built without oneDNN
    ],
)
def test_cpu_kernels_pay_on_x86_cpus_with_onednn_avx2_or_avx512_only(
    monkeypatch, onednn, capability, pays
):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: onednn)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert cpu_kernels_pay("cpu") is pays
    assert cpu_kernels_pay(torch.device("cpu")) is pays
    assert cpu_kernels_pay("cuda") is False
    assert cpu_kernels_pay(torch.device("cuda", 0)) is False


def test_where_the_cpu_kernels_pay_training_swaps_in_every_fast_training_module():
    twin = accelerate(share_parameters(small_net("all")), "training", CPU)
    types = {type(m) for m in twin.modules()}
    assert {FastInstanceNorm, CpuTrainingConv2d, PhaseUpsampleConv} <= types
    assert not types & {nn.InstanceNorm2d, nn.Conv2d}
    assert all(m.cpu_training_kernel for m in twin.modules() if isinstance(m, FastInstanceNorm))
    loss = accelerate(PerceptualLoss(nn.Identity(), "x", {"x": 1.0}, WEIGHTS), "training", CPU)
    assert type(loss.gram) is FastGramMatrix


@pytest.mark.parametrize("purpose", ["training", "inference"])
def test_where_the_cpu_kernels_do_not_pay_only_the_fast_instance_norm_is_swapped_in(
    monkeypatch, purpose
):
    monkeypatch.setattr(fast_package, "cpu_kernels_pay", lambda device: False)
    net = small_net("all")
    expected = Counter(type(m) for m in net.modules())
    expected[FastInstanceNorm] = expected.pop(nn.InstanceNorm2d)
    accelerate(net, purpose, CPU)
    assert Counter(type(m) for m in net.modules()) == expected
    assert not any(m.cpu_training_kernel for m in net.modules() if isinstance(m, FastInstanceNorm))
    loss = accelerate(PerceptualLoss(nn.Identity(), "x", {"x": 1.0}, WEIGHTS), purpose, CPU)
    assert type(loss.gram) is GramMatrix
