"""The LightningDataModule: photos from a folder, resized and cropped to the training size."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torchdata.stateful_dataloader import StatefulDataLoader
from torchvision.transforms import v2

from nst_fast import compat
from nst_fast.data.folder import PhotoFolder, check_photo, collate_skipping
from nst_fast.errors import NstFastError
from nst_fast.images import ImageReadError, read_image, read_image_uint8
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
        self.root, self.image_size, self.batch_size = root, image_size, batch_size
        self.num_workers, self.shuffle, self.crop = num_workers, shuffle, crop
        self.pin_memory, self.preview_images = pin_memory, preview_images
        # Listing the folder here makes a wrong data.root fail before any other work.
        self.dataset = PhotoFolder(root, self.train_transform(), repeat)
        next(self.readable_photos())  # at least one photo decodes
        self._preview_paths: list[Path] | None = None

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
            worker_init_fn=ignore_sigterm,
            drop_last=len(self.dataset) >= self.batch_size,
        )

    def preview_paths(self) -> list[Path]:
        """The fixed photos shown in image grids and stylized at the end of training:
        the first ``preview_images`` readable files of the folder."""
        if self._preview_paths is None:
            self._preview_paths = list(islice(self.readable_photos(), self.preview_images))
        return self._preview_paths

    def readable_photos(self) -> Iterator[Path]:
        """The folder's photos that decode, in order; the others are passed over here (the
        dataset reports them once per epoch). A folder where none decodes is an error."""
        first_error, found = None, False
        for path in self.dataset.files:
            try:
                check_photo(path)
                read_image_uint8(path)
            except ImageReadError as err:
                first_error = first_error or err
                continue
            found = True
            yield path
        if not found:
            raise NstFastError(
                f"data.root={self.root}: none of its {len(self.dataset.files)} image files "
                f"can be read ({first_error})"
            )

    def preview_batch(self) -> torch.Tensor:
        """The preview photos, centre-cropped to the training size, as one batch."""
        crop = v2.Compose(
            [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]
        )
        photos = [crop(read_image(path)) for path in self.preview_paths()]
        return (
            torch.stack(photos) if photos else torch.empty(0, 3, self.image_size, self.image_size)
        )
