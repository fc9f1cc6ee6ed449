"""Merging per-shard results of jobs sharded by item (directions, poison indices)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def concatenate_tiles(partials: Sequence, count: int, items: str,
                      fields: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Concatenate `fields` of partials (with .start, .stop) in item order, checking that the
    shards tile 0..count-1 exactly once."""
    partials = sorted(partials, key=lambda p: p.start)
    expected = 0
    for p in partials:
        if p.start != expected or getattr(p, fields[0]).shape[0] != p.stop - p.start:
            raise ValueError(f"partials do not tile the {items}: shard [{p.start}, {p.stop}) "
                             f"after {expected}")
        expected = p.stop
    if expected != count:
        raise ValueError(f"partials cover {expected} of {count} {items}")
    return tuple(np.concatenate([getattr(p, f) for p in partials]) for f in fields)
