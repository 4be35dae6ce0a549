"""Device and precision choice: the one place that decides where and in what dtype to run."""

from __future__ import annotations

import torch

from nst_fast.errors import NstFastError


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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NstFastError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise NstFastError(f"--device {name}: MPS is not available on this machine")
    return device


def inference_dtype(device: torch.device, half: bool = True) -> torch.dtype:
    """Half precision on GPUs (bf16 where supported, else fp16); fp32 on CPU."""
    if not half or device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def training_precision() -> str:
    """Lightning precision for the machine at hand: bf16 mixed on GPUs that have it."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"
