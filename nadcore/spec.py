"""The NAD job spec: one pydantic model, used by the engine, the API and the worker.

This module imports no torch, so the API can validate specs and estimate costs without it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .numbers import FLOAT32_TINY, FLOAT_LIMIT, Bounded, Finite, all_normal
from .torchvision_names import TORCHVISION_CLASSIFIERS

BUILTIN_ARCHITECTURES = ("logreg", "lenet", "vgg11", "resnet18", "densenet121")
TORCHVISION_PREFIX = "torchvision:"
_TORCHVISION_NAME = re.compile(r"^torchvision:[a-z][a-z0-9_]*$")

Method = Literal["finite_difference", "autograd"]
Decomposition = Literal["auto", "covariance", "lowrank"]
Precision = Literal["auto", "fp32", "tf32", "bf16"]
PRECISIONS = ("auto", "fp32", "tf32", "bf16")

STABILITY_KS = (1, 4, 16, 64)
INIT_POLICIES = ("torch-default", "normal:<std>", "uniform:<bound>", "keep")
_INIT_POLICY = re.compile(r"^(torch-default|keep|(normal|uniform):([0-9.eE+-]+))$")


def parse_init_policy(policy: str) -> tuple[str, float | None]:
    """("torch-default" | "keep", None) or ("normal" | "uniform", value > 0); ValueError naming
    `init` otherwise."""
    m = _INIT_POLICY.match(policy.strip())
    value = None
    if m and m.group(3) is not None:
        try:
            value = float(m.group(3))
        except ValueError:
            m = None
    if not m or (value is not None and not (FLOAT32_TINY <= value <= FLOAT_LIMIT)):
        raise ValueError(f"init: {policy!r} is not one of {', '.join(INIT_POLICIES)} "
                         f"(std and bound are numbers in {FLOAT32_TINY:.3g}..{FLOAT_LIMIT:g}, "
                         "e.g. normal:0.05)")
    return (m.group(2), value) if value is not None else (m.group(1), None)


class ArchitectureRef(BaseModel):
    """A user's uploaded architecture (`POST /v1/architectures`). The service fills `sha256`
    (the archive's bytes), `init` (its re-initialization policy) and `output` (the element of
    a structured output that is the network's output) when it stores a job, so the stored spec
    alone determines the networks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # a unique prefix (4+ hex digits) as well: the API stores the whole id (jobs/ownership.py)
    id: str = Field(pattern=r"^[0-9a-f]{4,32}$", description="id of a ready architecture, "
                    "or a unique prefix of it")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="the archive's sha256 (recorded by the service)")
    init: str | None = Field(None, description="re-initialization policy (recorded by the "
                             "service); default torch-default")
    output: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,100}$",
                               description="the element of a tuple, list or dict output that "
                               "is the network's output (recorded by the service from the "
                               "upload); null for a network returning one tensor")

    @field_validator("init")
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        if v is not None:
            parse_init_policy(v)
        return v

    @property
    def policy(self) -> str:
        return self.init or "torch-default"

    def __str__(self) -> str:
        return f"custom:{self.id}"


def is_custom(architecture: str | ArchitectureRef) -> bool:
    return isinstance(architecture, ArchitectureRef)


def known_architecture(v: str | ArchitectureRef) -> str | ArchitectureRef:
    """A built-in, an uploaded architecture or `torchvision:<classification builder>`;
    ValueError otherwise (segmentation, detection, video and quantized builders, and
    torchvision's helpers such as get_model, are not classifiers of one image)."""
    if isinstance(v, ArchitectureRef) or v in BUILTIN_ARCHITECTURES:
        return v
    if _TORCHVISION_NAME.match(v):
        if v[len(TORCHVISION_PREFIX):] in TORCHVISION_CLASSIFIERS:
            return v
        raise ValueError(
            f"{v[:80]!r} is not a torchvision classification builder; expected "
            f"'{TORCHVISION_PREFIX}<name>' with a name of torchvision.models.list_models("
            "module=torchvision.models), e.g. torchvision:resnet18")
    raise ValueError(
        f"unknown architecture {v[:80]!r}: expected one of {', '.join(BUILTIN_ARCHITECTURES)} "
        f"or '{TORCHVISION_PREFIX}<classification builder>'"
    )
MAX_INPUT_DIM = 3 * 512 * 512
# Outputs a built-in is built with (output_index + 1): at most those of an ImageNet classifier.
MAX_OUTPUTS = 1000
# Finite-difference steps: below, x0 +- s loses the step in float32 (x0 ~ N(0, 1), epsilon
# 1.2e-7); above, activations overflow. The paper's step is 100.
MIN_SCALE, MAX_SCALE = 1e-4, FLOAT_LIMIT


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
            from .input_shapes import shape_problem  # after this module: cost imports it

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

    def shard_ranges(self) -> list[tuple[int, int]]:
        """Contiguous network-index ranges [start, stop) of the `shards` shards."""
        n, s = self.num_networks, self.shards
        bounds = [round(i * n / s) for i in range(s + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(s)]
