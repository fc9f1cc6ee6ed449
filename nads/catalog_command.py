"""`nads catalog ls|get|build`. ls and get are public client calls; build is an operator's
command like `nads admin`: it writes the catalog rows and sends the round jobs through the
service's own database and broker (NADS_DATABASE_URL, NADS_BROKER_URL), so the workers attached
to that broker (GPUs where there are some) compute them."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from nads.client_commands import catalog_get, catalog_ls


def catalog_build(
    arch: Annotated[list[str] | None, typer.Option(
        "--arch", help="Architecture to build (repeatable) [default: all five]")] = None,
    wait_: Annotated[bool, typer.Option("--wait", help="Follow the builds until done.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 5.0,
) -> None:
    """Start or resume catalog builds (finished entries are left alone)."""
    from sqlalchemy import select

    from nads.service_commands import _settings
    from store.db import session_scope
    from store.migrate import upgrade
    from store.models import CATALOG_BUILDING, CatalogEntry
    from worker.catalog import CATALOG_ARCHITECTURES, CatalogError, build, describe
    from worker.config import make_celery

    settings = _settings()
    upgrade(settings.resolved_database_url)
    names = list(arch or CATALOG_ARCHITECTURES)
    try:
        with session_scope(settings.resolved_database_url) as session:
            done = build(session, make_celery(settings), settings, names)
    except CatalogError as exc:
        print(f"nads catalog build: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    for name, what in done.items():
        print(f"{name}: {what}")
    while wait_:
        time.sleep(interval)
        with session_scope(settings.resolved_database_url) as session:
            rows = session.scalars(select(CatalogEntry).where(CatalogEntry.name.in_(names)))
            info = [describe(e, e.job) for e in rows]
        print("  ".join(f"{i['name']} {i['status']} {i['progress']:.0%}" for i in info),
              flush=True)
        if all(i["status"] != CATALOG_BUILDING for i in info):
            if any(i["status"] != "ready" for i in info):
                raise typer.Exit(1)
            return


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The public NAD catalog.", no_args_is_help=True)
    group.command("ls")(catalog_ls)
    group.command("get")(catalog_get)
    group.command("build")(catalog_build)
    app.add_typer(group, name="catalog")
