"""The toy kind's domain side (as jobs/kinds/<kind>.py would hold it): `KIND`, its data (items,
quota, figures) and its plan: sharded, or one task when the spec asks for it."""

from __future__ import annotations

from typing import Any

from toy_core import ToySpec

from jobs.kinds.base import (
    SEQUENTIAL,
    SHARDED,
    Admission,
    Figure,
    Items,
    Plan,
    Quota,
    check_limits,
)
from nadcore.specs.ranges import shard_ranges

QUOTAS = (Quota("count", "max_toy_count", 100_000, "integers summed"),)


class ToyKind:
    name = "toy"
    spec = ToySpec
    title = "Queues a toy job: the sum of the squares of 0..count-1."
    unit = "integers"
    figures = (Figure("squares.png", "The squares summed, one point per integer."),)
    worker = "toy_worker"
    items = Items("count", "integers")
    quotas = QUOTAS
    supports_upload = False
    label = "toy"
    web_views = ()
    acceptances: dict[str, str] = {}
    cli_options = {"count": "count"}

    def architecture(self, spec: ToySpec) -> dict[str, Any]:
        return {}

    def plan(self, spec: ToySpec, admission: Admission) -> Plan:
        estimate = {"count": spec.count, "flops": float(spec.count)}
        check_limits(estimate, QUOTAS, admission.settings, "reduce count")
        if spec.whole:
            return Plan(SEQUENTIAL, estimate, [(0, spec.count)])
        return Plan(SHARDED, estimate, shard_ranges(spec.count, spec.shards))


KIND = ToyKind()
