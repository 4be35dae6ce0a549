"""The stability terms (Wang et al. 2020): trained on still photos, they ask the network's
output to move with its input and to ignore noise."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_fast.config import compose
from nst_fast.errors import NstFastError
from nst_fast.export import load_model
from nst_fast.losses.stability import (
    RandomMotion,
    StabilityLoss,
    StabilitySchedule,
    masked_mean_square,
    random_warp,
    step_generator,
)
from nst_fast.training.module import stability_loss
from nst_fast.training.train import train

from .conftest import make_photo, scalars, tiny_overrides

PHOTOS = torch.stack([make_photo((48, 64), seed) for seed in range(3)])
STILL = RandomMotion(shift=0.0, degrees=0.0, zoom=0.0, flow=0.0, noise=0.0)
MOVING = RandomMotion(shift=6.0, degrees=3.0, zoom=0.05, flow=2.0, noise=0.0)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stability_terms(network, loss: StabilityLoss, photos=PHOTOS, seed: int = 0):
    perturbed = loss.perturb(photos, generator(seed))
    output, *rest = network(torch.cat([photos, *perturbed.inputs])).split(len(photos))
    return loss(output, perturbed, rest)


def test_no_motion_leaves_the_photos_as_they_are():
    warp = random_warp(PHOTOS, STILL, generator())
    torch.testing.assert_close(warp(PHOTOS), PHOTOS, atol=1e-5, rtol=0)
    assert warp.inside.all()


def test_a_warped_coordinate_ramp_reads_back_the_grid_it_was_sampled_at():
    # An image whose pixels hold their own x and y: warped, each pixel inside holds the
    # point it came from, which is what the grid says (in grid_sample's [-1, 1]).
    h, w = 40, 56
    ramp = torch.stack(
        torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    )
    ramp = ramp.flip(0)[None].expand(2, -1, -1, -1)  # channels x, y
    warp = random_warp(ramp, MOVING, generator())
    moved = warp(ramp).permute(0, 2, 3, 1)
    inside = warp.inside[:, 0]
    torch.testing.assert_close(moved[inside], warp.grid[inside], atol=1e-4, rtol=0)


def test_warping_keeps_full_precision_under_bf16_autocast():
    # A bf16 grid would put samples up to half a pixel off: more than the motion itself.
    warp = random_warp(PHOTOS, MOVING, generator())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moved = warp(PHOTOS.bfloat16())
    assert moved.dtype == torch.float32
    torch.testing.assert_close(moved, warp(PHOTOS.bfloat16().float()), atol=1e-6, rtol=0)


def test_pixels_brought_in_from_outside_the_photo_are_left_out():
    warp = random_warp(PHOTOS, RandomMotion(6.0, 0.0, 0.0, 0.0, 0.0), generator())
    outside = ~warp.inside
    assert outside.any() and warp.inside.float().mean() > 0.8
    assert (warp.grid[outside[:, 0]].abs() > 1).any(-1).all()


def test_the_temporal_term_is_zero_for_a_network_that_commutes_with_motion_on_clean_input():
    # A per-pixel linear colour map commutes with bilinear warping; without noise the moved
    # photo's output is exactly the moved output.
    colour = torch.nn.Conv2d(3, 3, 1)
    loss = StabilityLoss(MOVING, temporal_weight=1.0, noise_weight=0.0)
    with torch.no_grad():
        terms = stability_terms(colour, loss)
    assert terms["temporal"] < 1e-10


def test_the_temporal_term_counts_a_network_that_does_not_move_with_its_input():
    def fixed_pattern(x):  # strokes painted at fixed places whatever the photo
        h, w = x.shape[-2:]
        return x + 0.1 * torch.sin(torch.arange(w) * 0.7) * torch.cos(torch.arange(h)[:, None])

    loss = StabilityLoss(MOVING, temporal_weight=1.0, noise_weight=0.0)
    assert stability_terms(fixed_pattern, loss)["temporal"] > 1e-4


def test_the_noise_term_is_the_noise_power_for_the_identity_and_zero_for_a_blind_network():
    sigma = 0.02
    noisy = RandomMotion(0.0, 0.0, 0.0, 0.0, noise=sigma)
    loss = StabilityLoss(noisy, temporal_weight=0.0, noise_weight=1.0)
    photos = 0.25 + 0.5 * PHOTOS  # away from 0 and 1, where clamping would cut the noise
    assert stability_terms(lambda x: x, loss, photos)["noise"] == pytest.approx(sigma**2, rel=0.05)
    blind = stability_terms(lambda x: x.mean((1, 2, 3), keepdim=True).round(), loss, photos)
    assert blind["noise"] == 0


def test_the_weighted_sum_and_only_the_weighted_terms_are_computed():
    motion = RandomMotion(2.0, 1.0, 0.02, 1.0, 0.02)
    only_noise = stability_terms(lambda x: x, StabilityLoss(motion, 0.0, 3.0))
    assert set(only_noise) == {"noise", "stability"}
    assert only_noise["stability"] == 3.0 * only_noise["noise"]
    both = stability_terms(lambda x: x**2, StabilityLoss(motion, 2.0, 5.0))
    torch.testing.assert_close(both["stability"], 2.0 * both["temporal"] + 5.0 * both["noise"])


def test_masked_mean_square_averages_only_over_the_mask():
    a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    b[..., 0, 0] = 5.0
    mask = torch.ones(1, 1, 2, 2)
    mask[..., 0, 0] = 0
    assert masked_mean_square(a, b, mask) == 1.0


def test_each_step_draws_its_own_motion_and_a_resumed_step_draws_the_same():
    loss = StabilityLoss(MOVING, 1.0, 0.0)
    cpu = torch.device("cpu")
    first = loss.perturb(PHOTOS, step_generator(0, 0, 7, cpu)).moved
    again = loss.perturb(PHOTOS, step_generator(0, 0, 7, cpu)).moved
    next_step = loss.perturb(PHOTOS, step_generator(0, 0, 8, cpu)).moved
    other_rank = loss.perturb(PHOTOS, step_generator(0, 1, 7, cpu)).moved
    assert torch.equal(first, again)
    assert not torch.equal(first, next_step) and not torch.equal(first, other_rank)


@pytest.mark.slow
def test_a_run_with_the_terms_on_logs_them_and_writes_a_model(photo_folder, style_file, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        *tiny_overrides(photo_folder, style_file, run_dir, steps=2),
        "stability.temporal_weight=100",
        "stability.noise_weight=10",
    ]
    model = train(compose(overrides), run_dir)
    network, info = load_model(model)
    assert list(network.config.channels) == [8, 16, 32]
    assert info.extra["stability"]["temporal_weight"] == 100  # how it was trained, recorded
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/temporal", "loss/noise", "loss/stability"} <= scalars
    [temporal] = events.Scalars("loss/temporal")[:1]
    assert temporal.value > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stability.temporal_weight=-1", "stability.temporal_weight=-1: expected 0 or more"),
        ("stability.shift=-2", "stability.shift=-2: expected 0 or more"),
        ("stability.ramp_steps=-5", "stability.ramp_steps=-5: expected 0 or more"),
    ],
)
def test_negative_stability_settings_stop_in_one_line(
    photo_folder, style_file, tmp_path, override, message
):
    overrides = [*tiny_overrides(photo_folder, style_file, tmp_path / "run"), override]
    if "shift" in override or "ramp" in override:
        overrides.append("stability.noise_weight=1")
    with pytest.raises(NstFastError, match=message):
        train(compose(overrides), tmp_path / "run")


def test_the_schedule_is_off_before_its_start_then_rises_linearly_to_the_full_weights():
    schedule = StabilitySchedule(start=100, ramp=50)
    steps = (0, 99, 100, 124, 148, 149, 500)
    assert [schedule.factor(s) for s in steps] == [0, 0, 1 / 50, 25 / 50, 49 / 50, 1, 1]
    assert [StabilitySchedule(10, 0).factor(s) for s in (9, 10)] == [0, 1]
    assert StabilitySchedule().factor(0) == 1  # the default: from the first step, as before


def test_the_scheduled_weight_multiplies_the_weighted_sum_of_the_terms():
    loss = StabilityLoss(RandomMotion(0, 0, 0, 0, 0.1), temporal_weight=0, noise_weight=4)
    images = make_photo((16, 16), 0)[None]
    perturbed = loss.perturb(images, torch.Generator().manual_seed(0))
    outputs = [perturbed.noisy * 0.5]
    full = loss(images, perturbed, outputs)
    half = loss(images, perturbed, outputs, factor=0.5)
    assert torch.equal(half["noise"], full["noise"])  # the term itself, logged as it is
    torch.testing.assert_close(half["stability"], 0.5 * 4 * full["noise"])


def test_the_terms_are_off_by_default_and_the_video_preset_turns_both_on_after_a_start():
    assert stability_loss(compose([]).stability) is None
    preset = stability_loss(compose(["stability=video"]).stability)
    assert preset.weights["temporal"] > 0 and preset.weights["noise"] > 0
    assert preset.schedule.factor(0) == 0 and preset.schedule.factor(10**6) == 1
    tuned = compose(["stability=video", "stability.noise=0.05"]).stability
    assert tuned.noise == 0.05 and tuned.temporal_weight == preset.weights["temporal"]


def test_the_video_preset_trains_an_antialiased_network_unless_told_otherwise():
    assert compose([]).model.antialias is False
    assert compose(["stability=video"]).model.antialias is True
    plain = compose(["stability=video", "model.antialias=false"])
    assert plain.model.antialias is False and plain.stability.temporal_weight > 0


@pytest.mark.slow
def test_the_video_preset_trains_a_run_that_logs_the_terms_from_the_schedules_start(
    photo_folder, style_file, tmp_path
):
    run_dir = tmp_path / "run"
    overrides = [
        *tiny_overrides(photo_folder, style_file, run_dir, steps=4),
        "stability=video",
        "stability.start_step=2",
        "stability.ramp_steps=2",
    ]
    train(compose(overrides), run_dir)
    logged = scalars(run_dir)
    total, temporal, noise = ([step for step, _ in logged[f"loss/{term}"]]
                              for term in ("total", "temporal", "noise"))  # fmt: skip
    assert len(total) == 4 and temporal == noise == total[2:]


@pytest.mark.slow
def test_a_run_resumed_mid_ramp_trains_with_the_weights_of_an_unbroken_run(
    photo_folder, style_file, tmp_path
):
    schedule = ["stability.temporal_weight=100", "stability.start_step=1", "stability.ramp_steps=3"]

    straight = tmp_path / "straight"
    train(compose([*tiny_overrides(photo_folder, style_file, straight, steps=4), *schedule]),
          straight)  # fmt: skip
    broken = tmp_path / "broken"
    train(compose([*tiny_overrides(photo_folder, style_file, broken, steps=2), *schedule]), broken)
    train(compose([*tiny_overrides(photo_folder, style_file, broken, steps=4), *schedule,
                   "ckpt_path=last"]), broken)  # fmt: skip
    unbroken, resumed = (dict(scalars(run)["loss/stability"]) for run in (straight, broken))
    assert len(unbroken) == 3  # steps 1, 2, 3: off at step 0
    assert resumed == pytest.approx(unbroken, rel=1e-5)
