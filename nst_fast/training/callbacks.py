"""Callbacks for everything beside the training step: image grids, export, samples."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torchvision.utils import make_grid

from nst_fast import compat
from nst_fast.errors import FlatOutputError, NstFastError
from nst_fast.export import save_model
from nst_fast.images import ImageReadError, read_image, save_image
from nst_fast.inference import stylize, stylize_large
from nst_fast.memory import is_out_of_memory

log = logging.getLogger(__name__)


def _tensorboard(trainer: pl.Trainer):
    """The SummaryWriter of the first TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.TensorBoardLogger):
            return logger.experiment
    return None


class ImageGridLogger(pl.Callback):
    """Every ``every_n_steps`` steps, log a grid of fixed photos beside their stylizations
    (a row per photo: the photo, then each style's).

    The style images are logged once at the start. Photos are the DataModule's
    ``preview_batch()``, so every grid of a run shows the same photos.
    """

    def __init__(self, every_n_steps: int = 200) -> None:
        self.every_n_steps = every_n_steps
        self.photos: torch.Tensor | None = None
        self.logged_step: int | None = None

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None:
            return
        for index, image in zip(pl_module.trained, pl_module.style_images, strict=True):
            name = pl_module.styles[index]["name"]
            tag = "style" if len(pl_module.styles) == 1 else f"style/{name}"
            writer.add_image(tag, image.clamp(0, 1), trainer.global_step)
        self.photos = trainer.datamodule.preview_batch()
        self._log_grid(trainer, pl_module)

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._log_grid(trainer, pl_module)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_grid(trainer, pl_module)

    def _log_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None or self.photos is None or not len(self.photos):
            return
        if trainer.global_step == self.logged_step:  # the end on a multiple of every_n_steps
            return
        self.logged_step = trainer.global_step
        photos = self.photos.to(pl_module.device)
        stylized = [stylize(net, photos, half=False) for net in pl_module.transformer.each_style()]
        rows = torch.stack([self.photos.cpu(), *stylized], 1).flatten(0, 1)
        grid = make_grid(rows, nrow=1 + len(stylized), padding=4)
        writer.add_image("preview", grid, trainer.global_step)
        writer.flush()


class ExportModel(pl.Callback):
    """At the end of training, write the transform network to ``path`` (rank zero only)."""

    def __init__(self, path: str | Path, style: str, extra: dict | None = None) -> None:
        self.path, self.style, self.extra = Path(path), style, extra

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            names = [spec["name"] for spec in pl_module.styles]
            extra = dict(self.extra or {})
            if pl_module.last_validation is not None:
                extra["validation"] = pl_module.last_validation
            save_model(
                pl_module.transformer,
                self.path,
                style=self.style,
                step=trainer.global_step,
                extra=extra,
                styles=names if len(names) > 1 else None,
            )
        except OSError as err:
            last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
            raise NstFastError(
                f"{self.path}: cannot write the model ({err.strerror or err}); the checkpoints "
                f"are kept: nst-fast export {last} --format pt -o MODEL.pt"
            ) from err
        log.info("exported model: %s", self.path)


class StylizeSamples(pl.Callback):
    """At the end of training, stylize the preview photos at full size into ``folder``
    (``folder/STYLE/`` for each style of a network of several).

    The DataModule's preview photos are the ones it already decoded successfully. They are
    stylized as ``nst-fast stylize`` does (``inference.stylize_large``): full-size photos
    on the training GPU, beside the optimizer's state, may need tiles, and a sample that
    runs out of memory even so is left out rather than failing the finished run.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        nets = pl_module.transformer.each_style()
        folders = (
            [self.folder] if len(nets) == 1 else [self.folder / s["name"] for s in pl_module.styles]
        )
        for path in trainer.datamodule.preview_paths():
            try:
                photo = read_image(path)
            except ImageReadError as err:  # changed on disk since it was first read
                log.warning("sample left out: %s", err)
                continue
            name = trainer.datamodule.sample_name(path)
            for net, folder in zip(nets, folders, strict=True):
                try:
                    sample = stylize_large(net, photo)
                except Exception as err:
                    if not is_out_of_memory(err):
                        raise
                    log.warning("sample left out: %s: out of memory even in tiles", path)
                    continue
                save_image(sample, folder / name)


class SkippedPhotosReport(pl.Callback):
    """Log how many unreadable photos were skipped (``data/skipped``), and once per epoch
    say which."""

    def __init__(self, examples: int = 5) -> None:
        self.examples = examples
        self.skipped: list[str] = []
        self.total = 0  # since this process started training

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.skipped += batch["skipped"]
        self.total += len(batch["skipped"])
        # A running count, logged every step once there is one: Lightning writes only
        # every log_every_n_steps-th value, and per-batch counts in between would be lost.
        if self.total:
            pl_module.log("data/skipped", float(self.total))

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.skipped:
            shown = "\n  ".join(self.skipped[: self.examples])
            more = len(self.skipped) - self.examples
            log.warning(
                "epoch %d: skipped %d unreadable photo(s):\n  %s%s",
                trainer.current_epoch,
                len(self.skipped),
                shown,
                f"\n  ... and {more} more" if more > 0 else "",
            )
        self.skipped = []


class FlatOutputStop(pl.Callback):
    """Stop a run whose network has gone dead: its output one flat colour on every photo
    of ``patience`` training batches in a row.

    Two ways lead there, both without a way back, since no gradient passes: Adam's first
    steps push every channel of the last hidden layer below zero (its ReLUs all off; a
    decoder without norms, ``model.norm_scope=residual``, has nothing to stop it), or
    drive the output layer so far that its tanh saturates. Only the output bias may still
    train, the loss creeps down, and the run would go on for hours learning nothing.
    """

    def __init__(self, patience: int = 10, tolerance: float = 1e-4) -> None:
        self.patience, self.tolerance = patience, tolerance
        self.flat_steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        spread = outputs.get("output_spread") if isinstance(outputs, dict) else None
        photos = spread is not None  # none when every photo of the batch was unreadable
        # Every process votes on every batch, or one would stop, or wait in the vote, while
        # the others go on: how many had photos, and how many of them a flat output.
        vote = torch.tensor([photos, photos and bool(spread <= self.tolerance)], dtype=torch.float)
        summed = trainer.strategy.reduce(vote.to(trainer.strategy.root_device), reduce_op="sum")
        with_photos, flat = summed.tolist()
        if not with_photos:
            return  # a batch no process had a photo of
        self.flat_steps = self.flat_steps + 1 if flat == with_photos else 0
        if self.flat_steps >= self.patience:
            warmup = pl_module.hparams.get("warmup_steps", 0)
            stability = getattr(pl_module, "stability", None)
            start = None if stability is None else stability.schedule.start
            raise FlatOutputError(trainer.global_step, self.flat_steps, warmup, start)


class ValidateAtEnd(pl.Callback):
    """Validate at the last step too, not only every ``trainer.val_check_interval`` steps,
    so that a run's final network always has its validation figures (and model.pt its
    validation loss).

    Lightning validates after a step that asks the loop to stop (``should_stop``), as it
    does for early stopping; the loop would stop after this step anyway.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class HyperparameterTable(pl.Callback):
    """TensorBoard's HPARAMS tab: the run's settings beside its validation loss.

    ``hp_metric`` is the validation total loss (logged by the module at each validation);
    the table's row, written once per run at its first validation, names the settings
    ``params`` (``nst-fast train`` gives the command line's overrides: what differs
    between the runs of a multirun).
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = {key: table_value(value) for key, value in params.items()}
        self.written = False

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metric = trainer.callback_metrics.get("hp_metric")
        writer = _tensorboard(trainer)
        if self.written or trainer.sanity_checking or metric is None or writer is None:
            return
        # run_name ".": the row belongs to this run's own folder, beside its scalars.
        writer.add_hparams(
            self.params, {"hp_metric": float(metric)}, run_name=".", global_step=trainer.global_step
        )
        self.written = True

    def state_dict(self) -> dict[str, Any]:
        return {"written": self.written}  # a resumed run does not write a second row

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.written = bool(state_dict.get("written", False))


def table_value(value: Any) -> int | float | str | bool:
    """A setting as TensorBoard's HPARAMS table takes it: numbers and text as they are,
    anything else (lists, null) as text."""
    return value if isinstance(value, (int, float, str, bool)) else str(value)


class ResumeLearningRate(pl.Callback):
    """A resumed run trains at the ``optim.lr`` of the resuming command.

    Lightning restores the optimizer's state, learning rate included; lowering optim.lr
    to fine-tune is the usual reason to give it when resuming. With a schedule (warm-up,
    cosine) the given rate is scaled to the step the run is at.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        lr = pl_module.hparams.lr
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        for config in trainer.lr_scheduler_configs:
            config.scheduler.base_lrs = [lr] * len(config.scheduler.base_lrs)
            for group in config.scheduler.optimizer.param_groups:
                group["lr"] = lr * pl_module.lr_factor(trainer.global_step)


class ResumableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves at the last step and when the run is interrupted.

    Only interruptions: after a failure such as a NaN loss the last good checkpoint must
    stay the last one.
    """

    def __init__(self, *args, resume_hint: str = "", **kwargs) -> None:
        # No last-v1.ckpt beside last.ckpt when a moved run directory is resumed:
        # ckpt_path=last would go on finding the old one.
        super().__init__(*args, save_on_exception=True, enable_version_counter=False, **kwargs)
        self.resume_hint = resume_hint

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # The final step is saved here, not only in on_train_end: Lightning runs the other
        # callbacks' on_train_end (export, samples) first, and one failing would cost it.
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save_final_step(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save_final_step(trainer)  # a run ended by max_epochs
        super().on_train_end(trainer, pl_module)

    def _save_final_step(self, trainer) -> None:
        # Lightning writes last.ckpt at the end only if no periodic checkpoint was ever
        # written: a run whose max_steps is not a multiple of checkpoint_every_n_steps
        # would resume from its last periodic step and train the steps after it again.
        compat.save_checkpoint_now(self, trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        super().on_exception(trainer, pl_module, exception)
        rank_zero_info(
            f"\nnst-fast train: interrupted at step {trainer.global_step}; checkpoint saved "
            f"to {Path(self.dirpath) / 'last.ckpt'}\nresume with: {self.resume_hint}"
        )
