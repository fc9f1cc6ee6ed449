"""Prometheus metrics read from the database and the broker at scrape time, for the operator
only: `GET /metrics` needs `Authorization: Bearer <NADS_METRICS_TOKEN>` (a secret of the
operator's, not an API key: the figures are service-wide, every user's jobs together); with no
token set it is 403. Prometheus sends the token with `authorization: {credentials_file: ...}`
in its scrape config (docs/service.md).

Reading the rows (not counting in-process) keeps the figures right with many API replicas and
across restarts.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Annotated

from amqp.exceptions import ChannelError
from celery import Celery
from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from api.deps import SettingsDep
from jobs.broker import CPU_QUEUE, GPU_QUEUE, VALIDATE_QUEUE
from jobs.kinds import REGISTRY
from store.db import get_sessionmaker
from store.models import JOB_STATES, Job, Shard

log = logging.getLogger(__name__)
SETTING = "NADS_METRICS_TOKEN"
_bearer = HTTPBearer(auto_error=False, scheme_name="MetricsToken",
                     description=f"The operator's {SETTING}, not an API key.")


def require_metrics_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """403 while no token is set; 401 unless the request bears it (compared in constant
    time)."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"metrics: disabled; the operator sets {SETTING} and scrapes "
                                   "with 'Authorization: Bearer <token>'")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            detail=f"Authorization: /metrics needs 'Bearer <{SETTING}>'",
                            headers={"WWW-Authenticate": "Bearer"})


class ServiceCollector(Collector):
    def __init__(self, database_url: str, celery: Celery) -> None:
        self.database_url = database_url
        self.celery = celery

    def collect(self) -> Iterator:
        yield from self._jobs()
        depth = GaugeMetricFamily("nads_queue_depth", "Messages waiting in a broker queue.",
                                  labels=["queue"])
        for queue, count in self._queue_depths().items():
            depth.add_metric([queue], count)
        yield depth

    def _jobs(self) -> Iterator:
        jobs = GaugeMetricFamily("nads_jobs", "Jobs by kind and state.", labels=["kind", "state"])
        shards = GaugeMetricFamily("nads_shards", "Shards by state.", labels=["state"])
        durations = SummaryMetricFamily(
            "nads_job_duration_seconds", "Run time of finished jobs (start to end).",
            labels=["kind", "state"])
        with get_sessionmaker(self.database_url)() as session:
            counts = {(k, s): n for k, s, n in session.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))}
            for kind in REGISTRY:
                for state in JOB_STATES:
                    jobs.add_metric([kind, state], counts.get((kind, state), 0))
            for state, n in session.execute(
                select(Shard.status, func.count()).group_by(Shard.status)
            ):
                shards.add_metric([state], n)
            finished = session.execute(
                select(Job.kind, Job.status, Job.started_at, Job.finished_at)
                .where(Job.finished_at.is_not(None), Job.started_at.is_not(None))
            ).all()
        sums: dict[tuple[str, str], list[float]] = {}
        for kind, state, started, ended in finished:
            sums.setdefault((kind, state), []).append((ended - started).total_seconds())
        for (kind, state), values in sums.items():
            durations.add_metric([kind, state], count_value=len(values), sum_value=sum(values))
        yield jobs
        yield shards
        yield durations

    def _queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        try:
            with self.celery.connection_for_read() as conn:
                channel = conn.default_channel
                for queue in (GPU_QUEUE, CPU_QUEUE, VALIDATE_QUEUE):
                    try:
                        depths[queue] = channel.queue_declare(queue=queue,
                                                              passive=True).message_count
                    except ChannelError:  # Redis drops an emptied list: "no queue" is 0
                        depths[queue] = 0
        except Exception:  # noqa: BLE001 (a scrape must not fail because the broker is down)
            log.warning("queue depth unavailable", exc_info=True)
        return depths
