"""The cost of one forward pass of a torchvision builder, for admission (torch-free).

A built-in is walked by `nadcore.specs.layer_counts.layer_count`; an uploaded architecture is
counted by its validation (its `info`, read by the kinds); a torchvision builder needs torch, so a
worker counts it on the meta device (`nads.count_architecture` on the validation lane,
worker/architecture_cost.py, nadcore.networks.counting) once per builder, input shape and output
count, and the count is kept in `architecture_costs`. The kinds read it through
`jobs.kinds.base.counted_layers`; a spec whose count is not kept yet raises `CostPending`: the API
asks a worker to count it and waits for it (api/architecture_counts.py), unless no worker that
counts is connected (`Admission.uncounted`: then its cost is unknown and, as with no worker at all,
nothing is refused). A builder that cannot take the shape is refused naming `input_shape`, before
the job is stored."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs.broker import VALIDATE_QUEUE
from nadcore.specs.layer_counts import LayerCount
from store.models import ArchitectureCost, Worker

MAX_ERROR_CHARS = 500  # of why a builder cannot take a shape, as kept and shown


def shape_text(input_shape: Sequence[int]) -> str:
    """'3x224x224'."""
    return "x".join(str(int(v)) for v in input_shape)


class CostPending(Exception):
    """A torchvision builder's cost at this input shape and output count is not counted yet."""

    def __init__(self, architecture: str, input_shape: Sequence[int], num_outputs: int) -> None:
        self.architecture, self.num_outputs = architecture, int(num_outputs)
        self.input_shape = tuple(int(v) for v in input_shape)
        super().__init__(f"architecture: the cost of {architecture} at {shape_text(input_shape)}"
                         f" with {num_outputs} output(s) is not counted yet")


def kept_count(session: Session, architecture: str, input_shape: Sequence[int],
               num_outputs: int) -> ArchitectureCost | None:
    return session.scalar(select(ArchitectureCost).where(
        ArchitectureCost.architecture == architecture,
        ArchitectureCost.input_shape == shape_text(input_shape),
        ArchitectureCost.num_outputs == int(num_outputs)))


def keep_count(session: Session, architecture: str, input_shape: Sequence[int],
               num_outputs: int, count: LayerCount | None, error: str | None) -> None:
    """Stores a worker's count (or why the builder cannot take the shape); a count kept
    meanwhile by another worker stands."""
    session.add(ArchitectureCost(
        architecture=architecture, input_shape=shape_text(input_shape),
        num_outputs=int(num_outputs), macs=None if count is None else count.macs,
        params=None if count is None else count.params,
        activations=None if count is None else count.activations,
        error=None if error is None else error[:MAX_ERROR_CHARS]))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()


def counts(worker: Worker) -> bool:
    """The worker takes the validation lane, where counts run (a row without queues predates
    them and took every queue)."""
    return worker.queues is None or VALIDATE_QUEUE in worker.queues.split(",")


def wait_for_count(session: Session, pending: CostPending, timeout_s: float,
                   poll_s: float = 0.2) -> bool:
    """Whether the pending count is kept within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        session.rollback()  # a fresh snapshot: the worker commits from another connection
        if kept_count(session, pending.architecture, pending.input_shape,
                      pending.num_outputs) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
