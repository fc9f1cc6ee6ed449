"""GET /v1/kinds: the registered job kinds (jobs/kinds), for the web page and clients: each
kind's name, what it does, the unit its progress counts, the figures it renders (with their
captions), the JSON schema of its spec, the `nads submit` options that set its fields, and
what the web page calls its jobs and shows of them (`label`, `web_views`), whether its
spec may name an uploaded architecture (`supports_upload`), and the refusals a user may waive
with a query flag of its submit route (`acceptances`).
Public: it describes the service, no user's data."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas.kinds import FigureOut, KindOut
from jobs.kinds import KINDS

router = APIRouter(prefix="/v1", tags=["kinds"])


@router.get("/kinds", response_model=list[KindOut])
def list_kinds() -> list[KindOut]:
    """The job kinds this service runs, in the registry's order."""
    return [KindOut(name=k.name, title=k.title.split("\n\n")[0], unit=k.unit,
                    submit_url=f"/v1/jobs/{k.name}",
                    figures=[FigureOut(name=f.name, caption=f.caption) for f in k.figures],
                    spec_schema=k.spec.model_json_schema(),
                    cli_options=dict(k.cli_options), label=k.label,
                    web_views=list(k.web_views), supports_upload=k.supports_upload,
                    acceptances=dict(k.acceptances))
            for k in KINDS.values()]
