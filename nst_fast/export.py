"""Exported models: the transform network's weights plus what is needed to rebuild it.

A ``model.pt`` is a plain dict of tensors, strings and numbers, so it loads with
``torch.load(weights_only=True)``: no code from the file ever runs. It needs neither
Hydra nor the training config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nst_fast import __version__
from nst_fast.errors import NstFastError
from nst_fast.files import atomic_write, load_tensors
from nst_fast.models.transformer import TransformerConfig, TransformerNet

FORMAT = "nst-fast-model"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What an exported model says about itself."""

    style: str
    step: int
    arch: dict
    nst_fast_version: str
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)


def save_model(
    net: TransformerNet,
    path: str | os.PathLike,
    *,
    style: str,
    step: int,
    extra: dict | None = None,
) -> Path:
    """Write ``net`` and its metadata to ``path`` atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nst_fast_version": __version__,
        "arch": net.config.to_dict(),
        "style": style,
        "step": int(step),
        "extra": dict(extra or {}),
        "state_dict": state,
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """Rebuild an exported network (in eval mode) and return it with its metadata."""
    path = Path(path)
    if not path.is_file():
        raise NstFastError(f"{path}: no such model file")
    try:
        payload = load_tensors(path, map_location)
    except ValueError as err:
        raise NstFastError(
            f"{path}: not an nst-fast model ({err}); export one with a training run (DIR/model.pt)"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NstFastError(f"{path}: not an nst-fast model (no '{FORMAT}' header)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise NstFastError(
            f"{path}: model format version {version} (written by nst-fast "
            f"{payload.get('nst_fast_version')}); this nst-fast {__version__} reads version "
            f"{FORMAT_VERSION}"
        )
    arch = recorded_arch(payload["arch"])
    net = TransformerNet(TransformerConfig(**arch))
    net.load_state_dict(payload["state_dict"])
    net.eval()
    info = ModelInfo(
        style=payload["style"],
        step=payload["step"],
        arch=arch,
        nst_fast_version=payload["nst_fast_version"],
        format_version=version,
        extra=payload.get("extra", {}),
    )
    return net, info


def recorded_arch(arch: dict) -> dict:
    """An architecture as a model.pt or checkpoint records it; files written before the
    output choice existed have a linear output, and before the norm scope, norms
    everywhere."""
    return {"output": "linear", "norm_scope": "all", **arch}


def checkpoint_arch(hparams: dict) -> dict:
    """The network's architecture recorded in a training checkpoint's hyper-parameters."""
    return recorded_arch(hparams["model"])


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """The transform network of a training checkpoint (``RUN/checkpoints/*.ckpt``), with
    the metadata a model.pt of that step would carry."""
    path = Path(path)
    if not path.is_file():
        raise NstFastError(f"{path}: no such checkpoint file")
    try:
        ckpt = load_tensors(path, map_location)
        hparams, state = ckpt["hyper_parameters"], ckpt["state_dict"]
        arch, style = checkpoint_arch(hparams), hparams["style"]
    except Exception as err:
        raise NstFastError(
            f"{path}: not an nst-fast training checkpoint ({str(err).strip().splitlines()[0]})"
        ) from err
    prefix = "transformer."
    net = TransformerNet(TransformerConfig(**arch))
    net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    net.eval()
    info = ModelInfo(
        style=style["name"],
        step=int(ckpt.get("global_step", 0)),
        arch=net.config.to_dict(),
        nst_fast_version=__version__,
        extra={"style": style, "loss": hparams["loss"]},
    )
    return net, info


def load_network(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """A model.pt, or a training checkpoint when the file ends in .ckpt."""
    if Path(path).suffix.lower() == ".ckpt":
        return load_checkpoint(path, map_location)
    return load_model(path, map_location)
