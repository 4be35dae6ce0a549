"""A network from what a model file records: the file's account of itself (``ModelInfo``),
its architecture with the fields of earlier versions filled in, and its weights checked to
fit that architecture and to be finite; ``ModelFileError`` names the file when they
cannot make a working network.

What every reader of weight files shares: nst-fast's own (``nst_fast.export``) and
pytorch/examples' (``nst_fast.models.pytorch_examples``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from nst_fast import __version__
from nst_fast.errors import NstFastError
from nst_fast.models.transformer import TransformerConfig, TransformerNet

# Version 2 files carry several styles; files of one style stay version 1, so that every
# nst-fast reads them, and an earlier nst-fast names the version it cannot read.
FORMAT_VERSION = 1
MULTI_STYLE_VERSION = 2


@dataclass
class ModelInfo:
    """What an exported model says about itself."""

    style: str  # the style's name; several styles' names joined by '+'
    step: int
    arch: dict
    nst_fast_version: str
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    # The names of the styles a network of several carries, in the order of its style
    # weights; empty for a network of one style.
    styles: list[str] = field(default_factory=list)


class ModelFileError(NstFastError):
    """A model file that cannot be used: ``path`` and, in ``reason``, why and what to do."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


# Fields that files of earlier versions do not record, with the value those versions
# built: the output choice came after linear outputs, the norm scope after norms
# everywhere, anti-aliasing after strided convolutions and nearest upsampling, its
# filter's length after the 3-tap filter with bilinear upsampling. The one
# place that knows about earlier files.
LEGACY_ARCH = {"output": "linear", "norm_scope": "all", "antialias": False, "antialias_taps": 3}
ARCH_FIELDS = tuple(f.name for f in fields(TransformerConfig))
UPGRADE = "written by a newer nst-fast? upgrade it (pip install -U nst-fast)"
RE_EXPORT = "export it again from its run (nst-fast export RUN/checkpoints/last.ckpt --format pt)"


def recorded_arch(arch: dict, source: str | os.PathLike = "the file") -> dict:
    """Every field of ``TransformerConfig`` for an architecture as a model.pt, checkpoint
    or exported file records it, the fields of earlier versions filled in
    (``LEGACY_ARCH``). A field this version does not know, or one that is missing,
    raises ``ModelFileError`` naming it and ``source``."""
    if not isinstance(arch, dict):
        raise ModelFileError(source, "not an nst-fast model (its architecture is not a table)")
    unknown = [key for key in arch if key not in ARCH_FIELDS]
    if unknown:
        raise ModelFileError(
            source,
            f"records model.{unknown[0]}, which nst-fast {__version__} does not know; {UPGRADE}",
        )
    full = {**LEGACY_ARCH, **arch}
    missing = [key for key in ARCH_FIELDS if key not in full]
    if missing:
        raise ModelFileError(
            source, f"not an nst-fast model (it records no model.{missing[0]}); {RE_EXPORT}"
        )
    return full


def build_network(
    arch: dict, state: dict, source: str | os.PathLike, remedy: str = RE_EXPORT, styles: int = 1
) -> TransformerNet:
    """The network ``arch`` describes with the weights ``state``, in eval mode; a
    ``ModelFileError`` naming ``source`` when they cannot make a working network: an
    architecture this version cannot build, weights that do not fit it, or weights that
    are not finite (``remedy`` says what to do about those two)."""
    arch = recorded_arch(arch, source)
    try:
        net = TransformerNet(TransformerConfig(**arch), styles)
    except (TypeError, ValueError) as err:
        raise ModelFileError(
            source, f"nst-fast {__version__} cannot build the network it records ({err}); {UPGRADE}"
        ) from err
    if not isinstance(state, dict):
        raise ModelFileError(
            source, f"not an nst-fast model (its weights are not a table); {remedy}"
        )
    misfit = weights_misfit(net.state_dict(), state)
    if misfit:
        raise ModelFileError(
            source, f"its weights do not fit the network it records ({misfit}); {remedy}"
        )
    net.load_state_dict(state)
    bad = next(
        (k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()), None
    )
    if bad is not None:
        raise ModelFileError(
            source,
            f"weight {bad} holds NaN or infinite values (training diverged before it was "
            f"saved?); {remedy}",
        )
    return net.eval()


def weights_misfit(expected: dict[str, torch.Tensor], given: dict) -> str:
    """What keeps ``given`` from loading into a network whose state dict is ``expected``,
    in a few words; empty when it fits."""
    problems = [f"no {k}" for k in expected if k not in given]
    problems += [f"unexpected {k}" for k in given if k not in expected]
    for key, value in expected.items():
        other = given.get(key)
        if other is None:
            continue
        if not isinstance(other, torch.Tensor):
            problems.append(f"{key} is not a tensor")
        elif other.shape != value.shape:
            shape = "x".join(map(str, other.shape)) or "a scalar"
            problems.append(f"{key} is {shape}, the network's {'x'.join(map(str, value.shape))}")
    if len(problems) > 2:
        problems = [*problems[:2], f"{len(problems) - 2} more"]
    return ", ".join(problems)
