"""`nads arch upload | ls | show | rm`: your own architectures (POST, GET and DELETE
/v1/architectures), each verb one call of `nads.client.Client`. Any unique id prefix names one
(the API resolves it among yours)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nads.client_commands import (
    AsJson,
    Guard,
    Key,
    Url,
    make_client,
    parse_shape_option,
    print_rows,
)

if TYPE_CHECKING:  # httpx and numpy are imported by the commands, not by `nads --help`
    from nads.client import Architecture, Client

ArchId = Annotated[str, typer.Argument(help="Architecture id (or a unique prefix of it)")]


def _line(arch: Architecture) -> str:
    shape = ",".join(str(v) for v in arch.raw.get("input_shape") or [])
    reason = f"  {arch.reason}" if arch.reason else ""
    return f"{arch.id}  {arch.name:<16}  {arch.status:<10}  {shape:<9}  " \
           f"{arch.raw.get('format') or '-':<11}{reason}"


def _wait(client: Client, arch: Architecture) -> Architecture:
    """Follows the worker's validation on stderr (nads/progress.py), from the upload on."""
    from nads.progress import ProgressDisplay

    display = ProgressDisplay(sys.stderr, arch.id[:8])
    started = time.monotonic()

    def show(a: Architecture) -> None:
        elapsed = f"{time.monotonic() - started:.0f} s"
        if a.done:
            message = a.reason or f"validated in {elapsed}"
        elif a.raw.get("validation_sent_at"):
            message = f"a worker checks the archive in its sandbox ({elapsed})"
        else:
            message = f"waiting for a free process of the validation lane ({elapsed})"
        display.update(a.status, 1.0 if a.done else 0.0, message)

    try:
        show(arch)
        return client.wait_architecture(arch.id, interval=1.0, on_progress=show)
    finally:
        display.close()


def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="TorchScript archive or torch.export program")],
    name: Annotated[str, typer.Option(help="Name of the architecture")],
    input_shape: Annotated[str, typer.Option(help="C,H,W")],
    init: Annotated[str | None, typer.Option(help="Initialization scheme")] = None,
    wait_: Annotated[bool, typer.Option(
        "--wait", help="Follow the validation (the id is printed first).")] = False,
    url: Url = None, key: Key = None, as_json: AsJson = False,
) -> None:
    """Upload your own architecture (a worker validates it)."""
    shape = tuple(parse_shape_option(input_shape) or ())
    client = make_client(url, key)
    with Guard():
        arch = client.arch_upload(file, name, shape, init)
        if not as_json:  # the id at once: the validation may take minutes
            print(_line(arch), flush=True)
        if wait_:
            arch = _wait(client, arch)
    if as_json:
        print(json.dumps(arch.raw, indent=2))
    elif arch.done:
        print(_line(arch))
    if arch.status == "rejected":
        raise typer.Exit(1)


def ls(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """List your architectures, newest first."""
    with Guard():
        archs = make_client(url, key).architectures()
    print_rows(archs, _line, as_json)


def show(arch_id: ArchId, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Show an architecture: status, why it was rejected, what validation measured."""
    with Guard():
        arch = make_client(url, key).architecture(arch_id)
    if as_json:
        print(json.dumps(arch.raw, indent=2))
        return
    raw = arch.raw
    print(_line(arch))
    print(f"file {raw.get('filename')} ({raw.get('size'):,} bytes, sha256 {raw.get('sha256')}); "
          f"init {raw.get('init')}; output {raw.get('output') or 'the one tensor returned'}; "
          f"uploaded {raw.get('created_at')}")
    info = raw.get("info") or {}
    measured = [f"{label} {info[field]:,}" for field, label in (
        ("num_params", "parameters"), ("flops", "FLOPs per input"),
        ("num_outputs", "outputs")) if isinstance(info.get(field), int | float)]
    if measured:
        print("validation measured: " + ", ".join(measured))


def rm(arch_id: ArchId, url: Url = None, key: Key = None) -> None:
    """Delete an architecture. Queued and running jobs that use it keep running (their specs
    pin the archive); finished jobs keep their results; new jobs cannot name it."""
    client = make_client(url, key)
    with Guard():
        arch = client.architecture(arch_id)  # the whole id of a prefix, and its name
        using = [job.id for status in ("queued", "running")
                 for job in client.jobs(status=status, limit=None)
                 if isinstance(job.spec.get("architecture"), dict)
                 and job.spec["architecture"].get("id") == arch.id]
        client.arch_delete(arch.id)
    print(f"deleted {arch.id}  {arch.name}")
    if using:
        print(f"note: {len(using)} queued or running job(s) use it and keep running (their "
              f"specs pin the archive's sha256): {', '.join(j[:8] for j in using)}")


def register(app: typer.Typer) -> None:
    arch_app = typer.Typer(help="Your own architectures.", no_args_is_help=True)
    arch_app.command("upload")(upload)
    arch_app.command("ls")(ls)
    arch_app.command("show")(show)
    arch_app.command("rm")(rm)
    app.add_typer(arch_app, name="arch")
