"""The probe job spec (docs/science.md, section 3): how well an architecture learns the linearly
separable distribution D(v) along chosen directions v. Torch-free, like `nadcore.nads.spec`.

Frequency convention of `fourier` directions: (ky, kx) indexes numpy's `fft2` of an H x W image,
0 <= ky < H and 0 <= kx < W; the direction is the real cosine (or sine) image
cos(2 pi (ky y / H + kx x / W)), normalized to unit norm, identical in every channel.
(ky, kx) and its conjugate (-ky, -kx) are the same direction up to sign: a grid trains the
half-plane and a list may not name both (`nadcore.probe.fourier_grid`). Heatmaps show the
frequencies probed on signed frequency axes, each result drawn at both frequencies of its pair
(nadcore/probe/figures.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nadcore.nads.spec import NADSpec
from nadcore.probe.fourier_grid import repeated, self_conjugate
from nadcore.specs.architecture import MAX_INPUT_DIM, ArchitectureRef
from nadcore.specs.nad_source import NadSource
from nadcore.specs.numbers import Bounded, Finite
from nadcore.specs.presets import Preset, fill_preset

MAX_GRID = 512 * 512  # frequencies of the largest H x W plane


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FourierDirections(_Strict):
    kind: Literal["fourier"] = "fourier"
    frequencies: list[tuple[int, int]] | None = Field(
        None, max_length=MAX_GRID,
        description="(ky, kx) pairs, each direction once (not a frequency and its conjugate "
        "(-ky, -kx)); default: the half-plane of the H x W grid (see grid_stride).",
    )
    phase: Literal["cos", "sin"] = Field(
        "cos", description="cos, or sin (the paper's heatmaps; `preset: paper` picks it)")
    grid_stride: int = Field(1, ge=1, le=512,
                             description="With no frequencies: every stride-th one.")


class NADDirections(NadSource):
    """Rows of a NAD result (`NadSource`: job or catalog)."""

    kind: Literal["nad"] = "nad"
    # A NAD job has at most D <= MAX_INPUT_DIM rows: every bound below follows from that, so a
    # selection is bounded (and counted arithmetically) before anything is built.
    indices: list[Annotated[int, Field(ge=0, le=MAX_INPUT_DIM - 1)]] | None = Field(
        None, max_length=MAX_INPUT_DIM, description="NAD rows")
    start: int | None = Field(None, ge=0, le=MAX_INPUT_DIM - 1,
                              description="with stop (and step): a range of rows")
    stop: int | None = Field(None, ge=1, le=MAX_INPUT_DIM)
    step: int = Field(1, ge=1, le=MAX_INPUT_DIM)

    @model_validator(mode="after")
    def _one_selection(self) -> NADDirections:
        if (self.indices is None) == (self.start is None or self.stop is None):
            raise ValueError("directions: give either indices or start and stop")
        if self.job is not None and self.catalog is not None:
            raise ValueError("directions: give job or catalog, not both")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError("directions.stop: must exceed start")
        return self

    def rows(self) -> list[int]:
        if self.indices is not None:
            return list(self.indices)
        return list(range(self.start, self.stop, self.step))

    def count(self) -> int:
        """len(rows()), without building them."""
        if self.indices is not None:
            return len(self.indices)
        return len(range(self.start, self.stop, self.step))

    def max_row(self) -> int:
        """max(rows()) (-1 for none), without building them."""
        if self.indices is not None:
            return max(self.indices, default=-1)
        span = range(self.start, self.stop, self.step)
        return span[-1] if span else -1


class RandomDirections(_Strict):
    kind: Literal["random"] = "random"
    count: int = Field(ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**63 - 1)


class CustomDirections(_Strict):
    kind: Literal["custom"] = "custom"
    values: list[list[Bounded]] = Field(
        description="one flattened direction (C*H*W finite values within +-1e6) per row")


Directions = Annotated[
    FourierDirections | NADDirections | RandomDirections | CustomDirections,
    Field(discriminator="kind"),
]


class DataSettings(_Strict):
    """x = y (eps/2) v + w_perp, w ~ N(0, sigma^2 I); independent train and test draws."""

    num_train: int = Field(10_000, ge=2, le=1_000_000)
    num_test: int = Field(10_000, ge=2, le=1_000_000)
    sigma: Finite = Field(3.0, gt=0)
    epsilon: Finite = Field(1.0, gt=0)


class TrainingSettings(_Strict):
    """The paper's recipe: 2 logits, cross-entropy, SGD, linear decay to 0 every batch."""

    epochs: int = Field(20, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=65536)
    lr: Finite = Field(0.5, gt=0)
    momentum: Finite = Field(0.0, ge=0, lt=1)
    weight_decay: Finite = Field(0.0, ge=0)
    grad_clip: Finite | None = Field(0.5, gt=0, description="max gradient norm; null: none")


PAPER_PHASE = "sin"  # the paper's Fourier heatmaps: sine images (docs/science.md, section 3)
MAX_REPLICATES = 64

PRESETS: dict[str, Preset] = {
    # The paper's recipe as implemented (docs/science.md, section 3): the defaults, and sine
    # images for Fourier directions (`_preset` below: the phase belongs to one kind only).
    "paper": {"data": {"num_train": DataSettings().num_train,
                       "num_test": DataSettings().num_test},
              "training": TrainingSettings().model_dump()},
    # Measured on a 2-core CPU for LeNet (BENCHMARKS.md, "Probe presets"): the paper's
    # distribution and schedule with a quarter of its sample-epochs and a fifth of its test set.
    "quick": {"data": {"num_train": 10_000, "num_test": 2000},
              "training": {**TrainingSettings().model_dump(), "epochs": 5}},
}


# What a preset can show, said at submission (the estimate's `power.preset`) and in
# docs/service.md; measured in BENCHMARKS.md ("Presets and the learning check").
PRESET_NOTES = {
    "quick": ("quick (10,000 training samples x 5 epochs, 2,000 test samples) separates the "
              "directions an architecture learns most easily: measured for LeNet on 1x32x32, "
              "the sines (0, 1) 66.1 % and (1, 1) 58.0 %, (8, 8) 50.1 %. Directions that the "
              "paper's recipe learns only weakly (60-65 %) stay at chance under quick: a grid "
              "without the lowest frequencies (grid_stride 4: |k| >= 4) shows little; use "
              "\"preset\": \"paper\" to map them"),
    "paper": ("paper: the paper's recipe (10,000 / 10,000 samples x 20 epochs) and, for "
              "Fourier directions, its sine images"),
}


class ProbeSpec(_Strict):
    architecture: str | ArchitectureRef
    input_shape: tuple[
        Annotated[int, Field(ge=1, le=16)],
        Annotated[int, Field(ge=1, le=512)],
        Annotated[int, Field(ge=1, le=512)],
    ] = (1, 32, 32)
    directions: Directions
    data: DataSettings = DataSettings()
    training: TrainingSettings = TrainingSettings()
    seed: int = Field(0, ge=0, le=2**63 - 1)
    replicates: int = Field(
        1, ge=1, le=MAX_REPLICATES,
        description="trainings per direction, each with its own seeds (replicate 0 is the "
        "job's seed, replicate r > 0 a seed derived from it); the summary gives each "
        "direction's mean and a confidence interval across them")
    shards: int = Field(1, ge=1, le=4096)
    preset: Literal["quick", "paper"] | None = Field(
        None, description="fills the data sizes and training settings not given: 'paper' "
        "(the paper's recipe, the defaults, and sine images for Fourier directions) or "
        "'quick' (a few minutes for LeNet on a CPU: separates the lowest frequencies from "
        "chance, see docs/service.md); the stored spec holds the resolved settings")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        data = fill_preset(data, PRESETS)
        if isinstance(data, dict) and data.get("preset") == "paper":
            directions = data.get("directions")
            if (isinstance(directions, dict) and directions.get("kind", "fourier") == "fourier"
                    and "phase" not in directions):
                data = {**data, "directions": {**directions, "phase": PAPER_PHASE}}
        return data

    def units(self, num_directions: int) -> int:
        """Trainings of the job, its unit of work (shards are ranges of them): unit u trains
        direction u mod n of replicate u // n."""
        return num_directions * self.replicates

    @model_validator(mode="after")
    def _consistent(self) -> ProbeSpec:
        NADSpec(architecture=self.architecture, input_shape=self.input_shape, num_networks=2)
        c, h, w = self.input_shape
        d = self.directions
        if isinstance(d, FourierDirections) and d.frequencies is not None:
            for ky, kx in d.frequencies:
                if not (0 <= ky < h and 0 <= kx < w):
                    raise ValueError(
                        f"directions.frequencies: ({ky}, {kx}) outside 0 <= ky < {h}, 0 <= kx < {w}"
                    )
                if d.phase == "sin" and self_conjugate(ky, kx, h, w):
                    raise ValueError(
                        f"directions.frequencies: the sine image of ({ky}, {kx}) is identically "
                        f"zero (DC or Nyquist frequency of a {h}x{w} image); use phase 'cos' "
                        "for it")
            twice = repeated(d.frequencies, h, w)
            if twice is not None:
                (ky, kx), first = twice
                what = "repeats" if (ky, kx) == first else "is the conjugate of"
                raise ValueError(
                    f"directions.frequencies: ({ky}, {kx}) {what} {first}, the same direction "
                    "up to sign (one training measures both); list each direction once")
        if isinstance(d, CustomDirections):
            bad = [i for i, row in enumerate(d.values) if len(row) != c * h * w]
            if bad:
                raise ValueError(
                    f"directions.values: row {bad[0]} has {len(d.values[bad[0]])} values, "
                    f"input_shape needs C*H*W = {c * h * w}"
                )
        return self
