"""The machine and what the check runs on: the GPU and the software (the environment
section), the bundle's wheels and weights unpacked, and the inputs found or made.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from gpu_check_parts.context import (
    FULL_WEIGHTS,
    PACKED_WEIGHTS,
    Context,
    Section,
)


def install_wheels(bundle: Path, site: Path) -> list[str]:
    """Install the bundle's wheels (what the lent machine lacks) into ``site``, offline,
    and put it on the path of this process; the names installed. A package the machine
    already has stays as it is there."""
    from importlib import metadata

    wanted = []
    for wheel in sorted((bundle / "wheels").glob("*.whl")):
        name = wheel.name.split("-")[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            wanted.append(wheel)
    if wanted:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
            + ["--no-compile", "--no-cache-dir", "--target", str(site)]
            + [str(w) for w in wanted],
            check=True,
        )
        sys.path.insert(0, str(site))
    return [w.name for w in wanted]


def unpack_weights(shared: Path) -> Path | None:
    """../shared's weights file, rebuilt from the bundle's fp16 partial copy where only
    that travelled: the layers it has converted back to fp32, the deeper ones (which the
    loss and the reference never run) left at a random init, so that both load it as
    torchvision's vgg16().features state dict. None where neither file is there."""
    full, packed = shared / "weights" / FULL_WEIGHTS, shared / "weights" / PACKED_WEIGHTS
    if full.is_file():
        return full
    if not packed.is_file():
        return None
    from nst_fast.files import load_tensors
    from nst_fast.losses.vgg import vgg_features

    torch.manual_seed(0)
    state = vgg_features("vgg16").state_dict()
    partial = load_tensors(packed)
    unknown = set(partial) - set(state)
    if unknown:
        raise ValueError(f"{packed}: not vgg16().features layers: {sorted(unknown)[:3]}")
    state.update({k: v.float() for k, v in partial.items()})
    torch.save(state, full)
    return full


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> Path:
    """``n`` smooth random JPEGs of ``size`` (height, width): the rehearsal's coco128."""
    from nst_fast.images import save_image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        low = torch.rand(1, 3, 6, 8, generator=g)
        image = torch.nn.functional.interpolate(low, size=size, mode="bilinear")[0]
        save_image(image.clamp(0, 1), folder / f"{i:012d}.jpg")
    return folder


def section_environment(ctx: Context, sec: Section) -> None:
    """The machine, the software, what nst-fast picks there, and the inputs found."""
    from importlib import metadata

    from nst_fast.device import inference_dtype, loader_workers, training_precision

    data: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cores": os.cpu_count(),
        "device": ctx.device,
    }
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        data |= {
            "gpu": props.name,
            "capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    data["nst_fast_training_precision"] = training_precision("auto")
    data["nst_fast_inference_dtype"] = str(inference_dtype(torch.device(ctx.device)))
    data["nst_fast_loader_workers"] = loader_workers(4)
    packages = {}
    for name in ("pytorch-lightning", "torchvision", "hydra-core", "omegaconf", "torchdata"):
        packages[name] = version_of(name, metadata)
    for name in ("onnx", "onnxruntime", "av"):
        packages[name] = version_of(name, metadata)
    data["packages"] = packages
    with contextlib.suppress(ImportError):
        import onnxruntime

        data["onnxruntime_providers"] = onnxruntime.get_available_providers()
    with contextlib.suppress(ImportError):
        import av

        data["av_h264"] = "libx264" in av.codecs_available
    data["inputs"] = ctx.inputs
    sec.data = data
    gpu = f"{data['gpu']} (compute capability {data['capability']})" if "gpu" in data else "none"
    sec.summary = f"{gpu}; torch {torch.__version__}; weights {Path(ctx.weights).name}"
    sec.lines = [f"- {k}: {v}" for k, v in data.items()]
    if ctx.inputs_error:
        raise RuntimeError(f"inputs: {ctx.inputs_error}")


def version_of(name: str, metadata: Any) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def find_inputs(ctx: Context) -> None:
    """The VGG weights, photos and style the sections use: the bundle's or ../shared's on
    a GPU machine; made here (random weights, generated photos) in a rehearsal, and
    wherever the bundle's are missing or fail to unpack (the environment section then
    says why)."""
    try:
        if ctx.shared is not None and not ctx.rehearse:
            coco = ctx.shared / "coco128" / "train2017"
            ctx.photos = coco if coco.is_dir() and any(coco.glob("*.jpg")) else None
            style = ctx.shared / "styles" / "starry_night.jpg"
            ctx.style = str(style) if style.is_file() else ctx.style
            weights = unpack_weights(ctx.shared)
            ctx.weights = str(weights) if weights else "random"
    except Exception as err:
        ctx.inputs_error = f"{type(err).__name__}: {err}"
        ctx.log(traceback.format_exc())
    if ctx.photos is None:
        size = (48, 64) if ctx.rehearse else (480, 640)
        ctx.photos = make_photos(ctx.work / "photos", 8 if ctx.rehearse else 64, size)
    photos = len(list(ctx.photos.glob("*.jpg")))
    ctx.inputs = {"weights": ctx.weights, "photos": f"{ctx.photos} ({photos})"}
    ctx.inputs["style"] = ctx.style
