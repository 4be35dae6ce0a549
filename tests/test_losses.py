"""Gram matrices, each loss term, and the VGG loss network."""

import urllib.error

import pytest
import torch
from torchvision import models

from nst_fast.errors import NstFastError
from nst_fast.losses import network as network_module
from nst_fast.losses.grid import grid_penalty
from nst_fast.losses.network import LossNetwork
from nst_fast.losses.perceptual import PerceptualLoss, gram_matrix, squared_error, total_variation
from nst_fast.losses.vgg import relu_names, vgg_features

from .conftest import SHARED_WEIGHTS, make_photo


def test_gram_matrix_of_known_features():
    # Two channels over a 1x2 map: [1, 2] and [3, 4].
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(f), expected)


def test_gram_matrix_is_fp32_under_autocast():
    f = torch.rand(2, 4, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f)
    assert g.dtype == torch.float32 and g.shape == (2, 4, 4)


def test_total_variation_of_known_images():
    assert total_variation(torch.ones(1, 3, 8, 8)) == 0
    stripes = torch.zeros(1, 1, 2, 4)
    stripes[..., 1::2] = 1.0  # every horizontal neighbour differs by 1, vertical by 0
    assert total_variation(stripes) == pytest.approx(1.0)


def test_squared_error_classic_and_normalized():
    x, target = torch.full((2, 3), 3.0), torch.full((1, 3), 1.0)
    assert squared_error(x, target, normalize=False) == pytest.approx(4.0)
    assert squared_error(x, target, normalize=True) == pytest.approx(4.0)  # 12 / 3
    assert squared_error(x * 10, target * 10, normalize=True) == pytest.approx(4.0)


def test_relu_names_follow_gatys_naming():
    names = relu_names(vgg_features("vgg16"))
    assert names["relu1_2"] == 3 and names["relu2_2"] == 8
    assert names["relu3_3"] == 15 and names["relu4_3"] == 22
    assert len(names) == 13
    names19 = relu_names(vgg_features("vgg19"))
    assert names19["relu4_2"] == 22 and names19["relu5_1"] == 29 and len(names19) == 16


def test_loss_network_is_truncated_after_the_deepest_layer_and_frozen():
    net = LossNetwork("vgg16", ["relu1_2", "relu2_2"], weights="random")
    assert len(net.features) == 9
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    out = net(torch.rand(1, 3, 32, 32))
    assert set(out) == {"relu1_2", "relu2_2"}
    assert out["relu2_2"].shape == (1, 128, 16, 16)
    assert set(net(torch.rand(1, 3, 32, 32), upto="relu1_2")) == {"relu1_2"}


def test_loss_network_applies_imagenet_normalization_itself():
    net = LossNetwork("vgg16", ["relu1_1"], weights="random")
    image = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    conv = net.features[0]
    # The normalized mean image is zero, so the first conv sees only its bias.
    expected = torch.relu(conv.bias).view(1, -1, 1, 1).expand(1, -1, 4, 4)
    assert torch.allclose(net(image)["relu1_1"], expected, atol=1e-5)


def test_unknown_loss_layer_lists_the_valid_names():
    with pytest.raises(NstFastError, match=r"unknown loss layer relu9_9 for vgg16.*relu4_3"):
        LossNetwork("vgg16", ["relu9_9"], weights="random")


def test_unknown_network_names_the_choices():
    with pytest.raises(NstFastError, match="vgg19"):
        LossNetwork("alexnet", ["relu1_1"], weights="random")


def test_failed_weight_download_names_the_offline_override(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(models.VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(NstFastError, match=r"loss.weights=PATH"):
        network_module.LossNetwork("vgg16", ["relu1_2"], weights="imagenet")


def test_local_weights_with_the_wrong_layout_are_refused(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(
        NstFastError, match=r"not the layout of torchvision's vgg16\(\)\.features"
    ) as err:
        LossNetwork("vgg16", ["relu1_2"], weights=str(path))
    assert 'Missing key(s) in state_dict: "0.weight", "0.bias", ' in str(err.value)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(NstFastError, match=r"nothing\.pt: no such file"):
        LossNetwork("vgg16", ["relu1_2"], weights=str(tmp_path / "nothing.pt"))


def test_local_weights_round_trip(tmp_path):
    features = vgg_features("vgg16")
    path = tmp_path / "features.pt"
    torch.save(features.state_dict(), path)
    net = LossNetwork("vgg16", ["relu1_2"], weights=str(path))
    assert torch.equal(net.features[0].weight, features[0].weight)


@pytest.mark.skipif(not SHARED_WEIGHTS.exists(), reason="../shared/weights not present")
def test_real_imagenet_weights_load_and_respond_to_images():
    net = LossNetwork("vgg16", ["relu1_2", "relu4_3"], weights=str(SHARED_WEIGHTS))
    out = net(torch.rand(1, 3, 64, 64))
    assert out["relu4_3"].shape == (1, 512, 8, 8)
    assert out["relu1_2"].mean() > 1.0  # Caffe-scale activations, unlike a random init


def make_loss(**weights: float) -> PerceptualLoss:
    torch.manual_seed(0)
    net = LossNetwork("vgg16", ["relu1_2", "relu2_2"], weights="random")
    weights = {"content": 1.0, "style": 1.0, "tv": 0.0, **weights}
    return PerceptualLoss(net, "relu2_2", {"relu1_2": 1.0, "relu2_2": 0.5}, weights)


def test_perceptual_loss_is_zero_for_the_content_itself_in_the_style_image():
    loss = make_loss()
    image = torch.rand(1, 3, 32, 32)
    loss.set_style(image)
    terms = loss(image, image)
    assert terms["content"] < 1e-10 and terms["style"] < 1e-10


def test_perceptual_loss_combines_weighted_terms_and_has_gradients():
    loss = make_loss(content=2.0, style=3.0, tv=0.5, grid_penalty=7.0)
    loss.set_style(torch.rand(1, 3, 40, 40))
    output = torch.rand(2, 3, 32, 32, requires_grad=True)
    terms = loss(output, torch.rand(2, 3, 32, 32))
    expected = (
        2 * terms["content"] + 3 * terms["style"] + 0.5 * terms["tv"] + 7 * terms["grid_penalty"]
    )
    assert torch.allclose(terms["total"], expected)
    terms["total"].backward()
    assert output.grad is not None and output.grad.abs().sum() > 0


def test_each_style_layers_unweighted_term_is_reported_beside_their_weighted_sum():
    loss = make_loss()  # relu1_2 weighted 1.0, relu2_2 0.5
    loss.set_style(torch.rand(1, 3, 40, 40))
    terms = loss(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert {"style/relu1_2", "style/relu2_2"} <= set(terms)
    expected = terms["style/relu1_2"] + 0.5 * terms["style/relu2_2"]
    assert torch.allclose(terms["style"], expected)


def test_normalized_loss_does_not_depend_on_the_activation_scale():
    plain, scaled = make_loss(), make_loss()
    # Scale every activation by 100: the first conv's weights, and every bias, since
    # ReLU and max-pooling are positively homogeneous.
    with torch.no_grad():
        scaled.network.features[0].weight.mul_(100)
        for layer in scaled.network.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.bias.mul_(100)
    style, output, content = (
        torch.rand(1, 3, 32, 32),
        torch.rand(2, 3, 32, 32),
        torch.rand(2, 3, 32, 32),
    )
    plain.set_style(style)
    scaled.set_style(style)
    a, b = plain(output, content), scaled(output, content)
    assert torch.allclose(a["content"], b["content"], rtol=1e-4)
    assert torch.allclose(a["style"], b["style"], rtol=1e-4)


def test_set_style_is_required():
    with pytest.raises(RuntimeError, match="set_style"):
        make_loss()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_the_grid_penalty_sees_a_faint_period_4_grid_and_its_gradient_removes_it():
    g = torch.Generator().manual_seed(0)
    photo = (make_photo((64, 64), 0) + 0.05 * torch.randn(3, 64, 64, generator=g))[None]
    grid = torch.zeros(64, 64)
    grid[::4] = grid[:, ::4] = 0.03  # one-pixel lines every 4 pixels, barely visible
    assert grid_penalty(photo + grid) > 10 * grid_penalty(photo)
    image = (photo + grid).requires_grad_()
    optimizer = torch.optim.SGD([image], lr=5.0)
    for _ in range(20):
        optimizer.zero_grad()
        grid_penalty(image).backward()
        optimizer.step()
    assert grid_penalty(image) < grid_penalty(photo)
    # What changed is the grid's pattern (all but its mean brightness), and little else.
    change = image.detach() - photo
    pattern = grid - grid.mean()
    assert (change - change.mean()).abs().mean() < 0.2 * pattern.abs().mean()


def test_a_period_8_grid_hidden_from_the_period_4_penalty_is_seen_at_period_8():
    # What a network with four widths (three stride-2 stages) can draw: rows of +a and -a
    # 4 pixels apart, so every row phase mod 4 averages to zero.
    g = torch.Generator().manual_seed(0)
    photo = (make_photo((64, 64), 0) + 0.05 * torch.randn(3, 64, 64, generator=g))[None]
    grid = torch.zeros(64, 64)
    grid[::8], grid[4::8] = 0.03, -0.03
    assert grid_penalty(photo + grid, period=4) < 1.5 * grid_penalty(photo, period=4)
    assert grid_penalty(photo + grid, period=8) > 4 * grid_penalty(photo, period=8)


@pytest.mark.parametrize(
    ("style_layers", "message"),
    [({}, "loss.style_layers: empty"), ({"relu2_2": -1.0}, "relu2_2=-1.0: expected 0 or more")],
)
def test_style_layers_need_one_layer_and_no_negative_weight(style_layers, message):
    from nst_fast.config import compose
    from nst_fast.losses.build import build_criterion

    loss = {**compose(["loss.weights=random"]).loss, "style_layers": style_layers}
    with pytest.raises(NstFastError, match=message):
        build_criterion(loss, {})


def test_a_style_image_too_small_for_the_loss_network_is_refused():
    from nst_fast.styles import load_style_image

    with pytest.raises(NstFastError, match=r"style\.size=8: expected 16 pixels or more"):
        load_style_image("generated:mosaic", 8)
