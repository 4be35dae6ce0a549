"""A transform network made ready for inference, and one forward pass through it.

``prepare`` makes the inference copy (eval, on the device, in the dtype; with nst-fast's
faster modules, channels_last), ``prepared`` reuses it while the network's weights stay
as they were, and ``forward`` runs it on a batch. Every way of stylizing goes through
these three: whole images, tiles, video frames, model files.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch
from torch import nn

from nst_fast.compat import tensor_version
from nst_fast.fast import FastInstanceNorm, accelerate, share_statistics

Backend = Callable[[torch.Tensor], torch.Tensor]


def prepare(
    net: nn.Module, device: torch.device | str, dtype: torch.dtype, fast: bool = True
) -> nn.Module:
    """A copy of ``net`` ready for inference: eval, on ``device``, in ``dtype``; ``fast``:
    with nst-fast's faster modules (``nst_fast.fast.accelerate``), channels_last.

    Instance norms become ``FastInstanceNorm`` either way: tiles of one image share its
    statistics through them. ``net`` itself is left as it was.
    """
    prepared_net = copy.deepcopy(net).eval()
    device = torch.device(device)
    if fast:
        accelerate(prepared_net, "inference", device)
        return prepared_net.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return share_statistics(prepared_net).to(device=device, dtype=dtype)


def forward(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Run a prepared network on a (B, 3, H, W) batch in [0, 1]; fp32 CPU result in [0, 1]."""
    param = next(net.parameters())
    x = batch.to(param.device, param.dtype)
    if param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = net(x).float().cpu()
    # Made outside inference mode, a plain tensor callers may modify in place; clamping
    # into it also converts the layout to NCHW in the same pass.
    out = torch.empty(y.shape, dtype=torch.float32)
    return torch.clamp(y, 0, 1, out=out)


# One prepared copy per network, while its weights stay as they were.
_PREPARED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def prepared(
    net: nn.Module, device: torch.device, dtype: torch.dtype, fast: bool = True
) -> nn.Module:
    """``prepare(net, device, dtype, fast)``, reused across calls until a weight of ``net`` is
    replaced or changed in place (an optimizer step, ``load_state_dict``, ``.to()``)."""
    tensors = [*net.parameters(), *net.buffers()]
    versions = tuple((t.data_ptr(), tensor_version(t)) for t in tensors)
    key = (str(device), dtype, fast, versions)
    hit = _PREPARED.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    result = prepare(net, device, dtype, fast)
    _PREPARED[net] = (key, result)
    return result


def instance_norms(net: nn.Module) -> list[FastInstanceNorm]:
    """The instance norms of a prepared network: passes share statistics through them
    (tiles of one image, the frames of a video)."""
    return [m for m in net.modules() if isinstance(m, FastInstanceNorm)]
