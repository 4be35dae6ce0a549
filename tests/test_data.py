"""Photos from any folder tree: resized, cropped, unreadable files skipped and counted."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from nst_fast.data.datamodule import PhotoDataModule, PhotoLoader, loader_state_for_workers
from nst_fast.data.folder import PhotoFolder, collate_skipping
from nst_fast.errors import NstFastError
from nst_fast.images import read_image


def test_batches_have_the_training_size(photo_folder):
    dm = PhotoDataModule(str(photo_folder), image_size=24, batch_size=3, num_workers=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 24, 24)
    assert batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert batch["skipped"] == []


@pytest.mark.parametrize("crop", ["center", "random", "random_resized"])
def test_every_crop_gives_square_training_images(photo_folder, crop):
    dm = PhotoDataModule(str(photo_folder), image_size=16, batch_size=2, num_workers=0, crop=crop)
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 16, 16)


def test_the_loader_workers_of_each_rank_crop_at_random_positions_of_their_own(
    photo_folder, monkeypatch
):
    # As train() seeds every DDP process: the same seed, so that the networks start alike.
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    monkeypatch.setenv("PL_SEED_WORKERS", "1")

    def first_batch(rank: int) -> torch.Tensor:
        dm = PhotoDataModule(
            str(photo_folder), image_size=16, batch_size=2, num_workers=1, crop="random_resized"
        )
        dm.trainer = SimpleNamespace(global_rank=rank)  # what a rank's datamodule sees
        pl.seed_everything(0, workers=True, verbose=False)
        return next(iter(dm.train_dataloader()))["image"]

    assert torch.equal(first_batch(1), first_batch(1))  # seeded: a rerun crops alike
    assert not torch.equal(first_batch(0), first_batch(1))


def test_unreadable_files_are_skipped_and_counted(photo_folder):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photo_folder / "empty.png").write_bytes(b"")
    dataset = PhotoDataModule(str(photo_folder), image_size=16, num_workers=0).dataset
    items = [dataset[i] for i in range(len(dataset))]
    errors = sorted(item["error"] for item in items if "error" in item)
    assert len(errors) == 2
    assert "broken.jpg: not a readable image" in errors[0]
    assert "empty.png: empty file" in errors[1]
    batch = collate_skipping([*items, {"error": "x.jpg: empty file"}])
    assert len(batch["skipped"]) == 3
    assert batch["image"].shape == (len(items) - 2, 3, 16, 16)


def test_a_batch_of_only_unreadable_files_is_empty():
    batch = collate_skipping([{"error": "a"}, {"error": "b"}])
    assert batch["image"].numel() == 0 and batch["skipped"] == ["a", "b"]


def test_repeat_passes_a_small_folder_several_times(photo_folder):
    assert len(PhotoFolder(photo_folder, repeat=5)) == 5 * len(PhotoFolder(photo_folder))


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(NstFastError, match=r"data.root=.*nowhere: no such folder"):
        PhotoDataModule(str(tmp_path / "nowhere"))


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    with pytest.raises(NstFastError, match=r"empty: no JPEG/PNG images"):
        PhotoDataModule(str(tmp_path / "empty"))


@pytest.mark.parametrize("option", [{"image_size": 0}, {"batch_size": -1}, {"crop": "zoom"}])
def test_bad_options_are_refused(photo_folder, option):
    with pytest.raises(NstFastError, match=f"data.{next(iter(option))}"):
        PhotoDataModule(str(photo_folder), **option)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_image_mode_is_read_as_rgb(tmp_path, mode):
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode).save(path)
    image = read_image(path)
    assert image.shape == (3, 10, 20) and image.dtype == torch.float32


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert read_image(path).shape == (3, 40, 20)


def test_preview_batch_is_fixed_and_centre_cropped(photo_folder):
    dm = PhotoDataModule(str(photo_folder), image_size=16, num_workers=0, preview_images=3)
    assert dm.preview_batch().shape == (3, 3, 16, 16)
    assert torch.equal(dm.preview_batch(), dm.preview_batch())


def numbers_loader(workers: int, count: int = 12) -> PhotoLoader:
    """Shuffled batches of the numbers 0 to count-1, as the training loader serves photos."""
    return PhotoLoader(
        list(range(count)),
        batch_size=2,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


@pytest.mark.parametrize(("before", "after"), [(2, 1), (0, 2), (2, 0), (1, 1)])
def test_a_saved_position_carries_over_to_another_number_of_workers(before, after):
    loader = numbers_loader(before)
    batches = iter(loader)
    seen = [next(batches).tolist() for _ in range(2)]
    state = loader.state_dict()
    rest_of_epoch = [batch.tolist() for batch in batches]

    moved = numbers_loader(after)
    moved.load_state_dict(state)
    assert [batch.tolist() for batch in moved] == rest_of_epoch
    assert sorted(n for batch in seen + rest_of_epoch for n in batch) == list(range(12))


def test_an_unreadable_saved_position_starts_a_fresh_pass():
    assert loader_state_for_workers({"_snapshot": {}}, 2) == {}
    loader = numbers_loader(1)
    loader.load_state_dict({"_snapshot": {}, "_iterator_finished": False})
    assert sorted(n for batch in loader for n in batch.tolist()) == list(range(12))


def test_a_position_that_depends_on_the_workers_stays_with_their_number():
    loader = numbers_loader(2)
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    state["_snapshot"]["_worker_snapshots"]["worker_0"]["dataset_state"] = {"cursor": 3}
    assert loader_state_for_workers(state, 2) is state
    assert loader_state_for_workers(state, 1) == {}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_position_past_the_end_of_fewer_photos_starts_a_fresh_pass(workers):
    loader = numbers_loader(workers)
    batches = iter(loader)
    for _ in range(5):
        next(batches)
    fewer = numbers_loader(workers, count=4)
    fewer.load_state_dict(loader.state_dict())
    assert sorted(n for batch in fewer for n in batch.tolist()) == [0, 1, 2, 3]


@pytest.mark.slow
def test_workers_left_running_by_an_error_do_not_hold_up_the_exit():
    # Workers ignore SIGTERM (see ignore_sigterm), which multiprocessing sends them at exit.
    script = (
        "from nst_fast.data.datamodule import PhotoLoader, ignore_sigterm\n"
        "loader = PhotoLoader(list(range(12)), batch_size=2, num_workers=2,"
        " worker_init_fn=ignore_sigterm)\n"
        "batches = iter(loader)\n"
        "next(batches)\n"
        "raise SystemExit(2)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 2
    assert b"killed by signal" not in result.stderr


def test_a_folder_where_no_photo_can_be_read_is_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(NstFastError, match=r"none of its 2 image files can be read \(.*a.jpg"):
        PhotoDataModule(str(tmp_path), image_size=24, batch_size=2, num_workers=0)


def test_an_empty_data_root_is_not_taken_for_the_working_folder():
    with pytest.raises(NstFastError, match=r"data\.root=: no such folder"):
        PhotoDataModule("", image_size=16, num_workers=0)
