"""The transform network as the paper draws it, in plain torch modules: sizes, Johnson et
al.'s architecture, norms and where they go, output choices, and loading older models.

The faster modules swapped in by ``nst_fast.fast.accelerate`` are tested in test_fast.py.
"""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from nst_fast.models.transformer import (
    ConditionalInstanceNorm2d,
    LowPass,
    SmoothUpsample,
    TransformerConfig,
    TransformerNet,
    default_transformer_config,
    transformer_net,
)
from nst_fast.temporal import shift_error
from tests.conftest import make_texture


def small_net(**overrides) -> TransformerNet:
    """A network as ``nst-fast train model.channels=[8,16,32] model.residual_blocks=1``
    builds it: the trained defaults at a test's size."""
    return transformer_net(channels=[8, 16, 32], residual_blocks=1, **overrides)


def norm_names(net: nn.Module, kind: type[nn.Module] = nn.InstanceNorm2d) -> list[str]:
    return [name for name, m in net.named_modules() if isinstance(m, kind)]


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (64, 30), (17, 18)])
def test_output_has_the_input_size_even_for_sizes_not_a_multiple_of_four(size):
    net = small_net()
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_default_is_johnsons_architecture_with_norms_up_to_the_residual_blocks():
    net = transformer_net()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # 3 encoder convs + 5 residual blocks x 2 + 2 upsampling convs + output conv
    assert len(convs) == 3 + 10 + 2 + 1
    assert convs[0].kernel_size == (9, 9) and convs[-1].kernel_size == (9, 9)
    assert [c.stride for c in convs[:3]] == [(1, 1), (2, 2), (2, 2)]
    assert [c.out_channels for c in convs[:3]] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs[3:-1])
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    upsamples = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert [(m.scale_factor, m.mode) for m in upsamples] == [(2.0, "nearest")] * 2
    # norm_scope "residual": after the 3 encoder convs and both convs of each residual
    # block, none in the upsampling decoder.
    norms = norm_names(net)
    assert len(norms) == 3 + 5 * 2
    assert not any(name.startswith("decoder") for name in norms)
    assert all(m.affine for m in net.modules() if isinstance(m, nn.InstanceNorm2d))
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in net.modules()) == 16
    assert 1.6e6 < sum(p.numel() for p in net.parameters()) < 1.7e6
    assert net.config.output == "tanh"


def test_default_config_is_the_one_nst_fast_train_composes():
    from nst_fast.config import compose

    composed = OmegaConf.to_container(compose([]).model, resolve=True)
    assert default_transformer_config() == TransformerConfig.of(composed)


def test_keyword_overrides_change_only_the_named_fields():
    from nst_fast.config import compose

    overrides = ["model.channels=[8,16,32]", "model.norm_scope=all"]
    composed = OmegaConf.to_container(compose(overrides).model, resolve=True)
    config = default_transformer_config(channels=(8, 16, 32), norm_scope="all")
    assert config == TransformerConfig.of(composed)
    assert isinstance(config.channels, list)  # as stored in exported files


def test_the_config_has_no_defaults_of_its_own():
    # The values nst-fast trains with live in conf/model/johnson.yaml only.
    with pytest.raises(TypeError):
        TransformerConfig()  # type: ignore[call-arg]


def test_instance_norm_makes_the_output_independent_of_the_batch():
    net = small_net().eval()
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    together = net(torch.cat([a, b]))
    torch.testing.assert_close(together[:1], net(a), rtol=1e-4, atol=1e-5)


def test_batch_norm_is_an_option():
    net = transformer_net(channels=[8, 16], residual_blocks=1, norm="batch")
    assert len(norm_names(net, nn.BatchNorm2d)) == 2 + 2  # encoder, residual block
    assert not norm_names(net)


def test_unknown_norm_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="instance"):
        small_net(norm="layer")


def test_norm_scope_all_normalizes_every_convolution_but_the_last():
    net = small_net(norm_scope="all")
    assert norm_names(net) == [
        "encoder.0.2",
        "encoder.1.2",
        "encoder.2.2",
        "residuals.0.body.0.2",
        "residuals.0.body.1.2",
        "decoder.0.3",  # after [upsample, pad, conv]
        "decoder.1.3",
    ]
    assert net(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)


def test_norm_scope_encoder_keeps_norms_only_before_the_residual_blocks():
    # No per-channel statistics after the encoder: nothing to plant a spike in (StyleGAN2's
    # "droplets"; docs/quality/findings.md, "The blown-out glow").
    net = small_net(norm_scope="encoder")
    assert norm_names(net) == ["encoder.0.2", "encoder.1.2", "encoder.2.2"]
    assert net(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)


def test_norm_scope_residual_leaves_only_the_upsampling_decoder_unnormalized():
    net = transformer_net(channels=[8, 16, 32], residual_blocks=2, norm_scope="residual")
    norms = norm_names(net)
    assert [n for n in norms if n.startswith("decoder")] == []
    assert len(norms) == 3 + 2 * 2  # encoder, then two per residual block
    assert net(torch.rand(1, 3, 32, 40)).shape == (1, 3, 32, 40)


def test_unknown_norm_scope_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="encoder"):
        small_net(norm_scope="decoder")


def test_tanh_output_stays_inside_the_image_range_and_survives_export(tmp_path):
    from nst_fast.export import load_model, save_model

    net = small_net(output="tanh")
    with torch.no_grad():
        net.decoder[-1][-1].bias.fill_(50.0)  # a last layer far out of range
        y = net(torch.rand(1, 3, 20, 24))
    assert y.min() >= 0 and y.max() <= 1
    save_model(net, tmp_path / "model.pt", style="s", step=1)
    loaded, info = load_model(tmp_path / "model.pt")
    assert info.arch["output"] == "tanh" and loaded.config.output == "tanh"


def test_linear_output_is_the_last_convolution_unsquashed():
    net = small_net(output="linear").eval()
    with torch.no_grad():
        net.decoder[-1][-1].bias.fill_(50.0)
        y = net(torch.rand(1, 3, 20, 24))
    assert y.min() > 1  # the bias alone moves it out of [0, 1]


def test_unknown_output_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="tanh"):
        small_net(output="sigmoid")


def load_as_written_before(net: TransformerNet, option: str, folder):
    """``net`` saved, and loaded back, as nst-fast wrote it before ``option`` existed."""
    from nst_fast.export import load_model, save_model

    path = save_model(net, folder / "model.pt", style="s", step=1)
    payload = torch.load(path, weights_only=True)
    del payload["arch"][option]
    torch.save(payload, path)
    return load_model(path)


def test_models_saved_before_the_norm_scope_load_with_norms_everywhere(tmp_path):
    net = small_net(norm_scope="all")
    loaded, info = load_as_written_before(net, "norm_scope", tmp_path)
    assert loaded.config.norm_scope == "all" and info.arch["norm_scope"] == "all"
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_models_saved_before_the_output_choice_load_with_a_linear_output(tmp_path):
    net = small_net(output="linear")
    loaded, info = load_as_written_before(net, "output", tmp_path)
    assert loaded.config.output == "linear" and info.arch["output"] == "linear"
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_models_saved_before_anti_aliasing_load_with_plain_strides_and_nearest_upsampling(
    tmp_path,
):
    net = small_net()
    loaded, info = load_as_written_before(net, "antialias", tmp_path)
    assert loaded.config.antialias is False and info.arch["antialias"] is False
    assert not any(isinstance(m, LowPass) for m in loaded.modules())


def test_antialiased_models_saved_before_the_filter_choice_load_with_three_taps(tmp_path):
    # The first anti-aliased networks: the [1, 2, 1] filter and plain bilinear upsampling.
    net = small_net(antialias=True, antialias_taps=3)
    loaded, info = load_as_written_before(net, "antialias_taps", tmp_path)
    assert info.arch["antialias_taps"] == 3
    assert [m.kernel.shape[-1] for m in loaded.modules() if isinstance(m, LowPass)] == [3, 3]
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x), net.eval()(x))


# --- anti-aliasing (model.antialias) ----------------------------------------------------


@pytest.mark.parametrize("taps", [3, 5])
def test_the_low_pass_flattens_a_checkerboard_and_keeps_a_flat_map(taps):
    # A checkerboard is the finest pattern: what a stride of 2 would fold back whole.
    ys, xs = torch.meshgrid(torch.arange(10), torch.arange(12), indexing="ij")
    board = ((ys + xs) % 2).float().expand(1, 2, 10, 12)
    low = LowPass(2, padding=0, taps=taps)
    torch.testing.assert_close(low(board), torch.full((1, 2, 10, 12), 0.5))
    torch.testing.assert_close(low(torch.full((1, 2, 5, 6), 0.3)), torch.full((1, 2, 5, 6), 0.3))
    # padding: the convolution's own, reflected, around the filtered map
    assert LowPass(2, padding=1, taps=taps)(board).shape == (1, 2, 12, 14)


def test_smooth_upsampling_interpolates_with_the_binomial_filter_a_tap_longer():
    # One lit pixel at (3, 3) of an 8x8 map; x2 upsampling puts its centre between output
    # pixels 6 and 7. Three taps: bilinear, [1, 3, 3, 1] / 4 a side around it; five taps:
    # [1, 5, 10, 10, 5, 1] / 16 (rows of Pascal's triangle, x2 for the doubled grid).
    impulse = torch.zeros(1, 1, 8, 8)
    impulse[..., 3, 3] = 1.0
    for taps, row, start in ((3, [1, 3, 3, 1], 5), (5, [1, 5, 10, 10, 5, 1], 4)):
        side = torch.tensor(row, dtype=torch.float32) / (sum(row) / 2)
        expected = torch.zeros(1, 1, 16, 16)
        expected[..., start : start + len(row), start : start + len(row)] = side[:, None] * side
        torch.testing.assert_close(SmoothUpsample(1, taps)(impulse), expected)


@pytest.mark.parametrize("taps", [3, 5])
def test_antialias_filters_before_each_strided_convolution_and_upsamples_smoothly(taps):
    net = small_net(antialias=True, antialias_taps=taps)
    strided = [block for block in net.encoder if block[1].stride == (2, 2)]
    assert len(strided) == 2 and all(isinstance(block[0], LowPass) for block in strided)
    assert [block[0].kernel.shape[-1] for block in strided] == [taps, taps]
    upsamples = [block[0] for block in net.decoder[:2]]
    assert all(isinstance(m, SmoothUpsample) for m in upsamples)
    assert not any(isinstance(m, nn.Upsample) for m in net.modules())


def test_the_antialias_filter_length_must_be_odd_and_at_least_three():
    for taps in (1, 4):
        with pytest.raises(ValueError, match=f"model.antialias_taps={taps}: expected an odd"):
            small_net(antialias=True, antialias_taps=taps)


def test_an_antialiased_network_has_the_plain_ones_parameters_under_the_same_names():
    # Its filters are fixed, not learnt, and not saved.
    plain, smooth = small_net(), small_net(antialias=True)
    assert {k: v.shape for k, v in smooth.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_an_antialiased_network_follows_a_photo_moved_by_less_than_its_stride(seed):
    # The plain network re-draws its output on its 4 px grid: a photo moved by 1 or 2 px
    # gives a different picture, one moved by 4 px the same one moved. With the same
    # weights, the anti-aliased network's output moves with the photo far more closely,
    # and more so with the longer filter.
    torch.manual_seed(seed)
    plain = small_net().eval()
    nets = {"plain": plain}
    for taps in (3, 5):
        nets[taps] = small_net(antialias=True, antialias_taps=taps).eval()
        nets[taps].load_state_dict(plain.state_dict())
    photo = make_texture((64, 80), seed)
    with torch.no_grad():
        error = {
            (name, shift): shift_error(net, photo, shift, size=64)
            for name, net in nets.items()
            for shift in (1, 2, 4)
        }
    for shift in (1, 2):
        assert error[3, shift] < 0.5 * error["plain", shift]
        assert error[5, shift] < error[3, shift]
    assert error["plain", 4] < 0.5 * error["plain", 1]


@pytest.mark.slow  # minutes of compilation on a small CPU
def test_the_network_compiles_whole_and_trains_channels_last():
    # What training with compile=true runs: torch.compile of the plain modules.
    torch.manual_seed(0)
    net = small_net().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(net, fullgraph=True)  # fullgraph: no graph breaks allowed
    results = []
    for model in (net, compiled):
        net.zero_grad()
        y = model(x)
        y.square().sum().backward()
        results.append((y.detach(), net.decoder[0][2].weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-3, rtol=1e-3)


# --- several styles in one network (Dumoulin et al. 2017) -------------------------------


def multi_style_net(styles: int = 3, **overrides) -> TransformerNet:
    """A small network of several styles whose conditional norms differ per style."""
    torch.manual_seed(0)
    net = TransformerNet(
        default_transformer_config(channels=[8, 16, 32], residual_blocks=1, **overrides), styles
    )
    for norm in net.modules():
        if isinstance(norm, ConditionalInstanceNorm2d):
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.5, 0.5)
    return net


def instance_norm_by_hand(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    mean = x.mean((2, 3), keepdim=True)
    var = x.var((2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight[:, None, None] + bias[:, None, None]


def test_conditional_norm_with_one_style_is_ulyanovs_instance_norm():
    torch.manual_seed(0)
    plain = nn.InstanceNorm2d(5, affine=True)
    nn.init.uniform_(plain.weight, 0.5, 1.5)
    nn.init.uniform_(plain.bias, -0.5, 0.5)
    conditional = ConditionalInstanceNorm2d(5, styles=1)
    conditional.load_state_dict({"weight": plain.weight[None], "bias": plain.bias[None]})
    x = torch.randn(2, 5, 6, 7) * 3 + 1
    torch.testing.assert_close(conditional(x, torch.ones(2, 1)), plain(x))


def test_blending_two_styles_blends_their_scales_and_shifts():
    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2d(4, styles=2)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = torch.randn(1, 4, 5, 5)
    weight = 0.3 * norm.weight[0] + 0.7 * norm.weight[1]
    bias = 0.3 * norm.bias[0] + 0.7 * norm.bias[1]
    expected = instance_norm_by_hand(x, weight, bias)
    torch.testing.assert_close(norm(x, torch.tensor([[0.3, 0.7]])), expected)


def test_each_image_of_a_batch_takes_its_own_style():
    net = multi_style_net(3)
    x = torch.rand(2, 3, 24, 20)
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    together = net(x, rows)
    torch.testing.assert_close(together[0], net(x[:1], rows[0])[0])
    torch.testing.assert_close(together[1], net(x[1:], rows[1])[0])
    assert not torch.allclose(together[1], net(x[1:], rows[0])[0], atol=1e-3)


@pytest.mark.parametrize("weights", [[0.0, 1.0, 0.0], [0.2, 0.5, 0.3]])
def test_the_single_style_network_of_a_blend_stylizes_as_the_network_given_those_weights(weights):
    net = multi_style_net(3, norm_scope="all").eval()
    single = net.single_style(torch.tensor(weights))
    assert single.styles == 1
    assert not any(isinstance(m, ConditionalInstanceNorm2d) for m in single.modules())
    x = torch.rand(2, 3, 24, 20)
    torch.testing.assert_close(single(x), net(x, torch.tensor(weights)))


def test_a_network_of_one_style_keeps_its_parameter_names_and_shapes():
    net = small_net()
    one = TransformerNet(net.config, styles=1)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in one.state_dict().items()} == shapes
    assert norm_names(one, ConditionalInstanceNorm2d) == []


def test_style_weights_are_required_exactly_when_the_network_has_several_styles():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="style weights"):
        multi_style_net(2)(x)
    with pytest.raises(ValueError, match="style weights"):
        small_net()(x, torch.ones(1))


def test_several_styles_need_instance_norms():
    with pytest.raises(ValueError, match=r"model\.norm=instance"):
        TransformerNet(default_transformer_config(norm="batch"), styles=2)
