"""The LightningModule: one training step of a feed-forward style network."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nst_fast.errors import NstFastError
from nst_fast.export import checkpoint_arch
from nst_fast.fast import accelerate, share_parameters
from nst_fast.losses.build import build_criterion
from nst_fast.models.transformer import TransformerConfig, TransformerNet
from nst_fast.styles import load_style_image

# The loss network is rebuilt from the config, never stored in checkpoints.
LOSS_PREFIX = "criterion."
SCHEDULES = ("constant", "cosine")


class NonFiniteLossError(NstFastError):
    """The loss became NaN or infinite: training cannot continue from here."""


class StyleTransferModule(pl.LightningModule):
    """Trains a TransformerNet against the perceptual loss of one style image.

    Arguments are plain dicts (the ``model``, ``loss`` and ``style`` config groups) so
    checkpoints hold no config objects and load without Hydra.
    """

    def __init__(
        self,
        model: dict,
        loss: dict,
        style: dict,
        lr: float = 1e-3,
        schedule: str = "constant",
        channels_last: bool = True,
        compile: bool = False,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise NstFastError(f"optim.schedule={schedule}: expected one of {', '.join(SCHEDULES)}")
        self.save_hyperparameters()
        try:
            self.transformer = TransformerNet(TransformerConfig(**model))
        except ValueError as err:  # a bad model.* choice: one line, not a traceback
            raise NstFastError(str(err)) from err
        # The style image before the loss network: a wrong path must fail before VGG's
        # weights download.
        self.register_buffer(
            "style_image", load_style_image(style["image"], style.get("size")), persistent=False
        )
        self.criterion = build_criterion(loss, style, self.transformer.multiple)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.strict_loading = False  # checkpoints leave the frozen loss network out
        self.use_step_net(self.transformer)
        self.skipped_photos = 0  # unreadable photos met since this process started training

    @classmethod
    def from_config(cls, cfg: DictConfig) -> StyleTransferModule:
        """The module ``nst-fast train`` builds from a composed config."""

        def plain(node: DictConfig) -> dict:
            return OmegaConf.to_container(node, resolve=True)

        return cls(
            model=plain(cfg.model),
            loss=plain(cfg.loss),
            style=plain(cfg.style),
            lr=cfg.optim.lr,
            schedule=cfg.optim.schedule,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            fast=cfg.fast,
        )

    @property
    def step_net(self) -> nn.Module:
        """The network the training step runs: ``transformer`` itself, its compiled form,
        or a twin with nst_fast.fast's modules computing the same function on the same
        parameters. Kept outside the module tree, so checkpoints hold ``transformer``'s
        weights once, under their plain names."""
        return self.__dict__["_step_net"]

    def use_step_net(self, net: nn.Module) -> None:
        # Not nn.Module.__setattr__, which would register it as a submodule.
        self.__dict__["_step_net"] = net

    def setup(self, stage: str) -> None:
        self.transformer.to(memory_format=self.memory_format)
        self.criterion.to(memory_format=self.memory_format)
        if self.hparams.compile:  # compiles the plain modules, fusing them itself
            self.use_step_net(torch.compile(self.transformer))
        elif self.hparams.fast:
            device = self.training_device()
            self.use_step_net(accelerate(share_parameters(self.transformer), "training", device))
            accelerate(self.criterion, "training", device)

    def training_device(self) -> torch.device:
        """Where training will run: the trainer's device (setup comes before the strategy
        moves the module there), or the module's own when no trainer is attached."""
        try:
            return self.trainer.strategy.root_device
        except RuntimeError:  # Lightning: "... is not attached to a `Trainer`"
            return self.device

    def on_fit_start(self) -> None:
        self.criterion.set_style(self.style_image.unsqueeze(0))

    def on_train_start(self) -> None:
        # A resumed run has its optimizer's state back from the checkpoint, learning rate
        # included; with a constant schedule, optim.lr on the resuming command is the one
        # meant (lowering it to fine-tune is the usual reason to give it).
        if self.hparams.schedule == "constant":
            for optimizer in self.trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = self.hparams.lr
        else:  # cosine: the given rate, at the step the run is at
            for config in self.trainer.lr_scheduler_configs:
                config.scheduler.base_lrs = [self.hparams.lr] * len(config.scheduler.base_lrs)
                for group in config.scheduler.optimizer.param_groups:
                    group["lr"] = self.hparams.lr * self.cosine_factor(self.trainer.global_step)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.transformer(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        images = batch["image"]
        # A running count, logged every step once there is one: Lightning writes only
        # every log_every_n_steps-th value, and per-batch counts in between would be lost.
        self.skipped_photos += len(batch["skipped"])
        if self.skipped_photos:
            self.log("data/skipped", float(self.skipped_photos))
        if images.numel() == 0:
            return None  # every photo in this batch was unreadable: skip the step
        images = images.contiguous(memory_format=self.memory_format)
        output = self.step_net(images)
        losses = self.criterion(output, images)
        if not torch.isfinite(losses["total"]):
            # Stop before the optimizer step writes NaNs into the weights.
            terms = ", ".join(f"{k} {losses[k].item():.4g}" for k in ("content", "style", "tv"))
            raise NonFiniteLossError(
                f"the loss became {losses['total'].item()} at step {self.global_step} ({terms}); "
                "lower optim.lr or the loss weights, then resume from the last good "
                "checkpoint with ckpt_path=last"
            )
        # sync_dist: with several processes the logged values are the mean over ranks.
        self.log("loss/total", losses["total"], prog_bar=True, sync_dist=True)
        for name, value in losses.items():  # content, style, tv, and style per layer
            if name != "total":
                self.log(f"loss/{name}", value, sync_dist=True)
        return losses["total"]

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.transformer.parameters(), lr=self.hparams.lr)
        if self.hparams.schedule == "constant":
            return optimizer
        if self.trainer.max_steps <= 0:
            raise NstFastError("optim.schedule=cosine needs trainer.max_steps")
        # In closed form over the trainer's max_steps as it is now, not a stored T_max: a
        # finished run trained further keeps decaying to 0 at its new max_steps (a restored
        # CosineAnnealingLR would climb back up to the full rate, its period being over).
        cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.cosine_factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}

    def cosine_factor(self, step: int) -> float:
        """The cosine schedule's share of ``optim.lr`` at ``step``."""
        return 0.5 * (
            1 + math.cos(math.pi * min(step, self.trainer.max_steps) / self.trainer.max_steps)
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The config is composed anew when a run resumes: a changed model.* (or a changed
        # default) would load the weights into a different network, silently or not.
        saved = checkpoint_arch(checkpoint.get("hyper_parameters"))
        current = self.transformer.config.to_dict()
        changed = [
            f"model.{k}={v}".replace(" ", "") for k, v in saved.items() if current.get(k) != v
        ]
        if changed:
            raise NstFastError(
                f"this checkpoint was trained with {' '.join(changed)}; add "
                f"{'that' if len(changed) == 1 else 'those'} to the command to resume it"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(LOSS_PREFIX)]:
            del state[key]
