"""Which architecture a spec names: a built-in, `torchvision:<builder>` or an uploaded
architecture (`ArchitectureRef`), and the bounds every kind's spec shares (input size, outputs).
Torch-free: the API validates specs with it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nadcore.specs.numbers import FLOAT32_TINY, FLOAT_LIMIT
from nadcore.specs.torchvision_names import TORCHVISION_CLASSIFIERS

BUILTIN_ARCHITECTURES = ("logreg", "lenet", "vgg11", "resnet18", "densenet121")
TORCHVISION_PREFIX = "torchvision:"
_TORCHVISION_NAME = re.compile(r"^torchvision:[a-z][a-z0-9_]*$")

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
        """`uploaded:<id>`: what logs and messages call it ("custom" means user directions)."""
        return f"uploaded:{self.id}"


def is_uploaded(architecture: str | ArchitectureRef) -> bool:
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


# C*H*W of one input, for every kind
MAX_INPUT_DIM = 3 * 512 * 512
# Outputs a built-in is built with (output_index + 1): at most those of an ImageNet classifier.
MAX_OUTPUTS = 1000
