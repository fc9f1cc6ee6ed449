"""Probe and poison shards: the directions (poison indices) a shard trains and the partial
result it stores, apart from the service so that the worker's sandbox child
(`nadcore.uploaded.isolated`) runs exactly what the worker runs for a built-in architecture."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nadcore.poison.datasets import ImageDataset
from nadcore.poison.engine import run_poison
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.engine import run_probe
from nadcore.probe.spec import ProbeSpec
from nadcore.seeding import replicate_seed

# a probe's curves per training and epoch: train loss, train acc %, test loss, test acc %
CURVE_COLUMNS = 4


@dataclass
class ProbePartial:
    """The result of one shard: units (direction trainings) start..stop-1."""

    start: int
    stop: int
    accuracies: np.ndarray  # (stop - start,) float64 percent
    curves: np.ndarray  # (stop - start, epochs, CURVE_COLUMNS) float32
    info: dict

    def save(self, path: Path) -> None:
        np.savez(path, start=np.int64(self.start), stop=np.int64(self.stop),
                 accuracies=self.accuracies, curves=self.curves,
                 info=np.frombuffer(json.dumps(self.info).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: Path) -> ProbePartial:
        with np.load(path) as z:
            return cls(int(z["start"]), int(z["stop"]), z["accuracies"], z["curves"],
                       json.loads(z["info"].tobytes().decode()))


def run_probe_shard(spec: ProbeSpec, directions: np.ndarray, start: int, stop: int, *,
                    progress: Callable[[int, int], None],
                    should_stop: Callable[[], bool]) -> ProbePartial:
    """Trains units start..stop-1 of the job (unit u: direction u mod n of replicate u // n,
    n = len(directions); replicate r is the job with the seed `replicate_seed(seed, r)`);
    raises nadcore.control.Cancelled when stopped. `progress` counts direction-epochs over the
    whole shard."""
    n = directions.shape[0]
    if not 0 <= start < stop <= spec.units(n):
        raise ValueError(f"shard range [{start}, {stop}) must lie within [0, {spec.units(n)})")
    accuracies, curves, info = [], [], {}
    epochs, total = spec.training.epochs, (stop - start) * spec.training.epochs
    unit = start
    while unit < stop:
        replicate, first = divmod(unit, n)
        last = min(n, first + stop - unit)
        offset = (unit - start) * epochs

        def replicate_progress(done: int, _total: int, offset: int = offset) -> None:
            progress(offset + done, total)

        seeded = spec.model_copy(update={"seed": replicate_seed(spec.seed, replicate)})
        result = run_probe(seeded, directions[first:last], first_index=first,
                           progress=replicate_progress, should_stop=should_stop)
        accuracies.append(np.asarray(result.accuracies, dtype=np.float64))
        curves.append(np.asarray(result.curves, dtype=np.float32))
        seconds = info.get("seconds", 0.0) + result.info.get("seconds", 0.0)
        info = {**result.info, "seconds": seconds}
        unit += last - first
    return ProbePartial(start, stop, np.concatenate(accuracies), np.concatenate(curves), info)


@dataclass
class PoisonPartial:
    """The result of one shard: positions start..stop-1 of `spec.indices`."""

    start: int
    stop: int
    train: np.ndarray  # (stop - start, epochs) float64: accuracy % on the poisoned training set
    test: np.ndarray  # (stop - start, epochs) float64: accuracy % on the clean test set
    info: dict

    def save(self, path: Path) -> None:
        np.savez(path, start=np.int64(self.start), stop=np.int64(self.stop), train=self.train,
                 test=self.test,
                 info=np.frombuffer(json.dumps(self.info, default=str).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: Path) -> PoisonPartial:
        with np.load(path) as z:
            return cls(int(z["start"]), int(z["stop"]), z["train"], z["test"],
                       json.loads(z["info"].tobytes().decode()))


def run_poison_shard(spec: PoisonSpec, data: ImageDataset, nads: np.ndarray, start: int,
                     stop: int, *, progress: Callable[[int, int], None],
                     should_stop: Callable[[], bool]) -> PoisonPartial:
    """Trains positions start..stop-1, one at a time so that progress counts epochs over the
    whole shard; raises nadcore.control.Cancelled when stopped."""
    epochs = spec.training.epochs
    total = (stop - start) * epochs
    results = []
    for p in range(start, stop):
        done = (p - start) * epochs

        def step(epoch: int, _epochs: int, done: int = done) -> None:
            progress(done + epoch, total)

        results += run_poison(spec, data, nads, positions=range(p, p + 1), progress=step,
                              should_stop=should_stop)
    train = np.stack([np.asarray(r.train_accuracy, dtype=np.float64) for r in results])
    test = np.stack([np.asarray(r.test_accuracy, dtype=np.float64) for r in results])
    info = dict(results[0].info) if results else {}
    info["seconds"] = sum(float(r.info.get("seconds", 0.0)) for r in results)
    return PoisonPartial(start, stop, train, test, info)
