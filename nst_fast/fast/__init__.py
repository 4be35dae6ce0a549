"""Speed work: modules that compute the same functions as the plain ones in
``nst_fast.models`` and ``nst_fast.losses``, swapped in by one call, ``accelerate``.

What each swap does (each is tested equal to the plain module in value and gradient):

* ``FastInstanceNorm`` (norm.py): instance norm that keeps the channels_last layout, with
  a CPU training backward pass on the (B, H*W, C) view, and statistics shared across the
  tiles of one image; every fast path's norm statistics come from norm.py;
  ``FastConditionalInstanceNorm`` the same for a network of several styles;
* ``CpuTrainingConv2d`` (conv.py): weight gradients in NCHW while training on a CPU;
* ``PhaseUpsampleConv`` (upsample.py): nearest x2 upsampling + 3x3 convolution as one
  convolution on the low-resolution grid (4/9 of the multiply-adds, no upsampled copy);
* ``PhaseOutput`` (phase_output.py): the decoder's last two layers on a space-to-depth
  map, for CPU inference;
* ``FastGramMatrix`` (gram.py): Gram matrices without an NCHW copy and with a one-matmul
  backward pass.

Swaps that are only faster on some hardware are enabled by a capability check
(``cpu_kernels_pay``), on the hardware where they measured a gain (docs/performance.md).
The training swap keeps every parameter name and tensor, so checkpoints and exported
files are the same with or without it; the inference copy (never saved) differs only in
the CPU phase output, which replaces the decoder's last two layers. ``fast=false``
(training config) and ``nst-fast stylize --plain`` run the plain modules.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from nst_fast.fast.conv import CpuTrainingConv2d
from nst_fast.fast.gram import FastGramMatrix
from nst_fast.fast.norm import FastConditionalInstanceNorm, FastInstanceNorm
from nst_fast.fast.phase_output import PhaseOutput
from nst_fast.fast.upsample import PhaseUpsampleConv
from nst_fast.losses.perceptual import GramMatrix
from nst_fast.models.transformer import ConditionalInstanceNorm2d

Purpose = Literal["training", "inference"]

__all__ = [
    "FastInstanceNorm",
    "accelerate",
    "cpu_kernels_pay",
    "share_parameters",
    "share_statistics",
]


def cpu_kernels_pay(device: torch.device | str) -> bool:
    """Whether the hand-written CPU kernels (NCHW weight gradients, the instance-norm
    backward, the phase convolutions, the phase output) are faster than PyTorch's own on
    ``device``: x86 CPUs whose convolutions run through oneDNN with AVX2 or AVX-512, the
    CPUs they were measured on. Elsewhere (ARM, GPUs) they are untested for speed."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return torch.backends.cpu.get_cpu_capability().startswith(("AVX2", "AVX512"))


def accelerate(net: nn.Module, purpose: Purpose, device: torch.device | str) -> nn.Module:
    """Swap the fast modules into ``net`` in place, for ``purpose`` on ``device``; returns
    ``net``. Parameter names are kept, except that for inference on a CPU the decoder's
    last two layers become one ``PhaseOutput``. Works on a transform network, a
    perceptual loss, or any module holding them.

    For training, every swapped module holds the very tensors of the module it replaces,
    so an optimizer built on the plain network trains the accelerated one too.
    """
    cpu = cpu_kernels_pay(device)
    _swap_children(net, purpose, cpu)
    if purpose == "inference" and cpu:
        _swap_output_tails(net)
    return net


def share_statistics(net: nn.Module) -> nn.Module:
    """Only the swap that inference needs on the plain path too: instance norms become
    ``FastInstanceNorm``, through which tiles of one image share its statistics. In
    place; returns ``net``."""
    _swap_children(net, "inference", cpu=False)
    return net


def share_parameters(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters and buffers are ``net``'s own tensors: a twin to
    accelerate for training while ``net`` stays plain for checkpoints and exports.

    Build it once ``net`` is on its device and in its dtype: a move keeps the parameters
    (their data is swapped) but gives ``net`` new buffers, which the twin would not see."""
    memo = {id(t): t for t in [*net.parameters(), *net.buffers()]}
    return copy.deepcopy(net, memo)


def _swap_children(module: nn.Module, purpose: Purpose, cpu: bool) -> None:
    """Children first, so that a block swapped whole keeps its swapped layers."""
    for name, child in list(module.named_children()):
        _swap_children(child, purpose, cpu)
        fast = _fast_child(child, purpose, cpu)
        if fast is not None:
            setattr(module, name, fast)


def _fast_child(child: nn.Module, purpose: Purpose, cpu: bool) -> nn.Module | None:
    if type(child) is nn.InstanceNorm2d and child.affine and not child.track_running_stats:
        return FastInstanceNorm(child, cpu_training_kernel=cpu and purpose == "training")
    if type(child) is ConditionalInstanceNorm2d:
        return FastConditionalInstanceNorm(child, cpu_training_kernel=cpu and purpose == "training")
    if type(child) is nn.Conv2d and cpu and purpose == "training" and _unpadded(child):
        return CpuTrainingConv2d(child)
    upsampling = type(child) is not PhaseUpsampleConv and PhaseUpsampleConv.supports(child)
    if isinstance(child, nn.Sequential) and cpu and upsampling:
        return PhaseUpsampleConv(*child)
    if type(child) is GramMatrix and cpu:
        return FastGramMatrix()
    return None


def _unpadded(conv: nn.Conv2d) -> bool:
    return conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1


def _swap_output_tails(net: nn.Module) -> None:
    """A decoder's last upsampling block and 9x9 output convolution become a PhaseOutput,
    which shares the block's (already swapped) FastInstanceNorm statistics."""
    decoder = getattr(net, "decoder", None)
    if not isinstance(decoder, nn.Sequential) or len(decoder) < 2:
        return
    upsample, output = decoder[-2], decoder[-1]
    if PhaseOutput.supports(upsample, output):
        tail = PhaseOutput(upsample, output)
        del decoder[-1]
        decoder[-1] = tail
