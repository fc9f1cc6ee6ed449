"""The FastAPI application: `uvicorn --factory api.main:create_app` or `nads serve`."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api import errors
from api.key_first import KeyBeforeBody
from api.limits import BodyLimit
from api.metrics import ServiceCollector, require_metrics_token
from api.routers import (
    architectures,
    artifacts,
    catalog,
    docs,
    health,
    jobs,
    kinds,
    submit,
    uploads,
    web,
)
from jobs.broker import make_celery
from jobs.kinds import KINDS
from jobs.kinds.base import limits
from store.blobs import open_blob_store
from store.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    for kind in KINDS.values():  # a quota set to no number fails the start, as a field would
        limits(kind.quotas, settings)
    app = FastAPI(
        title="NADs service",
        version="0.1.0",
        description="Compute, follow and download neural anisotropy directions. "
        "Authenticate with `Authorization: Bearer <key>` (`nads admin create-key`).",
        docs_url=None, redoc_url=None,  # api/routers/docs.py: the same pages, no CDN
    )
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    app.state.blobs = open_blob_store(settings)
    errors.install(app)
    # inside BodyLimit (which reads nothing of a body it can judge by its Content-Length, and
    # at most the limit of a chunked one): a submission without a valid key is refused before
    # the route reads and parses its body
    app.add_middleware(KeyBeforeBody, paths=frozenset(f"/v1/jobs/{name}" for name in KINDS))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(submit.router)
    app.include_router(jobs.router)
    app.include_router(kinds.router)
    app.include_router(uploads.router)
    app.include_router(architectures.router)
    app.include_router(artifacts.router)
    app.include_router(catalog.router)
    app.include_router(web.router)
    app.include_router(docs.router)

    registry = CollectorRegistry()
    registry.register(ServiceCollector(settings.resolved_database_url, app.state.celery))

    @app.get("/metrics", tags=["health"], response_class=Response,
             dependencies=[Depends(require_metrics_token)])
    def metrics() -> Response:
        """Prometheus text format: jobs by state, queue depth, job durations, for the operator:
        `Authorization: Bearer <NADS_METRICS_TOKEN>` (403 while it is unset)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
