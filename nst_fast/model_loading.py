"""Loading any model file nst-fast reads (model.pt, training checkpoint, TorchScript,
ONNX, ExecuTorch) ready to stylize, and choosing among the styles of a model of several.

``load_for_inference`` tells the format from the file's content and gives a
``LoadedModel``: ``run`` maps a (B, 3, H, W) batch in [0, 1] to its stylization. For a
model of several styles, ``select`` gives the model of one style or a blend, and
``style_choices`` turns ``--style`` (a name, ``a=0.7,b=0.3``, ``all``) into those models.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nst_fast.errors import NstFastError, first_line
from nst_fast.export import ModelFileError, exported_channels, load_network
from nst_fast.models.transformer import TransformerNet
from nst_fast.prepared import Backend, forward, prepared
from nst_fast.regions import style_mapped

# Formats whose runtimes compute in fp32 whatever precision stylize asks for: memory
# budgets count their activations in fp32.
FP32_FORMATS = ("onnx", "executorch")
RE_EXPORT_TS = "write it again with nst-fast export MODEL.pt --format torchscript"
RE_EXPORT_ONNX = "write it again with nst-fast export MODEL.pt --format onnx"


@dataclass
class LoadedModel:
    """A model file ready to run: ``run`` maps a (B, 3, H, W) batch in [0, 1] to [0, 1]."""

    run: Backend
    format: str
    description: str
    channels: list[int]
    multiple: int = 4
    # The prepared eager network when there is one: tiling shares its norm statistics.
    net: torch.nn.Module | None = None
    # The style's name; for a model of several styles, their names in order and ``select``,
    # which gives the model of one style or a blend (style weights in that order).
    style: str = "?"
    styles: list[str] = field(default_factory=list)
    select: Callable[[torch.Tensor], LoadedModel] | None = None
    # For a model.pt of several styles: the model whose ``run`` takes (B, 3 + styles,
    # H, W) batches, each photo with its per-pixel style weights (``nst_fast.regions``).
    mapped: Callable[[], LoadedModel] | None = None


def detect_format(path: Path) -> str:
    """'nst-fast', 'torchscript', 'onnx' or 'executorch', from the file's content (not
    only its name)."""
    from nst_fast.executorch_export import is_executorch_file

    if path.suffix.lower() == ".onnx":
        return "onnx"
    if is_executorch_file(path):
        return "executorch"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        # torch.save and torch.jit.save both write zip archives; only the latter has code.
        if any("/code/" in name for name in names):
            return "torchscript"
    return "nst-fast"


def load_for_inference(
    path: str | os.PathLike, device: torch.device, dtype: torch.dtype, *, fast: bool = True
) -> LoadedModel:
    """Any model file nst-fast reads, ready to stylize on ``device`` in ``dtype``; ``fast``
    False runs the plain PyTorch modules (model.pt and checkpoints; TorchScript stays in
    the standard layout; onnxruntime runs as it does). A file that cannot be used raises
    ``export.ModelFileError``, one line naming it and what to do."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such model file")
    loaders: dict[str, Callable[[Path, torch.device, torch.dtype, bool], LoadedModel]] = {
        "nst-fast": _load_native,
        "torchscript": _load_torchscript,
        "onnx": _load_onnx,
        "executorch": _load_executorch,
    }
    return loaders[detect_format(path)](path, device, dtype, fast)


def _load_native(path: Path, device: torch.device, dtype: torch.dtype, fast: bool) -> LoadedModel:
    net, info = load_network(path)

    def loaded(one: TransformerNet, style: str) -> LoadedModel:
        ready = prepared(one, device, dtype, fast=fast)
        return LoadedModel(
            run=lambda batch: forward(ready, batch),
            format="nst-fast",
            description=f"style {style}, step {info.step}",
            channels=list(net.config.channels),
            multiple=net.multiple,
            net=ready,
            style=style,
        )

    if net.styles == 1:
        return loaded(net, info.style)

    def select(weights: torch.Tensor) -> LoadedModel:
        return loaded(net.single_style(weights), blend_name(info.styles, weights))

    def mapped() -> LoadedModel:
        return loaded(style_mapped(net), "regions")  # type: ignore[arg-type]

    return several(
        path,
        info.styles,
        select,
        mapped=mapped,
        format="nst-fast",
        description=f"styles {', '.join(info.styles)}, step {info.step}",
        channels=list(net.config.channels),
        multiple=net.multiple,
        style=info.style,
    )


def several(
    path: Path,
    styles: list[str],
    select: Callable[[torch.Tensor], LoadedModel],
    **fields: object,
) -> LoadedModel:
    """A model of the several ``styles`` (the other ``LoadedModel`` fields in ``fields``):
    ``select`` gives the model of one of them or a blend; running it unselected is a
    one-line error."""

    def unselected(batch: torch.Tensor) -> torch.Tensor:
        raise NstFastError(f"{path}: choose one of its styles ({', '.join(styles)}) or a blend")

    return LoadedModel(run=unselected, styles=list(styles), select=select, **fields)


def recorded_styles(path: Path, recorded: str | None, remedy: str) -> list[str]:
    """The style names an exported file records (a JSON list; none for one style); a
    ``ModelFileError`` naming ``path`` and ``remedy`` for a list that is not two or more
    distinct names."""
    if recorded is None:
        return []
    try:
        names = json.loads(recorded)
    except ValueError:
        names = None
    if (
        not isinstance(names, list)
        or len(names) < 2
        or not all(isinstance(name, str) for name in names)
        or len(set(names)) != len(names)
    ):
        raise ModelFileError(path, f"its list of styles is not two or more names; {remedy}")
    return names


def blend_name(names: list[str], weights: torch.Tensor) -> str:
    """'wave' for a one-hot ``weights``, else 'starry_night 0.7 + wave 0.3'."""
    parts = [(name, float(w)) for name, w in zip(names, weights, strict=True) if w > 0]
    if len(parts) == 1:
        return parts[0][0]
    return " + ".join(f"{name} {w:.2g}" for name, w in parts)


def style_choices(
    choice: str | None, model: LoadedModel, said: str | None = None
) -> list[tuple[str | None, LoadedModel]]:
    """The models ``choice`` asks for, each with the label its outputs are named with
    (None: named as the input). For a model of several styles: one style by name, a blend
    ``a=0.7,b=0.3`` (weights normalized to sum to 1), or ``all`` (also the default): one
    output per style. A model of one style takes no choice but its own name. ``said``:
    how error messages name the option and its value (``--style x``)."""
    said = said or f"--style {choice}"
    if not model.styles:
        if choice not in (None, model.style):
            raise NstFastError(f"{said}: this model has one style, {model.style}")
        return [(None, model)]
    names = model.styles
    if choice in (None, "all"):
        return [(name, model.select(torch.eye(len(names))[i])) for i, name in enumerate(names)]
    weights = torch.zeros(len(names))
    for part in choice.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in names:
            raise NstFastError(f"{said}: no style {name!r}; the model has {', '.join(names)}")
        try:
            weights[names.index(name)] += float(value) if value else 1.0
        except ValueError:
            raise NstFastError(f"{said}: {value!r} is not a number") from None
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise NstFastError(f"{said}: style weights are 0 or more")
    if weights.sum() == 0:
        raise NstFastError(f"{said}: the weights add up to 0; give one a weight")
    return [(None, model.select(weights / weights.sum()))]


def exported_model(
    run: Backend, fmt: str, kind: str, style: str, channels: list[int]
) -> LoadedModel:
    """A TorchScript or ONNX file's ``LoadedModel``: ``run`` stylizes as ``style``."""
    return LoadedModel(
        run=run,
        format=fmt,
        description=f"{kind}, style {style}",
        style=style,
        channels=channels,
        multiple=2 ** (len(channels) - 1),
    )


def _load_torchscript(
    path: Path, device: torch.device, dtype: torch.dtype, fast: bool
) -> LoadedModel:
    extra = {"nst_fast.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        meta = json.loads(extra["nst_fast.json"] or "{}")
        arch = json.loads(meta.get("arch", "{}"))
    except Exception as err:
        raise ModelFileError(
            path, f"not a loadable TorchScript file ({first_line(err)}); {RE_EXPORT_TS}"
        ) from err
    styles = recorded_styles(path, meta.get("styles"), RE_EXPORT_TS)
    _check_finite(path, {**dict(module.named_parameters()), **dict(module.named_buffers())})
    module = module.eval().to(dtype=dtype)
    if fast:
        module = module.to(memory_format=torch.channels_last)
    channels = exported_channels(arch)

    def loaded(run: Backend, style: str) -> LoadedModel:
        return exported_model(run, "torchscript", "TorchScript", style, channels)

    if not styles:
        return loaded(lambda batch: forward(module, batch), meta.get("style", "?"))

    def select(weights: torch.Tensor) -> LoadedModel:
        styled = _WithStyle(module, weights)
        return loaded(lambda batch: forward(styled, batch), blend_name(styles, weights))

    return several(
        path,
        styles,
        select,
        format="torchscript",
        description=f"TorchScript, styles {', '.join(styles)}",
        style=meta.get("style", "?"),
        channels=channels,
        multiple=2 ** (len(channels) - 1),
    )


class _WithStyle(torch.nn.Module):
    """An exported network of several styles run with fixed style weights, given in the
    dtype and on the device of its weights (as ``forward`` gives the image)."""

    def __init__(self, module: torch.nn.Module, weights: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        param = next(module.parameters())
        self.weights = weights.detach().to(param.device, param.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, self.weights)


def _load_onnx(path: Path, device: torch.device, dtype: torch.dtype, fast: bool) -> LoadedModel:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelFileError(
            path, "ONNX models need onnxruntime (pip install 'nst-fast[onnx]')"
        ) from err
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
        meta = session.get_modelmeta().custom_metadata_map
        arch = json.loads(meta.get("nst_fast.arch", "{}"))
    except Exception as err:
        raise ModelFileError(
            path, f"not a loadable ONNX model ({first_line(err)}); {RE_EXPORT_ONNX}"
        ) from err
    styles = recorded_styles(path, meta.get("nst_fast.styles"), RE_EXPORT_ONNX)
    inputs = session.get_inputs()
    name = inputs[0].name
    if len(inputs) != (2 if styles else 1) or (styles and inputs[1].shape != [len(styles)]):
        shapes = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise ModelFileError(
            path,
            f"takes {shapes} and records {len(styles) or 'one'} style(s); not an nst-fast "
            f"export? {RE_EXPORT_ONNX}",
        )

    def run_with(feeds: dict[str, object]) -> Backend:
        def run(batch: torch.Tensor) -> torch.Tensor:
            out = session.run(None, {name: batch.float().contiguous().numpy(), **feeds})[0]
            return torch.from_numpy(out).clamp_(0, 1)

        return run

    channels = exported_channels(arch)
    provider = session.get_providers()[0]

    def loaded(run: Backend, style: str) -> LoadedModel:
        return exported_model(run, "onnx", f"ONNX ({provider})", style, channels)

    if not styles:
        return loaded(run_with({}), meta.get("nst_fast.style", "?"))

    def select(weights: torch.Tensor) -> LoadedModel:
        vector = weights.detach().cpu().float().contiguous().numpy()
        return loaded(run_with({inputs[1].name: vector}), blend_name(styles, weights))

    return several(
        path,
        styles,
        select,
        format="onnx",
        description=f"ONNX ({provider}), styles {', '.join(styles)}",
        style=meta.get("nst_fast.style", "?"),
        channels=channels,
        multiple=2 ** (len(channels) - 1),
    )


def _load_executorch(
    path: Path, device: torch.device, dtype: torch.dtype, fast: bool
) -> LoadedModel:
    # ExecuTorch's Python runtime runs the program on the CPU in fp32, as the phone does.
    from nst_fast.executorch_export import RE_EXPORT, load_executorch

    meta, run_with, channels = load_executorch(path)
    styles = recorded_styles(path, meta.get("styles"), RE_EXPORT)
    multiple = int(meta["multiple"])

    def loaded(run: Backend, style: str) -> LoadedModel:
        model = exported_model(run, "executorch", "ExecuTorch (XNNPACK)", style, channels)
        model.multiple = multiple
        return model

    if not styles:
        return loaded(run_with(None), meta.get("style", "?"))

    def select(weights: torch.Tensor) -> LoadedModel:
        return loaded(run_with(weights), blend_name(styles, weights))

    return several(
        path,
        styles,
        select,
        format="executorch",
        description=f"ExecuTorch (XNNPACK), styles {', '.join(styles)}",
        style=meta.get("style", "?"),
        channels=channels,
        multiple=multiple,
    )


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, value in tensors.items():
        if value.is_floating_point() and not value.isfinite().all():
            raise ModelFileError(
                path,
                f"weight {name} holds NaN or infinite values; export it again from a "
                "model.pt that stylizes (nst-fast export MODEL --format torchscript)",
            )
