"""`nads catalog ls|get|build`. ls and get are public client calls; build is an operator's
command like `nads admin`: it writes the catalog rows and sends the round jobs through the
service's own database and broker (NADS_DATABASE_URL, NADS_BROKER_URL), so the workers attached
to that broker (GPUs where there are some) compute them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from nads.client_commands import catalog_get, catalog_ls


def catalog_build(
    arch: Annotated[list[str] | None, typer.Option(
        "--arch", help="Architecture to build (repeatable) [default: all five]")] = None,
    wait_: Annotated[bool, typer.Option("--wait", help="Follow the builds until done.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 5.0,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Recompute ready entries (shipped or built) from scratch.")] = False,
) -> None:
    """Start or resume catalog builds (ready entries, shipped ones too, stay unless --replace)."""
    from sqlalchemy import select

    from jobs.broker import make_celery
    from jobs.catalog import CATALOG_ARCHITECTURES, CatalogError, build, describe
    from nads.service_commands import _settings
    from store.db import session_scope
    from store.migrate import upgrade
    from store.models import CATALOG_BUILDING, CatalogEntry

    settings = _settings()
    upgrade(settings.resolved_database_url)
    names = list(arch or CATALOG_ARCHITECTURES)
    try:
        with session_scope(settings.resolved_database_url) as session:
            done = build(session, make_celery(settings), settings, names, replace=replace)
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


def catalog_install() -> None:
    """Install the entries shipped in NADS_CATALOG_SHIPPED_DIR as ready (built ones are kept)."""
    from jobs.shipped import install_shipped
    from nads.service_commands import _settings
    from store.db import session_scope
    from store.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        done = install_shipped(session, settings)
    if not done:
        print(f"no shipped entries under {settings.catalog_shipped_dir}")
    for name, what in done.items():
        print(f"{name}: {what}")
    if any(what.startswith("error") for what in done.values()):
        raise typer.Exit(1)


def catalog_export(
    arch: Annotated[str, typer.Argument(help="logreg, lenet, vgg11, resnet18 or densenet121")],
    out: Annotated[Path, typer.Option(help="Folder of shipped entries (writes OUT/ARCH/).")
                   ] = Path("catalog_data"),
    direct: Annotated[bool, typer.Option(
        "--direct", help="Run the engine in this process instead of reading the service's "
        "ready entry.")] = False,
    partial: Annotated[Path | None, typer.Option(
        help="A saved partial of networks [0, N) (PartialNADs.save) to export.")] = None,
    networks: Annotated[int, typer.Option(help="--direct / --partial: networks.")] = 10_000,
    precision: Annotated[str, typer.Option(help="--direct: auto, fp32, tf32 or bf16.")
                         ] = "auto",
    device: Annotated[str | None, typer.Option(help="--direct: cpu, cuda (default: cuda if "
                                               "any).")] = None,
    check_networks: Annotated[int | None, typer.Option(
        help="Networks whose gradients ship for `verify` [default: 4; 2 for vgg11 and "
        "resnet18, 1 for densenet121].")] = None,
    figures_only: Annotated[bool, typer.Option(
        "--figures-only", help="Only render OUT/ARCH's figures again from its arrays (after "
        "the figures changed); the arrays stay as they are.")] = False,
) -> None:
    """Write an entry in the shipped format: from the service, --direct, or --partial."""
    from pydantic import ValidationError

    from jobs.catalog import CatalogError, check_names
    from nads import catalog_export as export

    check_networks = check_networks or export.CHECK_NETWORKS_BY_ARCH.get(arch, 4)
    try:
        check_names([arch])
        if figures_only:
            rewritten = export.rerender_figures(out / arch)
            print(f"rewrote {', '.join(rewritten)} of {out / arch}")
            return
        if partial is not None:
            from nadcore.nads.partial import PartialNADs

            spec = export.catalog_spec(arch, networks, precision)
            folder = export.export_partial(out, arch, spec, PartialNADs.load(partial),
                                           check_networks,
                                           source=f"direct engine run, partial {partial.name}")
        elif direct:
            folder = export.export_direct(out, arch, networks, precision, device,
                                          check_networks)
        else:
            from nads.service_commands import _settings

            folder = export.export_from_service(out, arch, _settings(), check_networks)
    except (CatalogError, ValidationError, ValueError) as exc:
        print(f"nads catalog export: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    print(json.dumps({k: v for k, v in json.loads((folder / "provenance.json").read_text())
                      .items() if k != "files"}, indent=2))
    print(f"wrote {folder}")


def catalog_compute(
    arch: Annotated[str, typer.Option(help="vgg11, resnet18, densenet121 (or logreg, lenet)")],
    networks: Annotated[int, typer.Option(help="Networks [0, N) of the entry.")] = 2_000,
    precision: Annotated[str | None, typer.Option(
        help="fp32 or bf16; every shard of a build shares it [default: the architecture's "
        "measured choice, nads.catalog_background.CPU_PRECISION].")] = None,
    data: Annotated[Path, typer.Option(help="Folder of shipped entries (partials go to "
                                       "DATA/ARCH/partials/).")] = Path("catalog_data"),
    shard_networks: Annotated[int | None, typer.Option(
        help="Networks per shard [default: a few minutes' worth for the architecture].")
    ] = None,
    device: Annotated[str, typer.Option(help="Where to compute.")] = "cpu",
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 1,
    background: Annotated[bool, typer.Option(
        "--background/--foreground",
        help="nice 19 (lowest CPU priority) [default], or leave the priority as it is.")
    ] = True,
    finalize: Annotated[bool, typer.Option(
        "--finalize/--no-finalize", help="Write the entry once [0, N) is covered.")] = True,
    compiled: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="torch.compile the forward passes (1.3-1.5x faster "
        "on a CPU, equal to float32 rounding; eager where compiling fails) [default: on].")
    ] = True,
) -> None:
    """Compute a catalog entry in this process, shard by shard into DATA/ARCH/partials/,
    resuming from the partials present; once [0, N) is covered, write the shipped entry.
    Several at once (one per idle core) share the shards; the last to finish writes it."""
    from jobs.catalog import CatalogError, check_names
    from nads import catalog_background as background_build

    precision = precision or background_build.CPU_PRECISION.get(arch, "fp32")
    if precision not in ("fp32", "bf16"):
        print("nads catalog compute: precision: fp32 or bf16", file=sys.stderr)
        raise typer.Exit(2)
    if networks < 2 or (shard_networks is not None and shard_networks < 1):
        print("nads catalog compute: networks: at least 2 (shard-networks: at least 1)",
              file=sys.stderr)
        raise typer.Exit(2)
    try:
        check_names([arch])
        if background:
            background_build.lowest_priority(threads)
        else:
            import torch

            torch.set_num_threads(threads)
        entry = background_build.compute(data, arch, networks, precision,
                                         shard_networks=shard_networks, device=device,
                                         finalize=finalize, compiled=compiled,
                                         report=lambda line: print(line, flush=True))
    except (CatalogError, background_build.BuildError) as exc:
        print(f"nads catalog compute: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    if entry is not None:
        print(f"wrote {entry}")


def catalog_verify(
    arch: Annotated[list[str] | None, typer.Argument(
        help="Entries to verify [default: every shipped entry]")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Folder of shipped entries [default: NADS_CATALOG_SHIPPED_DIR]")] = None,
    device: Annotated[str, typer.Option(help="Where to recompute.")] = "cpu",
    networks: Annotated[int | None, typer.Option(
        min=1, help="Recompute only the first N check networks [default: all shipped]")] = None,
) -> None:
    """Recompute shipped entries' first-network gradients on this machine and compare them."""
    from jobs.shipped import ShippedError
    from nads import catalog_export as export
    from nads.service_commands import _settings

    root = data or _settings().catalog_shipped_dir
    names = list(arch or [])
    if not names and root is not None and root.is_dir():
        names = sorted(p.name for p in root.iterdir() if (p / "provenance.json").is_file())
    if root is None or not names:
        print(f"nads catalog verify: no shipped entries under {root}", file=sys.stderr)
        raise typer.Exit(2)
    failed = False
    for name in names:
        try:
            report = export.verify(root / name, device, networks)
        except (ShippedError, FileNotFoundError) as exc:
            print(f"{name}: FAILED: {exc}")
            failed = True
            continue
        failed |= not report["ok"]
        print(f"{name}: {'ok' if report['ok'] else 'FAILED'}: {report['networks']} networks "
              f"recomputed in fp32 on {device} in {report['seconds']} s; max relative error "
              f"{report['max_relative_error']:.2e} (tolerance {report['tolerance']:g} for "
              f"{report['precision']}; bitwise equal: {report['bitwise_equal']}); evaluation "
              f"point equal: {report['eval_point_equal']}; sha256 of every file: ok")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The public NAD catalog.", no_args_is_help=True)
    group.command("ls")(catalog_ls)
    group.command("get")(catalog_get)
    group.command("build")(catalog_build)
    group.command("install")(catalog_install)
    group.command("export")(catalog_export)
    group.command("compute")(catalog_compute)
    group.command("verify")(catalog_verify)
    app.add_typer(group, name="catalog")
