"""Shared fixtures: tiny generated photos and the overrides that keep training runs small."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nst_fast.device import CPU_BF16_OVERRIDE
from nst_fast.images import save_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pt"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep downloads and generated files out of the user's ~/.cache."""
    monkeypatch.setenv("NST_FAST_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(params=[True, False], ids=["native bf16", "no native bf16"])
def cpu_bf16(request, monkeypatch) -> bool:
    """Run a test as on a CPU that computes bf16 natively and as on one that does not, on
    any machine: the capability check answers as told, here and in the nst-fast
    processes the test starts. Tests whose verdict depends on that answer take this."""
    monkeypatch.setenv(CPU_BF16_OVERRIDE, "1" if request.param else "0")
    return request.param


def make_photo(size: tuple[int, int], seed: int) -> torch.Tensor:
    """A smooth random image: gradients plus blobs, more photo-like than noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    a = torch.rand(3, 1, 1, generator=g)
    b = torch.rand(3, 1, 1, generator=g)
    image = a * xx + b * yy + 0.3 * torch.sin(10 * xx * torch.rand(1, generator=g) + 6 * yy)
    return image.clamp(0, 1)


def make_texture(size: tuple[int, int], seed: int) -> torch.Tensor:
    """Smooth noise with detail at every few pixels: where a network that re-draws its
    output on its stride's grid shows it (``make_photo`` is too smooth for that)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size[0] // 4, size[1] // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bicubic")[0].clamp(0, 1)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Eight small photos in a COCO-like folder (JPEG and PNG, different sizes)."""
    folder = tmp_path / "photos" / "train2017"
    for i in range(8):
        suffix = ".jpg" if i % 2 else ".png"
        save_image(make_photo((40 + 4 * i, 48 + 2 * i), i), folder / f"{i:012d}{suffix}")
    return folder


@pytest.fixture
def style_file(tmp_path: Path) -> Path:
    return save_image(make_photo((64, 80), 123), tmp_path / "style.png")


def ckpt_step(path: Path) -> int:
    """The training step a Lightning checkpoint was saved at."""
    return torch.load(path, weights_only=False, map_location="cpu")["global_step"]


# The papers' single full-size style term: for tests of other things at sizes that the
# default style pyramid's quarter size would shrink below the 16 px VGG takes.
FULL_SIZE_STYLE = ["loss.style_scales=[1]", "loss.style_scale_weights=null"]


def tiny_overrides(photos: Path, style: Path, run_dir: Path, steps: int = 4) -> list[str]:
    """Overrides for a seconds-long CPU run with a random-init VGG."""
    return [
        f"data.root={photos}",
        f"style.image={style}",
        "style.name=tiny",
        "style.size=48",
        "loss.weights=random",
        "data.image_size=32",
        # The default style pyramid's quarter size would shrink 32 px crops below the 16 px
        # VGG takes; half size keeps a pyramid in every tiny run.
        "loss.style_scales=[1,2]",
        "loss.style_scale_weights=null",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.preview_images=2",
        # No validation: tests of it turn it on (test_validation.py).
        "data.val_images=0",
        # A few steps inside the default warm-up would train at a hundredth of the rate.
        "optim.warmup_steps=0",
        "model.channels=[8,16,32]",
        "model.residual_blocks=1",
        "trainer=cpu",
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "checkpoint_every_n_steps=2",
        "log_images_every_n_steps=2",
        f"hydra.run.dir={run_dir}",
    ]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard events: tag -> [(step, value)], by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {
        tag: sorted({(e.step, e.value) for e in acc.Scalars(tag)}) for tag in acc.Tags()["scalars"]
    }


REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    """The environment for `python -m nst_fast` subprocesses (tests/ importable)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def nst_fast(*args: str) -> subprocess.CompletedProcess:
    """Run the `nst-fast` command line in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "nst_fast", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
        cwd=REPO,
    )
