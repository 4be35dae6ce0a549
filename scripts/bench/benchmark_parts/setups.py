"""The set-ups: the ways of running the project that the benchmark times (device,
layout, compilation, precision, nst_fast.fast on or off, styles), chosen from the
command line, and the config ``nst-fast train`` composes for them.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from nst_fast.config import compose
from nst_fast.device import inference_dtype, training_precision


@dataclass
class Setup:
    """One way of running the project: device, memory format, compilation, precision,
    and whether nst_fast.fast's modules are swapped in (``fast``; False: ``--plain``)."""

    name: str
    device: str
    channels_last: bool
    compile: tuple[str, ...] = ()  # "transformer", "loss"
    amp: torch.dtype | None = None  # autocast dtype (bf16 on GPUs), None: fp32
    cudnn_benchmark: bool = False
    fast: bool = True
    styles: int = 1  # a network of several styles (conditional instance norm) when > 1
    stability: bool = False  # training with both video stability terms on
    antialias: bool = False  # the anti-aliased network (model.antialias=true)
    style_scales: tuple[float, ...] = (1,)  # loss.style_scales: the style pyramid's sizes

    def describe(self) -> str:
        parts = [
            "channels_last" if self.channels_last else "NCHW",
            "compile=" + ("+".join(self.compile) or "off"),
            str(self.amp).removeprefix("torch.") + " autocast" if self.amp else "fp32",
        ]
        if self.cudnn_benchmark:
            parts.append("cudnn.benchmark")
        parts.append(mode_name(self.fast))
        if self.styles > 1:
            parts.append(f"{self.styles} styles")
        if self.stability:
            parts.append("stability terms on")
        if self.antialias:
            parts.append("anti-aliased network")
        if self.style_scales != (1,):
            parts.append("style scales " + ",".join(f"{f:g}" for f in self.style_scales))
        return ", ".join(parts)


def mode_name(fast: bool) -> str:
    return "nst_fast.fast on" if fast else "plain modules (--plain)"


def mode_text(fast: bool) -> str:
    """Which nst-fast was measured, for the header of the output and of the Markdown."""
    if fast:
        return "nst-fast as it ships: nst_fast.fast's modules swapped in (fast=true)"
    return "nst-fast plain (--plain): fast=false for training, stylize(..., fast=False)"


# The CPU default (why: docs/performance.md): channels_last pays once instance norm keeps
# that layout; torch.compile on CPU did not pay back its compile time.
CPU_DEFAULT = {"channels_last": True, "compile": ()}


def setups(args: argparse.Namespace) -> list[Setup]:
    def cpu_options() -> dict:
        options = dict(CPU_DEFAULT)
        if args.channels_last != "auto":
            options["channels_last"] = args.channels_last == "on"
        if args.compile != "auto":
            options["compile"] = compile_parts(args.compile)
        precision = args.cpu_precision
        if precision == "auto":  # as `nst-fast train trainer=cpu` would run
            precision = "bf16" if training_precision("cpu") == "bf16-mixed" else "fp32"
        options["amp"] = torch.bfloat16 if precision == "bf16" else None
        return options

    fast = not args.plain
    out = []
    several = {
        "fast": fast,
        "styles": args.styles,
        "stability": args.stability,
        "antialias": args.antialias,
        "style_scales": tuple(args.style_scales),
    }
    if args.device in ("auto", "cpu") or (args.device == "all"):
        out.append(Setup("cpu", "cpu", **cpu_options(), **several))
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda", "all")
    if cuda and "fp32" in args.cuda_setups:
        out.append(Setup("cuda eager fp32", "cuda", channels_last=False, **several))
    if cuda and "optimized" in args.cuda_setups:
        compiled = ("transformer", "loss") if args.compile == "auto" else args.compile
        out.append(
            Setup(
                "cuda optimized",
                "cuda",
                channels_last=args.channels_last != "off",
                compile=compile_parts(compiled) if isinstance(compiled, str) else compiled,
                amp=inference_dtype(torch.device("cuda")),  # bf16 from Ampere on, else fp16
                cudnn_benchmark=True,
                **several,
            )
        )
    if not out:
        raise SystemExit(f"--device {args.device}: not available on this machine")
    return out


def compile_parts(option: str) -> tuple[str, ...]:
    return {
        "off": (),
        "on": ("transformer", "loss"),
        "both": ("transformer", "loss"),
        "transformer": ("transformer",),
        "loss": ("loss",),
    }[option]


def autocast(setup: Setup):
    if setup.amp is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device, dtype=setup.amp)


def pyramid(style_scales: tuple[float, ...]) -> tuple[str, str]:
    """The overrides of a style pyramid of these sizes, equally weighted: weights change
    no cost, and ``(1,)`` is the reference's single full-size term, whatever the default."""
    factors = ",".join(f"{f:g}" for f in style_scales)
    return f"loss.style_scales=[{factors}]", "loss.style_scale_weights=null"


def project_config(weights: str, *overrides: str) -> DictConfig:
    """The config ``nst-fast train`` composes, with a generated style and ``overrides``."""
    style = ["style.name=bench", "style.image=generated:mosaic", "style.size=256"]
    return compose([f"loss.weights={weights}", *style, *overrides])


def style_list(styles: int) -> list[str]:
    """The override of a network of ``styles`` styles: copies of the generated mosaic, each
    turned, written once into the cache; none for one style."""
    if styles == 1:
        return []
    from nst_fast.data.samples import GENERATED_STYLES
    from nst_fast.files import cache_dir
    from nst_fast.images import save_image

    paths = []
    for i in range(styles):
        path = cache_dir("bench_styles") / f"mosaic_{i}.png"
        if not path.exists():
            save_image(GENERATED_STYLES["mosaic"]().rot90(i % 4, (1, 2)), path)
        paths.append(str(path))
    return [f"styles=[{','.join(paths)}]"]


def config_groups(cfg: DictConfig, *groups: str) -> tuple[dict, ...]:
    return tuple(OmegaConf.to_container(cfg[g], resolve=True) for g in groups)


def setup_from_spec(spec: dict) -> Setup:
    setup = Setup(**{k: v for k, v in spec.items() if k != "amp"})
    setup.amp = getattr(torch, spec["amp"]) if spec["amp"] else None
    setup.compile = tuple(setup.compile)
    setup.style_scales = tuple(setup.style_scales)
    return setup


def setup_spec(setup: Setup) -> dict:
    spec = dict(setup.__dict__)
    spec["amp"] = str(setup.amp).removeprefix("torch.") if setup.amp else None
    spec["compile"] = list(setup.compile)
    spec["style_scales"] = list(setup.style_scales)
    return spec
