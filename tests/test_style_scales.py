"""The style term on a pyramid (loss.style_scales): Gram matching on the output and the style
image shrunk 2x, 4x, ..., and the coarse-scale style figures of ``evaluate`` and validation.

Expected values are computed here from the plain pieces (``gram_matrix``, the loss
network, torch's own anti-aliased resize), never by the pyramid code under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_fast.config import compose
from nst_fast.errors import NstFastError
from nst_fast.evaluate import scores
from nst_fast.export import load_model
from nst_fast.losses.build import build_criterion, check_same_style_scales, check_scale_sizes
from nst_fast.losses.network import LossNetwork
from nst_fast.losses.perceptual import PerceptualLoss, gram_matrix
from nst_fast.training.train import train

from .conftest import ckpt_step, make_photo, tiny_overrides

LAYERS = {"relu1_2": 1.0, "relu2_2": 0.5}
WEIGHTS = {"content": 1.0, "style": 1.0, "tv": 0.0}


def loss_network() -> LossNetwork:
    torch.manual_seed(0)
    return LossNetwork("vgg16", ["relu1_2", "relu2_2"], weights="random")


def shrunk(image: torch.Tensor, factor: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    return F.interpolate(image, size=(h // factor, w // factor), mode="bilinear", antialias=True)


def gram_errors(network, image: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's Gram error by hand: |G(image) - G(style)|^2 / |G(style)|^2, per sample."""
    features, targets = network(image), network(style)
    errors = {}
    for name in LAYERS:
        g, t = gram_matrix(features[name]), gram_matrix(targets[name])
        errors[name] = ((g - t).pow(2).sum((1, 2)) / t.pow(2).sum((1, 2))).mean()
    return errors


def by_layer_weight(errors: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(LAYERS[name] * error for name, error in errors.items())


# Sizes that VGG still takes at a quarter of them (16 px and more).
STYLE = make_photo((72, 96), 5)[None]
OUTPUT = torch.stack([make_photo((64, 80), 6), make_photo((64, 80), 7)])
CONTENT = torch.stack([make_photo((64, 80), 8), make_photo((64, 80), 9)])


def test_a_single_full_size_scale_is_the_style_term_of_gatys_and_johnson_exactly():
    network = loss_network()
    single = PerceptualLoss(network, "relu2_2", LAYERS, WEIGHTS, style_scales={1: 1.0})
    single.set_style(STYLE)
    terms = single(OUTPUT, CONTENT)
    expected = by_layer_weight(gram_errors(network, OUTPUT, STYLE))
    torch.testing.assert_close(terms["style"], expected, rtol=1e-6, atol=0)
    assert not any(name.startswith("style@") for name in terms)


def test_the_default_style_term_weighs_full_size_as_much_as_half_and_quarter_together():
    loss = compose(["loss.weights=random"]).loss
    criterion = build_criterion(loss, {})
    assert criterion.style_scales == {1.0: 2.0, 2.0: 1.0, 4.0: 1.0}


def test_experiment_johnson2016_keeps_the_papers_single_full_size_style_term():
    loss = compose(["experiment=johnson2016", "loss.weights=random"]).loss
    assert build_criterion(loss, {}).style_scales == {1.0: 1.0}


def test_the_pyramids_style_term_is_the_weighted_mean_of_each_sizes_gram_error():
    network = loss_network()
    pyramid = PerceptualLoss(network, "relu2_2", LAYERS, WEIGHTS, style_scales={1: 1.0, 2: 3.0})
    pyramid.set_style(STYLE)
    output = OUTPUT.clone().requires_grad_(True)
    terms = pyramid(output, CONTENT)
    full = by_layer_weight(gram_errors(network, OUTPUT, STYLE))
    half = by_layer_weight(gram_errors(network, shrunk(OUTPUT, 2), shrunk(STYLE, 2)))
    torch.testing.assert_close(terms["style@1/2"], half, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["style"], (full + 3 * half) / 4, rtol=1e-5, atol=0)
    terms["total"].backward()  # the half-size term reaches the output's pixels
    assert output.grad is not None and output.grad.abs().sum() > 0


def test_evaluate_reports_the_style_error_at_half_and_quarter_size_and_per_layer():
    network = loss_network()
    criterion = PerceptualLoss(network, "relu2_2", LAYERS, WEIGHTS)
    criterion.set_style(STYLE)
    image, content = OUTPUT[:1], CONTENT[:1]
    with torch.no_grad():
        figures = scores(criterion, image, content)
    for factor in (2, 4):
        by_hand = gram_errors(network, shrunk(image, factor), shrunk(STYLE, factor))
        torch.testing.assert_close(
            figures[f"style@1/{factor}"], by_layer_weight(by_hand), rtol=1e-5, atol=0
        )
        for name, error in by_hand.items():
            torch.testing.assert_close(
                figures[f"style@1/{factor}/{name}"], error, rtol=1e-5, atol=0
            )
    # A coarse figure sees what the full-size one does not: the same shapes, 4x larger.
    assert figures["style@1/4"] != figures["style"]


def test_a_coarse_figure_is_left_out_where_the_shrunk_image_would_be_too_small_for_vgg():
    criterion = PerceptualLoss(loss_network(), "relu2_2", LAYERS, WEIGHTS)
    criterion.set_style(STYLE)
    image = make_photo((40, 48), 6)[None]  # 20 px at half size, 10 at a quarter
    with torch.no_grad():
        figures = scores(criterion, image, image)
    assert "style@1/2" in figures and "style@1/2/relu1_2" in figures
    assert not any(name.startswith("style@1/4") for name in figures)


def test_the_pyramid_runs_under_cpu_bf16_autocast():
    # PyTorch has no bf16 anti-aliased resize on the CPU: the pyramid resizes in fp32.
    network = loss_network()
    pyramid = PerceptualLoss(network, "relu2_2", LAYERS, WEIGHTS, style_scales={1: 1, 2: 1, 4: 1})
    pyramid.set_style(STYLE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = pyramid(OUTPUT.bfloat16(), CONTENT.bfloat16())
    assert torch.isfinite(terms["style"]) and torch.isfinite(terms["style@1/4"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.style_scales=[1,0]"], r"style_scales=\[1,0\]: 0 is not a downscale factor"),
        (["loss.style_scales=[1,-2]"], r"-2 is not a downscale factor; expected 1 or more"),
        (["loss.style_scales=[1,2,2]"], "a factor given twice"),
        (
            ["loss.style_scales=[1,2]", "loss.style_scale_weights=[1]"],
            r"style_scale_weights=\[1\]: 1 weight\(s\) for 2 scale\(s\)",
        ),
        (
            ["loss.style_scales=[1,2]", "loss.style_scale_weights=[0,0]"],
            "expected weights of 0 or more, not all 0",
        ),
    ],
)
def test_scales_and_weights_that_make_no_pyramid_are_named_in_one_line(overrides, message):
    loss = compose(["loss.weights=random", *overrides]).loss
    with pytest.raises(NstFastError, match=message):
        build_criterion(loss, {})


def test_a_scale_that_shrinks_an_image_below_what_vgg_takes_is_named():
    loss = compose(["loss.weights=random", "loss.style_scales=[1,2,8]"]).loss
    check_scale_sizes(loss, {"data.image_size=256": 256})  # 32 px: fine
    with pytest.raises(
        NstFastError,
        match=r"data.image_size=64 shrunk 8x is 8 px, below the 16 px VGG takes; use factors "
        r"of at most 4",
    ):
        check_scale_sizes(loss, {"data.image_size=64": 64})


@pytest.mark.slow
def test_training_with_a_crop_too_small_for_the_pyramid_stops_before_any_work(
    photo_folder, style_file, tmp_path
):
    overrides = [
        *tiny_overrides(photo_folder, style_file, tmp_path / "run"),
        "loss.style_scales=[1,4]",
    ]
    with pytest.raises(NstFastError, match=r"data.image_size=32 shrunk 4x is 8 px"):
        train(compose(overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_run_with_the_pyramid_logs_each_scales_term_and_writes_a_model(
    photo_folder, style_file, tmp_path
):
    run_dir = tmp_path / "run"
    overrides = [
        *tiny_overrides(photo_folder, style_file, run_dir, steps=2),
        "loss.style_scales=[1,2]",
        "style.size=96",  # its shorter side 76 px: 19 at a quarter, where VGG takes 16
        "data.val_images=2",
        "trainer.val_check_interval=2",
    ]
    model = train(compose(overrides), run_dir)
    _, info = load_model(model)
    assert info.extra["loss"]["style_scales"] == [1, 2]  # how it was trained, recorded
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/style", "loss/style@1/2"} <= scalars
    # Validation shows the coarse-scale figures whatever the training scales.
    assert {"val/style@1/2", "val/style@1/4", "val/style@1/4/relu4_3"} <= scalars
    assert events.Scalars("loss/style@1/2")[0].value > 0


def test_gatys_with_a_pyramid_too_deep_for_the_photo_stops_before_any_work(tmp_path):
    from nst_fast.images import save_image
    from nst_fast.optimize import optimize_file

    photo = save_image(make_photo((40, 48), 1), tmp_path / "photo.png")
    style = save_image(make_photo((64, 80), 2), tmp_path / "style.png")
    overrides = ["loss.weights=random", "loss.style_scales=[1,4]", "loss.style_scale_weights=null"]
    with pytest.raises(NstFastError, match=r"the photo .*photo.png at 40 px shrunk 4x is 10 px"):
        optimize_file(photo, str(style), tmp_path / "out.png", size=None, overrides=overrides)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_a_style_image_too_small_for_the_pyramid_stops_training_before_the_loss_network(
    photo_folder, style_file, tmp_path
):
    overrides = [
        *tiny_overrides(photo_folder, style_file, tmp_path / "run"),
        "loss.style_scales=[1,2]",
        "style.size=24",  # 80x64 shrunk to 24x19: 9.6 px at half size
    ]
    with pytest.raises(NstFastError, match=r"the style image .*style.png \(19 px\) shrunk 2x"):
        train(compose(overrides), tmp_path / "run")


def test_resuming_keeps_the_pyramid_a_checkpoint_was_trained_with_or_names_it():
    pyramid = {"style_scales": [1, 2, 4], "style_scale_weights": [2, 1, 1]}
    # The same shares in other numbers, and a checkpoint from before the pyramid on [1]:
    check_same_style_scales(pyramid, {"style_scales": [1, 2, 4], "style_scale_weights": [4, 2, 2]})
    check_same_style_scales({"content_layer": "relu2_2"}, {"style_scales": [1]})
    with pytest.raises(
        NstFastError,
        match=r"^this checkpoint was trained with 'loss.style_scales=\[1,2,4\]' "
        r"'loss.style_scale_weights=\[2,1,1\]'; add those to the command to resume it$",
    ):
        check_same_style_scales(pyramid, {"style_scales": [1], "style_scale_weights": None})
    before_the_pyramid = r"trained with 'loss.style_scales=\[1\]' 'loss.style_scale_weights=null'"
    with pytest.raises(NstFastError, match=before_the_pyramid):
        check_same_style_scales({}, pyramid)


@pytest.mark.slow
def test_a_run_resumed_with_another_pyramid_is_refused_before_it_trains(
    photo_folder, style_file, tmp_path
):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(photo_folder, style_file, run_dir, steps=2)
    train(compose([*overrides, "loss.style_scales=[1,2]"]), run_dir)
    resumed = [*overrides, "loss.style_scales=[1]", "ckpt_path=last", "trainer.max_steps=4"]
    with pytest.raises(NstFastError, match=r"trained with 'loss.style_scales=\[1,2\]'"):
        train(compose(resumed), run_dir)
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 2
