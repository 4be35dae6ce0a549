"""The warping error on real clips, through optical flow estimated with OpenCV."""

import csv
import sys

import numpy as np
import pytest
import torch

from nst_fast.cli import main
from nst_fast.errors import NstFastError
from nst_fast.evaluate import VIDEO, VIDEO_FLOOR, evaluate_model
from nst_fast.export import save_model
from nst_fast.flow import PairFlow, flow_warping_error, pair_flows
from nst_fast.temporal import MOTIONS, known_motion_clip, warping_error

from .conftest import make_photo
from .test_fast import small_net

pytest.importorskip("cv2")

PHOTO = make_photo((120, 150), 5)


def flickering(frames: torch.Tensor) -> torch.Tensor:
    """A new brightness every frame, as a flickering network gives."""
    change = 0.1 * torch.rand(len(frames), 1, 1, 1, generator=torch.Generator().manual_seed(0))
    return (frames + change).clamp(0, 1)


@pytest.mark.parametrize("motion", sorted(MOTIONS))
def test_the_estimated_flow_error_agrees_with_the_exact_motion_error(motion):
    clip = known_motion_clip(PHOTO, MOTIONS[motion], frames=4, size=96)
    pairs = pair_flows(clip.frames)
    for frames in (clip.frames, flickering(clip.frames)):
        exact = warping_error(frames, clip)
        assert flow_warping_error(frames, pairs) == pytest.approx(exact, rel=0.1)


def moving_square_clip() -> torch.Tensor:
    """A textured square moving 4 px a frame to the right over a still background: it
    uncovers background the earlier frame did not show."""
    texture = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    texture = torch.nn.functional.avg_pool2d(texture, 3, 1, 1)[0]
    frames = []
    for t in range(3):
        frame = make_photo((64, 96), 1)
        frame[:, 22:42, 20 + 4 * t : 40 + 4 * t] = texture
        frames.append(frame)
    return torch.stack(frames)


def test_pixels_a_moving_object_uncovers_are_left_out():
    frames = moving_square_clip()
    pairs = pair_flows(frames)
    everywhere = [PairFlow(pair.source, torch.ones_like(pair.visible)) for pair in pairs]
    # The clip is perfectly steady where it can be followed; what the square uncovered
    # cannot be, and counting it would make the clip look unsteady.
    assert flow_warping_error(frames, pairs) < flow_warping_error(frames, everywhere) / 2
    uncovered = pairs[0].visible[22:42, 20:24].float().mean()
    assert uncovered < 0.7 < pairs[0].visible[:15].float().mean()


def write_pan_clip(path, frames: int = 5) -> None:
    av = pytest.importorskip("av")
    clip = known_motion_clip(PHOTO, MOTIONS["pan"], frames=frames, size=48, noise=0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.height, video.width, video.pix_fmt = 48, 48, "yuv444p"
        for tick, frame in enumerate(clip.frames):
            array = frame.mul(255).round().byte().permute(1, 2, 0).numpy()
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            picture.pts = tick
            out.mux(video.encode(picture))
        out.mux(video.encode(None))


@pytest.fixture
def model_and_photos(tmp_path):
    from nst_fast.images import save_image

    model = save_model(small_net(), tmp_path / "model.pt", style="tiny", step=1,
                       extra={"style": {"image": "generated:mosaic", "size": 32}})  # fmt: skip
    photos = tmp_path / "held_out"
    save_image(make_photo((40, 40), 1), photos / "a.png")
    return model, photos


def test_evaluate_video_adds_the_clip_warping_error_and_its_floor_to_the_table(
    model_and_photos, tmp_path
):
    model, photos = model_and_photos
    clip = tmp_path / "pan.mp4"
    write_pan_clip(clip)
    rows = evaluate_model(
        model, photos, tmp_path / "eval", size=32, iterations=[], video=clip,
        overrides=["loss.weights=random"],
    )  # fmt: skip
    network, steady = (row.means() for row in rows)
    assert network[VIDEO] > 0 and steady[VIDEO] > 0
    assert network[VIDEO_FLOOR] == steady[VIDEO_FLOOR]
    with open(tmp_path / "eval" / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["method"] for row in table] == [
        "network",
        "network, steady statistics (momentum 0.9)",
    ]
    assert float(table[0][VIDEO]) == pytest.approx(network[VIDEO], abs=1e-3)
    assert "OpenCV's DIS optical flow" in (tmp_path / "eval" / "table.md").read_text()


def test_a_clip_of_one_frame_is_refused_in_one_line(model_and_photos, tmp_path, capsys):
    model, photos = model_and_photos
    clip = tmp_path / "one.mp4"
    write_pan_clip(clip, frames=1)
    args = ["evaluate", str(model), "--content", str(photos), "--iterations", "none"]
    assert main([*args, "--video", str(clip), "loss.weights=random"]) == 2
    assert "one.mp4: 1 frame(s); the flicker needs two or more" in capsys.readouterr().err


def test_frames_without_a_video_is_refused_in_one_line(model_and_photos, capsys):
    model, photos = model_and_photos
    args = ["evaluate", str(model), "--content", str(photos), "--frames", "30"]
    assert main(args) == 2
    assert "--frames: for --video only" in capsys.readouterr().err


def test_without_opencv_the_error_names_the_extra_to_install(monkeypatch):
    from nst_fast.flow import import_cv2

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(NstFastError, match=r"pip install 'nst-fast\[flow\]'"):
        import_cv2()


@pytest.mark.slow
def test_the_video_page_scores_the_first_frames_of_a_real_clip(model_and_photos, tmp_path):
    from .test_quality_cli import load_script

    model, photos = model_and_photos
    clip = tmp_path / "pan.mp4"
    write_pan_clip(clip, frames=6)
    out = tmp_path / "page"
    argv = [f"tiny={model}", "--content", str(photos), "--size", "32", "--clip", str(clip),
            "--frames", "3", "-o", str(out), "loss.weights=random"]  # fmt: skip
    assert load_script("video_report").main(argv) == 0
    page = (out / "README.md").read_text()
    assert "the first 3 frames of `pan.mp4`" in page
    header = next(line for line in page.splitlines() if line.startswith("| model |"))
    assert "| video (estimated flow) | video floor (estimated flow) |" in header
    [network, _] = [line for line in page.splitlines() if line.startswith("| tiny |")]
    assert network.split(" | ")[6] != "-"  # the clip's figure, not an empty cell
