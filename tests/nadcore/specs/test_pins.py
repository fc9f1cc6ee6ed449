"""Where the specs pin blobs (nadcore/specs/pins.py), found by walking their types: the blob
collector keeps these of queued and running jobs (tests/store/test_blob_gc.py)."""

from __future__ import annotations

from pydantic import BaseModel

from nadcore.nads.spec import NADSpec
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.spec import ProbeSpec
from nadcore.specs.architecture import ArchitectureRef
from nadcore.specs.nad_source import NadSource
from nadcore.specs.pins import pinned_paths


def test_each_kinds_spec_pins_its_architecture_and_its_nad_source() -> None:
    assert pinned_paths(NADSpec) == {("architecture", "sha256")}
    assert pinned_paths(ProbeSpec) == {("architecture", "sha256"), ("directions", "sha256")}
    assert pinned_paths(PoisonSpec) == {("architecture", "sha256"), ("nads", "sha256")}


def test_references_are_found_through_optional_fields_and_nested_models() -> None:
    class Inner(BaseModel):
        source: NadSource | None = None

    class Outer(BaseModel):
        name: str = ""
        model: str | ArchitectureRef = "lenet"
        inner: Inner | None = None

    assert pinned_paths(Outer) == {("model", "sha256"), ("inner", "source", "sha256")}
