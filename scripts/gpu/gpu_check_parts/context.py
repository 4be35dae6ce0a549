"""What a GPU check run shares: the sizes of its work (a GPU's, or the rehearsal's few
seconds), the state the sections share, a section's outcome, and where things are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


# What scripts/gpu/gpu_bundle.py writes, in an ignored folder of the checkout (carried to the
# machine): wheels of what the machine lacks, and shared/, a slice of ../shared in its layout.
BUNDLE = ROOT / ".gpu-bundle"


# The VGG16 convolutions up to the deepest layer the loss uses, stored in fp16 to fit the
# carry limit; unpacked on the machine into the file ../shared has (see unpack_weights).
PACKED_WEIGHTS = "vgg16_features_fp16_partial.pt"


FULL_WEIGHTS = "vgg16_imagenet_features.pt"


REPORT = "gpu_check"


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the GPU figures, or the rehearsal's few seconds."""

    budget_s: float  # the whole run; the sections' boxes are cut to fit it
    train_size: int
    batches: tuple[int, ...]
    steps: int  # training steps timed (benchmark) or checked (train steps)
    stylize_sizes: tuple[int, ...]
    stylize_repeats: int
    memory_sizes: tuple[int, ...]
    uhd: tuple[int, int]  # (height, width) of the "4K" frame
    run_steps: int  # the training run's max_steps (it is also cut by time)
    folder_photos: int
    clip: tuple[int, int, int]  # frames, height, width


GPU = Sizes(
    budget_s=450,
    train_size=256,
    batches=(4, 16),
    steps=5,
    stylize_sizes=(512, 1024),
    stylize_repeats=5,
    memory_sizes=(1024, 2048),
    uhd=(2160, 3840),
    run_steps=300,
    folder_photos=16,
    clip=(48, 360, 640),
)


# A rehearsal's boxes and budget are generous: on two busy cores a process takes seconds
# to start, and the test must fail on rot, not on a slow minute.
REHEARSAL = Sizes(
    budget_s=600,
    train_size=16,
    batches=(2,),
    steps=2,
    stylize_sizes=(64,),
    stylize_repeats=1,
    memory_sizes=(64,),
    uhd=(54, 96),
    run_steps=2,
    folder_photos=3,
    clip=(4, 48, 64),
)


class TimeBoxExceeded(Exception):
    """A section ran past its time box."""


class CommandFailed(Exception):
    """A command a section ran exited non-zero."""


@dataclass
class Section:
    """One section's outcome, as the report shows it."""

    name: str
    title: str
    status: str = "not run"  # ok, failed, timed out, skipped
    seconds: float = 0.0
    box_s: float = 0.0
    summary: str = ""
    lines: list[str] = field(default_factory=list)  # Markdown of the details
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Context:
    """What the sections share: options, places, the inputs found, the log."""

    out: Path
    work: Path
    rehearse: bool
    sizes: Sizes
    device: str
    shared: Path | None  # ../shared or the bundle's copy; None: make everything here
    log_path: Path
    env: dict[str, str]
    weights: str = "random"
    photos: Path | None = None
    style: str = "generated:mosaic"
    model: Path | None = None  # the training run's model.pt, for export and stylize
    inputs: dict[str, str] = field(default_factory=dict)
    inputs_error: str = ""
    section_end: float = 0.0

    def left(self) -> float:
        return self.section_end - time.monotonic()

    def log(self, text: str) -> None:
        with self.log_path.open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")
