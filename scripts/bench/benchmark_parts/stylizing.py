"""The stylize figure: one image through ``nst_fast.inference.stylize``, as
``nst-fast stylize`` runs it, on the network ``nst-fast train`` builds.
"""

from __future__ import annotations

import statistics

import torch

from benchmark_parts.setups import Setup, config_groups, project_config
from benchmark_parts.timing import time_calls
from nst_fast.inference import stylize
from nst_fast.models.transformer import TransformerConfig, TransformerNet


def plain_transformer(antialias: bool = False) -> TransformerNet:
    """The transform network ``nst-fast train`` builds, untrained, on the CPU; with
    ``antialias``, as ``model.antialias=true`` builds it."""
    (model,) = config_groups(project_config("random", f"model.antialias={antialias}"), "model")
    return TransformerNet(TransformerConfig.of(model))


def make_transformer(setup: Setup) -> torch.nn.Module:
    """The network to stylize with; ``stylize`` itself picks the layout and, with
    ``fast``, swaps nst_fast.fast's modules in, as ``nst-fast stylize`` runs it. For a
    network of several styles, one of them, as ``nst-fast stylize --style`` runs it."""
    net = plain_transformer(setup.antialias)
    if setup.styles > 1:
        several = TransformerNet(net.config, setup.styles)
        net = several.single_style(torch.eye(setup.styles)[0])
    net = net.to(setup.device).eval()
    if "transformer" in setup.compile:
        net = torch.compile(net, dynamic=False)
    return net


def bench_stylize(setup: Setup, size: int, repeats: int) -> float:
    net = make_transformer(setup)
    image = torch.rand(3, size, size)
    half = setup.amp is not None
    times = time_calls(
        lambda: stylize(net, image, half=half, fast=setup.fast),
        setup.device,
        warmup=2 if setup.compile else 1,
        repeats=repeats,
    )
    return statistics.median(times)
