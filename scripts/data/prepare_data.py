#!/usr/bin/env python3
"""Write a pre-resized copy of a photo folder, once, so training does not decode and shrink
full-size photos at every step.

    python scripts/data/prepare_data.py data/coco/train2014 data/coco/train2014_256 --size 256
    nst-fast train data.root=data/coco/train2014_256 data.image_size=256

Every image below SRC is written below DST at the same relative path, as a JPEG (other
formats get ``.jpg`` appended to their name), its shorter side resized to ``--size``
(aspect kept, so random crops still have room; images already that small are re-encoded,
never enlarged). Writes are atomic: an interrupted run leaves no partial file, and a
second run skips the files already written (``--overwrite`` redoes them). Unreadable
files are skipped and counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nst_fast.files import atomic_write  # noqa: E402
from nst_fast.images import ImageReadError, list_images, read_image_uint8  # noqa: E402


@dataclass
class Summary:
    written: int = 0
    kept: int = 0  # already present, not overwritten
    unreadable: int = 0


def target_path(src_root: Path, dst_root: Path, path: Path) -> Path:
    """Same relative path; non-JPEG names get '.jpg' appended (a.png -> a.png.jpg), so
    a.png and a.jpg side by side never land on the same file."""
    dst = dst_root / path.relative_to(src_root)
    return dst if dst.suffix.lower() in (".jpg", ".jpeg") else dst.with_name(dst.name + ".jpg")


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the shorter side ``size``; never larger than the original."""
    short = min(height, width)
    if short <= size:
        return height, width
    scale = size / short
    return max(size, round(height * scale)), max(size, round(width * scale))


def prepare_one(src: Path, dst: Path, size: int, quality: int) -> str:
    """Resize one photo into ``dst``; returns 'written' or 'unreadable'."""
    try:
        image = read_image_uint8(src)  # EXIF orientation applied, any format, RGB
    except ImageReadError:
        return "unreadable"
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    h, w = resized_size(pil.height, pil.width, size)
    if (h, w) != (pil.height, pil.width):
        # Pillow's reducing_gap does most of the shrink in the JPEG-like box domain:
        # fast and antialiased, like torchvision's Resize(antialias=True).
        pil = pil.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    with atomic_write(dst) as tmp:
        pil.save(tmp, format="JPEG", quality=quality)
    return "written"


def _job(args: tuple[Path, Path, int, int]) -> str:
    return prepare_one(*args)


def prepare(
    src_root: str | os.PathLike,
    dst_root: str | os.PathLike,
    size: int = 256,
    quality: int = 95,
    workers: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write the resized copy of ``src_root`` into ``dst_root``; returns the counts."""
    src_root, dst_root = Path(src_root).expanduser(), Path(dst_root).expanduser()
    if not src_root.is_dir():
        raise SystemExit(f"{src_root}: no such folder")
    if size <= 0:
        raise SystemExit(f"--size {size}: must be a positive number of pixels")
    if dst_root.resolve() == src_root.resolve():
        raise SystemExit("the destination must differ from the source folder")
    summary = Summary()
    jobs = []
    for path in list_images(src_root):
        dst = target_path(src_root, dst_root, path)
        if dst.exists() and not overwrite:
            summary.kept += 1
        else:
            jobs.append((path, dst, size, quality))
    results: Iterable[str]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_job, jobs, chunksize=8))
    else:
        results = [_job(job) for job in jobs]
    for result in results:
        setattr(summary, result, getattr(summary, result) + 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="folder tree of photos (JPEG, PNG, ...)")
    parser.add_argument("dst", help="where the resized copy goes (same layout)")
    parser.add_argument("--size", type=int, default=256, help="shorter side in pixels (256)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (95)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (all cores)"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo files already written")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    s = prepare(args.src, args.dst, args.size, args.quality, args.workers, args.overwrite)
    print(
        f"{args.dst}: {s.written} written, {s.kept} already there, "
        f"{s.unreadable} unreadable skipped ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
