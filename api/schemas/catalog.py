"""/v1/catalog: one architecture of the public catalog."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class CatalogEntryOut(BaseModel):
    """One architecture of the catalog (jobs/catalog.py: describe)."""

    name: str
    status: Literal["ready", "building", "failed", "absent"] = Field(
        description="absent: not started on this server; `message` says how to build it")
    progress: float = Field(description="networks computed / max_networks; 1 once ready")
    message: str
    networks_done: int
    input_shape: list[int]
    method: str
    scale: float
    seed: int
    networks: int | None = Field(description="networks of the result (once ready)")
    max_networks: int = Field(description="the cap: 10,000 in the paper")
    stability: float | None = Field(description="split-half stability at stability_k")
    stability_k: int
    target_stability: float
    stopped_early: bool | None = Field(description="the target was reached before the cap")
    paper_networks: int = Field(description="networks of the paper's build: 10,000")
    full_build_pending: bool = Field(
        description="ready with fewer networks than the paper's (a background CPU build of "
        "2,000, say) without reaching its stability target: a 10,000-network build is pending")
    rounds: int = Field(description="round jobs submitted so far")
    sha256: str | None = Field(description="of nads.npy")
    built_at: str | None
    job_id: str | None = Field(description="the current (or final) round's NAD job")
    error: str | None
    origin: Literal["shipped", "built"] | None = Field(
        description="shipped with the repository (catalog_data/) or built by this service; "
        "null while absent")
    precision: str | None = Field(
        description="arithmetic of the forward passes that computed the arrays (fp32, tf32, "
        "bf16)")
    provenance: dict[str, Any] | None = Field(
        description="shipped entries: spec, precision, device, torch version, wall time, "
        "networks, split-half stability, sha256 of every file")
    needs_gpu: bool | None = Field(
        None, description="building it at the paper's settings needs a GPU worker "
        "(api/catalog_listing.py)")
    identifiability: dict[str, Any] | None = Field(
        None, description="once ready: the split-half stability at each k beside chance k/D "
        "and the top of its noise band, `identifiable` (false: the NADs are an arbitrary "
        "basis, `reason` says why) and up to which k (nadcore/nads/identifiability.py)")
    num_nads: int | None = Field(
        None, description="once ready: the rows of nads.npy (and eigenvalues.npy), the "
        "largest `?k=`")
