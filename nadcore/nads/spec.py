"""The NAD job spec: one pydantic model, used by the engine, the API and the worker.

This module imports no torch, so the API can validate specs and estimate costs without it.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nadcore.specs.architecture import (
    MAX_INPUT_DIM,
    MAX_OUTPUTS,
    ArchitectureRef,
    known_architecture,
)
from nadcore.specs.input_shapes import shape_problem
from nadcore.specs.numbers import FLOAT_LIMIT, Bounded, Finite, all_normal
from nadcore.specs.ranges import shard_ranges

Method = Literal["finite_difference", "autograd"]
Decomposition = Literal["auto", "covariance", "lowrank"]
# Gradient blocks up to this size are kept whole (bitwise reproducible merges); larger ones
# are reduced to their moments (`NADSpec.representation`).
GRADIENT_BLOCK_LIMIT = 1 << 30
Precision = Literal["auto", "fp32", "tf32", "bf16"]

STABILITY_KS = (1, 4, 16, 64)


# Finite-difference steps: below, x0 +- s loses the step in float32 (x0 ~ N(0, 1), epsilon
# 1.2e-7); above, activations overflow. The paper's step is 100.
MIN_SCALE, MAX_SCALE = 1e-4, FLOAT_LIMIT
# bf16 finite differences: autocast rounds x0 +- step to bf16 (8 significant bits) before the
# first layer, so a step must span many of bf16's spacings at |x0|, or the difference measures
# the rounding (lenet, step 1e-4: top eigenvalue 2.05 in bf16 against 1.3e-5 in fp32). At 100
# spacings the rounding of x0 +- step moves the difference by at most 1 %.
BF16_BITS = 8
BF16_STEP_SPACINGS = 100
# the default x0 is N(0, I): beyond 6 with probability 2e-9 per value (under 0.2 % for the
# largest input), taken as its bound
DEFAULT_POINT_BOUND = 6.0


def bf16_spacing(magnitude: float) -> float:
    """The distance between adjacent bfloat16 values at `magnitude` (its unit in the last place;
    that of 1.0 below it)."""
    return 2.0 ** (math.floor(math.log2(max(abs(magnitude), 1.0))) - (BF16_BITS - 1))


class NADSpec(BaseModel):
    """Everything that determines a NAD estimate (the arrays are a function of this alone).

    Defaults are the paper's settings (docs/science.md, section 2) except `num_networks`, which the
    paper fixed at 10,000 and which `target_stability` can choose for you.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str | ArchitectureRef = Field(
        description="Built-in name (logreg, lenet, vgg11, resnet18, densenet121), "
        "'torchvision:<builder>' (e.g. torchvision:resnet18) or {\"id\": \"<architecture id>\"} "
        "(an uploaded architecture, POST /v1/architectures)."
    )
    input_shape: tuple[
        Annotated[int, Field(ge=1, le=16)],
        Annotated[int, Field(ge=1, le=512)],
        Annotated[int, Field(ge=1, le=512)],
    ] = Field((1, 32, 32), description="(C, H, W) of one input.")
    num_networks: int = Field(
        10_000, ge=2, le=10_000_000, description="Number of random networks N (at least 2)."
    )
    method: Method = Field(
        "finite_difference",
        description="finite_difference (the paper's, central differences with step `scale`) "
        "or autograd (the exact input gradient).",
    )
    scale: Finite = Field(100.0, ge=MIN_SCALE, le=MAX_SCALE,
                          description="Finite-difference step (paper: 100).")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of the evaluation point and nets.")
    k: int | None = Field(
        None, ge=1, description="Number of NADs kept; default min(D, N - 1)."
    )
    eval_point: list[Bounded] | None = Field(
        None, max_length=MAX_INPUT_DIM,
        description="Evaluation point x0, flattened (C*H*W finite values within +-1e6); "
        "default N(0, I).",
    )
    output_index: int = Field(
        0, ge=0, le=MAX_OUTPUTS - 1,
        description="Which output of the network is f (built-ins are built with "
        "output_index + 1 outputs, at most 1000 as an ImageNet classifier).",
    )
    target_stability: Finite | None = Field(
        None, gt=0, le=1, description="Stop once split-half stability at `stability_k` reaches it."
    )
    stability_k: int = Field(16, ge=1, description="k at which `target_stability` is checked.")
    check_every: int = Field(
        500, ge=2, description="Networks between two stability checks when stopping early."
    )
    decomposition: Decomposition = Field(
        "auto",
        description="covariance (D x D eigendecomposition), lowrank (randomized SVD of the "
        "gradients, for large D), or auto (covariance when D <= 4096).",
    )
    shards: int = Field(1, ge=1, le=4096, description="Shards the service splits the work into.")
    precision: Precision = Field(
        "auto",
        description="Arithmetic of the forward passes: fp32, tf32 (GPU tensor cores; fp32 on a "
        "CPU), bf16 (autocast; differences, gradients and covariance stay fp32/fp64) or auto "
        "(fp32 on a CPU, tf32 on a GPU, bf16 where measured safe). The result summary records "
        "the precision used. fp16 is not offered (no provable overflow bound at step 100).",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _method_alias(cls, v: object) -> object:
        return v.replace("-", "_") if isinstance(v, str) else v

    @field_validator("precision", mode="before")
    @classmethod
    def _no_fp16(cls, v: object) -> object:
        if isinstance(v, str) and v.lower() in ("fp16", "float16", "half"):
            raise ValueError(
                f"precision: {v!r} is not offered: with the step of 100 no bound keeps float16 "
                "activations below 65,504; use bf16 (same range as fp32), tf32 or fp32")
        return v

    @field_validator("eval_point")
    @classmethod
    def _normal_point(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            all_normal(v)
        return v

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str | ArchitectureRef) -> str | ArchitectureRef:
        return known_architecture(v)

    @model_validator(mode="after")
    def _consistent(self) -> NADSpec:
        d = self.input_dim
        if d > MAX_INPUT_DIM:
            raise ValueError(f"input_shape: C*H*W = {d} exceeds the limit {MAX_INPUT_DIM}")
        if isinstance(self.architecture, str):
            problem = shape_problem(self.architecture, self.input_shape)
            if problem is not None:
                raise ValueError(f"input_shape: {problem}")
        if self.eval_point is not None and len(self.eval_point) != d:
            raise ValueError(
                f"eval_point: has {len(self.eval_point)} values, input_shape needs C*H*W = {d}"
            )
        if self.k is not None and self.k > min(d, self.num_networks):
            raise ValueError(
                f"k: {self.k} exceeds min(D, num_networks) = {min(d, self.num_networks)}"
            )
        if self.shards > self.num_networks:
            raise ValueError(
                f"shards: {self.shards} exceeds num_networks = {self.num_networks}"
            )
        if self.precision == "bf16" and self.method == "finite_difference":
            point = (max(abs(v) for v in self.eval_point) if self.eval_point is not None
                     else DEFAULT_POINT_BOUND)
            least = BF16_STEP_SPACINGS * bf16_spacing(point)
            if self.scale < least:
                raise ValueError(
                    f"scale: a step of {self.scale:g} is below what bf16 resolves at the "
                    f"evaluation point (|x0| up to {point:g}, where bf16 values are "
                    f"{bf16_spacing(point):g} apart): with precision bf16 the step must be at "
                    f"least {BF16_STEP_SPACINGS} of those, {least:g}; use precision fp32, or a "
                    "larger scale")
        if self.decomposition == "covariance" and d > 16384:
            raise ValueError(f"decomposition: covariance needs D <= 16384, D is {d}; use lowrank")
        return self

    @property
    def input_dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def num_nads(self) -> int:
        """k, resolved: how many NADs the result holds."""
        return self.k if self.k is not None else min(self.input_dim, self.num_networks - 1)

    @property
    def uses_lowrank(self) -> bool:
        if self.decomposition == "auto":
            return self.input_dim > 4096
        return self.decomposition == "lowrank"

    @property
    def representation(self) -> str:
        """How a shard's result is kept: "gradients" (its (n, D) float32 gradients, when all
        the job's gradients fit in GRADIENT_BLOCK_LIMIT bytes, or for lowrank, which needs
        them) or "moments" (their sums and outer products, for a covariance beyond it)."""
        if self.num_networks * self.input_dim * 4 <= GRADIENT_BLOCK_LIMIT or self.uses_lowrank:
            return "gradients"
        return "moments"

    def shard_ranges(self) -> list[tuple[int, int]]:
        """Contiguous network-index ranges [start, stop) of the `shards` shards."""
        return shard_ranges(self.num_networks, self.shards)
