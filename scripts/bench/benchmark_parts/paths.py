"""Where the benchmark reads and writes: the checkout, ../shared (or the copy --shared
names) with the reference, the VGG16 weights and the photos, and the Markdown page.

``use_shared`` rebinds this module's paths; read them as ``paths.PEER_BENCH`` (not
imported by name) so that every part sees the folder chosen.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The entry script: the memory figures run it again as a fresh process (--child).
SCRIPT = ROOT / "scripts" / "bench" / "benchmark.py"


# ../shared, or the copy that --shared names (a lent GPU machine gets scripts/gpu/gpu_bundle.py's
# copy inside the checkout, since ../shared does not travel there). The memory children read
# the variable, so they time the same reference.
SHARED_ENV = "NST_FAST_SHARED"


def use_shared(folder: Path, children: bool = True) -> None:
    """Read the reference, the weights and the photos from ``folder``, laid out as
    ../shared, in this process and (``children``) in the children it starts."""
    global SHARED, PEER_BENCH, PEER_DIR, SHARED_WEIGHTS, COCO
    SHARED = folder.resolve()
    PEER_BENCH = SHARED / "bench" / "peer_bench.py"
    PEER_DIR = SHARED / "peers" / "pytorch_examples_fast_neural_style"
    SHARED_WEIGHTS = SHARED / "weights" / "vgg16_imagenet_features.pt"
    COCO = SHARED / "coco128" / "train2017"
    if children:
        os.environ[SHARED_ENV] = str(SHARED)


use_shared(Path(os.environ.get(SHARED_ENV) or ROOT.parent / "shared"), children=False)
LATEST_MD = ROOT / "docs" / "benchmark-latest.md"


def vgg_weights() -> str:
    return str(SHARED_WEIGHTS) if SHARED_WEIGHTS.exists() else "random"


def display_path(path: Path) -> str:
    """``path`` relative to the checkout where it lies beside it (../shared/...)."""
    if not path.is_absolute() or not path.resolve().is_relative_to(ROOT.parent):
        return str(path)
    return os.path.relpath(path.resolve(), ROOT)
