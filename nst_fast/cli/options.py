"""What several commands share: how their flags are named in messages, and checks."""

from __future__ import annotations

import argparse

from nst_fast.errors import NstFastError
from nst_fast.stylize_options import Spelling

# Messages from the library name the options as the command line spells them.
FLAGS = Spelling(flags={"output": "-o", "steady": "--steady-statistics"})


def check_positive(**options: tuple[int | None, int]) -> None:
    """``name=(value, least)`` for integer options: a value under its least is refused."""
    for name, (value, least) in options.items():
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise NstFastError(f"{flag} {value}: expected {least} or more")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --precision, as the commands that run a network take them."""
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda:1...")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
        help="auto: bf16 or fp16 on GPUs, bf16 on CPUs with native bf16, else fp32",
    )  # fmt: skip
