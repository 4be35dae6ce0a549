"""Videos round-trip through `nst-fast stylize` with their frame count, rate and size."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from nst_fast.cli import main
from nst_fast.export import save_model
from nst_fast.models.transformer import transformer_net

av = pytest.importorskip("av")
from nst_fast.video import count_frames  # noqa: E402


def write_clip(path, frames=7, rate=12, size=(32, 48), audio=True):
    with av.open(str(path), "w") as clip:
        video = clip.add_stream("libx264", rate=rate)
        video.height, video.width = size
        video.pix_fmt = "yuv420p" if size[0] % 2 == size[1] % 2 == 0 else "yuv444p"
        sound = clip.add_stream("aac", rate=16000) if audio else None
        rng = np.random.default_rng(0)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 255, (*size, 3), dtype=np.uint8), format="rgb24"
            )
            frame.pts = i
            clip.mux(video.encode(frame))
        clip.mux(video.encode(None))
        if sound is not None:
            for i in range(8):
                samples = (rng.random((1, 1024)) * 0.1).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, i * 1024
                clip.mux(sound.encode(chunk))
            clip.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    return save_model(net, tmp_path_factory.mktemp("m") / "model.pt", style="tiny", step=1)


def test_a_tiny_video_round_trips_with_frame_count_rate_size_and_audio(model, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out.mp4"
    assert main(["stylize", str(model), str(clip), "-o", str(out), "-q", "--batch-size", "3"]) == 0
    assert count_frames(out) == (7, Fraction(12), (32, 48))
    with av.open(str(out)) as result:
        assert [s.type for s in result.streams] == ["video", "audio"]


def test_odd_sized_videos_keep_their_size(model, tmp_path):
    clip = write_clip(tmp_path / "odd.mkv", frames=3, size=(31, 45), audio=False)
    assert main(["stylize", str(model), str(clip), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert count_frames(tmp_path / "o" / "odd.mkv") == (3, Fraction(12), (31, 45))


def test_an_unreadable_video_is_named_and_the_exit_is_non_zero(model, tmp_path, capsys):
    (tmp_path / "bad.mp4").write_bytes(b"nothing like a video")
    assert main(["stylize", str(model), str(tmp_path / "bad.mp4"), "-o", str(tmp_path / "o"),
                 "-q"]) == 1  # fmt: skip
    assert "bad.mp4" in capsys.readouterr().err
    assert not (tmp_path / "o" / "bad.mp4").exists()


def test_an_unwritable_video_output_is_one_line_naming_it(model, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "out.mp4"
    assert main(["stylize", str(model), str(clip), "-o", str(target), "-q"]) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.endswith(f"out.mp4: cannot write (File exists: {tmp_path / 'afile'})")


def test_steady_statistics_keep_the_frame_count_rate_and_size(model, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", audio=False)
    out = tmp_path / "steady.mp4"
    args = ["stylize", str(model), str(clip), "-o", str(out), "-q", "--batch-size", "3"]
    assert main([*args, "--steady-statistics", "0.9"]) == 0
    assert count_frames(out) == (7, Fraction(12), (32, 48))


def test_a_momentum_of_one_or_more_is_refused_in_one_line(model, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    args = ["stylize", str(model), str(clip), "-o", str(tmp_path / "o.mp4")]
    assert main([*args, "--steady-statistics", "1"]) == 2
    assert "--steady-statistics 1.0: a momentum from 0 (off) to below 1" in capsys.readouterr().err


def test_scene_cuts_split_a_batch_where_the_picture_changes_and_carry_over_batches():
    from nst_fast.video import SceneCuts

    g = torch.Generator().manual_seed(0)
    day, night = torch.rand(1, 3, 40, 40, generator=g), torch.zeros(1, 3, 40, 40)
    shots = SceneCuts()
    first = shots.split(torch.cat([day, day, night]))
    assert [(new, len(frames)) for new, frames in first] == [(True, 2), (True, 1)]
    assert [(new, len(frames)) for new, frames in shots.split(night.expand(2, -1, -1, -1))] == [
        (False, 2)
    ]
    assert [(new, len(frames)) for new, frames in shots.split(day)] == [(True, 1)]


def frame_times(path) -> list[float]:
    with av.open(str(path)) as source:
        return [float(frame.time) for frame in source.decode(source.streams.video[0])]


TICKS = (0, 1, 2, 5, 6, 10, 11)


def write_vfr_clip(path):
    """Frames at ticks 0, 1, 2, 5, 6, 10, 11 of 1/12 s: a camera that dropped frames."""
    clip = path
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.height, video.width, video.pix_fmt = 32, 48, "yuv420p"
        for tick in TICKS:
            frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 20 * tick, np.uint8), "rgb24")
            frame.pts = tick
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return clip


def test_a_variable_frame_rate_video_keeps_each_frame_at_its_time(model, tmp_path):
    clip = write_vfr_clip(tmp_path / "vfr.mp4")
    result = tmp_path / "out.mp4"
    assert main(["stylize", str(model), str(clip), "-o", str(result), "-q"]) == 0
    assert frame_times(result) == pytest.approx([t / 12 for t in TICKS])


def test_without_libx264_a_variable_frame_rate_keeps_its_times_at_the_frame_rate(
    model, tmp_path, monkeypatch
):
    # MPEG-4 part 2 takes no time base finer than 1/65535: the source's (1/12288 here)
    # becomes ticks of the frame rate, each frame at the nearest.
    clip = write_vfr_clip(tmp_path / "vfr.mp4")
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    result = tmp_path / "out.avi"
    assert main(["stylize", str(model), str(clip), "-o", str(result), "-q"]) == 0
    with av.open(str(result)) as out:
        assert out.streams.video[0].codec_context.name == "mpeg4"
    assert frame_times(result) == pytest.approx([t / 12 for t in TICKS], abs=1 / 24)


def test_a_single_frame_video_gives_a_single_frame_video(model, tmp_path):
    clip = write_clip(tmp_path / "one.mp4", frames=1, audio=False)
    assert main(["stylize", str(model), str(clip), "-o", str(tmp_path / "out.mp4"), "-q"]) == 0
    assert count_frames(tmp_path / "out.mp4")[0] == 1


def test_a_video_stream_without_frames_is_one_line_and_leaves_no_file(model, tmp_path, capsys):
    clip = tmp_path / "empty.avi"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.height, video.width, video.pix_fmt = 32, 48, "yuv420p"
        out.start_encoding()  # the header and no frame
    assert clip.stat().st_size > 0
    result = tmp_path / "out.avi"
    assert main(["stylize", str(model), str(clip), "-o", str(result), "-q"]) == 1
    assert "empty.avi: the video stream has no frames to stylize" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [clip]


def test_a_file_with_sound_and_no_picture_is_one_line(model, tmp_path, capsys):
    clip = tmp_path / "sound.mp4"
    with av.open(str(clip), "w") as out:
        sound = out.add_stream("aac", rate=16000)
        for i in range(4):
            samples = np.zeros((1, 1024), np.float32)
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, i * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    assert main(["stylize", str(model), str(clip), "-o", str(tmp_path / "o.mp4"), "-q"]) == 1
    assert "sound.mp4: no video stream in this file" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="writing a display rotation needs PyAV 16 or later",
)
def test_a_phone_video_stored_sideways_is_stylized_upright(tmp_path):
    from nst_fast.video import stylize_video

    # Stored 32 x 48 with a bright top-left corner, to be shown turned a quarter
    # counter-clockwise (PyAV's convention for the display matrix): 48 x 32, the corner
    # at the bottom left.
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:8, :8] = 255
    clip = tmp_path / "phone.mp4"
    with av.open(str(clip), "w") as out:
        video = out.add_stream("libx264", rate=12)
        video.height, video.width, video.pix_fmt = 32, 48, "yuv444p"
        video.set_display_rotation(90)
        for tick in range(2):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = tick
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    seen = []
    result = stylize_video(clip, tmp_path / "out.mp4", lambda x: seen.append(x) or x)
    assert result == 2
    assert seen[0].shape[-2:] == (48, 32)
    corner = seen[0][0].mean(0)
    assert corner[-8:, :8].mean() > 0.9 and corner[:8, :8].mean() < 0.1
    with av.open(str(tmp_path / "out.mp4")) as out:
        frame = next(out.decode(out.streams.video[0]))
        assert (frame.height, frame.width) == (48, 32)
        assert (getattr(frame, "rotation", 0) or 0) == 0
