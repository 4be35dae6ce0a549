"""Planning outputs: which file each input (a file, a folder walked recursively, a glob,
a video) is written to, checked before anything is written: names, suffixes, clashes,
an output written over its input.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nst_fast.errors import NstFastError
from nst_fast.images import IMAGE_SUFFIXES, list_images
from nst_fast.stylize_options import KEYWORDS, WRITABLE, Spelling
from nst_fast.video import VIDEO_SUFFIXES, is_video


@dataclass
class Job:
    source: Path
    target: Path
    video: bool = False
    # The input's path relative to what was given (a folder's photos keep their
    # subfolders): its output's name, and its mask's in a folder of masks.
    name: Path | None = None

    @property
    def relative(self) -> Path:
        return self.name if self.name is not None else Path(self.source.name)


def expand(item: str, output: Path) -> list[tuple[Path, Path]] | None:
    """(file, its name relative to what was given) for a file, a folder or a glob;
    None when nothing matches. A folder's scan leaves out an ``output`` folder inside it,
    so a second run does not stylize the first one's results."""
    path = Path(item)
    if path.is_dir():
        root, out = path.resolve(), output.resolve()
        skip = out if out != root and out.is_relative_to(root) else None
        files = [p for p in list_images(path) if not (skip and p.resolve().is_relative_to(skip))]
        return [(p, p.relative_to(path)) for p in files] or None
    if path.exists():
        return [(path, Path(path.name))]
    if glob.has_magic(item):
        matches = sorted(
            Path(p)
            for p in glob.glob(item, recursive=True)
            if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
        )
        return [(p, Path(p.name)) for p in matches] or None
    return None


def output_suffix(source: Path, ext: str | None) -> str:
    if is_video(source):
        return source.suffix
    if ext is not None:
        return f".{ext.lower().lstrip('.')}"
    return source.suffix if source.suffix.lower() in WRITABLE else ".png"


def plan(
    inputs: Iterable[str], output: Path, ext: str | None, spelling: Spelling = KEYWORDS
) -> tuple[list[Job], list[str]]:
    """Jobs in input order, and one error line for each input that names nothing."""
    found, errors = [], []
    for item in inputs:
        files = expand(item, output)
        if files is not None:
            found += files
        elif Path(item).is_dir():
            errors.append(f"{item}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
        elif glob.has_magic(item):
            errors.append(f"{item}: no images or videos match the pattern")
        else:
            errors.append(f"{item}: no such file, folder, or files matching the pattern")
    out = spelling.value("output", output)
    file_name = output.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and not output.is_dir()
    if file_name and len(found) > 1:
        raise NstFastError(
            f"{out}: {len(found)} inputs need an output folder; name a folder, "
            "or give a single input for a single output file"
        )
    as_file = file_name and len(found) == 1
    if not as_file and output.is_file():
        raise NstFastError(f"{out}: is a file; name a folder for the outputs")
    jobs = [
        Job(
            source,
            output if as_file else output / name.with_suffix(output_suffix(source, ext)),
            is_video(source),
            name,
        )
        for source, name in found
    ]
    check_distinct(jobs, spelling)
    return jobs, errors


def check_distinct(jobs: list[Job], spelling: Spelling = KEYWORDS) -> None:
    """Every input gets its own output, and none is written over an input."""
    seen: dict[Path, Path] = {}
    other = spelling.name("output")
    for job in jobs:
        if job.target.exists() and job.target.resolve() == job.source.resolve():
            raise NstFastError(
                f"{job.source}: its output would be written over it; choose another {other}"
            )
        if job.target in seen:
            raise NstFastError(
                f"{seen[job.target]} and {job.source} would both be written to {job.target}; "
                f"stylize them in separate runs with different {other} folders"
            )
        seen[job.target] = job.source


def labelled(target: Path, label: str) -> Path:
    """``out/photo.jpg`` -> ``out/photo_wave.jpg``: an output named with its style."""
    return target.with_name(f"{target.stem}_{label}{target.suffix}")
