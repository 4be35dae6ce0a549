"""The LightningDataModule: photos from a folder, resized and cropped to the training size."""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing
import signal
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from torchvision.transforms import v2

from nst_fast import compat
from nst_fast.data.folder import PhotoFolder, check_photo, collate_skipping
from nst_fast.errors import NstFastError
from nst_fast.images import ImageReadError, list_images, read_image_uint8, read_square
from nst_fast.losses.vgg import MIN_IMAGE_SIZE

CROPS = ("center", "random", "random_resized")

log = logging.getLogger(__name__)


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave SIGTERM to the main process.

    Schedulers (SLURM's pre-emption and scancel, systemd) signal every process of a run.
    A worker killed by it makes the main process fail with "DataLoader worker is killed
    by signal" before Lightning's handler can save the checkpoint; the main process stops
    its workers itself once that is done.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def init_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader worker_init_fn of the training photos: SIGTERM left to the main process
    (``ignore_sigterm``), and random crops of the worker's own on every DDP rank.

    Every rank is seeded alike (``seed_everything(cfg.seed)``, so that the networks start
    alike), and so would be its workers. Lightning gives workers seeds that differ by rank
    (``pl_worker_init_function``) only to loaders without a worker_init_fn of their own;
    this one has one, so it calls Lightning's itself.
    """
    ignore_sigterm(worker_id)
    pl_worker_init_function(worker_id, rank)


def _kill_leftover_workers() -> None:
    """At exit, kill data workers still alive (after an error the loader may not have
    stopped them): they ignore the SIGTERM multiprocessing sends, and would be waited
    for forever."""
    leftover = [child for child in multiprocessing.active_children() if child.daemon]
    if leftover:
        # PyTorch's SIGCHLD handler would report each killed worker as a failure.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in leftover:
        child.kill()


atexit.register(_kill_leftover_workers)


def loader_state_for_workers(
    state: dict[str, Any], num_workers: int, epoch_batches: int | None = None
) -> dict[str, Any]:
    """A data loader's saved position, rewritten for ``num_workers`` worker processes.

    torchdata's loader refuses a state saved with another worker count (a bare
    AssertionError), so a run checkpointed with 4 workers could not resume on a machine
    where the default is 2. With a map-style dataset the workers hold no state of their
    own: the position is the sampler's, and it carries over as is. A state this cannot
    read, or one past the end of an epoch of ``epoch_batches`` (fewer photos since), gives
    ``{}``: the resumed run starts a fresh pass over the photos.
    """
    if not state:
        return state
    try:  # torchdata's layout of the state is its own: compat reads and writes it
        position = compat.read_loader_state(state)
    except (KeyError, TypeError):
        log.warning("the data loader's saved position is unreadable: starting a fresh pass")
        return {}
    served = position.batches + position.unreplayed
    if epoch_batches is not None and served > epoch_batches:
        # Fewer photos than when it was saved: the sampler cannot skip past its end.
        log.warning(
            "the data loader's saved position (batch %d) is past this epoch's %d batches: "
            "the photos changed since the checkpoint; starting a fresh pass",
            served,
            epoch_batches,
        )
        return {}
    if position.workers == num_workers:
        return state
    # Batches after the last snapshot (only the same workers replay them), or state the
    # workers keep themselves, stay with that number of workers.
    if position.unreplayed or any(s is not None for s in position.own_states):
        log.warning(
            "the data loader's position was saved with %d workers and cannot be moved to %d: "
            "starting a fresh pass over the photos",
            position.workers,
            num_workers,
        )
        return {}
    return compat.write_loader_state(position, num_workers)


class PhotoLoader(StatefulDataLoader):
    """A StatefulDataLoader whose saved position survives a change of ``num_workers``
    (another machine, another ``data.num_workers``) between a run and its resumption."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(loader_state_for_workers(state_dict, self.num_workers, len(self)))


class PhotoDataModule(pl.LightningDataModule):
    """Training photos for one style network.

    ``crop``: 'center' (Johnson's recipe: resize the short side, centre crop), 'random'
    (resize, random crop) or 'random_resized' (random scale and position: more variety
    from a handful of photos, as in the demo). ``repeat`` passes a small folder several
    times per epoch.

    Validation (``val_images`` > 0; conf/data gives 8, built directly it is off): that
    many held-out photos of ``val_root``, or of ``root`` and then never trained on, as
    centred squares of ``val_size`` px.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        batch_size: int = 4,
        num_workers: int = 2,
        shuffle: bool = True,
        crop: str = "center",
        pin_memory: bool = True,
        preview_images: int = 4,
        repeat: int = 1,
        val_root: str | None = None,
        val_images: int = 0,
        val_size: int = 256,
    ) -> None:
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise NstFastError(
                f"data.image_size={image_size}: expected {MIN_IMAGE_SIZE} pixels or more (e.g. 256)"
            )
        if batch_size <= 0:
            raise NstFastError(f"data.batch_size={batch_size}: must be positive")
        if num_workers < 0:
            raise NstFastError(f"data.num_workers={num_workers}: expected 0 (load in the main "
                               "process) or more")  # fmt: skip
        if crop not in CROPS:
            raise NstFastError(f"data.crop={crop}: expected one of {', '.join(CROPS)}")
        if val_images < 0:
            raise NstFastError(f"data.val_images={val_images}: expected 0 (no validation) or more")
        if val_images and val_size < MIN_IMAGE_SIZE:
            raise NstFastError(
                f"data.val_size={val_size}: expected {MIN_IMAGE_SIZE} pixels or more (e.g. 256)"
            )
        self.root, self.image_size, self.batch_size = root, image_size, batch_size
        self.num_workers, self.shuffle, self.crop = num_workers, shuffle, crop
        self.pin_memory, self.preview_images = pin_memory, preview_images
        self.val_root, self.val_size = val_root, val_size
        # Listing the folders here makes a wrong data.root or data.val_root fail before any
        # other work.
        self.dataset = PhotoFolder(root, self.train_transform(), repeat)
        self.held_out = self.choose_held_out(val_images)
        if self.held_out and val_root is None:
            self.dataset.exclude(self.held_out)
            if len(self.dataset.files) < batch_size:
                raise NstFastError(
                    f"data.root={root}: {len(self.dataset.files) + len(self.held_out)} photos "
                    f"are too few to hold out data.val_images={val_images} and fill a batch of "
                    f"data.batch_size={batch_size}; lower data.val_images, or put held-out "
                    "photos in a folder of their own (data.val_root)"
                )
        next(self.readable_photos())  # at least one photo decodes
        self._preview_paths: list[Path] | None = None
        self._held_out_images: torch.Tensor | None = None

    def train_transform(self) -> v2.Transform:
        size = self.image_size
        crop = {
            "center": [v2.Resize(size, antialias=True), v2.CenterCrop(size)],
            "random": [v2.Resize(size, antialias=True), v2.RandomCrop(size)],
            "random_resized": [v2.RandomResizedCrop(size, scale=(0.1, 1.0), antialias=True)],
        }[self.crop]
        return v2.Compose([*crop, v2.ToDtype(torch.float32, scale=True)])

    def train_dataloader(self) -> PhotoLoader:
        # Stateful: checkpoints record the position in the epoch's shuffled order, so a
        # resumed run continues with exactly the photos the interrupted one had not seen.
        return PhotoLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_skipping,
            worker_init_fn=partial(
                init_worker, rank=self.trainer.global_rank if self.trainer else 0
            ),
            drop_last=len(self.dataset) >= self.batch_size,
        )

    def choose_held_out(self, count: int) -> list[Path]:
        """The photos validation measures the network on: ``count`` readable photos of
        ``val_root``, or else of ``root`` (then never trained on).

        A fixed choice, the same in every run, process and resumed run: photos ranked by a
        hash of their path under the folder, so adding photos to a folder changes the
        choice by at most the added ones.
        """
        if count == 0:
            return []
        if self.val_root is None:
            root, files = self.dataset.root, self.dataset.files
        else:
            root = Path(self.val_root).expanduser()
            if not str(self.val_root).strip() or not root.is_dir():
                raise NstFastError(
                    f"data.val_root={self.val_root}: no such folder; point it at a folder of "
                    "held-out photos, or leave it null to hold out photos of data.root"
                )
            files = list_images(root)
        ranked = sorted(files, key=lambda path: held_out_rank(path, root))
        chosen = list(islice(readable(ranked), count))
        if not chosen:
            where = f"data.val_root={self.val_root}" if self.val_root else f"data.root={root}"
            raise NstFastError(
                f"{where}: no readable photo to hold out for validation "
                f"({len(files)} image files); data.val_images=0 turns validation off"
            )
        return chosen

    def val_dataloader(self) -> DataLoader | list:
        # Each process of a multi-process run validates its share (Lightning gives this
        # loader a DistributedSampler); the module averages over the photos themselves.
        if not self.held_out:
            return []
        if self._held_out_images is None:  # a handful of small squares, decoded once
            self._held_out_images = torch.stack(
                [read_square(path, self.val_size) for path in self.held_out]
            )
        images = self._held_out_images
        photos = [{"image": image, "index": i} for i, image in enumerate(images)]
        return DataLoader(photos, batch_size=self.batch_size, shuffle=False)

    def preview_paths(self) -> list[Path]:
        """The fixed photos shown in image grids and stylized at the end of training: the
        first ``preview_images`` held-out photos, so that they show what the network does
        to photos it has not trained on; without validation, the folder's first
        readable files."""
        if self._preview_paths is None:
            photos = iter(self.held_out) if self.held_out else self.readable_photos()
            self._preview_paths = list(islice(photos, self.preview_images))
        return self._preview_paths

    def sample_name(self, path: Path) -> Path:
        """The name a preview photo's stylized sample is saved under: its path below the
        folder it came from (so a/x.jpg and b/x.png are two samples), as a .jpg."""
        for root in (self.val_root, self.dataset.root):
            if root is not None and Path(path).is_relative_to(Path(root).expanduser()):
                return Path(path).relative_to(Path(root).expanduser()).with_suffix(".jpg")
        return Path(Path(path).name).with_suffix(".jpg")

    def readable_photos(self) -> Iterator[Path]:
        """The training photos that decode, in order; the others are passed over here (the
        dataset reports them once per epoch). A folder where none decodes is an error."""
        errors: list[ImageReadError] = []
        found = False
        for path in readable(self.dataset.files, errors):
            found = True
            yield path
        if not found:
            raise NstFastError(
                f"data.root={self.root}: none of its {len(self.dataset.files)} image files "
                f"can be read ({errors[0] if errors else 'no files'})"
            )

    def preview_batch(self) -> torch.Tensor:
        """The preview photos as one batch of centred squares: held-out photos at the
        validation size, else training photos at the training size."""
        size = self.val_size if self.held_out else self.image_size
        photos = [read_square(path, size) for path in self.preview_paths()]
        return torch.stack(photos) if photos else torch.empty(0, 3, size, size)


def held_out_rank(path: Path, root: Path) -> str:
    """A photo's place in the held-out order: a hash of its path under ``root``, the same
    on every machine and run."""
    return hashlib.sha256(Path(path).relative_to(root).as_posix().encode()).hexdigest()


def readable(paths: Iterable[Path], errors: list[ImageReadError] | None = None) -> Iterator[Path]:
    """The photos of ``paths`` that decode, in order; why the others do not goes to
    ``errors``."""
    for path in paths:
        try:
            check_photo(path)
            read_image_uint8(path)
        except ImageReadError as err:
            if errors is not None:
                errors.append(err)
            continue
        yield path
