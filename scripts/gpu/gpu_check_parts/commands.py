"""The sections of the user's commands on the GPU: ``nst-fast export`` to TorchScript and
ONNX (each file checked), ``nst-fast stylize`` of a folder of photos and of a clip.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from gpu_check_parts.context import (
    Context,
    Section,
)
from gpu_check_parts.running import (
    fmt,
    run_command,
    timed,
    use_benchmark_parts,
)


def model_to_check(ctx: Context) -> Path:
    """The training run's model.pt; an untrained one where that run did not get so far
    (export and stylize check the code path, not the picture)."""
    if ctx.model is not None and ctx.model.is_file():
        return ctx.model
    from nst_fast.export import save_model

    use_benchmark_parts()
    from benchmark_parts.stylizing import plain_transformer

    path = ctx.work / "untrained.pt"
    if not path.is_file():
        save_model(plain_transformer(), path, style="untrained", step=0)
    return path


def section_export(ctx: Context, sec: Section) -> None:
    """``nst-fast export`` to TorchScript and ONNX (each checks itself on the CPU), then
    each file loaded for the GPU in fp32 and in half precision against the eager network,
    and timed at 1024 px."""
    from nst_fast.export import load_network
    from nst_fast.formats import check_against_eager
    from nst_fast.model_loading import load_for_inference

    model = model_to_check(ctx)
    net, _ = load_network(model)
    device = torch.device(ctx.device)
    half = torch.bfloat16
    image = torch.rand(1, 3, 1024, 1024) if not ctx.rehearse else torch.rand(1, 3, 64, 64)
    for fmt_name, suffix in (("torchscript", ".ts"), ("onnx", ".onnx")):
        target = ctx.work / f"model{suffix}"
        argv = [sys.executable, "-m", "nst_fast", "export", str(model), "--format", fmt_name]
        output = run_command(ctx, [*argv, "-o", str(target), "--overwrite"])
        checked = [line.strip() for line in output.splitlines() if "checked" in line]
        entry: dict[str, Any] = {"cli_check": checked[-1] if checked else None}
        for dtype in (torch.float32, half):
            loaded = load_for_inference(target, device, dtype)
            diff = check_against_eager(loaded, net)
            loaded.run(image)
            _, seconds = timed(lambda loaded=loaded: loaded.run(image))
            entry[str(dtype).removeprefix("torch.")] = {
                "max_abs_diff": diff,
                "ran_as": loaded.description,
                "s_per_image": seconds,
            }
        sec.data[fmt_name] = entry
        for dtype, figures in entry.items():
            if dtype != "cli_check":
                sec.lines.append(
                    f"- {fmt_name} on {ctx.device} in {dtype}: max |file - eager| "
                    f"{figures['max_abs_diff']:.2e}, ran as {figures['ran_as']}, "
                    f"{fmt(figures['s_per_image'])} s at {image.shape[-1]} px"
                )
        sec.lines.append(f"- `nst-fast export --format {fmt_name}`: {entry['cli_check']}")
    # Garbage output differs by ~0.5; TF32 and half precision stay within a few 1e-2.
    worst = {
        f"{f} {d}": v[d]["max_abs_diff"]
        for f, v in sec.data.items()
        for d in ("float32", "bfloat16")
    }
    sec.summary = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    bad = [k for k, v in worst.items() if not v < 0.1]
    if bad:
        raise RuntimeError(f"far from the eager network: {', '.join(bad)}")


def section_stylize_folder(ctx: Context, sec: Section) -> None:
    """``nst-fast stylize MODEL FOLDER -o OUT`` on full-size photos."""
    model = model_to_check(ctx)
    folder = ctx.work / "folder"
    folder.mkdir(exist_ok=True)
    for photo in sorted(ctx.photos.glob("*.jpg"))[: ctx.sizes.folder_photos]:
        shutil.copy(photo, folder / photo.name)
    out = ctx.work / "stylized"
    argv = [sys.executable, "-m", "nst_fast", "stylize", str(model), str(folder)]
    argv += ["-o", str(out), "--device", ctx.device, "-q", "--overwrite"]
    _, wall = timed(lambda: run_command(ctx, argv))
    inputs, written = len(list(folder.iterdir())), len(list(out.glob("*"))) if out.is_dir() else 0
    sec.data = {"photos": inputs, "written": written, "wall_s": wall}
    sec.summary = f"{written} of {inputs} photos stylized in {wall:.1f} s (start-up included)"
    sec.lines = [f"- {sec.summary}"]
    if written != inputs:
        raise RuntimeError(sec.summary)


def write_clip(path: Path, photo: Path, frames: int, height: int, width: int) -> str:
    """A short clip panning across ``photo``, H.264 where PyAV has it; its codec."""
    import av
    import numpy as np

    from nst_fast.images import read_image

    image = read_image(photo)
    image = torch.nn.functional.interpolate(image[None], size=(height, width + frames * 4))[0]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as clip:
        stream = clip.add_stream(codec, rate=24)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for i in range(frames):
            crop = image[:, :, i * 4 : i * 4 + width]
            rgb = (crop.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            clip.mux(stream.encode(frame))
        clip.mux(stream.encode(None))
    return codec


def section_stylize_video(ctx: Context, sec: Section) -> None:
    """``nst-fast stylize MODEL CLIP -o OUT.mp4`` on a clip made here (PyAV)."""
    from nst_fast.video import count_frames

    model = model_to_check(ctx)
    frames, height, width = ctx.sizes.clip
    clip = ctx.work / "clip.mp4"
    photo = sorted(ctx.photos.glob("*.jpg"))[0]
    codec = write_clip(clip, photo, frames, height, width)
    out = ctx.work / "clip_stylized.mp4"
    argv = [sys.executable, "-m", "nst_fast", "stylize", str(model), str(clip)]
    argv += ["-o", str(out), "--device", ctx.device, "-q", "--overwrite"]
    _, wall = timed(lambda: run_command(ctx, argv))
    got, rate, shape = count_frames(out)
    sec.data = {"frames": frames, "written_frames": got, "size": list(shape), "wall_s": wall}
    sec.data |= {"codec": codec, "rate": str(rate)}
    sec.summary = (
        f"{got} of {frames} frames at {shape[1]}x{shape[0]} ({codec}) in {wall:.1f} s "
        "(start-up included)"
    )
    sec.lines = [f"- {sec.summary}"]
    if got != frames or tuple(shape) != (height, width):
        raise RuntimeError(sec.summary)
