"""Device and precision choice: the one place that decides where and in what dtype to run."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pytorch_lightning as pl

from nst_fast import compat
from nst_fast.errors import NstFastError

# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    Each step allocates and frees the same large activations (a 64-channel map of four
    256 px images is 64 MiB). glibc serves blocks that size with fresh ``mmap`` pages and
    unmaps them on free, so every step the kernel zero-fills them again on first touch
    (docs/performance.md has the measured cost). The price is memory: a higher peak RSS,
    and nothing is handed back to the OS before exit; so only the command-line entry
    points call this, never the library on import.

    Returns whether the allocator was tuned (False off glibc, e.g. macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it (and its mallopt)
    except (OSError, AttributeError):
        return False
    # Memory above the trim threshold is kept, and no block gets its own mmap.
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30)) and bool(libc.mallopt(_M_MMAP_MAX, 0))


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels_last (and not also plain contiguous, as 1x1 maps
    and single channels are): the layout its consumers should keep."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; any other name is checked and used as is."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise NstFastError(f"--device {name}: not a device name (auto, cpu, cuda, mps)") from err
    if device.type not in ("cpu", "cuda", "mps"):  # meta, xpu, ...: not supported here
        raise NstFastError(f"--device {name}: not a device nst-fast runs on (auto, cpu, cuda, mps)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NstFastError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise NstFastError(f"--device {name}: MPS is not available on this machine")
    return device


def training_device(module: pl.LightningModule) -> torch.device:
    """Where ``module`` will train: its trainer's device (Lightning calls ``setup`` before
    the strategy moves the module there), or the module's own when no trainer is attached."""
    try:
        return module.trainer.strategy.root_device
    except RuntimeError:  # Lightning: "... is not attached to a `Trainer`"
        return module.device


def inference_dtype(device: torch.device, half: bool = True) -> torch.dtype:
    """Half precision where the hardware computes in it: on GPUs (bf16 from Ampere on,
    else fp16: ``cuda_half_dtype``) and on CPUs with native bf16 (faster, and on average
    under one 8-bit level from fp32: docs/performance.md); fp32 on other CPUs."""
    if not half:
        return torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if device.type == "cuda":
        return cuda_half_dtype(device)
    return torch.float16


#: The compute capability from which cuDNN convolves in bf16 (Ampere).
BF16_CAPABILITY = (8, 0)


def cuda_half_dtype(device: torch.device | int | None = None) -> torch.dtype:
    """The half dtype CUDA device ``device`` (None: the current one) computes in: bf16 from
    compute capability 8.0 on, else fp16.

    Not ``torch.cuda.is_bf16_supported()``: since torch 2.3 it answers True on a T4 or V100
    too, where bf16 is emulated and cuDNN has no bf16 convolutions at all.
    """
    if torch.cuda.get_device_capability(device) >= BF16_CAPABILITY:
        return torch.bfloat16
    return torch.float16


#: Set to 1 or 0, it answers ``cpu_has_native_bf16`` in place of the hardware probe: to
#: run as the other kind of CPU would (the test suite both ways, docs/development.md).
CPU_BF16_OVERRIDE = "NST_FAST_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), where
    oneDNN's bf16 convolutions run at about twice its fp32 rate. Elsewhere bf16 is
    emulated and slower than fp32. ``$NST_FAST_CPU_BF16`` (1 or 0) overrides the probe."""
    override = os.environ.get(CPU_BF16_OVERRIDE)
    if override is None or override == "":
        return compat.cpu_has_native_bf16()
    if override not in ("0", "1"):
        raise NstFastError(f"{CPU_BF16_OVERRIDE}={override}: expected 1 (native bf16) or 0 (none)")
    return override == "1"


def training_precision(accelerator: str = "auto", devices: int | str | list[int] = "auto") -> str:
    """Lightning precision for the machine at hand: bf16 mixed on GPUs from Ampere on and
    on CPUs that compute in bf16 natively, fp16 mixed on older GPUs, else fp32.

    ``accelerator`` and ``devices`` are the trainer's: "auto" (a GPU if there is one) or
    "cpu", and the GPUs it trains on (``gpu_indices``). Several GPUs train in what every
    one of them computes in: all ranks must autocast alike.
    """
    if accelerator != "cpu" and torch.cuda.is_available():
        dtypes = {cuda_half_dtype(index) for index in gpu_indices(devices)}
        return "bf16-mixed" if dtypes == {torch.bfloat16} else "16-mixed"
    if accelerator in ("auto", "cpu") and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


def gpu_indices(devices: int | str | list[int] = "auto") -> list[int]:
    """The CUDA devices a trainer with ``devices`` trains on, as Lightning reads the
    setting (a count, -1, "auto", a list or "0,2"); all of them where Lightning would
    refuse the setting, as it does itself when it builds the trainer."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.accelerators import CUDAAccelerator

    everything = list(range(torch.cuda.device_count()))
    if devices == "auto":
        return everything
    try:
        return CUDAAccelerator.parse_devices(devices) or everything
    except (MisconfigurationException, TypeError, ValueError):
        return everything


def processes_per_node(accelerator: str = "auto", devices: int | str | list[int] = "auto") -> int:
    """How many training processes a trainer of ``accelerator`` and ``devices`` starts on
    each node: one per device, as Lightning's DDP launches them (torchrun's and SLURM's
    launches are told to match: conf/trainer/torchrun.yaml, slurm.yaml)."""
    from pytorch_lightning.accelerators import CPUAccelerator

    if accelerator != "cpu" and torch.cuda.is_available():
        return max(1, len(gpu_indices(devices)))
    if devices == "auto":
        return CPUAccelerator.auto_device_count()
    try:
        return max(1, CPUAccelerator.parse_devices(devices))
    except (TypeError, ValueError):  # a GPU list on a machine without one: not run here
        return 1


def loader_workers(wanted: int, processes: int = 1) -> int:
    """``wanted`` data-loading processes, or this process's share of the cores if fewer:
    more would only take turns with the training step on the same cores (PyTorch's
    DataLoader warns about it). Each of ``processes`` training processes on the node (one
    per GPU under DDP) starts its own workers, so they share the cores; at least one
    worker each, so that loading never stalls a GPU's step."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(wanted, max(1, (cores or 1) // processes)))
