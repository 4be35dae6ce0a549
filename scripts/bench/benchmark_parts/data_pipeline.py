"""The data pipeline's figure: images/s the PhotoDataModule delivers from full-size JPEGs
(coco128, else synthetic ones) and from a copy pre-resized by scripts/data/prepare_data.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmark_parts import paths


def bench_data(
    root: Path, size: int, batch: int, workers: int, epochs: int = 1, repeat: int = 1
) -> dict:
    """Images/s the PhotoDataModule delivers (worker start-up and first batch excluded);
    ``repeat`` passes a small folder several times an epoch, as ``data.repeat`` does."""
    from nst_fast.data.datamodule import PhotoDataModule

    data = PhotoDataModule(
        str(root), image_size=size, batch_size=batch, num_workers=workers, repeat=repeat
    )
    loader = data.train_dataloader()
    images, start = 0, None
    for _ in range(epochs):
        for item in loader:
            if start is None:  # the first batch pays the workers' start-up
                start = time.perf_counter()
                continue
            images += item["image"].shape[0]
    elapsed = time.perf_counter() - start
    return {"img_per_s": images / elapsed, "images": images, "workers": workers}


def synthetic_photos(folder: Path, n: int = 48) -> Path:
    """Full-size (640x480) smooth random JPEGs, when ../shared/coco128 is absent."""
    from nst_fast.images import save_image

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        low = torch.rand(3, 12, 16, generator=g)
        image = torch.nn.functional.interpolate(low[None], size=(480, 640), mode="bicubic")[0]
        image = image + 0.05 * torch.rand(3, 480, 640, generator=g)
        save_image(image.clamp(0, 1), folder / f"{i:012d}.jpg")
    return folder


def prepare_copy(src: Path, dst: Path, size: int) -> float:
    sys.path.insert(0, str(paths.ROOT / "scripts" / "data"))
    from prepare_data import prepare

    start = time.perf_counter()
    summary = prepare(src, dst, size=size, workers=os.cpu_count() or 1)
    if summary.unreadable:
        print(f"  prepare_data: {summary.unreadable} unreadable photos skipped")
    return time.perf_counter() - start


def measure_data(args: argparse.Namespace) -> tuple[dict, dict, str]:
    """The data module's img/s from full-size JPEGs and from a prepare_data.py copy."""
    batch, workers = args.batches[0], args.data_workers
    with tempfile.TemporaryDirectory(prefix="nst_bench_") as tmp:
        if paths.COCO.is_dir():
            src, label = paths.COCO, "coco128 (full-size JPEGs)"
        else:
            src, label = synthetic_photos(Path(tmp) / "photos"), "synthetic 640x480 JPEGs"
        full = bench_data(src, args.size, batch, workers)
        prep_s = prepare_copy(src, Path(tmp) / "prepared", args.size)
        small = bench_data(Path(tmp) / "prepared", args.size, batch, workers)
    print(
        f"  data: {full['img_per_s']:.0f} img/s from {label}, "
        f"{small['img_per_s']:.0f} img/s pre-resized (prepare_data.py took {prep_s:.1f} s)",
        flush=True,
    )
    return full, small, label
