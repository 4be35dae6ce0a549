"""``nst-fast train``: Hydra's command line, handed to the training entry point."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from nst_fast.training.train import run_from_cli

    run_from_cli(argv)
    return 0
