"""A torchvision builder's cost at admission (jobs/architecture_costs.py) on SQLite: not counted
yet, a spec is pending (the API has a worker count it); counted, it is estimated and refused
like a built-in; a builder that cannot take the shape is refused naming `input_shape`; with no
worker to count it, its cost stays unknown. The counts here are the figures the worker's count
(nadcore.networks.counting, tests/nadcore/networks/test_counting.py) gives for these builders."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from jobs.architecture_costs import CostPending, keep_count, kept_count
from jobs.fleet import CALIBRATION, TooLong, check_run_time, run_estimate
from jobs.kinds import get_kind
from jobs.kinds.base import Admission, SpecError, counted_layers
from jobs.kinds.poison import estimate_poison
from nadcore.nads.cost import estimate_cost
from nadcore.nads.spec import NADSpec
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.spec import ProbeSpec
from nadcore.specs.layer_counts import LayerCount
from store.blobs import BlobStore
from store.models import ApiKey, Worker, utcnow
from store.settings import Settings

RESNET18 = "torchvision:resnet18"
# torchvision's ResNet-18 at 3x32x32 with one output (nadcore.networks.counting)
RESNET18_32 = LayerCount(macs=37_011_456, params=11_177_025, activations=50_689)


def _admit(session: Session, settings: Settings, user_id: int,
           uncounted: bool = False) -> Admission:
    return Admission(session, user_id, settings, BlobStore(settings.resolved_blob_dir), None,
                     uncounted=uncounted)


def test_a_torchvision_spec_is_pending_until_counted_then_estimated_like_a_built_in(
        session: Session, settings: Settings, alice: ApiKey) -> None:
    kind = get_kind("nads")
    spec = NADSpec(architecture=RESNET18, input_shape=(3, 32, 32), num_networks=10_000)
    with pytest.raises(CostPending) as pending:
        kind.plan(spec, _admit(session, settings, alice.user_id))
    assert (pending.value.architecture, pending.value.input_shape,
            pending.value.num_outputs) == (RESNET18, (3, 32, 32), 1)
    assert str(pending.value) == ("architecture: the cost of torchvision:resnet18 at 3x32x32 "
                                  "with 1 output(s) is not counted yet")
    unknown = kind.plan(spec, _admit(session, settings, alice.user_id, uncounted=True))
    assert unknown.estimate["flops"] is None

    keep_count(session, RESNET18, (3, 32, 32), 1, RESNET18_32, None)
    keep_count(session, RESNET18, (3, 32, 32), 1, LayerCount(1, 1, 1), None)  # a late twin
    assert kept_count(session, RESNET18, [3, 32, 32], 1).macs == RESNET18_32.macs
    plan = kind.plan(spec, _admit(session, settings, alice.user_id))
    assert plan.estimate == estimate_cost(spec, RESNET18_32).as_dict()
    per_network = 2 * 3 * 32 * 32  # finite differences: two passes per input dimension
    assert plan.estimate["flops"] == 2.0 * RESNET18_32.macs * per_network * 10_000
    assert plan.estimate["parameters"] == RESNET18_32.params

    workers = [Worker(name="w", hostname="h", pid=1, processes=2, queues="cpu,gpu,validate",
                      gpus=0, device="Test CPU", throughput={CALIBRATION: 5e9},
                      last_seen=utcnow())]
    run = run_estimate("nads", plan.estimate, plan.ranges, workers)
    with pytest.raises(TooLong) as refused:
        check_run_time(get_kind("nads"), run, plan.estimate, plan.ranges, workers,
                       Settings(max_estimated_run_s=3600))
    assert str(refused.value).startswith("num_networks: the estimated run time, ")


def test_a_builder_that_cannot_take_the_shape_is_refused_naming_input_shape(
        session: Session, settings: Settings, alice: ApiKey) -> None:
    why = ("torchvision:squeezenet1_1 cannot take an input of shape 3x8x8: Given input size: "
           "(128x1x1). Calculated output size: (128x0x0). Output size is too small")
    keep_count(session, "torchvision:squeezenet1_1", (3, 8, 8), 1, None, why)
    spec = NADSpec(architecture="torchvision:squeezenet1_1", input_shape=(3, 8, 8),
                   num_networks=4)
    with pytest.raises(SpecError) as caught:
        get_kind("nads").plan(spec, _admit(session, settings, alice.user_id))
    assert (caught.value.field, caught.value.reason, caught.value.value) == (
        "input_shape", why, [3, 8, 8])


def test_a_count_the_worker_could_not_make_leaves_the_cost_unknown(
        session: Session, settings: Settings, alice: ApiKey) -> None:
    keep_count(session, RESNET18, (3, 40, 40), 1, None, None)
    spec = NADSpec(architecture=RESNET18, input_shape=(3, 40, 40), num_networks=4)
    assert get_kind("nads").plan(spec, _admit(session, settings, alice.user_id)
                                 ).estimate["flops"] is None


def test_probe_and_poison_use_the_count_of_their_own_shape_and_outputs(
        session: Session, settings: Settings, alice: ApiKey) -> None:
    admission = _admit(session, settings, alice.user_id)
    probe = ProbeSpec(architecture=RESNET18, input_shape=(3, 32, 32),
                      directions={"kind": "random", "count": 2, "seed": 0})
    with pytest.raises(CostPending) as pending:  # a probe trains 2-output networks
        get_kind("probe").plan(probe, admission)
    assert pending.value.num_outputs == 2
    two = LayerCount(macs=37_010_944, params=11_177_538, activations=50_690)
    keep_count(session, RESNET18, (3, 32, 32), 2, two, None)
    estimate = get_kind("probe").plan(probe, admission).estimate
    assert estimate["flops"] is not None and estimate["parameters"] == two.params
    # a poison job on digits trains networks of its images' shape and classes
    with pytest.raises(CostPending) as pending:
        counted_layers(admission, RESNET18, (1, 32, 32), 10)
    keep_count(session, RESNET18, (1, 32, 32), 10, RESNET18_32, None)
    assert counted_layers(admission, RESNET18, (1, 32, 32), 10) == RESNET18_32
    poison = PoisonSpec(architecture=RESNET18, dataset={"name": "digits"},
                        nads={"upload": "u" * 32}, indices=[0])
    assert estimate_poison(poison, 1437, None, (1, 32, 32), RESNET18_32)["flops"] > 0
    assert estimate_poison(poison, 1437, None, (1, 32, 32))["flops"] is None
    assert counted_layers(admission, "lenet", (1, 32, 32), 10) is not None  # built-ins: walked
