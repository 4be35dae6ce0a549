"""Structured configs: the schema every composed Hydra config is checked against.

Every default has one home. The YAML files in ``conf/`` hold the values; these
dataclasses say which keys exist and their types (``MISSING``: the value comes from
``conf/``), so a misspelt key or a wrong type fails at composition with Hydra's own
message. ``None`` marks an optional setting that is off unless given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from nst_fast.config_files import (
    config_dir,
    group_defaults,
    is_style_config,
    register_resolvers,
    style_name,
)
from nst_fast.errors import NstFastError
from nst_fast.models.transformer import TransformerConfig


@dataclass
class StyleConfig:
    name: str = MISSING
    # A path, an http(s) URL (downloaded once into the cache) or 'generated:NAME'.
    image: str = MISSING
    # Longer side of the style image fed to the loss network; null keeps its own size.
    size: int | None = MISSING
    # Per-style overrides of the loss weights; null uses loss.*_weight.
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None


@dataclass
class LossConfig:
    network: str = MISSING
    # 'imagenet' (torchvision download), 'random' (tests), or a path to a local
    # torchvision <network>().features state dict.
    weights: str = MISSING
    content_layer: str = MISSING
    style_layers: dict[str, float] = MISSING
    content_weight: float = MISSING
    style_weight: float = MISSING
    tv_weight: float = MISSING
    # Penalty on a grid at the network's stride, which VGG does not see.
    grid_weight: float = MISSING
    # Scale-free terms (each relative to its target's magnitude); false: classic MSE.
    normalize: bool = MISSING
    # The style term on a pyramid: downscale factors of the output and the style image
    # (1: full size), and each one's weight in the mean (null: equal weights).
    style_scales: list[float] = MISSING
    style_scale_weights: list[float] | None = MISSING


@dataclass
class ModelConfig(TransformerConfig):
    """The model/ group: the network's own config, and where its training starts."""

    # A network to start from instead of random weights, of the same architecture: a
    # model.pt, a training checkpoint, or a pytorch/examples fast_neural_style .pth.
    init: str | None = None


@dataclass
class DataConfig:
    root: str = MISSING
    image_size: int = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    shuffle: bool = MISSING
    crop: str = MISSING
    pin_memory: bool = MISSING
    preview_images: int = MISSING
    repeat: int = MISSING
    # Held-out photos for validation: from this folder, or (null) a fixed choice of
    # data.root's photos, then never trained on.
    val_root: str | None = MISSING
    val_images: int = MISSING
    val_size: int = MISSING


@dataclass
class OptimConfig:
    lr: float = MISSING
    # 'constant', or 'cosine': decay to 0 over trainer.max_steps.
    schedule: str = MISSING
    # Steps over which the rate rises linearly from lr / warmup_steps to lr; 0: none.
    warmup_steps: int = MISSING


@dataclass
class StabilityConfig:
    # Wang et al.'s compound regularization: the output for a moved, noised photo against
    # the same move of the photo's output; 0 leaves it out.
    temporal_weight: float = MISSING
    # The output for a noised photo against the photo's output; 0 leaves it out.
    noise_weight: float = MISSING
    # The random motion at most, for a 256 px photo (scaled with the photo's shorter side).
    shift: float = MISSING
    degrees: float = MISSING
    zoom: float = MISSING
    flow: float = MISSING
    noise: float = MISSING
    # The terms' schedule: off before start_step, then their weights rise linearly to the
    # full weights over ramp_steps (0: at once). From a random start they can win over the
    # style and leave a flat colour (docs/video.md).
    start_step: int = MISSING
    ramp_steps: int = MISSING


@dataclass
class Config:
    style: StyleConfig = MISSING
    loss: LossConfig = MISSING
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    # Keyword arguments of pytorch_lightning.Trainer, passed through as they are.
    trainer: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = MISSING
    stability: StabilityConfig = MISSING
    seed: int = MISSING
    # Several styles in one network (conditional instance norm): conf/style names, image
    # paths or URLs; null trains ``style`` alone.
    styles: list[str] | None = None
    # A trained model.pt to add the styles of ``style``/``styles`` to, training only their
    # norm parameters (everything else frozen).
    extend: str | None = None
    # Resume: 'last' (this run directory's last checkpoint) or a checkpoint path.
    ckpt_path: str | None = None
    checkpoint_every_n_steps: int = MISSING
    log_images_every_n_steps: int = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    # nst_fast.fast's faster modules (same function); false runs the plain ones.
    fast: bool = MISSING
    # Extra Lightning callbacks by name, each a node with a _target_ (hydra.utils.instantiate).
    callbacks: dict[str, Any] = field(default_factory=dict)


def resolve_styles(entries: list[str], size: int | None) -> list[dict[str, Any]]:
    """The style configs of ``styles=[...]``: a conf/style name brings its own image, size
    and loss weights; an image path or URL is named by its file stem and sized ``size``
    (``style.size``). A one-line error for an empty list or a name given twice."""
    if not entries:
        raise NstFastError("styles=[]: name the styles, e.g. styles=[starry_night,wave]")
    specs = []
    for entry in entries:
        if is_style_config(entry):
            specs.append(group_defaults("style", entry))
        else:
            specs.append({"name": style_name(entry), "image": entry, "size": size})
    names = [spec["name"] for spec in specs]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise NstFastError(f"styles: {twice} is named twice; give each style once")
    return specs


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
    if "mismatched input '='" in message:  # a value with '=' in it: a checkpoint's name
        message += "; a value holding '=' needs Hydra's quotes: \"KEY='VALUE'\""
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
    register_resolvers()
