"""Exported formats: writing a network as a TorchScript or ONNX file (or, through
``nst_fast.executorch_export``, an ExecuTorch program), and checking the written file
against the eager network (what ``nst-fast export`` runs).

``model.pt`` (nst_fast.export) stays the native format: plain tensors, loaded with
``weights_only=True``. TorchScript (``.ts``) runs without nst-fast's Python code, ONNX
(``.onnx``) in onnxruntime, TensorRT, OpenVINO, browsers. Both take a float (B, 3, H, W)
image in [0, 1] of any height and width and return its unclamped stylization.

A network of several styles is exported with a second input, ``style``: a float vector
of its N style weights, in the order of the names the file records (``styles``, a JSON
list in its metadata). A one-hot vector is one style, other weights blend them, applied
as given (``model_loading.style_choices`` normalizes a blend to sum to 1 before it feeds
them). Loading any of these files is ``nst_fast.model_loading``'s: ``load_for_inference``,
which the check here runs, is importable from here too, as docs/inference.md says.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

from nst_fast import compat
from nst_fast.errors import NstFastError
from nst_fast.export import CHECK_SIZES, ModelInfo, metadata, save_model
from nst_fast.files import atomic_write, cannot_write
from nst_fast.model_loading import LoadedModel, load_for_inference
from nst_fast.models.transformer import TransformerNet
from nst_fast.prepared import Backend

FORMATS = ("torchscript", "onnx", "executorch")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx", "executorch": ".pte"}
ONNX_OPSET = 17
# An odd example size makes the exporters record the network's pad-to-a-multiple-of-4
# step, which a multiple-of-4 example would trace away.
EXAMPLE_SIZE = (1, 3, 67, 93)
# The exported files' inputs: the image, and a network of several styles' style weights.
IMAGE_INPUT, STYLE_INPUT = "image", "style"


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


def write_model(
    net: TransformerNet, info: ModelInfo, target: Path, fmt: str, *, max_size: int | None = None
) -> Path:
    """Write ``net`` as ``fmt`` (pt, torchscript, onnx or executorch) to ``target``; a
    failed write is one line naming what the system refused. ``max_size``: the largest
    side an ExecuTorch program takes (nst_fast.executorch_export), its default if None."""

    def executorch() -> Path:
        from nst_fast.executorch_export import DEFAULT_MAX_SIZE, export_executorch

        return export_executorch(net, info, target, max_size=max_size or DEFAULT_MAX_SIZE)

    writers = {
        "pt": lambda: save_model(
            net, target, style=info.style, step=info.step, extra=info.extra, styles=info.styles
        ),
        "torchscript": lambda: export_torchscript(net, info, target),
        "onnx": lambda: export_onnx(net, info, target),
        "executorch": executorch,
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
