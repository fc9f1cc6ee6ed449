"""The poison job spec (docs/science.md, section 4): NAD carriers planted in an image dataset,
or the flipped-basis experiment, then a network trained on it. Torch-free, like
`nadcore.nads.spec`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nadcore.nads.spec import NADSpec
from nadcore.specs.architecture import MAX_INPUT_DIM, ArchitectureRef
from nadcore.specs.nad_source import NadSource
from nadcore.specs.numbers import Finite
from nadcore.specs.presets import Preset, fill_preset

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
# How an operator makes a named dataset readable by a worker (the refusals quote it).
DATASET_INSTALL = {
    "cifar10": (f"put CIFAR-10 in torchvision's on-disk format ({CIFAR10_FOLDER}/ with "
                "data_batch_1..5, test_batch, batches.meta: cifar-10-python.tar.gz from "
                "https://www.cs.toronto.edu/~kriz/cifar.html, unpacked) in the worker's datasets "
                "directory: NADS_DATASETS_DIR, default NADS_DATA_DIR/datasets"),
    "digits": "digits ships with scikit-learn, a dependency of every worker",
}
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.247, 0.243, 0.261)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Strict):
    """`digits` (scikit-learn's 8x8 digits resized to 32x32, 1 channel, a fixed train/test
    split), `cifar10` (torchvision's CIFAR10 from the worker's NADS_DATA_DIR), or `upload`: an
    uploaded .npz (x uint8 NHWC or float NCHW in [0, 1], y integers; optional x_test, y_test)."""

    name: Literal["digits", "cifar10"] | None = None
    upload: str | None = Field(None, max_length=64, description="id of an uploaded .npz dataset")
    limit_train: int | None = Field(None, ge=10, le=2**31 - 1,
                                    description="use the first n training images")
    limit_test: int | None = Field(None, ge=10, le=2**31 - 1,
                                   description="use the first n test images")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetRef:
        if (self.name is None) == (self.upload is None):
            raise ValueError("dataset: give exactly one of name and upload")
        return self


class PoisonNads(NadSource):
    """Where the NAD rows come from: a NAD result (`NadSource`: a finished NAD job of the
    caller or a ready catalog entry), or an uploaded .npy."""

    upload: str | None = Field(None, max_length=64, description="id of an uploaded .npy")

    @model_validator(mode="after")
    def _one_source(self) -> PoisonNads:
        if sum(v is not None for v in (self.job, self.upload, self.catalog)) != 1:
            raise ValueError("nads: give exactly one of job and upload, or catalog")
        return self


class PoisonTraining(_Strict):
    """The paper's CIFAR-10 recipe (docs/science.md, section 4)."""

    epochs: int = Field(50, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: Finite = Field(0.21, gt=0, description="max lr, decayed linearly to 0 every batch")
    momentum: Finite = Field(0.9, ge=0, lt=1)
    weight_decay: Finite = Field(5e-4, ge=0)
    grad_clip: Finite | None = Field(0.5, gt=0)
    mean: tuple[Finite, ...] | None = Field(
        None, max_length=16, description="input normalization; default CIFAR-10's for 3 "
        "channels, else the training set's own per-channel statistics")
    std: tuple[Annotated[Finite, Field(gt=0)], ...] | None = Field(None, max_length=16)


_RECIPE = PoisonTraining().model_dump(exclude={"mean", "std"})
PRESETS: dict[str, Preset] = {
    "paper": {"training": _RECIPE},  # the paper's CIFAR-10 recipe: the defaults
    # Measured on a 2-core CPU for LeNet on digits (BENCHMARKS.md, "Presets"): fewer epochs.
    "quick": {"training": {**_RECIPE, "epochs": 8}},
}


class PoisonSpec(_Strict):
    architecture: str | ArchitectureRef = "resnet18"
    dataset: DatasetRef
    nads: PoisonNads
    indices: list[Annotated[int, Field(ge=0, le=MAX_INPUT_DIM - 1)]] = Field(
        min_length=1, max_length=1024)
    eps: Finite = Field(0.05, gt=0, le=10)
    mode: Literal["poison", "flip"] = "poison"
    training: PoisonTraining = PoisonTraining()
    keep_dataset: bool = False
    seed: int = Field(0, ge=0, le=2**63 - 1)
    shards: int = Field(1, ge=1, le=1024)
    preset: Literal["quick", "paper"] | None = Field(
        None, description="fills the training settings not given: 'paper' (the paper's "
        "recipe, the defaults) or 'quick' (minutes for LeNet on digits on a CPU); the stored "
        "spec holds the resolved settings")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return fill_preset(data, PRESETS)

    @model_validator(mode="after")
    def _consistent(self) -> PoisonSpec:
        NADSpec(architecture=self.architecture, num_networks=2)  # same architecture names
        if self.mode == "flip" and len(self.indices) != 1:
            raise ValueError("indices: flip mode takes no poison index; give [0]")
        if self.shards > len(self.indices):
            raise ValueError(f"shards: {self.shards} exceeds the {len(self.indices)} indices")
        t = self.training
        if (t.mean is None) != (t.std is None) or (t.mean and len(t.mean) != len(t.std)):
            raise ValueError("training.mean, training.std: give both, one value per channel")
        return self


def clean_position(spec: PoisonSpec) -> int:
    """The position of a poison job's clean run, after its poisoned (or flipped) models: one
    model trained on the unpoisoned data with the same recipe and the seeds of position 0, the
    baseline the poisoned accuracies are read against. A job stored before clean runs has
    shards up to this position only (its merge has no baseline)."""
    return 1 if spec.mode == "flip" else len(spec.indices)
