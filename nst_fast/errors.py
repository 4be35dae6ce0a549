"""The exception types whose message is shown to users as is, without a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NstFastError(Exception):
    """A problem with the user's input (a file, an option) that the message explains."""


class ConfigError(NstFastError, ValueError):
    """An option value that cannot work; a ValueError too, for Python callers."""


class NonFiniteLossError(NstFastError):
    """The loss became NaN or infinite: training cannot continue from here."""

    def __init__(self, losses: Mapping[str, Any], step: int) -> None:
        terms = ", ".join(f"{k} {float(losses[k]):.4g}" for k in ("content", "style", "tv"))
        super().__init__(
            f"the loss became {float(losses['total'])} at step {step} ({terms}); lower "
            "optim.lr or the loss weights, then resume from the last good checkpoint with "
            "ckpt_path=last"
        )


class FlatOutputError(NstFastError):
    """The network's output stayed one flat colour: the ReLUs of its last hidden layer
    are all off, or its tanh is saturated, and no gradient reaches its weights."""

    def __init__(
        self, step: int, steps: int, warmup_steps: int, stability_start: int | None = None
    ) -> None:
        # With the stability terms on, they can win over the style from a random start.
        stability = (
            ""
            if stability_start is None
            else f"; the stability terms are on: start them later (stability.start_step, now "
            f"{stability_start}, e.g. 500) and ramp them in (stability.ramp_steps)"
        )
        super().__init__(
            f"the network's output has been one flat colour for {steps} steps (step {step}) "
            "and no longer learns (its last layer's ReLUs are all off, or its output is "
            f"saturated); start again with a longer optim.warmup_steps (now {warmup_steps}, "
            f"e.g. 500), another seed= or model.norm_scope=all{stability}"
        )


def first_line(err: BaseException) -> str:
    """The first line of an error's message (a library's own can run to many); the type's
    name for an error with no message."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
