"""What several commands share: how their flags are named in messages, and checks."""

from __future__ import annotations

from nst_fast.batch import Spelling
from nst_fast.errors import NstFastError

# Messages from the library name the options as the command line spells them.
FLAGS = Spelling(flags={"output": "-o"})


def check_positive(**options: tuple[int | None, int]) -> None:
    """``name=(value, least)`` for integer options: a value under its least is refused."""
    for name, (value, least) in options.items():
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise NstFastError(f"{flag} {value}: expected {least} or more")
