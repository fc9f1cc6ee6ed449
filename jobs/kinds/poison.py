"""Poison jobs, torch-free side (`nadcore.poison.spec.PoisonSpec`): NAD carriers planted in an
image dataset (or the flipped-basis experiment), one model trained per poison index. What a spec
refers to (the caller's NAD job or
uploads), what it costs, and how it is sharded (ranges of positions in `spec.indices`).

What the API knows about the named datasets (shape, classes, training-set size) mirrors
`nadcore.poison.datasets`; of an uploaded dataset it knows the arrays' shapes and dtypes, read from
their headers at upload (`store.npz`), hence its training-set size; its values (labels, classes
the NADs can carry) are checked by the worker, which fails the job with the engine's message.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from jobs.budget import measured_seconds
from jobs.fleet import connected_workers, missing_dataset
from jobs.kinds.base import (
    SHARDED,
    Admission,
    Figure,
    Items,
    Plan,
    Quota,
    SpecError,
    check_limits,
    counted_layers,
    uploaded_flops,
)
from jobs.sources import NADSource, own_upload, pin_nads, resolve_nads
from nadcore.poison.spec import DATASET_INSTALL, PoisonSpec, clean_position
from nadcore.specs.layer_counts import LayerCount, layer_count
from nadcore.specs.ranges import shard_ranges
from store.blobs import BlobStore
from store.models import DATASET_UPLOAD, Upload
from store.npz import ArchiveError, dataset_train_size, from_json, image_shape, inspect_upload
from store.settings import Settings

# name -> (C, H, W), classes, training-set size (before limit_train)
NAMED_DATASETS: dict[str, tuple[tuple[int, int, int], int, int]] = {
    "digits": ((1, 32, 32), 10, 1437),
    "cifar10": ((3, 32, 32), 10, 50_000),
}
_NPY_HEADER = 128  # bytes numpy.save writes before a small array's data
_TEST_SIZE = {"digits": 360, "cifar10": 10_000}  # test images of the named datasets
# indices x epochs x training-set size (digits 1,437, CIFAR-10 50,000, an upload: its size /
# 1,024 bytes). The paper's CIFAR-10 curve (ResNet-18, 50 epochs, ~100 indices): 2.5e8.
QUOTAS = (Quota("train_samples", "max_poison_train_samples", 1_000_000_000,
                "models x epochs x training-set size, a model per index and one clean run"),)


def carrier_rows(num_classes: int, channels: int) -> int:
    """How many NAD rows past the poison index i the carriers use: class t takes row
    i + t // (2C) (docs/science.md, section 4), so rows i .. i + (num_classes - 1) // (2C)."""
    return (num_classes - 1) // (2 * channels)


def upload_train_size(row: Upload, blobs: BlobStore, settings: Settings
                      ) -> tuple[int, tuple[int, ...]]:
    """Training images of a dataset upload and their shape (C, H, W), from its arrays'
    headers; an upload stored before they were recorded at upload time has them read from its
    blob now (and recorded with the job's commit)."""
    try:
        if row.arrays is None:
            row.arrays = inspect_upload(blobs.path(row.sha256), row.kind,
                                        settings.max_dataset_decompressed_bytes)
        arrays = from_json(row.arrays)
        return dataset_train_size(arrays), image_shape(arrays)
    except (ArchiveError, OSError) as exc:
        raise SpecError("dataset.upload", f"upload {row.id!r} cannot be used: {exc}",
                      row.id) from None


def train_size(spec: PoisonSpec, session: Session, user_id: int, blobs: BlobStore,
               settings: Settings) -> tuple[int, tuple[int, ...]]:
    """Training-set size for the quota and the image shape (C, H, W) (an upload: from its
    arrays' shapes); checks a dataset upload (the caller's, a dataset)."""
    ref = spec.dataset
    if ref.upload is not None:
        row = own_upload(session, user_id, ref.upload, DATASET_UPLOAD, "dataset.upload")
        size, image = upload_train_size(row, blobs, settings)
    else:
        image, _, size = NAMED_DATASETS[ref.name]
    return (min(size, ref.limit_train) if ref.limit_train else size), image


def check_nad_source(session: Session, user_id: int, spec: PoisonSpec) -> NADSource:
    """The NAD result (`jobs.sources.resolve_nads`: the caller's succeeded NAD job, a ready
    catalog entry, or the caller's .npy upload, whose rows the worker checks) is on the
    dataset's image shape, with rows for every carrier; returns it."""
    source = resolve_nads(session, user_id, spec.nads, "nads", "poison a dataset")
    if source.spec is None or spec.dataset.name is None:
        return source
    field, value = (("nads.catalog", spec.nads.catalog) if spec.nads.catalog is not None
                    else ("nads.job", spec.nads.job))
    what = source.what
    shape, classes, _ = NAMED_DATASETS[spec.dataset.name]
    nad_shape, want = tuple(source.spec["input_shape"]), (1, *shape[1:])
    if nad_shape != want:
        raise SpecError(field, f"{what} has input_shape {list(nad_shape)}; "
                      f"dataset {spec.dataset.name!r} needs the NADs of a 1-channel "
                      f"{shape[1]}x{shape[2]} architecture, input_shape {list(want)} (each "
                      "channel is poisoned with them)", value)
    num_nads = int(source.summary.get("num_nads", 0))
    pixels = shape[1] * shape[2]
    if spec.mode == "flip" and num_nads < pixels - 1:
        raise SpecError(field, f"flip needs a complete NAD basis of H*W = {pixels} rows (or "
                      f"{pixels - 1}); {what} has {num_nads}", value)
    if spec.mode == "poison":
        extra = carrier_rows(classes, shape[0])
        top = max(spec.indices)
        if top + extra >= num_nads:
            raise SpecError("indices", f"index {top} needs NAD rows {top}..{top + extra} "
                          f"({classes} classes, {shape[0]} channel(s)), {what} has "
                          f"{num_nads} NADs (rows 0 to {num_nads - 1})", spec.indices)
    return source


def check_dataset_readable(spec: PoisonSpec, session: Session, settings: Settings) -> None:
    """A named dataset must be readable by a connected worker that takes users' shards (their
    heartbeat rows say which, worker/heartbeat.py), or the job would fail minutes later in the
    queue. Uploaded datasets travel with the job."""
    name = spec.dataset.name
    why = None if name is None else missing_dataset(connected_workers(session, settings), name)
    if why is not None:
        raise SpecError("dataset.name", f"{name!r}: {why}; {DATASET_INSTALL[name]} (workers "
                        "report it within NADS_HEARTBEAT_INTERVAL_S)", name)


def estimate_poison(spec: PoisonSpec, size: int, arch_info: dict[str, Any] | None = None,
                    image: tuple[int, ...] = (1, 1, 1),
                    count: LayerCount | None = None) -> dict[str, Any]:
    """Training samples, and FLOPs (for the run-time estimate, jobs/fleet.py), of every model
    the job trains: one per index (flip: one) and the clean run (`clean_position`). Per model
    and epoch, a training step counts as three forward passes per image, the accuracies on the
    training and test sets after it as one each (the test set of a named dataset; of an
    upload, counted as large as its training set). None for a torchvision model.
    `kept_dataset_bytes`: with `keep_dataset`, the poisoned training sets the job stores, one
    float32 .npy of `size` images of shape `image` per index (flip: one), which the storage
    quota reserves at submission (store/usage.py). `count`: a torchvision builder's forward
    pass on a named dataset (jobs/architecture_costs.py), by default the walk of a built-in."""
    indices = 1 if spec.mode == "flip" else len(spec.indices)
    models = clean_position(spec) + 1
    epochs = spec.training.epochs
    named = NAMED_DATASETS.get(spec.dataset.name or "")
    test = size if named is None else _TEST_SIZE[spec.dataset.name]
    test = min(test, spec.dataset.limit_test) if spec.dataset.limit_test else test
    passes = models * epochs * (4 * size + test)
    if arch_info is not None:
        flops = uploaded_flops(arch_info, passes)
    else:
        if count is None and named is not None:
            count = layer_count(spec.architecture, named[0], named[1])
        flops = None if count is None else 2.0 * count.macs * passes
    estimate = {"indices": indices, "models": models, "epochs": epochs, "train_size": size,
                "train_samples": models * epochs * size, "flops": flops}
    if arch_info is not None:  # validation's timing at job batch sizes (jobs/budget.py)
        estimate["measured_s"] = measured_seconds(arch_info, passes)
    if spec.keep_dataset:
        estimate["kept_dataset_bytes"] = indices * (_NPY_HEADER + size * math.prod(image) * 4)
    return estimate


def check_poison_quota(estimate: dict[str, Any], settings: Settings) -> None:
    check_limits(estimate, QUOTAS, settings,
                 "reduce the indices, training.epochs or dataset.limit_train")


def poison_shards(spec: PoisonSpec) -> list[tuple[int, int]]:
    """Ranges of model positions: those of `spec.indices` (flip mode: one model), then the
    clean run (`clean_position`), which the last shard trains."""
    return shard_ranges(clean_position(spec) + 1, spec.shards)


class PoisonKind:
    name = "poison"
    spec = PoisonSpec
    title = ("Queues a poison job: `shards` tasks, each training the models of a range of "
             "positions in `indices`, and a merge.\n\nBody: the engine's `PoisonSpec` "
             "(architecture, dataset `{\"name\": \"digits\"|\"cifar10\"}` or `{\"upload\": id}`, "
             "nads `{\"job\": id}` or `{\"upload\": id}`, indices, eps, mode `poison` or `flip`, "
             "training, keep_dataset, seed, shards).")
    unit = "models"
    figures = (
        Figure("accuracy_vs_index.png", "Final clean-test (dots) and poisoned-train (crosses) "
               "accuracy of each poison index, and the clean run's clean-test accuracy (dashed "
               "line): the model trained on the unpoisoned data with the same seed and recipe."),
        Figure("curves.png", "Accuracy per epoch of every model, the clean run in black."),
        Figure("examples.png", "Training images: clean, poisoned, and the difference x' - x, "
               "with what its colour scale is."),
    )
    worker = "worker.kinds.poison"
    # the clean run (nadcore.poison.spec.clean_position) is a position past the indices: in the
    # shard ranges and the cost, not one of the indices
    items = Items("indices", "indices", extra=1)
    quotas = QUOTAS
    supports_upload = True
    label = "poison"
    web_views = ("poison-facts",)
    acceptances: dict[str, str] = {}
    cli_options = {"dataset": "dataset.name", "nad-job": "nads.job", "indices": "indices",
                   "eps": "eps", "epochs": "training.epochs", "preset": "preset"}

    def architecture(self, spec: PoisonSpec) -> dict[str, Any]:
        named = NAMED_DATASETS.get(spec.dataset.name or "")  # (shape, classes, size) or None
        return {"outputs": named and named[1], "exact_outputs": True,
                "input_shape": named and named[0]}

    def plan(self, spec: PoisonSpec, admission: Admission) -> Plan:
        size, image = train_size(spec, admission.session, admission.user_id, admission.blobs,
                                 admission.settings)
        source = check_nad_source(admission.session, admission.user_id, spec)
        named = NAMED_DATASETS.get(spec.dataset.name or "")  # (shape, classes, size) or None
        count = None if named is None else counted_layers(admission, spec.architecture, *named[:2])
        estimate = estimate_poison(spec, size, admission.arch_info, image, count)
        check_poison_quota(estimate, admission.settings)
        check_dataset_readable(spec, admission.session, admission.settings)
        return Plan(SHARDED, estimate, poison_shards(spec),
                    spec.model_copy(update={"nads": pin_nads(spec.nads, source)}))


KIND = PoisonKind()
