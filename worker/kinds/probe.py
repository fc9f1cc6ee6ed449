"""Probe jobs in the worker (loads torch through nadcore.probe.engine; found through the registry).

A shard of a probe job is a range [start, stop) of direction indices: it builds the job's
directions, trains rows start:stop (`run_probe(..., first_index=start)`, so direction j is
seeded by (seed, j) whichever shard trains it) and stores a partial `.npz`. The merge
concatenates the partials in direction order and writes the artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.budget import Budget
from nadcore.figures import architecture_label
from nadcore.probe.directions import direction_frequencies, make_directions
from nadcore.probe.figures import render_accuracy_vs_index, render_heatmap, render_probe_curves
from nadcore.probe.intervals import CONFIDENCE, direction_intervals
from nadcore.probe.spec import FourierDirections, NADDirections, ProbeSpec
from nadcore.training.learning_check import probe_learning
from nadcore.training.shards import CURVE_COLUMNS, ProbePartial, run_probe_shard
from store.settings import Settings, get_settings
from worker import uploaded
from worker.kinds.base import (
    NPY,
    PNG,
    Claimed,
    Files,
    Inputs,
    Needs,
    Progress,
    ShouldStop,
    require_finite,
    torch_threads,
)
from worker.tiling import concatenate_tiles

HEAD = 16  # directions listed first in the job summary
PER_DIRECTION = 1024  # every direction's mean and interval in the summary up to this many


def build_directions(spec: ProbeSpec, inputs: Inputs) -> np.ndarray:
    """All the job's directions, (n, C*H*W) float32 unit rows, in direction-index order (nad
    directions: rows of the loaded NAD array)."""
    return make_directions(spec, inputs.nads)


def concatenate_shards(partials: list[ProbePartial], units: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Accuracies and curves of every training (direction x replicate), checking that the
    shards tile 0..units-1."""
    return concatenate_tiles(partials, units, "trainings", ("accuracies", "curves"))


def _labels(spec: ProbeSpec) -> tuple[str, list]:
    """What identifies each direction in the summary: its (ky, kx), its NAD row, or nothing."""
    if isinstance(spec.directions, FourierDirections):
        return "frequency", [list(f) for f in direction_frequencies(spec)]
    if isinstance(spec.directions, NADDirections):
        return "nad_index", spec.directions.rows()
    return "", []


@dataclass(frozen=True)
class Accuracies:
    """Per direction (in direction order): the mean test accuracy over the replicates, its
    confidence interval (`nadcore.probe.intervals`) and the replicates' own, (R, n)."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    per_replicate: np.ndarray
    interval: str

    @classmethod
    def of(cls, spec: ProbeSpec, unit_accuracies: np.ndarray, num_directions: int
           ) -> Accuracies:
        per_replicate = unit_accuracies.reshape(spec.replicates, num_directions)
        mean, low, high, how = direction_intervals(per_replicate, spec.data.num_test)
        return cls(mean, low, high, per_replicate, how)

    def entry(self, i: int, label: str, labels: list) -> dict:
        entry = {"index": i, "accuracy": round(float(self.mean[i]), 4),
                 "low": round(float(self.low[i]), 4), "high": round(float(self.high[i]), 4)}
        if label:
            entry[label] = labels[i]
        return entry


def fourier_note(spec: ProbeSpec) -> str | None:
    """What a Fourier probe's directions are, for the summary and the page."""
    if not isinstance(spec.directions, FourierDirections):
        return None
    same = "identical" if spec.directions.phase == "cos" else "negated"
    return (f"each direction trained once: (ky, kx) and (-ky, -kx) give the same direction "
            f"up to sign ({spec.directions.phase} images: {same}), so a grid trains its "
            "half-plane and the heatmap draws each result at both frequencies (mirrored)")


def summarize(spec: ProbeSpec, accuracies: Accuracies, partials: list[ProbePartial],
              curves: np.ndarray) -> dict:
    """JSON-able job summary: accuracy statistics, each direction's mean and confidence
    interval (all of them up to PER_DIRECTION directions, always in intervals.npy), the first
    and the worst directions, and which directions did not learn (`nadcore.training.learning_check`:
    `did_not_learn` when none did; with replicates on their mean, over R x num_test samples)."""
    label, labels = _labels(spec)
    mean, n, replicates = accuracies.mean, accuracies.mean.shape[0], spec.replicates
    worst = np.argsort(mean, kind="stable")[:5]
    info = partials[0].info if partials else {}
    by_replicate = curves.reshape(replicates, n, *curves.shape[1:]).mean(0)
    learning = probe_learning(mean.tolist(), by_replicate[:, -1, 0].tolist(),
                              spec.data.num_test * replicates, spec.data.num_train,
                              spec.training.epochs, spec.training.lr,
                              by_replicate[:, 0, 0].tolist())
    summary = {
        "architecture": spec.model_dump(mode="json")["architecture"],
        "input_shape": list(spec.input_shape),
        "directions_kind": spec.directions.kind,
        "num_directions": int(n),
        "replicates": replicates,
        "epochs": spec.training.epochs,
        "accuracy_mean": round(float(mean.mean()), 4),
        "accuracy_min": round(float(mean.min()), 4),
        "accuracy_max": round(float(mean.max()), 4),
        "interval": {"confidence": CONFIDENCE, "method": accuracies.interval},
        "head": [accuracies.entry(i, label, labels) for i in range(min(n, HEAD))],
        "worst": [accuracies.entry(int(i), label, labels) for i in worst],
        "engine": {k: info[k] for k in ("strategy", "device", "chunk_size", "torch")
                   if k in info},
        "train_seconds": round(sum(float(p.info.get("seconds", 0.0)) for p in partials), 3),
        "did_not_learn": learning["did_not_learn"],
        "learning": learning,
    }
    if n <= PER_DIRECTION:
        summary["per_direction"] = [accuracies.entry(i, label, labels) for i in range(n)]
    note = fourier_note(spec)
    if note:
        summary["fourier"] = {"half_plane": True, "mirrored": True, "note": note}
    return summary


def curve_labels(spec: ProbeSpec, count: int) -> list[str]:
    """What the training-curve figure calls each direction: (ky, kx), u_i, or its index."""
    label, labels = _labels(spec)
    if label == "frequency":
        return [f"({ky}, {kx})" for ky, kx in labels]
    if label == "nad_index":
        return [f"u{i}" for i in labels]
    return [f"#{i}" for i in range(count)]


def write_artifacts(spec: ProbeSpec, directions: np.ndarray, accuracies: Accuracies,
                    curves: np.ndarray, folder: Path, name: str | None = None,
                    source: str | None = None) -> list[tuple[Path, str]]:
    """Writes the artifact files of a finished probe job; returns (path, media type) pairs.
    `name`: the architecture's name; `source`: where nad directions come from.

    accuracies.npy (n,): each direction's mean over its replicates; intervals.npy (n, 2): its
    confidence interval (low, high); replicate_accuracies.npy (R, n) with replicates;
    curves.npy (R n, epochs, 4): one row per training, replicate-major."""
    files: list[tuple[Path, str]] = []

    def save(name: str, array: np.ndarray) -> None:
        path = folder / name
        np.save(path, np.ascontiguousarray(array))
        files.append((path, NPY))

    mean = accuracies.mean.astype(np.float64)
    save("accuracies.npy", mean)
    save("intervals.npy", np.stack([accuracies.low, accuracies.high], axis=1))
    if spec.replicates > 1:
        save("replicate_accuracies.npy", accuracies.per_replicate.astype(np.float64))
    save("directions.npy", directions.astype(np.float32))
    save("curves.npy", curves.astype(np.float32))
    if isinstance(spec.directions, FourierDirections):
        freqs = np.asarray(direction_frequencies(spec), dtype=np.int64).reshape(-1, 2)
        save("frequencies.npy", freqs)
        render_heatmap(spec, mean, freqs, folder / "heatmap.png", name,
                       (accuracies.low, accuracies.high))
        files.append((folder / "heatmap.png", PNG))
    if isinstance(spec.directions, NADDirections):
        render_accuracy_vs_index(spec, mean, spec.directions.rows(),
                                 folder / "accuracy_vs_index.png", name, source)
        files.append((folder / "accuracy_vs_index.png", PNG))
    render_probe_curves(spec, curves, curve_labels(spec, curves.shape[0]),
                        folder / "curves.png", name)
    files.append((folder / "curves.png", PNG))
    return files


def sandboxed_shard(settings: Settings, spec: ProbeSpec, archive: Path, directions: np.ndarray,
                    start: int, stop: int, threads: int, progress: Progress,
                    should_stop: ShouldStop, budget: Budget | None = None) -> ProbePartial:
    """Trainings start..stop-1 of a probe job on an uploaded architecture, in the sandbox
    (nadcore.probe.sandboxed), the partial checked before it is kept."""
    what = f"directions {start}..{stop - 1}"
    n = stop - start
    limit = uploaded.result_bytes(2, n, n * spec.training.epochs * CURVE_COLUMNS)
    outcome = uploaded.run_kind("shard", "nadcore.probe.sandboxed", settings, spec, archive,
                                threads, limit, progress, should_stop, budget,
                                arrays={"directions": directions}, start=start, stop=stop)
    part = uploaded.load_result(ProbePartial.load, outcome.result, what, limit)
    assert isinstance(part, ProbePartial)
    check_uploaded_shard(spec, start, stop, part)
    return part


def check_uploaded_shard(spec: ProbeSpec, start: int, stop: int, part: ProbePartial) -> None:
    """SandboxError unless the sandbox's partial is the shard asked for, its arrays of the
    spec's shapes (every dimension from the spec, none from the partial itself) and finite."""
    n = stop - start
    uploaded.check_training(f"directions {start}..{stop - 1}", start, stop, part, {
        "accuracies": (n,), "curves": (n, spec.training.epochs, CURVE_COLUMNS)})


class ProbeRunner:
    def needs(self, spec: dict) -> Needs:
        """`nad` directions read their NAD array."""
        directions = ProbeSpec.model_validate(spec).directions
        if isinstance(directions, NADDirections):
            return Needs(nads=directions, nads_field="directions")
        return Needs()

    def run_shard(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> ProbePartial:
        spec = ProbeSpec.model_validate(claimed.spec)
        directions = build_directions(spec, inputs)
        if inputs.archive is not None:
            return sandboxed_shard(get_settings(), spec, inputs.archive, directions,
                                   claimed.start, claimed.stop, torch_threads(), progress,
                                   should_stop, claimed.budget)
        return run_probe_shard(spec, directions, claimed.start, claimed.stop,
                               progress=progress, should_stop=should_stop)

    def merge(self, spec: dict, inputs: Inputs, folder: Path) -> tuple[Files, dict[str, Any]]:
        """Concatenates the shards' directions in order, writes the arrays and the figures."""
        probe_spec = ProbeSpec.model_validate(spec)
        directions = build_directions(probe_spec, inputs)
        partials = [ProbePartial.load(path) for path in inputs.partials]
        n = directions.shape[0]
        unit_accuracies, curves = concatenate_shards(partials, probe_spec.units(n))
        require_finite(accuracies=unit_accuracies)
        accuracies = Accuracies.of(probe_spec, unit_accuracies, n)
        name = architecture_label(spec["architecture"], inputs.given_name)
        files = write_artifacts(probe_spec, directions, accuracies, curves, folder, name,
                                inputs.source_name)
        return files, summarize(probe_spec, accuracies, partials, curves)


RUNNER = ProbeRunner()
