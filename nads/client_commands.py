"""The service verbs of the `nads` CLI, each one call of `nads.client.Client`:
submit, status, wait, download, ls, cancel, catalog ls|get and export (`nads arch ...`:
nads/arch_commands.py).

The server URL and key come from --url / --key or $NADS_URL / $NADS_KEY; against a local URL
without a key, the key `nads serve` wrote (nads/local_key.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer

from nads.summary_text import learning_severity, not_identifiable, not_learned, report

if TYPE_CHECKING:  # httpx and numpy are imported by the commands, not by `nads --help`
    from nads.client import CatalogEntry, Client, Job

Url = Annotated[str | None, typer.Option("--url", envvar="NADS_URL",
                                         help="Service URL [default: http://127.0.0.1:8000]")]
Key = Annotated[str | None, typer.Option(
    "--key", envvar="NADS_KEY",
    help="API key [default: for a local URL, the one `nads serve` wrote to "
         "$NADS_DATA_DIR/local-api-key]")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the service's JSON.")]


class _Row(Protocol):
    raw: dict[str, Any]  # what the service sent


RowT = TypeVar("RowT", bound=_Row)


def make_client(url: str | None, key: str | None) -> Client:
    from nads.client import Client

    return Client(url, key)


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"nads: {message}", file=sys.stderr)
    return typer.Exit(code)


class Guard:
    """Turns the client's errors into one line on stderr and exit status 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        from nads.client import NadsError

        if isinstance(exc, NadsError | TimeoutError | ValueError | OSError):
            raise _fail(str(exc)) from None
        return False


def _job_line(job: Job) -> str:
    return f"{job.id}  {job.kind:<6}  {job.status:<9}  {job.progress:>4.0%}  {job.message}"


def print_rows(rows: Sequence[RowT], line: Callable[[RowT], str], as_json: bool) -> None:
    """A list command's output: the rows as the service sent them (`--json`), else `line` of
    each (one or more lines)."""
    if as_json:
        print(json.dumps([row.raw for row in rows], indent=2))
        return
    for row in rows:
        print(line(row))


def _print_job(job: Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.raw, indent=2))
    else:
        print(_job_line(job))
        if job.error:
            print(f"error: {job.error}")
        for line in report(job.summary):  # a NAD result: how much it means
            print(line)
        # what the result means (or that it means nothing): the verdict's own severity, so a
        # NAD probe's expected "8 of 12 at chance" is an info line, not a warning
        for level, note in ((learning_severity(job.summary), not_learned(job.summary)),
                            ("warning", not_identifiable((job.summary or {}).get(
                                "identifiability")))):
            if note:
                print(f"{level}: {note}")


# Spec building: a JSON/YAML file, then flags, then --set overrides.

def load_spec_file(path: Path) -> dict[str, Any]:
    """A JSON or YAML mapping (YAML is a superset of JSON)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"--spec {path}: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(f"--spec {path}: expected a mapping of spec fields, got "
                    f"{type(data).__name__}")
    return data


def apply_sets(spec: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """--set a.b=value: value parsed as JSON when it is JSON, else kept as a string."""
    for item in sets:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise _fail(f"--set {item!r}: expected FIELD=VALUE (e.g. training.epochs=5)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = spec
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise _fail(f"--set {item!r}: {p} is not a mapping")
        node[last] = value
    return spec


def parse_shape_option(text: str | None) -> list[int] | None:
    if text is None:
        return None
    from nads.compute_command import parse_shape

    return list(parse_shape(text))


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, got {text!r}") from None


def build_spec(kind: dict[str, Any], spec_file: Path | None, flags: dict[str, Any],
               sets: list[str]) -> dict[str, Any]:
    """The spec of a job of `kind` (as GET /v1/kinds describes it): the --spec file, the
    options the kind maps to its fields (`cli_options`) over it, the --set values over both."""
    spec = load_spec_file(spec_file) if spec_file else {}
    fields = {"arch": "architecture", "input-shape": "input_shape", "seed": "seed",
              "shards": "shards"} | kind["cli_options"]
    for option, value in flags.items():
        if value is None or option not in fields:
            continue
        dotted = fields[option]
        node = spec
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    spec = apply_sets(spec, sets)
    required = kind["spec_schema"].get("required", [])
    if "architecture" in required and "architecture" not in spec:
        raise _fail(f"submit {kind['name']}: give --arch or a --spec file with "
                    "'architecture'", 2)
    return spec


def submit(
    kind: Annotated[str, typer.Argument(
        help="a job kind of the service (GET /v1/kinds): nads, probe, poison...")],
    spec_file: Annotated[Path | None, typer.Option(
        "--spec", exists=True, dir_okay=False, help="JSON or YAML spec (flags override it)")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="architecture")] = None,
    input_shape: Annotated[str | None, typer.Option(help="C,H,W")] = None,
    seed: int | None = None,
    shards: int | None = None,
    networks: Annotated[int | None, typer.Option(help="nads: number of networks")] = None,
    method: Annotated[str | None, typer.Option(
        help="nads: finite-difference or autograd")] = None,
    scale: Annotated[float | None, typer.Option(help="nads: finite-difference step")] = None,
    k: Annotated[int | None, typer.Option(help="nads: NADs kept")] = None,
    target_stability: Annotated[float | None, typer.Option(
        help="nads: stop early at this split-half stability")] = None,
    stability_k: Annotated[int | None, typer.Option(help="nads: k of the stability")] = None,
    directions: Annotated[str | None, typer.Option(
        help="probe: fourier, nad or random")] = None,
    nad_job: Annotated[str | None, typer.Option(
        help="probe: directions from this NAD job; poison: NADs from this job")] = None,
    count: Annotated[int | None, typer.Option(help="probe: random directions")] = None,
    grid_stride: Annotated[int | None, typer.Option(help="probe: Fourier grid stride")] = None,
    epochs: Annotated[int | None, typer.Option(help="probe, poison: training epochs")] = None,
    preset: Annotated[str | None, typer.Option(
        help="probe, poison: quick (minutes on a CPU) or paper (the paper's recipe); fills "
             "the training settings not given")] = None,
    dataset: Annotated[str | None, typer.Option(help="poison: digits or cifar10")] = None,
    indices: Annotated[str | None, typer.Option(help="poison: NAD indices, e.g. 0,600")
                       ] = None,
    eps: Annotated[float | None, typer.Option(help="poison: perturbation size")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="FIELD=VALUE for any spec field (dotted, JSON values), repeatable")
    ] = None,
    wait_: Annotated[bool, typer.Option("--wait", help="Wait with a progress bar.")] = False,
    accept_long: Annotated[bool, typer.Option(
        "--accept-long", help="Queue it even when its estimated run time exceeds the "
        "service's limit (NADS_MAX_ESTIMATED_RUN_S)")] = False,
    accept_underpowered: Annotated[bool, typer.Option(
        "--accept-underpowered", help="probe: queue it even when its sizes cannot separate "
        "a learnable direction from chance")] = False,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Submit a job (the job id is printed first, then its estimated run time)."""
    flags: dict[str, Any] = {  # by option; the kind maps them to its spec's fields
        "arch": arch, "input-shape": parse_shape_option(input_shape), "seed": seed,
        "shards": shards, "networks": networks, "method": method, "scale": scale, "k": k,
        "target-stability": target_stability, "stability-k": stability_k,
        "directions": directions, "nad-job": nad_job, "count": count,
        "grid-stride": grid_stride, "epochs": epochs, "preset": preset, "dataset": dataset,
        "indices": _indices(indices), "eps": eps}
    client = make_client(url, key)
    with Guard():
        try:  # the options each kind maps to its spec's fields: data of the kind (jobs/kinds)
            described = client.kind(kind)
        except ValueError as exc:
            raise _fail(f"submit: {exc}", 2) from None
        spec = build_spec(described, spec_file, flags, sets or [])
        job = client.submit(kind, spec, accept_long=accept_long,
                            accept_underpowered=accept_underpowered)
        _print_job(job, as_json)
        estimate = job.raw.get("estimate") or {}
        run, power = estimate.get("run"), estimate.get("power")
        if run and not as_json:  # the run time on the workers connected (jobs/fleet.py)
            print(f"estimate: {run['basis']}")
        if power and not as_json:  # a probe: what its sizes can tell (nadcore/probe/power.py)
            verdict = {True: "can", False: "CANNOT (accepted)", None: "may"}[
                power["can_separate"]]
            print(f"power: {verdict} separate a learnable direction from chance: "
                  f"{power['basis']}")
            if power.get("preset"):
                print(f"preset: {power['preset']}")
        if wait_:
            _wait(client, job.id, None, as_json)


def status(job_id: str, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Show a job: status, progress, error."""
    with Guard():
        _print_job(make_client(url, key).status(job_id), as_json)


def _wait(client: Client, job_id: str, timeout: float | None, as_json: bool) -> None:
    from nads.progress import ProgressDisplay

    display = ProgressDisplay(sys.stderr, job_id[:8])
    try:
        job = client.wait(job_id, timeout=timeout,
                          on_progress=lambda j: display.update(j.status, j.progress, j.message))
    finally:
        display.close()
    _print_job(job, as_json)
    if job.status != "succeeded":
        raise typer.Exit(1)


def wait(job_id: str,
         timeout: Annotated[float | None, typer.Option(help="Give up after this many s.")] = None,
         url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Wait for a job with a live progress bar; exit 0 only when it succeeded."""
    with Guard():
        _wait(make_client(url, key), job_id, timeout, as_json)


def download(job_id: str,
             out: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("."),
             names: Annotated[list[str] | None, typer.Option(
                 "--name", help="Only this artifact (repeatable).")] = None,
             url: Url = None, key: Key = None) -> None:
    """Download a job's artifacts."""
    with Guard():
        for path in make_client(url, key).download(job_id, out, names):
            print(path)


def ls(kind: Annotated[str | None, typer.Option(
           help="Only this kind (of GET /v1/kinds).")] = None,
       status_: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
       limit: Annotated[int, typer.Option(help="At most this many (0: all).")] = 20,
       url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """List your jobs, newest first."""
    with Guard():
        jobs = list(make_client(url, key).jobs(kind, status_, limit or None))
    print_rows(jobs, _job_line, as_json)


def cancel(job_id: str, url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """Cancel a queued or running job."""
    with Guard():
        _print_job(make_client(url, key).cancel(job_id), as_json)


def catalog_ls(url: Url = None, as_json: AsJson = False) -> None:
    """The public catalog: architectures, status, networks, stability."""
    with Guard():
        entries = make_client(url, None).catalog_ls()
    print_rows(entries, _catalog_line, as_json)


def _catalog_line(e: CatalogEntry) -> str:
    if e.status == "absent":  # not started here: how to build it, and what it needs
        return f"{e.name:<12} {e.status:<9} {e.raw.get('message', '')}"
    stab = "-" if e.stability is None else f"{e.stability:.3f}"
    nets = e.raw.get("networks_done") if e.networks is None else e.networks
    pending = (f"  ({nets:,} of the paper's {e.raw['paper_networks']:,} networks: a "
               f"{e.raw['paper_networks']:,}-network build is pending)"
               if e.raw.get("full_build_pending") else "")
    line = (f"{e.name:<12} {e.status:<9} {e.progress:>4.0%}  networks {nets}  "
            f"stability@{e.raw.get('stability_k')} {stab}  sha256 {e.sha256 or '-'}{pending}")
    note = not_identifiable(e.identifiability)
    return line + (f"\n{'':<12} warning: {note}" if note else "")


def catalog_get(
    arch: str,
    k: Annotated[int | None, typer.Option(help="Only the first k NADs.")] = None,
    file: Annotated[str, typer.Option(
        help="nads.npy, eigenvalues.npy, eval_point.npy, preview.png or spectrum.png")
    ] = "nads.npy",
    out: Annotated[Path | None, typer.Option(help="Output file [default: ARCH-FILE]")] = None,
    url: Url = None,
) -> None:
    """Download a catalog file (public, no key)."""
    out = out or Path(f"{arch}-{file}")
    with Guard():
        data = make_client(url, None).catalog_file(arch, file, k)
        out.write_bytes(data)
    print(out)


class ExportFormat(StrEnum):
    torchscript = "torchscript"
    export = "export"


def export(
    arch: Annotated[str, typer.Option(help="Built-in or torchvision:<name> architecture")],
    out: Annotated[Path, typer.Option(help="Output file (e.g. lenet.pt)")],
    input_shape: Annotated[str, typer.Option(help="C,H,W")] = "1,32,32",
    fmt: Annotated[ExportFormat | None, typer.Option(
        "--format", help="torchscript or export [default: from the suffix]")] = None,
) -> None:
    """Write a built-in architecture as a file `nads arch upload` accepts."""
    from nads.compute_command import parse_shape

    try:
        from nads.export_command import export_architecture
    except ModuleNotFoundError as exc:
        if exc.name != "nads.export_command":
            raise
        raise _fail("export is not available in this installation") from None
    shape = parse_shape(input_shape)
    try:
        path = export_architecture(arch, shape, out, fmt.value if fmt else None)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    print(path)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("wait")(wait)
    app.command("download")(download)
    app.command("ls")(ls)
    app.command("cancel")(cancel)
    app.command("export")(export)
