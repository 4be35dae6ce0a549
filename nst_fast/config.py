"""Structured configs: the schema every composed Hydra config is checked against.

The YAML files in ``conf/`` pick values; these dataclasses say which keys exist and their
types, so a misspelt key or a wrong type fails at composition with Hydra's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nst_fast.device import loader_workers, training_precision
from nst_fast.errors import NstFastError
from nst_fast.models.transformer import TransformerConfig


@dataclass
class StyleConfig:
    name: str = MISSING
    # A path, an http(s) URL (downloaded once into the cache) or 'generated:NAME'.
    image: str = MISSING
    # Longer side of the style image fed to the loss network; null keeps its own size.
    size: int | None = 512
    # Per-style overrides of the loss weights; null uses loss.*_weight.
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None


@dataclass
class LossConfig:
    network: str = "vgg16"
    # 'imagenet' (torchvision download), 'random' (tests), or a path to a local
    # torchvision <network>().features state dict.
    weights: str = "imagenet"
    content_layer: str = "relu2_2"
    style_layers: dict[str, float] = field(default_factory=dict)
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    # Penalty on a grid at the network's stride (4 px by default), which VGG does not see.
    grid_weight: float = 0.0
    # Scale-free terms (each relative to its target's magnitude); false: classic MSE.
    normalize: bool = True


@dataclass
class DataConfig:
    root: str = MISSING
    image_size: int = 256
    batch_size: int = 4
    num_workers: int = 2
    shuffle: bool = True
    crop: str = "center"
    pin_memory: bool = True
    preview_images: int = 4
    repeat: int = 1


@dataclass
class OptimConfig:
    lr: float = 1e-3
    # 'constant', or 'cosine': decay to 0 over trainer.max_steps (short runs converge
    # further at a higher starting lr).
    schedule: str = "constant"


@dataclass
class Config:
    style: StyleConfig = MISSING
    loss: LossConfig = MISSING
    # The network's own config dataclass is the schema of the model/ group.
    model: TransformerConfig = MISSING
    data: DataConfig = MISSING
    # Keyword arguments of pytorch_lightning.Trainer, passed through as they are.
    trainer: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    # Resume: 'last' (this run directory's last checkpoint) or a checkpoint path.
    ckpt_path: str | None = None
    checkpoint_every_n_steps: int = 1000
    log_images_every_n_steps: int = 200
    channels_last: bool = True
    compile: bool = False
    # Extra Lightning callbacks by name, each a node with a _target_ (hydra.utils.instantiate).
    callbacks: dict[str, Any] = field(default_factory=dict)


def config_dir() -> Path:
    """``conf/`` of a source checkout, or the copy installed inside the package."""
    here = Path(__file__).resolve().parent
    source = here.parent / "conf"
    return source if (source / "config.yaml").is_file() else here / "conf"


def compose(overrides: list[str] = ()) -> DictConfig:
    """The training config with ``overrides``, as ``nst-fast train`` would compose it.

    For commands other than ``train`` (optimize, evaluate) that share its config groups.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    register()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    except HydraException as err:
        raise NstFastError(f"configuration: {composition_error(err)}") from err


def composition_error(err: Exception) -> str:
    """Hydra's composition error in one line: its message and the reason it wraps.

    Hydra prints several lines (and its search path), while the reason that names the bad
    value often sits in the exception's cause.
    """
    parts = []
    override = getattr(err, "override", None)  # a parse error keeps its override apart
    if override and override not in str(err):
        parts.append(override)
    message = _one_line(str(err).split("Config search path:")[0])
    if err.__cause__ is not None:  # OmegaConf's own lines after the first are its key dump
        reason = str(err.__cause__).strip().splitlines()[0]
        message += f" ({reason})" if reason not in message else ""
    return ": ".join([*parts, message])


def _one_line(text: str) -> str:
    """Lines joined by '; ', where a line ending in ':' introduces a list joined by ', '."""
    joined, listing = "", False
    for line in filter(None, (line.strip() for line in text.splitlines())):
        if line.endswith(":") or not joined:
            separator, listing = "; ", False
        elif joined.endswith("."):
            separator = " "
        elif joined.endswith(":"):
            separator, listing = " ", True
        else:
            separator = ", " if listing else "; "
        joined = f"{joined}{separator}{line}" if joined else line
    return joined


def register() -> None:
    """Register the schema and the ``nst_fast.*`` resolvers (idempotent)."""
    ConfigStore.instance().store(name="config_schema", node=Config)
    if not OmegaConf.has_resolver("nst_fast.precision"):
        OmegaConf.register_new_resolver("nst_fast.precision", training_precision)
    if not OmegaConf.has_resolver("nst_fast.workers"):
        OmegaConf.register_new_resolver("nst_fast.workers", loader_workers)
    if not OmegaConf.has_resolver("nst_fast.sample_photos"):
        from nst_fast.data.samples import sample_photos_dir

        OmegaConf.register_new_resolver("nst_fast.sample_photos", lambda: str(sample_photos_dir()))
