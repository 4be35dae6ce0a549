"""ExecuTorch export: a network as a ``.pte`` program for ExecuTorch's runtime on Android
and iOS (XNNPACK delegate), and reading one back to stylize with ExecuTorch's Python
runtime (what ``nst-fast export --format executorch`` checks the file with).

The program's ``forward`` takes one image (1, 3, H, W) in [0, 1], H and W multiples of
``multiple`` (4 for the default network) from 8 up to ``max_size``, and returns its
unclamped stylization of the same size; a network of several styles takes a second
input, ``style``, its N style weights as ONNX and TorchScript exports do. Two limits of
ExecuTorch make the sizes stated rather than free:

- the network pads a photo to a multiple of its stride, which ``torch.export`` refuses
  for named dimensions of any size (torch 2.14: "Cannot create Dim with inconsistent
  min=-3, max=-256") and, with automatic ones, ExecuTorch runs to the wrong size (a
  93-wide photo came out 92 wide). So the program takes the padded photo and its runner
  pads and crops (``pad_to_multiple``). ExecuTorch does not check the multiple itself:
  another size gives a wrong picture, not an error;
- ExecuTorch plans its memory for the largest input and reserves it at load time, so
  ``max_size`` bounds a side and sets the memory a loaded program holds: for the default
  network about 0.27 GB at 512 and 1 GB at 1024 (docs/performance.md), growing with its
  square. XNNPACK takes the convolutions; the reflection pads and instance norms run in
  ExecuTorch's portable kernels between them, whose tensors are the planned ones.

What the file records about its network (style, styles, step, arch, multiple, max_size)
is a JSON string returned by its method ``nst_fast_metadata``: a constant method, which
any ExecuTorch runtime reads like ``forward``, so no sidecar file can go astray.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from nst_fast.errors import NstFastError, first_line
from nst_fast.export import CHECK_SIZES, ModelFileError, ModelInfo, exported_channels, metadata
from nst_fast.files import atomic_write
from nst_fast.models.transformer import TransformerNet, pad_to_multiple
from nst_fast.prepared import Backend

PTE_SUFFIX = ".pte"
METADATA_METHOD = "nst_fast_metadata"
# 512 a side: a loaded program of the default network holds about 0.27 GB, which phones
# spare; 1024 holds about 1 GB (docs/performance.md).
DEFAULT_MAX_SIZE = 512
# The smallest side the network takes once padded: its 9x9 first convolution pads by 4
# by reflection, which needs more than 4 pixels (eager PyTorch refuses smaller photos too).
MIN_SIZE = 8
# The check after export (formats.check_against_eager) runs photos up to this size.
SMALLEST_MAX_SIZE = max(max(size[-2:]) for size in CHECK_SIZES)
INSTALL = "pip install 'nst-fast[executorch]'"
RE_EXPORT = "write it again with nst-fast export MODEL.pt --format executorch"


def executorch_package() -> ModuleType:
    """The ``executorch`` package, or a one-line NstFastError saying how to install it."""
    try:
        # The runtime loads ExecuTorch's compiled bindings, which fail with a torch other
        # than the one they were built against.
        import executorch.runtime
    except ImportError as err:
        raise NstFastError(
            f"ExecuTorch files need the executorch package ({first_line(err)}): {INSTALL}"
        ) from None
    return executorch


def export_executorch(
    net: TransformerNet,
    info: ModelInfo,
    path: str | os.PathLike,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Path:
    """Write ``net`` as an ExecuTorch program lowered to XNNPACK, taking images up to
    ``max_size`` a side, atomically; a network that cannot be exported is one line naming
    the model, and nothing is written."""
    executorch_package()
    net = net.cpu().eval()
    multiple = net.multiple
    if max_size < SMALLEST_MAX_SIZE or max_size % multiple:
        raise NstFastError(
            f"--max-size {max_size}: the largest side of an ExecuTorch export is a multiple "
            f"of {multiple}, {SMALLEST_MAX_SIZE} or more"
        )
    meta = {**metadata(info), "multiple": str(multiple), "max_size": str(max_size)}
    try:
        program = _lower(net, multiple, max_size, json.dumps(meta))
    except NstFastError:
        raise
    except Exception as err:
        raise NstFastError(
            f"style {info.style}, step {info.step}: cannot be exported to ExecuTorch "
            f"({first_line(err)}); export it as onnx or torchscript instead"
        ) from err
    with atomic_write(path) as tmp:
        tmp.write_bytes(program)
    return Path(path)


def _lower(net: TransformerNet, multiple: int, max_size: int, meta: str) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # Height and width as multiples of the stride, so that the network's own padding is
    # known to be none (see the module's docstring); the batch is one image, which keeps
    # the planned memory to one image's.
    low, high = MIN_SIZE // multiple, max_size // multiple
    height = torch.export.Dim("height_over_stride", min=low, max=high)
    width = torch.export.Dim("width_over_stride", min=low, max=high)
    # An example inside the range whose height and width differ, so that export guesses
    # no equality between them.
    image = torch.rand(1, 3, high * multiple, (high - 1) * multiple)
    inputs: tuple[torch.Tensor, ...] = (image,)
    shapes: tuple[dict[int, object] | None, ...] = ({2: multiple * height, 3: multiple * width},)
    if net.styles > 1:
        inputs += (torch.full((net.styles,), 1 / net.styles),)
        shapes += (None,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations inside torch.export and executorch
        exported = torch.export.export(net, inputs, dynamic_shapes=shapes)
        edge = to_edge_transform_and_lower(
            exported,
            partitioner=[XnnpackPartitioner()],
            constant_methods={METADATA_METHOD: meta},
        )
        return edge.to_executorch().buffer


def is_executorch_file(path: Path) -> bool:
    """Whether ``path`` is an ExecuTorch program: named .pte, or carrying the flatbuffer
    identifier ExecuTorch writes at bytes 4-8 ("ET12" today)."""
    if path.suffix.lower() == PTE_SUFFIX:
        return True
    with path.open("rb") as file:
        head = file.read(8)
    return head[4:6] == b"ET" and head[6:8].isdigit()


def read_metadata(path: Path) -> tuple[object, dict[str, str]]:
    """The loaded ExecuTorch program in ``path`` and what it records about its network;
    a ``ModelFileError`` for a file ExecuTorch cannot load or that records nothing."""
    executorch_package()
    from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(path)
        names = program.method_names
        if METADATA_METHOD not in names or "forward" not in names:
            raise ValueError(f"methods {', '.join(sorted(names))}; not an nst-fast export?")
        meta = json.loads(program.load_method(METADATA_METHOD).execute([])[0])
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except Exception as err:
        raise ModelFileError(
            path, f"not a loadable ExecuTorch program ({first_line(err)}); {RE_EXPORT}"
        ) from err
    return program, meta


def load_executorch(
    path: Path,
) -> tuple[dict[str, str], Callable[[torch.Tensor | None], Backend], list[int]]:
    """An ExecuTorch export ready to run on the CPU in fp32 (what the program computes in):
    its metadata; ``run_with``, which gives the runner of a network of one style (None)
    or of one of several with those style weights; and its channel widths. Batches run
    image by image, each padded to the program's multiple and cropped back."""
    program, meta = read_metadata(path)
    try:
        multiple, max_size = int(meta["multiple"]), int(meta["max_size"])
        arch = json.loads(meta.get("arch", "{}"))
    except (KeyError, ValueError) as err:
        raise ModelFileError(path, f"its metadata lacks {err}; {RE_EXPORT}") from err
    method = program.load_method("forward")

    def run_with(weights: torch.Tensor | None) -> Backend:
        extra = [] if weights is None else [weights.detach().float().cpu().contiguous()]

        def run(batch: torch.Tensor) -> torch.Tensor:
            h, w = batch.shape[-2:]
            if max(h, w) > max_size or min(h, w) <= MIN_SIZE - multiple:
                raise NstFastError(
                    f"{path}: takes photos of {MIN_SIZE - multiple + 1} to {max_size} "
                    f"pixels a side, not {h}x{w}; stylize with --tile {max_size}, or export "
                    f"it again with --max-size {max(h, w) + -max(h, w) % multiple}"
                )
            outs = []
            for image in batch.detach().float().cpu():
                x = pad_to_multiple(image[None], multiple).contiguous()
                # The output lives in the program's planned memory, which the next
                # execution reuses: the crop is copied out.
                y = method.execute([x, *extra])[0]
                outs.append(y[..., :h, :w].clone())
            return torch.cat(outs).clamp_(0, 1)

        return run

    return meta, run_with, exported_channels(arch)
