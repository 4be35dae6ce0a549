"""``nst-fast train``: compose the Hydra config, build data, module, callbacks, and fit."""

from __future__ import annotations

import errno
import logging
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nst_fast import compat
from nst_fast.config import compose, composition_error, register
from nst_fast.config_files import config_dir
from nst_fast.data.datamodule import PhotoDataModule
from nst_fast.device import keep_freed_memory
from nst_fast.errors import NstFastError
from nst_fast.files import load_tensors
from nst_fast.losses.build import check_scale_sizes
from nst_fast.styles import load_style_image
from nst_fast.training.callbacks import (
    ExportModel,
    FlatOutputStop,
    HyperparameterTable,
    ImageGridLogger,
    ResumableCheckpoint,
    ResumeLearningRate,
    SkippedPhotosReport,
    StylizeSamples,
    ValidateAtEnd,
)
from nst_fast.training.module import StyleTransferModule

log = logging.getLogger(__name__)

# RUN/checkpoints/best.ckpt: the step with the lowest validation loss.
BEST_CHECKPOINT = "best"


def train(
    cfg: DictConfig,
    run_dir: str | Path,
    resume_hint: str = "",
    hparams: dict[str, Any] | None = None,
) -> Path:
    """Train one style network into ``run_dir``; returns the exported model's path.

    ``hparams``: the settings TensorBoard's HPARAMS tab shows beside the validation loss
    (``nst-fast train`` gives its command line's overrides)."""
    run_dir = Path(run_dir)
    check_run(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    quiet_library_notices()
    datamodule = PhotoDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    module = StyleTransferModule.from_config(cfg)
    model_path = run_dir / "model.pt"
    checkpoints = ResumableCheckpoint(
        resume_hint=resume_hint,
        dirpath=run_dir / "checkpoints",
        filename="step={step}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
        save_top_k=-1,
        save_last=True,
    )
    validation = []
    if cfg.data.val_images > 0:
        validation = [
            # The network with the lowest validation loss so far, kept beside last.ckpt.
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename=BEST_CHECKPOINT,
                monitor="val/total",
                mode="min",
                save_top_k=1,
                enable_version_counter=False,
            ),
            ValidateAtEnd(),
            HyperparameterTable(hparams or {}),
        ]
    trainer = make_trainer(
        cfg,
        run_dir,
        [
            checkpoints,
            *validation,
            ImageGridLogger(cfg.log_images_every_n_steps),
            # The loss and style settings travel with the model, for `nst-fast evaluate`
            # (and the stability terms', for what a video page says of it).
            ExportModel(
                model_path,
                "+".join(spec["name"] for spec in module.styles),
                extra={
                    "style": module.hparams.style,
                    "loss": module.hparams.loss,
                    "stability": module.hparams.stability,
                },
            ),
            StylizeSamples(run_dir / "samples"),
            SkippedPhotosReport(),
            FlatOutputStop(),
            ResumeLearningRate(),
            LearningRateMonitor(logging_interval="step"),
        ],
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if trainer.is_global_zero:
        log.info(
            "done: %d steps\n  run dir:     %s\n  model:       %s\n  checkpoints: %s\n"
            "  samples:     %s\n  tensorboard: tensorboard --logdir %s\n"
            "  stylize:     nst-fast stylize %s PHOTO -o OUT_DIR",
            trainer.global_step,
            run_dir,
            model_path,
            run_dir / "checkpoints",
            run_dir / "samples",
            run_dir / "tensorboard",
            model_path,
        )
    return model_path


def check_run(cfg: DictConfig, run_dir: Path) -> None:
    """Settings that would fail deep inside Lightning, or write over an earlier run."""
    max_steps = cfg.trainer.get("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        raise NstFastError(
            f"trainer.max_steps={max_steps}: expected 1 or more (-1: trainer.max_epochs decides)"
        )
    if cfg.checkpoint_every_n_steps < 0:
        raise NstFastError(
            f"checkpoint_every_n_steps={cfg.checkpoint_every_n_steps}: expected 0 (only at "
            "the end) or more"
        )
    if cfg.optim.lr <= 0:
        raise NstFastError(f"optim.lr={cfg.optim.lr}: expected a positive rate, e.g. 1e-3")
    if cfg.trainer.get("deterministic") is True and trains_on_cuda(cfg.trainer):
        # Lightning's True is torch.use_deterministic_algorithms(True): the first backward
        # through reflection padding (every layer of the network) raises, as CUDA has no
        # deterministic kernel for it; the stability terms' grid_sample has none either.
        benchmark = " trainer.benchmark=false" if cfg.trainer.get("benchmark") else ""
        raise NstFastError(
            "trainer.deterministic=true: CUDA has no deterministic backward for the network's "
            "reflection padding, so training would fail at its first step; "
            f"trainer.deterministic=warn{benchmark} uses deterministic kernels where CUDA has "
            "them and warns of the rest (trainer=cpu runs fully deterministic)"
        )
    if cfg.ckpt_path is None and any((run_dir / "checkpoints").glob("*.ckpt")):
        raise NstFastError(
            f"{run_dir} holds an earlier run's checkpoints: resume it with ckpt_path=last, "
            "or train anew in another hydra.run.dir (or remove that one)"
        )
    if cfg.ckpt_path is not None:
        check_checkpoint(str(cfg.ckpt_path), run_dir)
    crops = {f"data.image_size={cfg.data.image_size}": cfg.data.image_size}
    if cfg.data.val_images > 0:
        crops[f"data.val_size={cfg.data.val_size}"] = cfg.data.val_size
    check_scale_sizes(cfg.loss, crops)


def trains_on_cuda(trainer: DictConfig) -> bool:
    """Whether Lightning will train with these trainer settings on CUDA GPUs: accelerator
    gpu or cuda, or auto (Lightning's default) where CUDA is available."""
    accelerator = trainer.get("accelerator", "auto")
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_checkpoint(spec: str, run_dir: Path) -> None:
    """``ckpt_path=FILE`` or ``last``: the checkpoint Lightning would resume from is one
    whose network nst-fast can build (``export.checked_checkpoint``); one line otherwise,
    before Lightning's own tracebacks."""
    from nst_fast.export import ModelFileError, checked_checkpoint

    if spec in ("best", "hpc", "registry"):
        return
    if spec == "last":
        # As Lightning finds it: the newest last*.ckpt in the run's checkpoint folder
        # (none: the run starts afresh).
        found = [p for p in (run_dir / "checkpoints").glob("last*.ckpt") if p.is_file()]
        if not found:
            return
        path = max(found, key=lambda p: p.stat().st_mtime)
        where = f"ckpt_path=last: {path}"
        what_to_do = (
            "; resume an earlier checkpoint (ckpt_path=RUN/checkpoints/step=N.ckpt), or move "
            f"{path.name} away to train anew"
        )
    else:
        path, where, what_to_do = Path(spec), f"ckpt_path={spec}", ""
        if not path.is_file():
            raise NstFastError(
                f"ckpt_path={path}: no such checkpoint file; ckpt_path=last resumes the run "
                "in hydra.run.dir"
            )
    try:
        state = load_tensors(path)
    except ValueError as err:
        raise NstFastError(f"{where}: not a training checkpoint ({err}){what_to_do}") from err
    if not isinstance(state, dict) or "pytorch-lightning_version" not in state:
        raise NstFastError(
            f"{where}: not a training checkpoint (those are in RUN/checkpoints/; "
            f"a model.pt cannot be resumed){what_to_do}"
        )
    try:
        checked_checkpoint(state, path)
    except ModelFileError as err:
        hint = "" if ";" in err.reason else what_to_do
        raise NstFastError(f"{where}: {err.reason}{hint}") from err


def make_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``, with ``callbacks`` and those of ``cfg.callbacks``."""
    from hydra.errors import InstantiationException
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    for name, node in cfg.callbacks.items():
        try:
            callbacks.append(instantiate(node))
        except InstantiationException as err:
            reason = str(err).splitlines()[0].split(", set env var HYDRA_FULL_ERROR")[0]
            raise NstFastError(f"callbacks.{name}: {reason}") from err
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    if cfg.data.val_images == 0:  # Lightning's own switch: no validation loop to warn of
        settings.setdefault("limit_val_batches", 0)
    try:
        return pl.Trainer(
            **settings,
            default_root_dir=run_dir,
            # hp_metric: the validation loss, logged by the module (never a -1 placeholder).
            logger=TensorBoardLogger(
                run_dir, name="tensorboard", version="", default_hp_metric=False
            ),
            callbacks=callbacks,
        )
    except (TypeError, ValueError, MisconfigurationException) as err:
        raise NstFastError(f"trainer: {err}") from err


def quiet_library_notices() -> None:
    """Keep a run's output to what concerns it: no notices the user can do nothing about."""
    from lightning_utilities.core import rank_zero

    # The frozen VGG loss network is in eval mode on purpose; Lightning warns of it.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Deprecations inside torchdata's and Lightning's own calls (torch 2.10 and later).
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A resumed run writes into its own checkpoint folder on purpose (check_run refuses to
    # start a new run over an earlier one's).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning advertises its cloud logger on every run.
    rank_zero.log.addFilter(lambda record: not record.getMessage().startswith("💡"))


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    keep_freed_memory()  # again here: DDP ranks start this file, not the CLI
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("ckpt_path=", "hydra."))]
    resume_hint = shlex.join(
        ["nst-fast", "train", *overrides, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    )
    try:
        train(cfg, run_dir, resume_hint, hparams=override_settings(overrides))
    except NstFastError as err:
        print(f"nst-fast train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:
        sys.exit(128 + signal.SIGTERM)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(
            f"nst-fast train: error: no space left on device ({err.filename or run_dir}); "
            "earlier checkpoints are intact: free some space and resume with ckpt_path=last",
            file=sys.stderr,
        )
        sys.exit(2)


def override_settings(overrides: list[str]) -> dict[str, Any]:
    """A job's command-line overrides as {key: value}, typed as Hydra parses them: the
    settings that tell the runs of a multirun apart."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: "deleted" if o.is_delete() else o.value() for o in parsed}


def run_from_cli(overrides: list[str]) -> None:
    """``nst-fast train OVERRIDES``: run Hydra with this file as the program.

    Lightning starts the other DDP ranks as ``python sys.argv[0] sys.argv[1:]`` (plus
    Hydra overrides of its own), so sys.argv must name a script that trains.
    """
    import __main__

    check_overrides(overrides)
    sys.argv = [__file__, *overrides]
    if getattr(__main__, "__spec__", None) is not None:  # `python -m nst_fast train`
        __main__.__spec__ = None
    hydra_main()


def check_overrides(args: list[str]) -> None:
    """Compose the config of every job ``nst-fast train ARGS`` would run, before any runs.

    Hydra reports a bad override in several lines, and in a multirun only once the job
    that has it starts, after the jobs before it have trained for hours: so a multirun's
    style images are read (or downloaded) here too. Overrides of Hydra's own settings
    (``hydra.*``, ``hydra/...``), globs and other config directories are left to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob
    from hydra.errors import HydraException

    try:  # Hydra's own command-line parser
        flags = compat.hydra_command_line(args)
    except SystemExit:  # a malformed flag: Hydra's own parser says which
        return
    if flags is None:  # another Hydra: it checks the overrides itself, as it runs
        return
    modes = {"--run": flags.run, "--multirun": flags.multirun, "--cfg": flags.cfg,
             "--info": flags.info, "--shell-completion": flags.shell_completion}  # fmt: skip
    if sum(map(bool, modes.values())) > 1:
        given = " and ".join(flag for flag, on in modes.items() if on)
        raise NstFastError(f"{given}: Hydra takes one of these at a time; leave out the others")
    if flags.help or flags.hydra_help or flags.shell_completion or flags.info:
        return
    if flags.config_dir or flags.config_path or flags.config_name or flags.experimental_rerun:
        return
    task = [o for o in flags.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        parsed = OverridesParser.create().parse_overrides(task)
    except HydraException as err:
        raise NstFastError(f"configuration: {composition_error(err)}") from err
    if not flags.multirun:
        jobs = [task]
    elif any(isinstance(o.value(), Glob) for o in parsed):
        return
    else:
        jobs = compat.hydra_sweep_jobs(parsed)
        if jobs is None:
            return
    for job in jobs:
        cfg = compose(job)
        if len(jobs) > 1:  # a single run meets its style image before training anyway
            load_style_image(cfg.style.image)


register()

if __name__ == "__main__":
    hydra_main()
