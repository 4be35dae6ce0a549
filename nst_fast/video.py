"""Stylizing videos frame by frame with PyAV (FFmpeg): decode, stylize in batches, encode.

torchvision.io's video reading and writing was removed (0.22+), so PyAV it is: an
optional dependency (``pip install 'nst-fast[video]'``). The output keeps the source's
frame rate and size, and its first audio stream copied as is where the container
accepts it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from nst_fast.errors import NstFastError
from nst_fast.files import atomic_write

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
              ".webm": "webm", ".avi": "avi"}  # fmt: skip

Process = Callable[[torch.Tensor], torch.Tensor]

# The finest time base MPEG-4 part 2 takes: 1/65535 s.
MPEG4_TICKS = 65535


# Consecutive frames whose 32 px thumbnails differ by more than this on average (in
# [0, 1] units) are a cut to another scene.
CUT = 0.15


class SceneCuts:
    """Finds cuts in a video's frames as they come, batch after batch."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def split(self, frames: torch.Tensor) -> list[tuple[bool, torch.Tensor]]:
        """The batch ``frames`` (B, 3, H, W) in runs of one scene: (whether the run opens
        a new scene, its frames)."""
        thumbs = torch.nn.functional.adaptive_avg_pool2d(frames.float(), 32)
        previous = torch.cat([thumbs[:1] if self.last is None else self.last, thumbs[:-1]])
        cuts = (thumbs - previous).abs().mean((1, 2, 3)) > CUT
        cuts[0] |= self.last is None
        self.last = thumbs[-1:]
        starts = [i for i in range(len(frames)) if cuts[i] or i == 0]
        ends = [*starts[1:], len(frames)]
        return [(bool(cuts[a]), frames[a:b]) for a, b in zip(starts, ends, strict=True)]


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def import_av():
    try:
        import av
    except ImportError as err:
        raise NstFastError("videos need PyAV: pip install 'nst-fast[video]' (or av)") from err
    return av


def stylize_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    process: Process,
    batch_size: int = 8,
    progress: bool = False,
) -> int:
    """Write ``dst`` with every frame of ``src`` passed through ``process`` (a float
    (B, 3, H, W) batch in [0, 1] to the same); returns the number of frames written.

    The file appears only once complete: an interrupted run leaves no partial video.
    """
    av = import_av()
    src, dst = Path(src), Path(dst)
    with open_video(src) as source:
        video = source.streams.video[0]
        video.thread_type = "AUTO"  # let FFmpeg decode on several threads
        audio = source.streams.audio[0] if source.streams.audio else None
        turns = quarter_turns(src)
        with atomic_write(dst) as tmp, av.open(str(tmp), "w", format=container(dst)) as sink:
            encoder = add_video_stream(sink, video, dst, turns)
            audio_out = copy_stream(sink, audio)
            bar = _progress(video.frames, src.name, progress)
            clock = Clock(video.time_base, encoder.codec_context.time_base)
            frames = 0
            try:
                decoded = _frames(source, video, audio, sink, audio_out, turns)
                for batch in _batches(decoded, batch_size):
                    frames += _encode(sink, encoder, process, batch, clock)
                    bar.update(len(batch))
                sink.mux(encoder.encode(None))  # flush the encoder's delayed frames
            except av.error.FFmpegError as err:
                raise NstFastError(f"{src}: cannot decode or encode the video ({err})") from err
            finally:
                bar.close()
            if frames == 0:  # raised inside atomic_write: no empty file is left behind
                raise NstFastError(f"{src}: the video stream has no frames to stylize")
    return frames


def quarter_turns(path: Path) -> int:
    """How many quarter turns counter-clockwise bring the video's frames upright: phones
    store portrait video sideways with a display rotation (FFmpeg's display matrix), which
    players apply and the decoded frames lack. From the first frame (0 when it has none)."""
    av = import_av()
    with av.open(str(path)) as source:
        for frame in source.decode(source.streams.video[0]):
            degrees = getattr(frame, "rotation", 0) or 0  # PyAV 13 and later
            return round(degrees / 90) % 4
    return 0


def upright(frame, turns: int) -> torch.Tensor:
    """A decoded frame as a uint8 (3, H, W) tensor, turned ``turns`` quarter turns
    counter-clockwise (``quarter_turns``)."""
    image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    return torch.rot90(image, turns, (1, 2)) if turns else image


@contextmanager
def open_video(path: Path) -> Iterator:
    """PyAV's container of a video file that has a video stream; a one-line error for a
    file that cannot be opened or has none."""
    av = import_av()
    try:
        source = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise NstFastError(f"{path}: not a readable video ({err})") from err
    with source:
        if not source.streams.video:
            raise NstFastError(f"{path}: no video stream in this file")
        yield source


def video_frames(path: str | os.PathLike) -> Iterator[torch.Tensor]:
    """The frames of a video, upright, as uint8 (3, H, W) tensors, decoded as they are
    asked for; a one-line error for a file that is not a video."""
    av = import_av()
    path = Path(path)
    with open_video(path) as source:
        turns = quarter_turns(path)
        try:
            for frame in source.decode(source.streams.video[0]):
                yield upright(frame, turns)
        except av.error.FFmpegError as err:
            raise NstFastError(f"{path}: cannot decode the video ({err})") from err


class Clock:
    """Each output frame's timestamp: the source frame's own (in the encoder's time base),
    so that a variable frame rate keeps its timing and the audio its sync; frames without
    one, or out of order, get the next tick."""

    def __init__(self, source: Fraction | None, time_base: Fraction) -> None:
        self.source, self.time_base = source, time_base
        self.last: int | None = None

    def stamp(self, pts: int | None) -> int:
        if pts is not None and self.source:
            pts = round(pts * self.source / self.time_base)
        if pts is None or (self.last is not None and pts <= self.last):
            pts = 0 if self.last is None else self.last + 1
        self.last = pts
        return pts


def container(path: Path) -> str:
    try:
        return CONTAINERS[path.suffix.lower()]
    except KeyError:
        raise NstFastError(
            f"{path}: unknown video extension; use one of {', '.join(CONTAINERS)}"
        ) from None


def add_video_stream(sink, source, dst: Path, turns: int = 0):
    """An H.264 stream (VP9 in .webm, MPEG-4 part 2 without libx264) of the source's
    size (upright: turned ``turns`` quarter turns), frame rate and time base."""
    av = import_av()
    if dst.suffix.lower() == ".webm":
        codec = "libvpx-vp9"
    else:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    rate = source.average_rate or source.guessed_rate or Fraction(25)
    stream = sink.add_stream(codec, rate=rate)
    # The source's timestamps as they are (Clock), where the codec takes any time base
    # (MPEG-4 part 2 takes none finer than 1/65535: it ticks at the frame rate).
    if source.time_base and codec != "mpeg4":
        stream.time_base = stream.codec_context.time_base = source.time_base
    else:  # ticks of the frame rate the timestamps are counted in, not their average
        tick = (1 / Fraction(source.base_rate or source.guessed_rate or rate)).limit_denominator(
            MPEG4_TICKS
        )
        stream.time_base = stream.codec_context.time_base = tick
    width, height = source.codec_context.width, source.codec_context.height
    if turns % 2:
        width, height = height, width
    stream.width, stream.height = width, height
    # 4:2:0 chroma needs even dimensions; odd ones keep full chroma rather than a crop.
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    if codec == "libx264":
        stream.options = {"crf": "18", "preset": "medium"}
    return stream


def copy_stream(sink, audio):
    """The source's audio stream, re-muxed without re-encoding; None when there is none or
    the output container cannot hold its codec."""
    if audio is None:
        return None
    try:
        return sink.add_stream_from_template(audio)
    except (ValueError, import_av().error.FFmpegError):
        return None


def _frames(
    source, video, audio, sink, audio_out, turns: int = 0
) -> Iterator[tuple[torch.Tensor, int | None]]:
    """Decoded video frames, upright, as uint8 (3, H, W) tensors with their timestamps;
    audio packets go straight to the output on the way."""
    streams = [video] + ([audio] if audio_out is not None else [])
    for packet in source.demux(*streams):
        if packet.stream is audio:
            if packet.dts is not None:  # the demuxer's final empty packet
                packet.stream = audio_out
                sink.mux(packet)
            continue
        for frame in packet.decode():
            yield upright(frame, turns), frame.pts


def _batches(frames: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(
    sink, stream, process: Process, batch: list[tuple[torch.Tensor, int | None]], clock: Clock
) -> int:
    av = import_av()
    images = torch.stack([image for image, _ in batch]).float().div_(255)
    out = process(images).clamp(0, 1).mul(255).round_().to(torch.uint8)
    for image, (_, pts) in zip(out, batch, strict=True):
        array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        frame.pts, frame.time_base = clock.stamp(pts), clock.time_base
        sink.mux(stream.encode(frame))
    return len(batch)


def _progress(total: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total or None, desc=name, unit="frame", disable=not enabled, leave=False)


def read_frames(path: str | os.PathLike, limit: int, size: int | None = None) -> torch.Tensor:
    """The first ``limit`` frames of a video, upright, as floats in [0, 1] (T, 3, H, W);
    ``size`` resizes the shorter side. A one-line error for a file that is not a video,
    has no video stream, or fewer than two frames (no motion to follow)."""
    from itertools import islice

    from torchvision.transforms.v2 import functional as F

    frames = []
    for image in islice(video_frames(path), limit):
        if size is not None:
            image = F.resize(image, [size], antialias=True)
        frames.append(F.to_dtype(image, torch.float32, scale=True))
    if len(frames) < 2:
        raise NstFastError(f"{path}: {len(frames)} frame(s); the flicker needs two or more")
    return torch.stack(frames)


def count_frames(path: str | os.PathLike) -> tuple[int, Fraction, tuple[int, int]]:
    """(frames, frame rate, (height, width)) of a video, by decoding it."""
    av = import_av()
    with av.open(str(path)) as source:
        video = source.streams.video[0]
        n = sum(1 for _ in source.decode(video))
        return n, video.average_rate, (video.codec_context.height, video.codec_context.width)
