"""Exported formats: TorchScript and ONNX files, and loading any model file for inference.

``model.pt`` (nst_fast.export) stays the native format: plain tensors, loaded with
``weights_only=True``. TorchScript (``.ts``) runs without nst-fast's Python code, ONNX
(``.onnx``) in onnxruntime, TensorRT, OpenVINO, browsers. Both take a float (B, 3, H, W)
image in [0, 1] of any height and width and return its unclamped stylization.

A network of several styles is exported with a second input, ``style``: a float vector
of its N style weights, in the order of the names the file records (``styles``, a JSON
list in its metadata). A one-hot vector is one style, other weights blend them, applied
as given (``style_choices`` normalizes a blend to sum to 1 before it feeds them).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from nst_fast import compat
from nst_fast.errors import NstFastError
from nst_fast.export import ModelFileError, ModelInfo, exported_channels, load_network, save_model
from nst_fast.files import atomic_write, cannot_write
from nst_fast.models.transformer import TransformerNet
from nst_fast.prepared import Backend, forward, prepared

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx"}
ONNX_OPSET = 17
# An odd example size makes the exporters record the network's pad-to-a-multiple-of-4
# step, which a multiple-of-4 example would trace away.
EXAMPLE_SIZE = (1, 3, 67, 93)
CHECK_SIZES = ((1, 3, 67, 93), (2, 3, 128, 96))
# The exported files' inputs: the image, and a network of several styles' style weights.
IMAGE_INPUT, STYLE_INPUT = "image", "style"
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


def metadata(info: ModelInfo) -> dict[str, str]:
    """What an exported file records about its network; ``styles`` (a JSON list of names)
    only for a network of several styles."""
    meta = {"style": info.style, "step": str(info.step), "arch": json.dumps(info.arch)}
    if info.styles:
        meta["styles"] = json.dumps(info.styles)
    return meta


def example_inputs(net: TransformerNet) -> tuple[torch.Tensor, ...]:
    """What the exporters trace ``net`` with: an image, and for a network of several
    styles an even blend of them (any weights record the same graph)."""
    image = torch.rand(EXAMPLE_SIZE)
    if net.styles == 1:
        return (image,)
    return image, torch.full((net.styles,), 1 / net.styles)


def export_torchscript(net: TransformerNet, info: ModelInfo, path: str | os.PathLike) -> Path:
    """Write a scripted network (one file, no nst-fast needed to run it) atomically."""
    scripted = _script(net)
    extra = {"nst_fast.json": json.dumps(metadata(info))}
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated"
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    return Path(path)


def _script(net: TransformerNet) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export but still the one format that
        # loads in C++ and Python without the model's code. Traced rather than scripted:
        # the network is a fixed sequence of layers, and its modules may use Python that
        # the TorchScript compiler does not take (super() calls).
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net.cpu().eval(), example_inputs(net))
    if net.styles > 1:
        # A trace records the cast of the style weights that opens forward with a fixed
        # device and dtype, which would pin the file to the CPU and fp32.
        compat.drop_input_casts(traced, input_index=2)  # after self and the image
    return traced


def export_onnx(net: TransformerNet, info: ModelInfo, path: str | os.PathLike) -> Path:
    """Write an ONNX model with dynamic batch, height and width atomically."""
    net = net.cpu().eval()
    if net.styles > 1:
        _onnx_package(required=True)  # the style names live in the metadata it writes
    inputs = example_inputs(net)
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the size arithmetic
        # The TorchScript-based exporter: the dynamo one needs onnxscript and gives the
        # same graph for this plain convolutional network.
        torch.onnx.export(
            net,
            inputs,
            str(tmp),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[IMAGE_INPUT, STYLE_INPUT][: len(inputs)],
            output_names=["stylized"],
            dynamic_axes={
                IMAGE_INPUT: {0: "batch", 2: "height", 3: "width"},
                "stylized": {0: "batch", 2: "height", 3: "width"},
            },
        )
        _add_onnx_metadata(tmp, metadata(info))
    return Path(path)


def _onnx_package(required: bool = False) -> ModuleType | None:
    try:
        import onnx
    except ImportError:
        if required:
            raise NstFastError(
                "an ONNX model of several styles records their names with the onnx "
                "package: pip install 'nst-fast[onnx]'"
            ) from None
        return None
    return onnx


def _add_onnx_metadata(path: Path, props: dict[str, str]) -> None:
    onnx = _onnx_package()
    if onnx is None:
        return  # the metadata of a model of one style is a nicety; it works without it
    model = onnx.load(str(path))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"nst_fast.{key}", value
    onnx.save(model, str(path))


def check_against_eager(model: LoadedModel, net: TransformerNet) -> float:
    """Largest |model - eager| over a few input sizes (odd ones included), both clamped to
    [0, 1] as a stylized image is; for a model of several styles, with each of
    ``check_weights`` fed to the model and to ``net``."""
    gen = torch.Generator().manual_seed(0)
    net = net.cpu().eval()
    cases: list[tuple[Backend, torch.Tensor | None]] = (
        [(model.run, None)]
        if net.styles == 1
        else [(_select(model).select(w).run, w) for w in check_weights(net.styles)]
    )
    worst = 0.0
    with torch.inference_mode():
        for size in CHECK_SIZES:
            x = torch.rand(size, generator=gen)
            for run, weights in cases:
                expected = net(x, weights).clamp(0, 1)
                worst = max(worst, (run(x) - expected).abs().max().item())
    return worst


def check_weights(styles: int) -> list[torch.Tensor]:
    """The style weights an export of a network of ``styles`` is checked with: the first
    style alone, and an uneven blend of all of them (1, 2, ... normalized), which a
    swapped order of styles would not pass."""
    ramp = torch.arange(1, styles + 1, dtype=torch.float32)
    return [torch.eye(styles)[0], ramp / ramp.sum()]


def _select(model: LoadedModel) -> LoadedModel:
    if model.select is None:
        raise NstFastError(f"the written file ({model.description}) records no styles")
    return model


# --- loading --------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """'nst-fast', 'torchscript' or 'onnx', from the file's content (not only its name)."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
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
            channels=list(one.config.channels),
            multiple=one.multiple,
            net=ready,
            style=style,
        )

    if net.styles == 1:
        return loaded(net, info.style)

    def select(weights: torch.Tensor) -> LoadedModel:
        return loaded(net.single_style(weights), blend_name(info.styles, weights))

    return several(
        path,
        info.styles,
        select,
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
            path, f"not a loadable TorchScript file ({_first_line(err)}); {RE_EXPORT_TS}"
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
            path, f"not a loadable ONNX model ({_first_line(err)}); {RE_EXPORT_ONNX}"
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


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, value in tensors.items():
        if value.is_floating_point() and not value.isfinite().all():
            raise ModelFileError(
                path,
                f"weight {name} holds NaN or infinite values; export it again from a "
                "model.pt that stylizes (nst-fast export MODEL --format torchscript)",
            )


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# --- converting (what `nst-fast export` runs) ------------------------------------------


def write_model(net: TransformerNet, info: ModelInfo, target: Path, fmt: str) -> Path:
    """Write ``net`` as ``fmt`` (pt, torchscript or onnx) to ``target``; a failed write is
    one line naming what the system refused."""
    writers = {
        "pt": lambda: save_model(
            net, target, style=info.style, step=info.step, extra=info.extra, styles=info.styles
        ),
        "torchscript": lambda: export_torchscript(net, info, target),
        "onnx": lambda: export_onnx(net, info, target),
    }
    try:
        return writers[fmt]()
    except OSError as err:
        raise NstFastError(cannot_write(target, err)) from err


def check_written(target: Path, net: TransformerNet, fmt: str) -> str:
    """Run the written file beside the eager network and say how far apart they are."""
    try:
        loaded = load_for_inference(target, torch.device("cpu"), torch.float32)
    except NstFastError as err:
        if fmt == "onnx" and "onnxruntime" in str(err):
            return "not checked: onnxruntime is not installed (pip install 'nst-fast[onnx]')"
        raise
    diff = check_against_eager(loaded, net)
    inputs = "1x67x93 and 2x128x96 inputs"
    if loaded.styles:
        inputs += f", style {loaded.styles[0]} and a blend of all {len(loaded.styles)}"
    return f"checked: max |{fmt} - pytorch| = {diff:.2e} on {inputs}"
