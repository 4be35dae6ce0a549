"""The batch-stylize library: ``stylize_paths`` from Python, without argv or the CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nst_fast.batch import stylize_paths
from nst_fast.cli import main
from nst_fast.errors import NstFastError
from nst_fast.images import read_image, save_image
from nst_fast.output_plan import plan
from nst_fast.stylize_jobs import same_size_batches
from nst_fast.stylize_options import Spelling
from tests.conftest import make_photo

MODEL = Path(__file__).parent / "data" / "model_v1_tiny.pt"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    save_image(make_photo((33, 47), 0), folder / "a.png")
    save_image(make_photo((40, 30), 1), folder / "sub" / "b.png")
    return folder


def test_stylize_paths_writes_every_output_and_reports_them(photos, tmp_path):
    out = tmp_path / "out"
    report = stylize_paths(MODEL, [photos], out, size=24, device="cpu", precision="fp32")
    assert sorted(p.relative_to(out).as_posix() for p in report.written) == ["a.png", "sub/b.png"]
    assert max(read_image(out / "a.png").shape[-2:]) == 24  # the longer side
    assert (report.kept, report.errors, report.summary()) == ([], [], "2 written")


def test_existing_outputs_and_problems_are_told_as_they_happen(photos, tmp_path):
    out = tmp_path / "out"
    stylize_paths(MODEL, [photos / "a.png"], out, device="cpu")
    heard = []
    report = stylize_paths(
        MODEL, [photos / "a.png", photos / "nothing.png"], out, device="cpu",
        echo=lambda kind, text: heard.append((kind, text)),
    )  # fmt: skip
    assert report.kept == [out / "a.png"] and report.failed == 1
    assert heard == [("error", report.errors[0]), ("kept", str(out / "a.png"))]
    assert "nothing.png: no such file" in report.errors[0]


def test_options_are_named_as_the_caller_spells_them(photos, tmp_path):
    with pytest.raises(NstFastError, match=r"^strength=2\.0: expected a number from 0 to 1"):
        stylize_paths(MODEL, [photos], tmp_path / "o", strength=2.0)
    flags = Spelling(flags={"output": "-o"})
    with pytest.raises(NstFastError, match=r"^--tile-overlap -1: expected 0 or more"):
        stylize_paths(MODEL, [photos], tmp_path / "o", tile_overlap=-1, spelling=flags)
    (tmp_path / "afile").write_text("")
    with pytest.raises(NstFastError, match=r"^-o .*afile: is a file"):
        plan([str(photos)], tmp_path / "afile", None, flags)
    assert not (tmp_path / "o").exists()


def test_the_plain_modules_stylize_as_the_fast_ones(photos, tmp_path):
    fast, plain = tmp_path / "fast", tmp_path / "plain"
    args = ["stylize", str(MODEL), str(photos), "--device", "cpu", "--precision", "fp32", "-q"]
    assert main([*args, "-o", str(fast)]) == 0
    assert main([*args, "-o", str(plain), "--plain"]) == 0
    for name in ("a.png", "sub/b.png"):
        difference = (read_image(fast / name) - read_image(plain / name)).abs().max()
        assert difference <= 1 / 255 + 1e-6, name


def test_only_consecutive_images_of_one_size_share_a_batch():
    class Item:
        def __init__(self, h: int) -> None:
            self.image = torch.zeros(3, h, 4)

    items = [Item(h) for h in (8, 8, 8, 4, 8)]
    sizes = [[i.image.shape[1] for i in b] for b in same_size_batches(items, 2)]
    assert sizes == [[8, 8], [8], [4], [8]]


def test_with_tiling_off_a_photo_out_of_memory_in_torchscript_fails_alone(
    photos, tmp_path, monkeypatch
):
    from nst_fast import model_loading

    real = model_loading.load_for_inference

    def as_torchscript_on_a_full_gpu(*args, **kwargs):
        loaded = real(*args, **kwargs)

        def run(batch: torch.Tensor) -> torch.Tensor:
            if batch.shape[-2:] == (33, 47):  # a.png
                raise RuntimeError(
                    "The following operation failed in the TorchScript interpreter.\n"
                    "RuntimeError: CUDA out of memory. Tried to allocate 9.00 GiB"
                )
            return loaded.run(batch)

        return replace(loaded, run=run)

    monkeypatch.setattr(model_loading, "load_for_inference", as_torchscript_on_a_full_gpu)
    out = tmp_path / "out"
    report = stylize_paths(MODEL, [photos], out, tile=0, device="cpu")
    assert report.written == [out / "sub" / "b.png"]
    assert len(report.errors) == 1 and "\n" not in report.errors[0]
    assert report.errors[0].startswith(f"{photos / 'a.png'}: out of memory (RuntimeError: CUDA")
    assert report.errors[0].endswith("try tile=512")
