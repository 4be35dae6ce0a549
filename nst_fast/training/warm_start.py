"""Starting a run from a trained network (``model.init=PATH``) instead of random weights
(what it saves: docs/quality/findings.md, "Warm starts from another style's network")."""

from __future__ import annotations

from nst_fast.errors import NstFastError
from nst_fast.export import ModelFileError, arch_changes, load_network
from nst_fast.models.transformer import TransformerNet
from nst_fast.training.extend import with_added_styles


def start_from(net: TransformerNet, path: str) -> None:
    """Load the weights of the network in ``path`` (any file ``nst-fast stylize`` reads
    but TorchScript and ONNX) into ``net``, whose architecture must be its own; a network
    of one style starts each style of a network of several. One line when it cannot."""
    said = f"model.init={path}"
    try:
        source, _ = load_network(path)
    except ModelFileError as err:
        raise NstFastError(f"{said}: {err.reason}") from err
    changed = arch_changes(source.config.to_dict(), net.config)
    if changed:
        raise NstFastError(
            f"{said}: its network has {' '.join(changed)}; add "
            f"{'that' if len(changed) == 1 else 'those'} to the command"
        )
    if source.styles == 1 and net.styles > 1:
        source = with_added_styles(source, net.styles - 1)
    if source.styles != net.styles:
        raise NstFastError(
            f"{said}: it carries {source.styles} styles and this run trains {net.styles}; "
            "start from a network of one style or of as many"
        )
    net.load_state_dict(source.state_dict())
