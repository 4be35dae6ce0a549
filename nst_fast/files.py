"""File helpers: atomic writes (and the one line for a write that fails), the download cache,
and loading tensor files safely."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nst_fast import __version__


def cache_dir(*parts: str) -> Path:
    """``$NST_FAST_CACHE`` (default ``~/.cache/nst_fast``) joined with ``parts``, created."""
    root = Path(os.environ.get("NST_FAST_CACHE", Path.home() / ".cache" / "nst_fast"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    # Read once at import: os.umask can only be read by setting it, which would race
    # with threads creating files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates its files private (0600); finished files get the usual permissions.
NEW_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The result has the permissions of the file it replaces, or those of a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = NEW_FILE_MODE
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def cannot_write(target: Path, err: OSError) -> str:
    """One line for a failed write, naming the folder the system refused (not a temp file)."""
    culprit = Path(err.filename) if err.filename else None
    where = f": {culprit}" if culprit is not None and culprit in target.parents else ""
    return f"{target}: cannot write ({err.strerror or err}{where})"


def download(url: str, path: str | os.PathLike, timeout: float = 60) -> Path:
    """Download ``url`` to ``path`` atomically (raises OSError / URLError on failure)."""
    # Wikimedia and other hosts refuse Python's default user agent.
    request = urllib.request.Request(url, headers={"User-Agent": f"nst-fast/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout) as response, atomic_write(path) as tmp:
        tmp.write_bytes(response.read())
    return Path(path)


def load_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only, so no code
    from the file ever runs. A file it cannot read raises ``ValueError`` with a short
    reason in place of PyTorch's paragraph."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(_unreadable_because(path, err)) from err


# torch.save writes a zip archive; files from before PyTorch 1.6 are a bare pickle.
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def _unreadable_because(path: str | os.PathLike, err: Exception) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as open_err:
        return f"cannot read it: {open_err.strerror or open_err}"
    text = str(err)
    if text.startswith("Weights only load failed") and "Unsupported operand" not in text:
        return "it holds Python objects besides tensors, which are never loaded"
    if not head.startswith(_TORCH_FILE_STARTS):
        return "not a PyTorch file"
    return "a damaged or truncated PyTorch file"
