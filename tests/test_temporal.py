"""Temporal stability: clips of known motion and the warping error (Lai et al. 2018)."""

import csv

import pytest
import torch

from nst_fast.evaluate import evaluate_model
from nst_fast.export import save_model
from nst_fast.fast.norm import SteadyStatistics
from nst_fast.images import save_image
from nst_fast.inference import stylize_frames
from nst_fast.models.transformer import transformer_net
from nst_fast.temporal import (
    MOTIONS,
    Motion,
    known_motion_clip,
    shift_error,
    temporal_errors,
    warping_error,
)

from .conftest import make_photo, make_texture
from .test_fast import small_net
from .test_quality_cli import load_script

PHOTO = make_photo((120, 150), 5)


def test_a_pan_of_one_pixel_of_a_64_px_frame_moves_each_frame_one_pixel_on():
    clip = known_motion_clip(PHOTO, Motion(shift=(4.0, 0.0)), frames=3, size=64, noise=0)
    first, second = clip.frames[0], clip.frames[1]
    torch.testing.assert_close(second[:, :, :-1], first[:, :, 1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("operation", [lambda x: x, lambda x: x**2], ids=["identity", "square"])
def test_the_warping_error_of_an_exactly_shifted_clip_is_zero_for_a_shift_equivariant_operation(
    operation,
):
    clip = known_motion_clip(PHOTO, Motion(shift=(16.0, -8.0)), frames=4, size=32, noise=0)
    assert warping_error(operation(clip.frames), clip) < 1e-3


def test_the_warping_error_counts_noise_that_changes_from_frame_to_frame():
    clip = known_motion_clip(PHOTO, Motion(shift=(16.0, -8.0)), frames=4, size=32, noise=0)
    noisy = clip.frames + 0.02 * torch.randn(
        clip.frames.shape, generator=torch.Generator().manual_seed(0)
    )
    # Two independent Gaussians of sigma 0.02 differ by 2 sigma / sqrt(pi) on average.
    assert warping_error(noisy, clip) == pytest.approx(255 * 0.04 / torch.pi**0.5, rel=0.05)


@pytest.mark.parametrize("motion", sorted(MOTIONS))
def test_warping_by_the_known_motion_undoes_it(motion):
    # Without noise, what is left is interpolation: far below the frames' own change.
    clip = known_motion_clip(PHOTO, MOTIONS[motion], frames=4, size=64, noise=0)
    unwarped = 255 * (clip.frames[1:] - clip.frames[:-1]).abs().mean().item()
    assert warping_error(clip.frames, clip) < unwarped / 3


def test_a_network_that_flickers_scores_above_the_floor_and_a_steady_one_on_it():
    brightness = torch.Generator().manual_seed(0)

    def flickering(frames: torch.Tensor) -> torch.Tensor:
        # A new brightness every frame: consecutive frames differ by 0.1 / 3 on average.
        change = 0.1 * torch.rand(len(frames), 1, 1, 1, generator=brightness)
        return (frames + change).clamp(0, 1)

    steady = temporal_errors(lambda frames: frames, [PHOTO], frames=3, size=48)
    flicker = temporal_errors(flickering, [PHOTO], frames=3, size=48)
    for name in MOTIONS:
        error, floor = steady[name]
        assert error == pytest.approx(floor, rel=1e-6)
        assert flicker[name][0] > floor + 2


def test_a_motion_that_would_leave_the_photo_is_refused():
    with pytest.raises(ValueError, match="leaves the photo"):
        known_motion_clip(PHOTO, Motion(shift=(80.0, 0.0)), frames=8, size=64)


def test_the_shift_error_is_zero_for_a_pixelwise_map_and_shows_a_4_px_grid():
    photo = make_photo((48, 64), 0)
    assert shift_error(lambda x: 1 - x, photo, 3, size=40) == pytest.approx(0, abs=1e-4)

    def grid_of_4(x: torch.Tensor) -> torch.Tensor:  # redraws the image on 4 px blocks
        blocks = torch.nn.functional.avg_pool2d(x, 4)
        return torch.nn.functional.interpolate(blocks, scale_factor=4, mode="nearest")

    assert shift_error(grid_of_4, photo, 4, size=40) == pytest.approx(0, abs=1e-4)
    assert shift_error(grid_of_4, photo, 1, size=40) > 1  # grey levels


def test_a_shift_the_photo_has_no_room_for_is_refused():
    with pytest.raises(ValueError, match="moved 8"):
        shift_error(lambda x: x, torch.rand(3, 40, 44), 8, size=40)


def test_the_shift_probe_tables_each_models_error_by_shift(tmp_path, capsys):
    torch.manual_seed(0)
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1)
    model = save_model(net, tmp_path / "model.pt", style="s", step=1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        save_image(make_texture((80, 90), seed), photos / f"{seed}.png")
    argv = [str(model), "--content", str(photos), "--size", "64", "--shifts", "1", "4"]
    assert load_script("shift_error", "probes").main(argv) == 0
    header, _, row = capsys.readouterr().out.strip().splitlines()
    assert header == "| model | 1 px | 4 px |"
    one, four = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
    assert four < one  # a plain network re-draws on its 4 px grid


def test_evaluate_temporal_adds_the_warping_error_and_its_floor_to_the_table(
    photo_folder, style_file, tmp_path
):
    style = {"name": "tiny", "image": str(style_file), "size": 48}
    model = save_model(
        small_net(), tmp_path / "model.pt", style="tiny", step=1, extra={"style": style}
    )
    out = tmp_path / "eval"
    evaluate_model(
        model, photo_folder, out, size=32, limit=2, iterations=(), device="cpu",
        overrides=["loss.weights=random"], temporal=True,
    )  # fmt: skip
    with open(out / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["method"] for row in table] == [
        "network",
        "network, steady statistics (momentum 0.9)",
    ]
    for row in table:
        for name in (
            "temporal",
            "temporal floor",
            "temporal pan",
            "temporal zoom",
            "temporal rotate",
        ):
            assert float(row[name]) > 0, name
    assert table[1]["total loss"] == "-"  # scored on clips only


def test_steady_statistics_normalize_each_frame_with_the_moving_average_of_the_frames_so_far():
    steady = SteadyStatistics(momentum=0.75)
    means = torch.tensor([[[4.0]], [[8.0]]])  # two frames, one channel
    variances = torch.tensor([[[1.0]], [[5.0]]])
    mean, var = steady(means, variances)
    assert mean.flatten().tolist() == [4.0, 5.0] and var.flatten().tolist() == [1.0, 2.0]
    steady.reset()
    mean, _ = steady(means[1:], variances[1:])
    assert mean.flatten().tolist() == [8.0]


def test_steady_statistics_on_a_static_clip_give_the_per_frame_images():
    net = small_net().eval()
    still = make_photo((40, 48), 9)
    frames = still.expand(4, -1, -1, -1)
    per_frame = stylize_frames(net, frames)
    # The moving average of equal statistics equals them up to rounding, which depends on
    # how many threads reduce them: a float32 tolerance a little above the default.
    steady = stylize_frames(net, frames, momentum=0.9)
    torch.testing.assert_close(steady, per_frame, atol=1e-4, rtol=1e-4)
    moving = known_motion_clip(PHOTO, MOTIONS["pan"], frames=4, size=48).frames
    assert not torch.equal(stylize_frames(net, moving, 0.9), stylize_frames(net, moving))
