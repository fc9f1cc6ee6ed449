"""Poison jobs in the worker (loads torch through nadcore.poison.engine; found through the
registry).

A shard of a poison job is a range [start, stop) of positions in `spec.indices`: it loads the
dataset and the NAD array, trains one model per position (`run_poison(..., positions=range(p,
p + 1))`; position p is seeded by (seed, p) whichever shard trains it) and stores a partial
`.npz` of the per-epoch accuracies. The merge concatenates the partials in position order and
writes the metrics, the figures and, with `keep_dataset`, the poisoned training sets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.budget import Budget
from nadcore.figures import architecture_label
from nadcore.poison.datasets import ImageDataset, load_dataset
from nadcore.poison.engine import flip_dataset, poison_dataset
from nadcore.poison.figures import render_examples, render_poison_accuracy, render_poison_curves
from nadcore.poison.spec import PoisonSpec, clean_position
from nadcore.training.learning_check import poison_learning
from nadcore.training.shards import PoisonPartial, run_poison_shard
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

JSON = "application/json"
EXAMPLES = 6  # training images shown in examples.png


def load_data(spec: PoisonSpec, inputs: Inputs) -> ImageDataset:
    """The job's dataset: a named one from the datasets directory, or the loaded upload (the
    engine checks its shapes and contents, and those of the NAD array)."""
    return load_dataset(spec.dataset, data_dir=get_settings().resolved_datasets_dir,
                        upload_path=inputs.dataset)


def concatenate_shards(partials: list[PoisonPartial], count: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, epochs) train and test accuracies, checking that the shards tile 0..count-1."""
    return concatenate_tiles(partials, count, "indices", ("train", "test"))


def split_clean(spec: PoisonSpec, partials: list[PoisonPartial]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(n, epochs) train and test accuracies of the poisoned (flipped) models and the clean
    run's (epochs, 2) train and test accuracies; None for a job planned before clean runs
    (its shards stop at `clean_position`)."""
    n = clean_position(spec)
    planned = max((p.stop for p in partials), default=0)
    train, test = concatenate_shards(partials, n + 1 if planned > n else n)
    if train.shape[0] == n:
        return train, test, None
    return train[:n], test[:n], np.stack([train[n], test[n]], axis=-1)


def positions(spec: PoisonSpec) -> list[int]:
    """The poison indices the job trained, in order (flip mode: one model)."""
    return spec.indices[:1] if spec.mode == "flip" else list(spec.indices)


def transformed_train(spec: PoisonSpec, data: ImageDataset, nads: np.ndarray, index: int,
                      x: torch.Tensor | None = None, y: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """The training images the model at poison `index` saw (poisoned, or flipped)."""
    x = data.x_train if x is None else x
    y = data.y_train if y is None else y
    if spec.mode == "flip":
        return flip_dataset(x, nads)
    return poison_dataset(x, y, nads, index, spec.eps, num_classes=data.num_classes)


def example_picks(data: ImageDataset) -> torch.Tensor:
    """The first training image of each of the first EXAMPLES classes (as
    nadcore.poison.engine.example_images picks them, without poisoning the whole set)."""
    y = data.y_train
    picks = [int(torch.nonzero(y == c)[0]) for c in range(data.num_classes) if (y == c).any()]
    return torch.tensor(picks[:EXAMPLES], dtype=torch.int64)


def metrics(spec: PoisonSpec, train: np.ndarray, test: np.ndarray,
            clean: np.ndarray | None = None) -> dict:
    rows = []
    for i, index in enumerate(positions(spec)):
        rows.append({
            "index": None if spec.mode == "flip" else index,
            "eps": None if spec.mode == "flip" else spec.eps,
            "train_accuracy": [round(float(v), 6) for v in train[i]],
            "test_accuracy": [round(float(v), 6) for v in test[i]],
            "final_train_accuracy": round(float(train[i, -1]), 6),
            "final_test_accuracy": round(float(test[i, -1]), 6),
        })
    return {"mode": spec.mode,
            "architecture": spec.model_dump(mode="json")["architecture"],
            "dataset": spec.dataset.model_dump(mode="json", exclude_none=True),
            "epochs": spec.training.epochs, "eps": spec.eps, "seed": spec.seed,
            "columns": ["poisoned-train accuracy %", "clean-test accuracy %"],
            "indices": rows, "clean": None if clean is None else {
                "train_accuracy": [round(float(v), 6) for v in clean[:, 0]],
                "test_accuracy": [round(float(v), 6) for v in clean[:, 1]],
                "final_train_accuracy": round(float(clean[-1, 0]), 6),
                "final_test_accuracy": round(float(clean[-1, 1]), 6)}}


def summarize(spec: PoisonSpec, train: np.ndarray, test: np.ndarray,
              partials: list[PoisonPartial], data: ImageDataset,
              clean: np.ndarray | None = None) -> dict:
    info = partials[0].info if partials else {}
    finals = [{"index": None if spec.mode == "flip" else idx,
               "test_accuracy": round(float(test[i, -1]), 4),
               "train_accuracy": round(float(train[i, -1]), 4)}
              for i, idx in enumerate(positions(spec))]
    return {
        "architecture": spec.model_dump(mode="json")["architecture"],
        "mode": spec.mode,
        "dataset": data.name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "train_size": int(data.x_train.shape[0]),
        "test_size": int(data.x_test.shape[0]),
        "eps": spec.eps,
        "epochs": spec.training.epochs,
        "num_indices": len(finals),
        "final": finals,
        # the clean run's final clean-test accuracy: the baseline (None: a job from before)
        "clean_accuracy": None if clean is None else round(float(clean[-1, 1]), 4),
        "clean_train_accuracy": None if clean is None else round(float(clean[-1, 0]), 4),
        "engine": {k: info[k] for k in ("device", "torch") if k in info},
        "train_seconds": round(sum(float(p.info.get("seconds", 0.0)) for p in partials), 3),
        **_learning(spec, train, data, clean),
    }


def _learning(spec: PoisonSpec, train: np.ndarray, data: ImageDataset,
              clean: np.ndarray | None) -> dict:
    """`did_not_learn` and `learning` (nadcore.training.learning_check) from the final accuracies on
    the (poisoned) training sets and the clean run's on its clean one."""
    learning = poison_learning(train[:, -1].tolist(), data.num_classes, spec.training.epochs,
                               None if clean is None else float(clean[-1, 0]))
    return {"did_not_learn": learning["did_not_learn"], "learning": learning}


def write_artifacts(spec: PoisonSpec, data: ImageDataset, nads: np.ndarray, train: np.ndarray,
                    test: np.ndarray, folder: Path, clean: np.ndarray | None = None,
                    name: str | None = None) -> list[tuple[Path, str]]:
    """Writes the artifact files of a finished poison job; returns (path, media type) pairs.
    `clean`: the clean run's (epochs, 2) accuracies; `name`: the architecture's name."""
    files: list[tuple[Path, str]] = []
    path = folder / "metrics.json"
    path.write_text(json.dumps(metrics(spec, train, test, clean), indent=1))
    files.append((path, JSON))
    path = folder / "metrics.npy"
    np.save(path, np.ascontiguousarray(np.stack([train, test], axis=-1), dtype=np.float64))
    files.append((path, NPY))
    indices = positions(spec)
    path = folder / "accuracy_vs_index.png"
    render_poison_accuracy(spec, indices, train[:, -1], test[:, -1], path,
                           None if clean is None else float(clean[-1, 1]), name)
    files.append((path, PNG))
    path = folder / "curves.png"
    render_poison_curves(spec, indices, train, test, clean, path, name)
    files.append((path, PNG))
    picks = example_picks(data)
    x, y = data.x_train[picks], data.y_train[picks]
    changed = transformed_train(spec, data, nads, indices[0], x, y)
    path = folder / "examples.png"
    render_examples(spec, indices[0], _numpy(x), _numpy(changed), _numpy(y), path)
    files.append((path, PNG))
    if spec.keep_dataset:
        for index in indices:
            name = "flipped_train.npy" if spec.mode == "flip" else f"poisoned_train_{index}.npy"
            path = folder / name
            array = _numpy(transformed_train(spec, data, nads, index)).astype(np.float32)
            np.save(path, np.ascontiguousarray(array))
            files.append((path, NPY))
    return files


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def sandboxed_shard(settings: Settings, spec: PoisonSpec, archive: Path, data: ImageDataset,
                    nads: np.ndarray, start: int, stop: int, threads: int, progress: Progress,
                    should_stop: ShouldStop, budget: Budget | None = None) -> PoisonPartial:
    """Models start..stop-1 of a poison job on an uploaded architecture, in the sandbox
    (nadcore.poison.sandboxed), the partial checked before it is kept."""
    what = f"indices {start}..{stop - 1}"
    n, epochs = stop - start, spec.training.epochs
    limit = uploaded.result_bytes(2, 2 * n * epochs)  # train and test: (n, epochs)
    arrays = {"x_train": data.x_train.numpy(), "y_train": data.y_train.numpy(),
              "x_test": data.x_test.numpy(), "y_test": data.y_test.numpy(), "nads": nads}
    outcome = uploaded.run_kind("shard", "nadcore.poison.sandboxed", settings, spec, archive,
                                threads,
                                limit, progress, should_stop, budget, arrays=arrays,
                                start=start, stop=stop, num_classes=data.num_classes,
                                dataset=data.name)
    part = uploaded.load_result(PoisonPartial.load, outcome.result, what, limit)
    assert isinstance(part, PoisonPartial)
    uploaded.check_training(what, start, stop, part, {"train": (n, epochs), "test": (n, epochs)})
    return part


class PoisonRunner:
    def needs(self, spec: dict) -> Needs:
        """The NAD array, and an uploaded dataset."""
        poison_spec = PoisonSpec.model_validate(spec)
        return Needs(nads=poison_spec.nads, nads_field="nads",
                     dataset_upload=poison_spec.dataset.upload)

    def run_shard(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> PoisonPartial:
        spec = PoisonSpec.model_validate(claimed.spec)
        data, nads = load_data(spec, inputs), inputs.nads
        if inputs.archive is not None:
            return sandboxed_shard(get_settings(), spec, inputs.archive, data, nads,
                                   claimed.start, claimed.stop, torch_threads(), progress,
                                   should_stop, claimed.budget)
        return run_poison_shard(spec, data, nads, claimed.start, claimed.stop,
                                progress=progress, should_stop=should_stop)

    def merge(self, spec: dict, inputs: Inputs, folder: Path) -> tuple[Files, dict[str, Any]]:
        """Concatenates the shards' accuracies in index order, writes metrics, figures and
        (with keep_dataset) the poisoned training sets."""
        poison_spec = PoisonSpec.model_validate(spec)
        data, nads = load_data(poison_spec, inputs), inputs.nads
        partials = [PoisonPartial.load(path) for path in inputs.partials]
        train, test, clean = split_clean(poison_spec, partials)
        require_finite(train_accuracy=train, test_accuracy=test)
        name = architecture_label(spec["architecture"], inputs.given_name)
        files = write_artifacts(poison_spec, data, nads, train, test, folder, clean, name)
        return files, summarize(poison_spec, train, test, partials, data, clean)


RUNNER = PoisonRunner()
