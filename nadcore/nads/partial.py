"""Mergeable partial results of a NAD estimate: what one shard of networks contributes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch


@dataclass
class PartialNADs:
    """The contribution of networks [start, stop) of one spec.

    Either the gradient block itself (`gradients`, (stop-start, D) float32: merging is
    concatenation, and the result is bitwise identical whatever the sharding), or its moments
    split by network-index parity (`count`, `sums` (2, D), `outer` (2, D, D), float64: O(D^2)
    whatever N, merging is addition, equal to a single run up to float64 rounding).
    `key` identifies what makes partials mergeable (architecture, shape, method, scale, seed,
    evaluation point, output).
    """

    key: str
    start: int
    stop: int
    eval_point: np.ndarray
    gradients: np.ndarray | None = None
    count: np.ndarray | None = None  # (2,) int64: networks of even / odd index
    sums: np.ndarray | None = None
    outer: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_networks(self) -> int:
        return self.stop - self.start

    @property
    def representation(self) -> str:
        return "gradients" if self.gradients is not None else "moments"

    @classmethod
    def from_gradients(
        cls, key: str, start: int, grads: torch.Tensor, eval_point: np.ndarray,
        representation: str, meta: dict | None = None,
    ) -> PartialNADs:
        stop = start + grads.shape[0]
        if representation == "gradients":
            return cls(key, start, stop, eval_point, gradients=grads.cpu().numpy(),
                       meta=meta or {})
        g = grads.to(torch.float64)
        d = g.shape[1]
        count = np.zeros(2, dtype=np.int64)
        sums = np.zeros((2, d))
        outer = np.zeros((2, d, d))
        for parity in (0, 1):
            rows = g[(parity - start) % 2::2]
            count[parity] = rows.shape[0]
            sums[parity] = rows.sum(0).cpu().numpy()
            outer[parity] = (rows.T @ rows).cpu().numpy()
        return cls(key, start, stop, eval_point, count=count, sums=sums, outer=outer,
                   meta=meta or {})

    def save(self, target: str | Path | BinaryIO) -> None:
        arrays = {"eval_point": self.eval_point}
        for name in ("gradients", "count", "sums", "outer"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        header = {"key": self.key, "start": self.start, "stop": self.stop, "meta": self.meta}
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(target, **arrays)

    @classmethod
    def load(cls, source: str | Path | BinaryIO | bytes) -> PartialNADs:
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        with np.load(source) as z:
            header = json.loads(z["header"].tobytes().decode())
            arrays = {n: z[n] for n in ("gradients", "count", "sums", "outer") if n in z}
            eval_point = z["eval_point"]
        return cls(header["key"], header["start"], header["stop"], eval_point,
                   meta=header.get("meta", {}), **arrays)


def merge_partials(parts: Iterable[PartialNADs]) -> PartialNADs:
    """Merge partials of one spec covering contiguous ranges, in any order."""
    parts = sorted(parts, key=lambda p: p.start)
    if not parts:
        raise ValueError("merge_partials: no partial results given")
    first = parts[0]
    for prev, nxt in zip(parts, parts[1:], strict=False):
        if nxt.key != first.key:
            raise ValueError("merge_partials: partials come from different specs")
        if nxt.representation != first.representation:
            raise ValueError("merge_partials: partials mix gradients and moments")
        if nxt.start != prev.stop:
            raise ValueError(
                f"merge_partials: ranges [{prev.start}, {prev.stop}) and "
                f"[{nxt.start}, {nxt.stop}) are not contiguous"
            )
    if len(parts) == 1:
        return first
    meta = first.meta
    # shards of an "auto" spec run on a CPU and on a GPU used different precisions: say so
    precisions = sorted({p.meta["precision"] for p in parts if "precision" in p.meta})
    if len(precisions) > 1:
        meta = {**meta, "precision": "+".join(precisions)}
    if first.representation == "gradients":
        return PartialNADs(first.key, first.start, parts[-1].stop, first.eval_point,
                           gradients=np.concatenate([p.gradients for p in parts]),
                           meta=meta)
    return PartialNADs(
        first.key, first.start, parts[-1].stop, first.eval_point,
        count=sum(p.count for p in parts), sums=sum(p.sums for p in parts),
        outer=sum(p.outer for p in parts), meta=meta,
    )
