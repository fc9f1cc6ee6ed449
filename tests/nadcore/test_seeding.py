"""Derived seeds (nadcore/seeding.py): every namespace in one place, and the values pinned, so a
stored job reproduces bitwise (these numbers were computed by the per-module copies the helper
replaced: nadcore.probe.engine.probe_seed and nadcore.poison.engine.poison_seed before issue 16)."""

from __future__ import annotations

from nadcore import seeding
from nadcore.poison import engine as poison
from nadcore.probe import engine as probe
from nadcore.seeding import (
    POISON,
    POISON_SHUFFLE,
    PROBE,
    PROBE_INIT,
    PROBE_TRAIN,
    eval_point_seed,
    network_seed,
    poison_seed,
    probe_seed,
)


def test_derived_seeds_are_pinned() -> None:
    assert network_seed(0, 0) == 2316410312047398653
    assert network_seed(7, 123) == 1492876741039207687
    assert eval_point_seed(0) == 8668861027912758289
    assert probe_seed(0, PROBE_TRAIN, 5) == 5562387469048501490
    assert probe_seed(3, PROBE_INIT) == 5974100799815833158
    assert poison_seed(0, POISON_SHUFFLE, 2) == 5467148370926258153


def test_namespaces_are_distinct_and_the_engines_use_this_module() -> None:
    spaces = [seeding.EVAL_POINT, seeding.NETWORK, PROBE, POISON]
    assert len(set(spaces)) == len(spaces)
    assert probe.probe_seed is probe_seed and poison.poison_seed is poison_seed
    assert seeding.derive_seed(0, PROBE, PROBE_TRAIN, 5) == probe_seed(0, PROBE_TRAIN, 5)
