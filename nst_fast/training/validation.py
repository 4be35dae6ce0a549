"""Validation figures: the mean loss terms over the held-out photos, each photo once.

Each process of a multi-process run measures its share of the photos. Lightning's
DistributedSampler pads the shares to equal length by repeating photos, so a plain mean
of the processes' means would count some photos twice and differ from the one-process
figure: the rows carry each photo's index, and repeats are dropped before averaging.
"""

from __future__ import annotations

import torch


def photo_rows(style: int, indices: torch.Tensor, terms: list[dict]) -> list[torch.Tensor]:
    """One row per photo: the style's position, the photo's index, then its loss terms (in
    the order of the terms' names)."""
    return [
        torch.tensor([style, int(i), *(float(v) for v in t.values())], dtype=torch.float64)
        for i, t in zip(indices, terms, strict=True)
    ]


def mean_over_photos(rows: torch.Tensor, styles: int) -> torch.Tensor:
    """The mean terms of ``rows`` (n, 2 + terms) over distinct (style, photo) pairs, then
    over the ``styles`` styles: a (styles + 1, terms) tensor, each style's means and, last,
    their mean."""
    # One row per (style, photo): a photo repeated by the sampler gives the same values.
    kept = torch.stack(list({(int(r[0]), int(r[1])): r for r in rows}.values()))
    by_style = torch.stack([kept[kept[:, 0] == s, 2:].mean(0) for s in range(styles)])
    return torch.cat([by_style, by_style.mean(0, keepdim=True)])
