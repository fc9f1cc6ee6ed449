"""How a job's items (networks, directions, poison indices) split into shards: contiguous
ranges, the same split on the API side (the shard rows) and in the worker."""

from __future__ import annotations


def shard_ranges(count: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous index ranges [start, stop) of `count` items in `shards` shards, as even as
    rounding allows."""
    bounds = [round(i * count / shards) for i in range(shards + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(shards)]
