"""scripts/data/prepare_data.py: a pre-resized copy of a photo folder, same layout."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from nst_fast.images import read_image_uint8, save_image

from .conftest import make_photo

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "data" / "prepare_data.py"
spec = importlib.util.spec_from_file_location("prepare_data", SCRIPT)
prepare_data = importlib.util.module_from_spec(spec)
sys.modules.setdefault("prepare_data", prepare_data)  # for dataclasses and worker processes
spec.loader.exec_module(prepare_data)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    save_image(make_photo((60, 90), 0), src / "a.jpg")
    save_image(make_photo((80, 40), 1), src / "sub" / "b.png")
    save_image(make_photo((20, 30), 2), src / "sub" / "small.jpg")
    (src / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    return src


def test_writes_resized_copies_in_the_same_layout_and_counts_unreadable(photos, tmp_path):
    dst = tmp_path / "dst"
    summary = prepare_data.prepare(photos, dst, size=32)
    assert (summary.written, summary.kept, summary.unreadable) == (3, 0, 1)
    assert read_image_uint8(dst / "a.jpg").shape == (3, 32, 48)  # shorter side 32
    assert read_image_uint8(dst / "sub" / "b.png.jpg").shape == (3, 64, 32)
    assert read_image_uint8(dst / "sub" / "small.jpg").shape == (3, 20, 30)  # never enlarged
    assert not (dst / "sub" / "broken.jpg").exists()
    assert not [p for p in dst.rglob("*") if p.name.startswith(".")]  # no temporary files


def test_second_run_keeps_existing_files_unless_overwrite(photos, tmp_path):
    dst = tmp_path / "dst"
    prepare_data.prepare(photos, dst, size=32)
    again = prepare_data.prepare(photos, dst, size=32)
    assert (again.written, again.kept, again.unreadable) == (0, 3, 1)
    redo = prepare_data.prepare(photos, dst, size=32, overwrite=True)
    assert (redo.written, redo.kept) == (3, 0)


def test_command_line_with_worker_processes(photos, tmp_path, capsys):
    assert (
        prepare_data.main([str(photos), str(tmp_path / "dst"), "--size", "24", "--workers", "2"])
        == 0
    )
    assert "3 written, 0 already there, 1 unreadable skipped" in capsys.readouterr().out
    image = read_image_uint8(tmp_path / "dst" / "a.jpg")
    assert image.dtype == torch.uint8 and min(image.shape[1:]) == 24
