"""Counts a torchvision builder's cost for admission (Celery task on the validation lane, which
the workers that run shards do not take: jobs/broker.py): one forward pass on torch's meta
device (nadcore.networks.counting), kept in `architecture_costs` (jobs/architecture_costs.py) for
every later job of the same builder, input shape and output count. Idempotent: a count kept already
is not counted again.

What it keeps: the count; or why the builder cannot take the shape (its jobs are refused naming
`input_shape`); or, when counting itself failed (an operator torch's meta device or FLOP counter
does not know), neither: the cost stays unknown and its jobs are admitted as before counts
existed, rather than refused for a failure of ours.
"""

from __future__ import annotations

import logging

from jobs.architecture_costs import keep_count, kept_count, shape_text
from jobs.broker import COUNT_ARCHITECTURE
from nadcore.specs.architecture import TORCHVISION_PREFIX
from store.db import session_scope
from store.settings import get_settings
from worker.app import app

log = logging.getLogger(__name__)

MAX_SIDE = 1 << 14  # of an input side, beyond any spec's bound (nadcore.nads.spec)
MAX_OUTPUTS = 1 << 20


def _checked(architecture: object, input_shape: object, num_outputs: object
             ) -> tuple[str, tuple[int, int, int], int]:
    """The message's arguments, checked again here (a message is input like any other)."""
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else ()
    if (not isinstance(architecture, str) or not architecture.startswith(TORCHVISION_PREFIX)
            or len(architecture) > 100 or len(shape) != 3
            or not all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in shape)
            or not isinstance(num_outputs, int) or not 1 <= num_outputs <= MAX_OUTPUTS):
        raise ValueError(f"not a count request: {architecture!r:.120} {input_shape!r:.80} "
                         f"{num_outputs!r:.20}")
    return architecture, shape, num_outputs  # type: ignore[return-value]


@app.task(name=COUNT_ARCHITECTURE, acks_late=True)
def count_architecture(architecture: str, input_shape: list[int], num_outputs: int) -> str:
    """Counts and keeps one builder's cost; returns what it kept (`kept` when it was already)."""
    from nadcore.networks.counting import count_layers
    from nadcore.networks.zoo import ArchitectureError

    architecture, shape, num_outputs = _checked(architecture, input_shape, num_outputs)
    url = get_settings().resolved_database_url
    with session_scope(url) as session:
        if kept_count(session, architecture, shape, num_outputs) is not None:
            return "kept"
    count = error = None
    try:
        count = count_layers(architecture, shape, num_outputs)
    except ArchitectureError as exc:
        error = str(exc)
    except Exception:  # noqa: BLE001 (a failure of the count, not of the spec: cost unknown)
        log.exception("counting %s at %s failed", architecture, shape_text(shape))
    with session_scope(url) as session:
        keep_count(session, architecture, shape, num_outputs, count, error)
    what = "uncounted" if count is None and error is None else "refused" if error else "counted"
    log.info("cost of %s at %s, %d output(s): %s %s", architecture, shape_text(shape),
             num_outputs, what, count or error or "")
    return what
