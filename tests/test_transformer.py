"""The transform network keeps the image size and uses instance normalization."""

import pytest
import torch
from torch import nn

from nst_fast.models.transformer import (
    InstanceNorm2d,
    TransformerConfig,
    TransformerNet,
    conv2d,
    transformer_net,
    upsample_conv2d,
)


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (64, 30), (17, 18)])
def test_output_has_the_input_size_even_for_sizes_not_a_multiple_of_four(size):
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_default_is_johnsons_architecture_with_instance_norm():
    net = TransformerNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # 3 encoder convs + 5 residual blocks x 2 + 2 upsampling convs + output conv
    assert len(convs) == 3 + 10 + 2 + 1
    assert convs[0].kernel_size == (9, 9) and convs[-1].kernel_size == (9, 9)
    assert [c.stride for c in convs[:3]] == [(1, 1), (2, 2), (2, 2)]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 15
    assert all(m.affine for m in net.modules() if isinstance(m, nn.InstanceNorm2d))
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in net.modules()) == 16
    assert 1.6e6 < sum(p.numel() for p in net.parameters()) < 1.7e6


def test_instance_norm_makes_the_output_independent_of_the_batch():
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1).eval()
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    together = net(torch.cat([a, b]))
    assert torch.allclose(together[0], net(a)[0], atol=1e-5)


def test_batch_norm_is_an_option():
    net = TransformerNet(TransformerConfig(channels=[8, 16], residual_blocks=1, norm="batch"))
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())


def test_unknown_norm_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="instance"):
        TransformerNet(TransformerConfig(norm="layer"))


def test_norm_scope_encoder_keeps_norms_only_before_the_residual_blocks():
    # No per-channel statistics after the encoder: nothing to plant a spike in (StyleGAN2's
    # "droplets"; docs/quality/findings.md, "The blown-out glow").
    net = TransformerNet(TransformerConfig(norm_scope="encoder"))
    norms = [n for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms == ["encoder.0.2", "encoder.1.2", "encoder.2.2"]
    assert net(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)


def test_norm_scope_residual_leaves_only_the_upsampling_decoder_unnormalized():
    net = TransformerNet(TransformerConfig(residual_blocks=2, norm_scope="residual"))
    norms = [n for n, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d)]
    assert [n for n in norms if n.startswith("decoder")] == []
    assert len(norms) == 3 + 2 * 2  # encoder, then two per residual block
    assert net(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)


def test_unknown_norm_scope_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="encoder"):
        TransformerNet(TransformerConfig(norm_scope="decoder"))


def load_as_written_before(net: TransformerNet, option: str, folder):
    """``net`` saved, and loaded back, as nst-fast wrote it before ``option`` existed."""
    from nst_fast.export import load_model, save_model

    path = save_model(net, folder / "model.pt", style="s", step=1)
    payload = torch.load(path, weights_only=True)
    del payload["arch"][option]
    torch.save(payload, path)
    return load_model(path)


def test_models_saved_before_the_norm_scope_load_with_norms_everywhere(tmp_path):
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1, norm_scope="all")
    loaded, info = load_as_written_before(net, "norm_scope", tmp_path)
    assert loaded.config.norm_scope == "all" and info.arch["norm_scope"] == "all"


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsampling_convolution_equals_upsample_pad_conv_in_value_and_gradient(memory_format):
    conv = nn.Conv2d(6, 4, 3)
    x = torch.randn(2, 6, 7, 10).contiguous(memory_format=memory_format).requires_grad_()
    plain = conv(nn.functional.pad(nn.Upsample(scale_factor=2)(x), (1, 1, 1, 1), mode="reflect"))
    fused = upsample_conv2d(x, conv)
    assert fused.shape == plain.shape == (2, 4, 14, 20)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    grads = [torch.autograd.grad(y.square().sum(), [x, conv.weight]) for y in (fused, plain)]
    for g_fused, g_plain in zip(*grads, strict=True):
        torch.testing.assert_close(g_fused, g_plain, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_cpu_training_convolution_has_conv2d_values_and_gradients(stride):
    x = torch.randn(2, 6, 11, 9).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(4)
    results = []
    for conv in (conv2d, nn.functional.conv2d):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        y = conv(*leaves, stride)
        results.append((y, *torch.autograd.grad(y.square().sum(), leaves)))
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_cpu_training_convolution_under_bf16_autocast_matches_autocasts_own_conv2d():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 11, 9).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 6, 3, 3), torch.randn(4)
    results = []
    for conv in (conv2d, nn.functional.conv2d):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(*leaves)
        results.append((y, *torch.autograd.grad(y.float().square().sum(), leaves)))
    assert results[0][0].dtype == torch.bfloat16
    assert [g.dtype for g in results[0][1:]] == [torch.float32] * 3  # the leaves' own dtype
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours.float(), reference.float(), atol=0.1, rtol=0.02)


def test_the_network_trains_channels_last_under_cpu_bf16_autocast():
    torch.manual_seed(0)
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1, norm_scope="residual")
    net = net.to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    y.float().square().mean().backward()
    assert y.shape == x.shape
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_instance_norm_has_torchs_values_and_gradients_in_either_layout(memory_format):
    torch.manual_seed(0)
    x = (torch.randn(3, 5, 7, 6) * 4 + 2).contiguous(memory_format=memory_format)
    norm = InstanceNorm2d(5, affine=True)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.uniform_(norm.bias, -1, 1)
    upstream = torch.randn(3, 5, 7, 6)
    results = []
    for fn in (norm, lambda t: nn.functional.instance_norm(t, weight=norm.weight, bias=norm.bias)):
        leaf = x.clone().requires_grad_()
        y = fn(leaf)
        results.append(
            (y, *torch.autograd.grad((y * upstream).sum(), [leaf, norm.weight, norm.bias]))
        )
    if memory_format == torch.channels_last:
        assert results[0][1].is_contiguous(memory_format=torch.channels_last)
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_upsampling_convolution_trains_after_running_in_inference_mode():
    conv = nn.Conv2d(6, 4, 3)
    x = torch.randn(1, 6, 3, 13)  # a size no other test uses: nothing cached before
    with torch.inference_mode():
        upsample_conv2d(x, conv)  # previews and sanity checks run like this mid-training
    upsample_conv2d(x, conv).sum().backward()
    assert conv.weight.grad is not None


def test_upsampling_convolution_keeps_channels_last():
    conv = nn.Conv2d(6, 4, 3).to(memory_format=torch.channels_last)
    x = torch.randn(1, 6, 5, 8).contiguous(memory_format=torch.channels_last)
    assert upsample_conv2d(x, conv).is_contiguous(memory_format=torch.channels_last)


def test_tanh_output_stays_inside_the_image_range_and_survives_export(tmp_path):
    from nst_fast.export import load_model, save_model

    net = transformer_net(channels=(8, 16, 32), residual_blocks=1, output="tanh")
    with torch.no_grad():
        net.decoder[-1][-1].bias.fill_(50.0)  # a last layer far out of range
        y = net(torch.rand(1, 3, 20, 24))
    assert y.min() >= 0 and y.max() <= 1
    save_model(net, tmp_path / "model.pt", style="s", step=1)
    loaded, info = load_model(tmp_path / "model.pt")
    assert info.arch["output"] == "tanh" and loaded.config.output == "tanh"


def test_models_saved_before_the_output_choice_load_with_a_linear_output(tmp_path):
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1, output="linear")
    loaded, info = load_as_written_before(net, "output", tmp_path)
    assert loaded.config.output == "linear" and info.arch["output"] == "linear"
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_unknown_output_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="tanh"):
        TransformerNet(TransformerConfig(output="sigmoid"))


def test_upsampling_convolution_keeps_a_contiguous_input_contiguous():
    conv = nn.Conv2d(6, 4, 3)
    assert upsample_conv2d(torch.randn(1, 6, 5, 8), conv).is_contiguous()


def test_the_network_compiles_whole_and_trains_channels_last():
    torch.manual_seed(0)
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    net = net.to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(net, fullgraph=True)  # fullgraph: no graph breaks allowed
    grads = []
    for model in (net, compiled):
        net.zero_grad()
        y = model(x)
        y.square().sum().backward()
        grads.append((y.detach(), net.decoder[0][2].weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-3, rtol=1e-3)
