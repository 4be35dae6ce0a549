"""Adding styles to a trained network (``extend=MODEL.pt``), as Dumoulin et al. (2017) do:
the network keeps every weight and style it has, and only the new styles' scales and
shifts in its conditional instance norms train."""

from __future__ import annotations

import torch

from nst_fast.errors import NstFastError
from nst_fast.export import load_network, recorded_style_specs
from nst_fast.models.transformer import ConditionalInstanceNorm2d, TransformerNet


def extended(path: str, new: list[dict]) -> tuple[dict, list[dict]]:
    """The architecture of the trained model ``path`` and its styles followed by ``new``;
    a one-line error for a style it has already."""
    net, info = load_network(path)
    specs = recorded_style_specs(info)
    names = [spec["name"] for spec in specs]
    again = [s["name"] for s in new if s["name"] in names]
    if again:
        raise NstFastError(f"extend={path}: it has the style {again[0]} already; name another")
    return net.config.to_dict(), [*specs, *new]


def train_added_styles(net: TransformerNet, path: str) -> list[int]:
    """Load the trained model ``path`` into ``net`` (which has its styles and more), and
    freeze everything but the norm parameters of the styles it lacks: their indices.

    Dumoulin et al. add a style to a trained network this way. The other styles' rows of
    each norm parameter get a zero gradient, which leaves them bit-identical under Adam.
    """
    base, _ = load_network(path)
    added = net.styles - base.styles
    net.load_state_dict(with_added_styles(base, added).state_dict())
    mask = torch.zeros(net.styles, 1)
    mask[base.styles :] = 1
    net.requires_grad_(False)
    for norm in (m for m in net.modules() if isinstance(m, ConditionalInstanceNorm2d)):
        for param in (norm.weight, norm.bias):
            param.requires_grad_(True)
            param.register_hook(lambda grad: grad * mask.to(grad))
    return list(range(base.styles, net.styles))


def with_added_styles(net: TransformerNet, count: int) -> TransformerNet:
    """``net`` with ``count`` more styles, each starting from the mean scale and shift of
    the styles it has; a network of one style becomes one of 1 + ``count``."""
    grown = TransformerNet(net.config, net.styles + count).to(next(net.parameters()).device)
    state = net.state_dict()
    for name, module in grown.named_modules():
        if isinstance(module, ConditionalInstanceNorm2d):
            for key in (f"{name}.weight", f"{name}.bias"):
                rows = state[key].reshape(net.styles, -1)
                state[key] = torch.cat([rows, rows.mean(0, keepdim=True).expand(count, -1)])
    grown.load_state_dict(state)
    return grown.train(net.training)
