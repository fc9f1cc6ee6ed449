"""A reference to a NAD result, torch-free: the one type the specs that read NAD rows share.

The probe's `directions: {"kind": "nad", ...}` (`nadcore.probe.spec.NADDirections`) adds which
rows; the poison spec's `nads` (`nadcore.poison.spec.PoisonNads`) may name an uploaded .npy
instead."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NadSource(BaseModel):
    """A finished NAD job of the caller (`job`) or a ready entry of the public catalog
    (`catalog`: its architecture's name, e.g. "lenet"); `sha256`: the blob it resolved to at
    admission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str | None = Field(None, max_length=64,
                            description="id of a finished NAD job of the caller")
    catalog: str | None = Field(
        None, max_length=64,
        description="or a ready entry of the public catalog, e.g. 'lenet' (GET /v1/catalog)")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="the sha256 of the nads.npy the job reads, pinned by the service when it "
        "admits the job (a value given is replaced): the stored spec names its NADs even if "
        "the source is deleted or rebuilt later")
