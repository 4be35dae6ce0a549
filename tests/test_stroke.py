"""Stroke size at stylize time: the network runs on the photo resized by 1/stroke, its
output resized back; the option's range and its one-line errors."""

import pytest
import torch

from nst_fast.batch import stylize_paths
from nst_fast.errors import NstFastError
from nst_fast.export import save_model
from nst_fast.images import read_image, save_image
from nst_fast.stroke import detailed, resampled, stroke_sized

from .conftest import make_photo, nst_fast
from .test_transformer import small_net


class Recording:
    """A stand-in network: halves the photo's colours, and notes each batch's shape."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(batch.shape))
        return batch[:, :3] * 0.5


@pytest.mark.parametrize(("stroke", "pass_size"), [(2, (30, 40)), (0.5, (120, 160)), (1, (60, 80))])
def test_the_network_runs_on_the_photo_resized_by_one_over_the_stroke(stroke, pass_size):
    run = Recording()
    out = resampled(run, torch.rand(2, 3, 60, 80), stroke)
    assert run.shapes == [(2, 3, *pass_size)]
    assert out.shape == (2, 3, 60, 80)


def test_per_pixel_style_weights_are_resized_with_the_photo():
    run = Recording()
    stroke_sized(run, torch.rand(1, 5, 64, 64), 0.5)  # a photo and three styles' weights
    assert run.shapes == [(1, 5, 128, 128)]


def test_larger_strokes_take_a_small_pass_and_a_full_one_for_the_detail():
    run = Recording()
    batch = torch.rand(1, 3, 64, 64)
    out = stroke_sized(run, batch, 2)
    assert run.shapes == [(1, 3, 32, 32), (1, 3, 64, 64)]
    torch.testing.assert_close(out, detailed(lambda b: b[:, :3] * 0.5, batch, 2))


def test_stroke_one_is_the_network_itself():
    run, batch = Recording(), torch.rand(1, 3, 20, 24)
    assert torch.equal(stroke_sized(run, batch, 1), batch * 0.5)


def test_the_detail_band_restores_what_the_small_pass_cannot_hold():
    photo = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    blurred = resampled(lambda b: b, photo, 2)
    assert (blurred - photo).abs().mean() > 0.1  # the small pass lost the fine grain
    torch.testing.assert_close(detailed(lambda b: b, photo, 2), photo, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stroke")
    torch.manual_seed(0)
    model = save_model(small_net(), root / "model.pt", style="tiny", step=1)
    photo = save_image(make_photo((64, 96), 4), root / "photo.png")
    return model, photo


def test_a_larger_stroke_keeps_the_photos_size_and_changes_the_picture(files, tmp_path):
    model, photo = files
    for stroke in (1.0, 2.0):
        stylize_paths(model, [photo], tmp_path / f"{stroke}.png", device="cpu", stroke=stroke)
    one, two = (read_image(tmp_path / f"{s}.png") for s in (1.0, 2.0))
    assert one.shape == two.shape == (3, 64, 96)
    assert (one - two).abs().mean() > 1e-3


@pytest.mark.parametrize("stroke", [0.1, 5.0, float("nan")])
def test_a_stroke_out_of_range_is_one_line_and_nothing_is_written(files, tmp_path, stroke):
    model, photo = files
    with pytest.raises(NstFastError, match=r"stroke=.*expected a factor from 0.25 .* to 4"):
        stylize_paths(model, [photo], tmp_path / "out", stroke=stroke)
    assert not (tmp_path / "out").exists()
    result = nst_fast("stylize", str(model), str(photo), "-o", str(tmp_path / "o"),
                      "--stroke", str(stroke))  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].count("--stroke") == 1
    assert not (tmp_path / "o").exists()


def test_steady_statistics_with_larger_strokes_are_refused_in_one_line(files, tmp_path):
    model, photo = files
    with pytest.raises(NstFastError, match=r"steady and stroke=2.0: larger strokes run two"):
        stylize_paths(model, [photo], tmp_path / "out", steady=0.9, stroke=2.0)
    result = nst_fast("stylize", str(model), str(photo), "-o", str(tmp_path / "o"),
                      "--steady-statistics", "0.9", "--stroke", "2")  # fmt: skip
    assert "--steady-statistics and --stroke 2.0" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
