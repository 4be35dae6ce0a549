"""The LightningModule: one training step of a feed-forward style network."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nst_fast.config import resolve_styles
from nst_fast.device import training_device
from nst_fast.errors import NonFiniteLossError, NstFastError
from nst_fast.evaluate import scores
from nst_fast.export import check_same_arch, check_same_styles
from nst_fast.fast import accelerate, share_parameters
from nst_fast.inference import stylize
from nst_fast.losses.build import build_criterion, check_same_style_scales, check_style_image
from nst_fast.losses.stability import (
    RandomMotion,
    StabilityLoss,
    StabilitySchedule,
    step_generator,
)
from nst_fast.models.transformer import TransformerConfig, TransformerNet
from nst_fast.styles import load_style_image
from nst_fast.training.extend import extended, train_added_styles
from nst_fast.training.validation import mean_over_photos, photo_rows
from nst_fast.training.warm_start import start_from

# The loss terms every process agrees on at each step (over_processes).
AGREED = ("total", "content", "style", "tv")


class StyleTransferModule(pl.LightningModule):
    """Trains a TransformerNet against the perceptual loss of one style image, or of
    several (``style`` a list: one network, a conditional norm per style, each batch
    trained on the next style in turn).

    Arguments are plain dicts (the ``model``, ``loss`` and ``style`` config groups) so
    checkpoints hold no config objects and load without Hydra.
    """

    def __init__(
        self,
        model: dict,
        loss: dict,
        style: dict | list[dict],
        lr: float = 1e-3,
        schedule: str = "constant",
        warmup_steps: int = 0,
        channels_last: bool = True,
        compile: bool = False,
        fast: bool = True,
        init: str | None = None,
        extend: str | None = None,
        stability: dict | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if schedule not in ("constant", "cosine"):
            raise NstFastError(f"optim.schedule={schedule}: expected one of constant, cosine")
        if warmup_steps < 0:
            raise NstFastError(f"optim.warmup_steps={warmup_steps}: expected 0 or more")
        self.save_hyperparameters()
        self.styles = [style] if isinstance(style, dict) else list(style)
        self.transformer = TransformerNet(TransformerConfig(**model), len(self.styles))
        if init is not None:
            if extend is not None:
                raise NstFastError("model.init and extend: extend starts from its own model")
            start_from(self.transformer, init)
        # The styles this run trains: all, or those added to the trained model ``extend``.
        self.trained = list(range(len(self.styles)))
        if extend is not None:
            self.trained = train_added_styles(self.transformer, extend)
        trained = [self.styles[i] for i in self.trained]
        # The style images before the loss network: a wrong path must fail before VGG's
        # weights download.
        self.style_images = [load_style_image(s["image"], s.get("size")) for s in trained]
        for spec, image in zip(trained, self.style_images, strict=True):
            check_style_image(loss, image, spec["image"])
        # A loss per style (each its own weights), all on one loss network.
        first = build_criterion(loss, trained[0], self.transformer.multiple)
        self.criteria = nn.ModuleList(
            [
                first,
                *(build_criterion(loss, s, first.grid_period, first.network) for s in trained[1:]),
            ]
        )
        self.stability = stability_loss(stability)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.strict_loading = False  # checkpoints leave the frozen loss network out
        # The network the training step runs: ``transformer``, its compiled form, or a twin
        # of nst_fast.fast's modules on the same parameters (step_network). Not registered
        # as a submodule, so checkpoints hold the weights once, under their plain names.
        self.__dict__["step_net"] = self.transformer
        self.last_validation: dict | None = None  # {"step": N, "loss": val/total}

    @classmethod
    def from_config(cls, cfg: DictConfig) -> StyleTransferModule:
        """The module ``nst-fast train`` builds from a composed config."""
        model, loss, style, stability = (
            OmegaConf.to_container(cfg[k], resolve=True)
            for k in ("model", "loss", "style", "stability")
        )
        init = model.pop("init", None)  # where training starts, not the architecture
        if cfg.styles:
            style = resolve_styles(list(cfg.styles), style["size"])
        if cfg.extend:  # the trained model's network and styles, then the new ones
            model, style = extended(cfg.extend, style if isinstance(style, list) else [style])
        return cls(
            model=model,
            loss=loss,
            style=style,
            init=init,
            extend=cfg.extend,
            lr=cfg.optim.lr,
            schedule=cfg.optim.schedule,
            warmup_steps=cfg.optim.warmup_steps,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            fast=cfg.fast,
            stability=stability,
            seed=cfg.seed,
        )

    def setup(self, stage: str) -> None:
        self.transformer.to(memory_format=self.memory_format)
        self.criteria.to(memory_format=self.memory_format)
        if self.hparams.fast and not self.hparams.compile:
            accelerate(self.criteria, "training", training_device(self))

    def on_fit_start(self) -> None:
        self.__dict__["step_net"] = self.step_network()
        for criterion, image in zip(self.criteria, self.style_images, strict=True):
            criterion.set_style(image.to(self.device).unsqueeze(0))

    def step_network(self) -> nn.Module:
        """The network the training step runs. Built once Lightning has moved the module to
        its device (after setup): a move keeps the parameters but replaces the buffers, and
        the fast twin must hold the plain network's own (batch norm's running statistics,
        which checkpoints save)."""
        if self.hparams.compile:  # compiles the plain modules, fusing them itself
            return torch.compile(self.transformer)
        if not self.hparams.fast:
            return self.transformer
        return accelerate(share_parameters(self.transformer), "training", self.device)

    def style_weights(self, index: int) -> torch.Tensor | None:
        """The network's style input for style ``index``: None for a one-style network."""
        n = len(self.styles)
        return None if n == 1 else torch.eye(n, device=self.device)[index]

    def forward(self, images: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return self.transformer(images, style)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict | None:
        turn = self.global_step % len(self.trained)  # one style per batch, in turn
        index = self.trained[turn]
        images = batch["image"]  # none when every photo of the batch was unreadable
        losses, output = self.step_losses(images, turn) if len(images) else ({}, None)
        # Every process decides from the same figures, or one would stop or skip the step
        # while the others wait for it in the gradients' all-reduce.
        agreed = self.over_processes(losses)
        if not torch.isfinite(agreed["total"]):  # stop before NaNs reach the weights
            raise NonFiniteLossError(agreed, self.global_step)
        if not losses:
            if agreed["processes"] == 1:
                return None  # skip the step
            # Beside other processes, a zero gradient: this one's part in their all-reduce.
            trained = [p for p in self.parameters() if p.requires_grad]
            return {"loss": sum(p.sum() for p in trained) * 0.0}
        # Every term, and each style layer's; with several processes, the mean over ranks
        # (left out at a step where one had no photos: it would log none).
        if not agreed["without_photos"]:
            self.log_dict({f"loss/{name}": v for name, v in losses.items()}, sync_dist=True)
            if len(self.styles) > 1:
                name = f"loss_by_style/{self.styles[index]['name']}"
                self.log(name, losses["total"], sync_dist=True)
        self.log("loss", losses["total"], prog_bar=True, logger=False)
        # For FlatOutputStop: 0 when every photo's output is one flat colour.
        spread = output.detach().flatten(2).aminmax(dim=-1)
        return {"loss": losses["total"], "output_spread": (spread.max - spread.min).amax()}

    def step_losses(
        self, images: torch.Tensor, turn: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The loss terms of the network's output on ``images`` for style ``turn`` of the
        trained ones, and that output."""
        images = images.contiguous(memory_format=self.memory_format)
        style = self.style_weights(self.trained[turn])
        factor = 0.0 if self.stability is None else self.stability.schedule.factor(self.global_step)
        if factor == 0:  # no stability terms, or not yet: no perturbed copies either
            output = self.step_net(images, style)
            return self.criteria[turn](output, images), output
        # The perturbed copies go through the network in the same batch.
        generator = step_generator(
            self.hparams.seed, self.global_rank, self.global_step, images.device
        )
        perturbed = self.stability.perturb(images, generator)
        inputs = torch.cat([images, *perturbed.inputs]).contiguous(memory_format=self.memory_format)
        output, *rest = self.step_net(inputs, style).split(len(images))
        losses = self.criteria[turn](output, images)
        terms = self.stability(output, perturbed, rest, factor)
        return {**losses, **terms, "total": losses["total"] + terms["stability"]}, output

    def over_processes(self, losses: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The step's total, content, style and tv losses, each the mean over the processes
        that had photos; how many ``processes`` train, and how many of them were
        ``without_photos`` (``losses`` empty). The same on every process: one all-reduce."""
        mine = torch.zeros(len(AGREED) + 2, device=self.device)
        mine[-1] = 1  # this process
        if losses:
            mine[:-2] = torch.stack([losses[name].detach().float() for name in AGREED])
            mine[-2] = 1  # with photos
        try:
            strategy = self.trainer.strategy
        except RuntimeError:  # not attached to a Trainer (a test stepping it): alone
            strategy = None
        summed = mine if strategy is None else strategy.reduce(mine, reduce_op="sum")
        with_photos, processes = (int(n) for n in summed[-2:].tolist())
        figures = dict(zip(AGREED, summed[:-2] / max(with_photos, 1), strict=True))
        return {**figures, "processes": processes, "without_photos": processes - with_photos}

    def on_validation_epoch_start(self) -> None:
        self.val_nets, self.val_rows = self.transformer.each_style(), []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # The figures `nst-fast evaluate` gives for these photos: each photo's loss terms
        # on the network's output as `nst-fast stylize` computes it, in fp32.
        photos = batch["image"]
        with torch.autocast(self.device.type, enabled=False):
            for turn, index in enumerate(self.trained):
                outputs = stylize(self.val_nets[index], photos, half=False).to(self.device)
                terms = [
                    scores(self.criteria[turn], out[None], photo[None])
                    for out, photo in zip(outputs, photos, strict=True)
                ]
                self.val_rows += photo_rows(turn, batch["index"], terms)
        self.val_names = list(terms[0])

    def on_validation_epoch_end(self) -> None:
        if not self.val_rows or self.trainer.sanity_checking:
            return
        rows = torch.stack(self.val_rows).to(self.device)
        if self.trainer.world_size > 1:  # each process's share, all of them on every process
            rows = self.all_gather(rows).flatten(0, 1)
        means = mean_over_photos(rows.cpu(), len(self.trained))
        figures = {
            f"val/{name}": value for name, value in zip(self.val_names, means[-1], strict=True)
        }
        if len(self.styles) > 1:
            for index, style in zip(self.trained, means[:-1], strict=True):
                name = self.styles[index]["name"]
                figures[f"val_by_style/{name}"] = style[self.val_names.index("total")]
        figures = {name: float(value) for name, value in figures.items()}
        figures["hp_metric"] = figures["val/total"]
        # The same figures on every process (sync_dist only spares Lightning's warning), for
        # the callbacks (best.ckpt); written at the number of steps trained, as checkpoints
        # and model.pt count them. (Lightning's "step" key would do that too, but checkpoint
        # names take their {step} from it: step=N.ckpt files would be named by the last
        # validation's step, and overwrite each other.)
        self.log_dict(figures, sync_dist=True, logger=False)
        if self.logger is not None:
            self.logger.log_metrics(figures, step=self.global_step)
        self.last_validation = {"step": self.global_step, "loss": figures["val/total"]}

    def configure_optimizers(self) -> Any:
        trained = [p for p in self.transformer.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trained, lr=self.hparams.lr)
        if self.hparams.schedule == "constant" and not self.hparams.warmup_steps:
            return optimizer
        if self.hparams.schedule == "cosine" and self.trainer.max_steps <= 0:
            raise NstFastError("optim.schedule=cosine needs trainer.max_steps")
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """The share of ``optim.lr`` trained at after ``step`` steps (``rate_factor``)."""
        schedule = self.hparams.schedule
        max_steps = self.trainer.max_steps if schedule == "cosine" else 0
        return rate_factor(step, self.hparams.get("warmup_steps", 0), schedule, max_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The config is composed anew when a run resumes: a changed model.* (or a changed
        # default) would load the weights into a different network, silently or not.
        hparams = checkpoint.get("hyper_parameters")
        check_same_styles(hparams, [s["name"] for s in self.styles])
        check_same_arch(hparams, self.transformer.config)
        check_same_style_scales((hparams or {}).get("loss"), self.hparams.loss)
        self.last_validation = checkpoint.get("validation")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The loss network is rebuilt from the config, never stored in checkpoints.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("criteria.")]:
            del state[key]
        # The latest validation loss, and its step, travel with the weights to model.pt.
        if self.last_validation is not None:
            checkpoint["validation"] = self.last_validation


def stability_loss(settings: dict | None) -> StabilityLoss | None:
    """The ``stability`` config's loss, or None while both its weights are 0."""
    if settings is None:
        return None
    weights = {name: float(settings[name]) for name in ("temporal_weight", "noise_weight")}
    for name, weight in weights.items():
        if weight < 0:
            raise NstFastError(f"stability.{name}={weight:g}: expected 0 or more")
    if not any(weights.values()):
        return None
    motion = RandomMotion(**{name: float(settings[name]) for name in RandomMotion.__annotations__})
    for name, value in vars(motion).items():
        if value < 0:
            raise NstFastError(f"stability.{name}={value:g}: expected 0 or more")
    # Settings of runs from before the schedule have no keys for it: at once, as then.
    start, ramp = (int(settings.get(name, 0)) for name in ("start_step", "ramp_steps"))
    for name, value in (("start_step", start), ("ramp_steps", ramp)):
        if value < 0:
            raise NstFastError(f"stability.{name}={value}: expected 0 or more")
    schedule = StabilitySchedule(start, ramp)
    return StabilityLoss(motion, weights["temporal_weight"], weights["noise_weight"], schedule)


def rate_factor(step: int, warmup_steps: int, schedule: str, max_steps: int) -> float:
    """The share of ``optim.lr`` trained at after ``step`` steps: the warm-up's linear rise
    (from 1 / warmup_steps at step 0), times 1 or the cosine decay to 0 at ``max_steps``.

    In closed form over ``max_steps`` as the trainer has it now, not a stored T_max: a
    finished run trained further keeps decaying to 0 at its new max_steps (a restored
    CosineAnnealingLR would climb back up to the full rate, its period being over)."""
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if schedule == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))
    return factor
