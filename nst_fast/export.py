"""Exported models: the transform network's weights plus what is needed to rebuild it.

A ``model.pt`` is a plain dict of tensors, strings and numbers, so it loads with
``torch.load(weights_only=True)``: no code from the file ever runs. It needs neither
Hydra nor the training config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from nst_fast import __version__
from nst_fast.errors import NstFastError
from nst_fast.files import atomic_write, load_tensors
from nst_fast.models import pytorch_examples
from nst_fast.models.recorded import (
    FORMAT_VERSION,
    MULTI_STYLE_VERSION,
    RE_EXPORT,
    ModelFileError,
    ModelInfo,
    build_network,
    recorded_arch,
)
from nst_fast.models.transformer import TransformerConfig, TransformerNet

FORMAT = "nst-fast-model"


def save_model(
    net: TransformerNet,
    path: str | os.PathLike,
    *,
    style: str,
    step: int,
    extra: dict | None = None,
    styles: list[str] | None = None,
) -> Path:
    """Write ``net`` and its metadata to ``path`` atomically; ``styles``: the names of the
    styles of a network of several, in the order of its style weights."""
    if (len(styles) if styles else 1) != net.styles:
        raise ValueError(f"a network of {net.styles} style(s) needs as many style names")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if net.styles == 1 else MULTI_STYLE_VERSION,
        "nst_fast_version": __version__,
        "arch": net.config.to_dict(),
        "style": style,
        "step": int(step),
        "extra": dict(extra or {}),
        "state_dict": state,
    }
    if net.styles > 1:
        payload["styles"] = list(styles)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


EARLIER_CHECKPOINT = "use an earlier checkpoint of the run (RUN/checkpoints/step=N.ckpt)"
READS = (
    "nst-fast reads its model.pt files, training checkpoints (.ckpt), and state dicts of "
    "pytorch/examples' fast_neural_style network (torch.save(net.state_dict(), PATH))"
)


def checkpoint_arch(hparams: dict, source: str | os.PathLike = "the checkpoint") -> dict:
    """The network's architecture recorded in a training checkpoint's hyper-parameters."""
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise ModelFileError(
            source, "not an nst-fast training checkpoint (it records no model settings)"
        )
    return recorded_arch(hparams["model"], source)


def recorded_style_specs(info: ModelInfo) -> list[dict]:
    """The style settings a model records (image, size, loss weights: what its training
    used), one per style in order, each with the style's name; the names alone where it
    records none."""
    names = info.styles or [info.style]
    recorded = info.extra.get("style")
    specs = recorded if isinstance(recorded, list) else [recorded]
    if len(specs) != len(names) or not all(isinstance(spec, dict) for spec in specs):
        specs = [{}] * len(names)
    return [{**spec, "name": name} for spec, name in zip(specs, names, strict=True)]


def check_same_styles(hparams: dict, names: list[str]) -> None:
    """A one-line error when a checkpoint being resumed was trained on other styles than
    ``names`` (a network of several styles keeps them in order)."""
    saved = checkpoint_styles(hparams, "the checkpoint")
    if (len(saved) > 1 or len(names) > 1) and saved != names:
        raise NstFastError(
            f"this checkpoint was trained on {', '.join(saved)} (in that order); resume it "
            "with the same styles"
        )


def checkpoint_styles(hparams: dict, source: str | os.PathLike) -> list[str]:
    """The names of the styles a training checkpoint was trained on, in order."""
    style = hparams.get("style") if isinstance(hparams, dict) else None
    styles = style if isinstance(style, list) else [style]
    if not all(isinstance(s, dict) and "name" in s for s in styles):
        raise ModelFileError(source, "not an nst-fast training checkpoint (it records no style)")
    return [str(s["name"]) for s in styles]


def arch_changes(saved: dict, config: TransformerConfig) -> list[str]:
    """The ``model.*`` overrides that turn ``config`` into the architecture ``saved``."""
    current = config.to_dict()
    return [f"model.{k}={v}".replace(" ", "") for k, v in saved.items() if current.get(k) != v]


def check_same_arch(hparams: dict, config: TransformerConfig) -> None:
    """A one-line error when a checkpoint being resumed was trained with another
    architecture than ``config``, naming the ``model.*`` overrides that would resume it."""
    changed = arch_changes(checkpoint_arch(hparams), config)
    if changed:
        raise NstFastError(
            f"this checkpoint was trained with {' '.join(changed)}; add "
            f"{'that' if len(changed) == 1 else 'those'} to the command to resume it"
        )


def _read(path: Path, what: str, map_location, remedy: str = RE_EXPORT) -> object:
    if not path.is_file():
        raise ModelFileError(path, f"no such {what} file")
    try:
        return load_tensors(path, map_location)
    except ValueError as err:
        raise ModelFileError(path, f"not an nst-fast {what} ({err}); {remedy}") from err


def _not_a_model(payload: object) -> str:
    """Why a loaded file without nst-fast's header is not a model, and what is read."""
    if (
        isinstance(payload, dict)
        and payload
        and all(isinstance(v, torch.Tensor) for v in payload.values())
    ):
        first = ", ".join(str(k) for k in list(payload)[:2])
        return f"not an nst-fast model: the weights of another network (keys {first}, ...); {READS}"
    return f"not an nst-fast model (no '{FORMAT}' header); {READS}"


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """Rebuild an exported network (in eval mode) and return it with its metadata; a
    state dict of pytorch/examples' fast_neural_style network is converted
    (``models.pytorch_examples``)."""
    path = Path(path)
    payload = _read(path, "model", map_location, READS)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if pytorch_examples.is_example_state(payload):
            return pytorch_examples.load_example(payload, path)
        raise ModelFileError(path, _not_a_model(payload))
    version = payload.get("format_version")
    if version not in (FORMAT_VERSION, MULTI_STYLE_VERSION):
        raise ModelFileError(
            path,
            f"model format version {version} (written by nst-fast "
            f"{payload.get('nst_fast_version')}); this nst-fast {__version__} reads versions "
            f"{FORMAT_VERSION} and {MULTI_STYLE_VERSION}",
        )
    several = version == MULTI_STYLE_VERSION
    required = ("arch", "state_dict", "style", "step", *(("styles",) if several else ()))
    missing = [k for k in required if k not in payload]
    if missing:
        raise ModelFileError(path, f"not an nst-fast model (no '{missing[0]}'); {RE_EXPORT}")
    styles = [str(name) for name in payload.get("styles") or []]
    if several and (len(styles) < 2 or len(set(styles)) != len(styles)):
        raise ModelFileError(path, f"its list of styles is not two or more names; {RE_EXPORT}")
    net = build_network(payload["arch"], payload["state_dict"], path, styles=max(len(styles), 1))
    info = ModelInfo(
        style=str(payload["style"]),
        step=int(payload["step"]),
        arch=net.config.to_dict(),
        nst_fast_version=str(payload.get("nst_fast_version", "?")),
        format_version=version,
        extra=dict(payload.get("extra") or {}),
        styles=styles,
    )
    return net, info


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A training checkpoint (``RUN/checkpoints/*.ckpt``) as saved, checked to hold a
    network this version can build and run (``ModelFileError`` otherwise)."""
    return _open_checkpoint(Path(path), map_location)[0]


def _open_checkpoint(path: Path, map_location) -> tuple[dict, TransformerNet]:
    return checked_checkpoint(_read(path, "training checkpoint", map_location), path)


def checked_checkpoint(ckpt: object, path: str | os.PathLike) -> tuple[dict, TransformerNet]:
    """A loaded training checkpoint and the network it holds; ``ModelFileError`` naming
    ``path`` when it is not an nst-fast one or its network cannot be built and run."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ModelFileError(path, "not an nst-fast training checkpoint (it holds no weights)")
    hparams = ckpt.get("hyper_parameters")
    arch = checkpoint_arch(hparams, path)
    styles = len(checkpoint_styles(hparams, path))
    prefix = "transformer."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return ckpt, build_network(arch, state, path, EARLIER_CHECKPOINT, styles)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """The transform network of a training checkpoint (``RUN/checkpoints/*.ckpt``), with
    the metadata a model.pt of that step would carry."""
    ckpt, net = _open_checkpoint(Path(path), map_location)
    hparams = ckpt["hyper_parameters"]
    names = checkpoint_styles(hparams, path)
    info = ModelInfo(
        style="+".join(names),
        step=int(ckpt.get("global_step", 0)),
        arch=net.config.to_dict(),
        nst_fast_version=__version__,
        format_version=FORMAT_VERSION if len(names) == 1 else MULTI_STYLE_VERSION,
        extra={
            "style": hparams["style"],
            "loss": hparams.get("loss", {}),
            "stability": hparams.get("stability"),  # absent before the stability terms
        },
        styles=names if len(names) > 1 else [],
    )
    if isinstance(ckpt.get("validation"), dict):  # the latest validation before it was saved
        info.extra["validation"] = ckpt["validation"]
    return net, info


def load_network(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[TransformerNet, ModelInfo]:
    """A model.pt (or a pytorch/examples state dict, told by its keys), or a training
    checkpoint when the file ends in .ckpt: the one reader of the networks' weight files
    (``model_loading.load_for_inference`` adds .ts and .onnx)."""
    if Path(path).suffix.lower() == ".ckpt":
        return load_checkpoint(path, map_location)
    return load_model(path, map_location)


def exported_channels(arch: dict | None) -> list[int]:
    """The widths a TorchScript or ONNX file records (they size the memory budget); the
    trained default for a file that records none."""
    if isinstance(arch, dict) and isinstance(arch.get("channels"), list) and arch["channels"]:
        return [int(c) for c in arch["channels"]]
    from nst_fast.models.transformer import default_transformer_config

    return list(default_transformer_config().channels)


# The sizes an exported file is run at beside the eager network after export: odd sides,
# and a batch of two.
CHECK_SIZES = ((1, 3, 67, 93), (2, 3, 128, 96))


def metadata(info: ModelInfo) -> dict[str, str]:
    """What an exported file records about its network; ``styles`` (a JSON list of names)
    only for a network of several styles."""
    meta = {"style": info.style, "step": str(info.step), "arch": json.dumps(info.arch)}
    if info.styles:
        meta["styles"] = json.dumps(info.styles)
    return meta
