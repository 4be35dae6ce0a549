"""The LightningModule's wiring of the network to its loss, built as `nst-fast train` builds it."""

import pytest
import torch

from nst_fast.config import compose
from nst_fast.fast import FastInstanceNorm
from nst_fast.training.module import StyleTransferModule

from .conftest import FULL_SIZE_STYLE


def tiny_module(style_file, *overrides: str) -> StyleTransferModule:
    cfg = compose(
        [
            f"style.image={style_file}",
            "style.size=32",
            *FULL_SIZE_STYLE,
            "loss.weights=random",
            "model.residual_blocks=1",
            *overrides,
        ]
    )
    return StyleTransferModule.from_config(cfg)


@pytest.mark.parametrize(("channels", "period"), [("[8,16,32]", 4), ("[4,8,16,32]", 8)])
def test_the_grid_penalty_looks_at_the_period_the_network_can_draw(style_file, channels, period):
    module = tiny_module(style_file, f"model.channels={channels}")
    assert module.transformer.multiple == period
    assert module.criteria[0].grid_period == period


def run_step(module: StyleTransferModule, photos: torch.Tensor) -> torch.Tensor:
    module.setup("fit")
    module.on_fit_start()
    return module.step_net(photos)


@pytest.mark.parametrize("fast", ["true", "false"])
def test_the_step_network_shares_the_weights_checkpoints_hold(style_file, fast):
    module = tiny_module(style_file, "model.channels=[8,16,32]", f"fast={fast}")
    photos = torch.rand(2, 3, 32, 32)
    before = run_step(module, photos)
    with torch.no_grad():
        for p in module.transformer.parameters():
            p.add_(0.1)
    assert not torch.allclose(module.step_net(photos), before)
    assert all(k.startswith(("transformer.", "criteria.")) for k in module.state_dict())


def test_fast_false_trains_the_plain_modules_and_fast_true_the_same_function(style_file):
    plain = tiny_module(style_file, "model.channels=[8,16,32]", "fast=false")
    fast = tiny_module(style_file, "model.channels=[8,16,32]", "fast=true")
    fast.transformer.load_state_dict(plain.transformer.state_dict())
    photos = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    expected, got = run_step(plain, photos), run_step(fast, photos)
    assert not any(isinstance(m, FastInstanceNorm) for m in plain.step_net.modules())
    assert any(isinstance(m, FastInstanceNorm) for m in fast.step_net.modules())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_batch_norm_statistics_trained_after_a_move_are_the_ones_checkpoints_hold(style_file):
    module = tiny_module(style_file, "model.channels=[8,16,32]", "model.norm=batch", "fast=true")
    module.setup("fit")
    # Lightning moves the module to its GPU after setup; a move to float64 replaces the
    # buffers as a move to a GPU does, and keeps the parameters.
    module.to(torch.float64)
    module.on_fit_start()
    module.step_net(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    statistics = [b for n, b in module.transformer.named_buffers() if n.endswith("running_mean")]
    assert statistics and all(s.dtype == torch.float64 and s.abs().sum() > 0 for s in statistics)
