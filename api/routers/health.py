"""Liveness (/healthz: the process answers) and readiness (/readyz: its dependencies do)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import BlobsDep, CeleryDep, SessionDep
from nads.local_key import PROOF_PATH, prove

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(session: SessionDep, celery: CeleryDep, blobs: BlobsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 (reported, not raised)
        checks["database"] = f"error: {exc.__class__.__name__}: {exc}"
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {exc.__class__.__name__}: {exc}"
    try:
        blobs.check_writable()
        checks["blob_store"] = "ok"
    except OSError as exc:
        checks["blob_store"] = f"error: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)


@router.get(PROOF_PATH)
def local_proof(request: Request, challenge: str = Query(
        ..., min_length=32, max_length=128, pattern="^[0-9a-f]+$")) -> dict[str, str]:
    """`nads serve` proves that it holds the local key before a client sends it
    (nads/local_key.py); 404 where the service has no local key (not started by serve)."""
    key = getattr(request.app.state, "local_key", None)
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this service has no local key")
    return {"proof": prove(key, challenge)}
