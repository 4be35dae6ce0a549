"""The LightningModule's wiring of the network to its loss."""

import pytest

from nst_fast.training.module import StyleTransferModule


@pytest.mark.parametrize(("channels", "period"), [([8, 16, 32], 4), ([4, 8, 16, 32], 8)])
def test_the_grid_penalty_looks_at_the_period_the_network_can_draw(style_file, channels, period):
    module = StyleTransferModule(
        model={"channels": channels, "residual_blocks": 1},
        loss={
            "network": "vgg16",
            "weights": "random",
            "content_layer": "relu2_2",
            "style_layers": {"relu1_2": 1.0},
            "content_weight": 1.0,
            "style_weight": 1.0,
            "tv_weight": 0.0,
            "grid_weight": 100.0,
            "normalize": True,
        },
        style={"name": "tiny", "image": str(style_file), "size": 32},
    )
    assert module.transformer.multiple == period
    assert module.criterion.grid_period == period
