"""The toy kind's engine side (as nadcore/<kind>/ would hold it): its spec and one shard's
computation, the sum of the squares of a range of integers, into a partial with save/load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nadcore.control import Cancelled, Progress, ShouldStop


class ToySpec(BaseModel):
    """Sums i² for i in 0..count-1, over `shards` tasks, or in one task (`whole`)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=10_000_000, description="integers summed")
    shards: int = Field(1, ge=1, le=16)
    whole: bool = Field(False, description="one task, as a NAD job that stops early")


@dataclass(frozen=True)
class ToyPartial:
    start: int
    stop: int
    squares: np.ndarray  # i² for i in start..stop-1

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, start=self.start, stop=self.stop, squares=self.squares)

    @classmethod
    def load(cls, path: Path) -> ToyPartial:
        with np.load(path, allow_pickle=False) as z:
            return cls(int(z["start"]), int(z["stop"]), z["squares"])


def sum_squares(start: int, stop: int, progress: Progress, should_stop: ShouldStop
                ) -> ToyPartial:
    if should_stop():
        raise Cancelled("cancelled")
    squares = np.arange(start, stop, dtype=np.int64) ** 2
    progress(stop - start, stop - start)
    return ToyPartial(start, stop, squares)


def merge(partials: list[ToyPartial]) -> ToyPartial:
    """The partials, in order, as one covering all their ranges."""
    ordered = sorted(partials, key=lambda p: p.start)
    return ToyPartial(ordered[0].start, ordered[-1].stop,
                      np.concatenate([p.squares for p in ordered]))
