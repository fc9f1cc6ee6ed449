"""A Python client of the NADs service (httpx, no torch): the verbs of the `nads` CLI.

    from nads.client import Client
    client = Client()                       # $NADS_URL (default http://127.0.0.1:8000), $NADS_KEY
                                            # (or, for a local URL, the key `nads serve` wrote)
    job = client.submit("nads", {"architecture": "lenet", "num_networks": 2000, "shards": 4})
    job = client.wait(job.id)
    nads, eigenvalues, eval_point = client.nads(job.id)
    top = Client().catalog("resnet18", k=64)  # public, no key needed
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from nads.local_key import PROOF_PATH, check_proof, local_key, local_key_path, new_challenge

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled")


class NadsError(RuntimeError):
    """The service refused a request; `status_code` and the service's `detail`."""

    def __init__(self, status_code: int, detail: Any, url: str) -> None:
        self.status_code, self.detail, self.url = status_code, detail, url
        super().__init__(f"{status_code} from {url}: {_detail_text(detail)}")


def _detail_text(detail: Any) -> str:
    """The service's messages (each already starts with its field, api/errors.py)."""
    if isinstance(detail, list):  # validation errors
        return "; ".join(str(d.get("msg")) if isinstance(d, dict) else str(d) for d in detail)
    if isinstance(detail, dict) and "msg" in detail:  # a quota refusal, with its figures
        return str(detail["msg"])
    return str(detail)


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str
    media_type: str
    url: str


@dataclass(frozen=True)
class Job:
    """A job as the service reports it (`raw` keeps the whole JSON)."""

    id: str
    kind: str
    status: str
    progress: float
    message: str
    spec: dict[str, Any]
    summary: dict[str, Any] | None
    error: str | None
    artifacts: list[Artifact]
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def identifiability(self) -> dict[str, Any] | None:
        """A NAD job's split-half stability at each k beside chance k/D and its noise band,
        `identifiable` (False: an arbitrary basis; `reason` says why) and `up_to_k`."""
        return (self.summary or {}).get("identifiability")

    @property
    def catalog_overlap(self) -> dict[str, Any] | None:
        """A NAD job's overlap with the catalog's entry of the same architecture, input shape
        and method, per k beside chance (None when there is no such ready entry)."""
        return (self.summary or {}).get("catalog")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(id=data["id"], kind=data["kind"], status=data["status"],
                   progress=data["progress"]["fraction"], message=data["progress"]["message"],
                   spec=data["spec"], summary=data.get("summary"), error=data.get("error"),
                   artifacts=[Artifact(**{k: a[k] for k in Artifact.__dataclass_fields__})
                              for a in data.get("artifacts", [])], raw=data)


@dataclass(frozen=True)
class CatalogEntry:
    """One architecture of the public catalog (GET /v1/catalog)."""

    name: str
    status: str  # ready, building, failed, or absent (not started: `raw["message"]` says how)
    progress: float
    input_shape: tuple[int, int, int]
    method: str
    scale: float
    networks: int | None
    stability: float | None
    sha256: str | None
    built_at: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def identifiability(self) -> dict[str, Any] | None:
        """Once ready: what its split-half stability means (as `Job.identifiability`)."""
        return self.raw.get("identifiability")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CatalogEntry:
        return cls(name=data["name"], status=data["status"], progress=data["progress"],
                   input_shape=tuple(data["input_shape"]), method=data["method"],
                   scale=data["scale"], networks=data.get("networks"),
                   stability=data.get("stability"), sha256=data.get("sha256"),
                   built_at=data.get("built_at"), raw=data)


@dataclass(frozen=True)
class Architecture:
    """An uploaded architecture (POST /v1/architectures)."""

    id: str
    name: str
    status: str  # validating, ready or rejected
    reason: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        """Validated: ready or rejected."""
        return self.status != "validating"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Architecture:
        return cls(id=data["id"], name=data.get("name", ""), status=data["status"],
                   reason=data.get("reason"), raw=data)


class NADArrays(NamedTuple):
    nads: np.ndarray  # (k, C*H*W) float32, orthonormal rows, by decreasing eigenvalue
    eigenvalues: np.ndarray  # (k,)
    eval_point: np.ndarray  # (C, H, W)


def _plain_file_name(name: str) -> bool:
    """Whether `name` names a file in a folder, nothing else: no separator of any platform,
    not `.` or `..`, no NUL or other control character, not empty."""
    return (bool(name) and name not in (".", "..") and len(name) <= 255
            and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name))


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


class Client:
    """The service's verbs. `url` and `key` default to $NADS_URL and $NADS_KEY; without a key,
    a local service's (a loopback URL) is the one `nads serve` wrote (nads/local_key.py). The
    catalog needs no key."""

    def __init__(self, url: str | None = None, key: str | None = None, *,
                 timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("NADS_URL") or DEFAULT_URL).rstrip("/")
        use_local = key is None and not os.environ.get("NADS_KEY")
        self.key = (local_key(self.url) if use_local
                    else key if key is not None else os.environ.get("NADS_KEY"))
        # the local key goes only to a service that proved it holds it (_prove_local_key)
        self._key_unproven = use_local and self.key is not None
        headers = ({"Authorization": f"Bearer {self.key}"}
                   if self.key and not self._key_unproven else {})
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._kinds: list[dict[str, Any]] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prove_local_key(self) -> None:
        """Before the key `nads serve` wrote is sent: the service answers a random challenge
        with the key's HMAC (nads/local_key.py), which another program listening on the port
        cannot; without the right answer the key is never sent."""
        if not self._key_unproven:
            return
        challenge = new_challenge()
        r = self._http.get(PROOF_PATH, params={"challenge": challenge})
        try:
            answer = r.json().get("proof") if r.status_code == 200 else None
        except (ValueError, AttributeError):
            answer = None
        if not check_proof(self.key, challenge, answer):
            raise NadsError(0, f"the service at {self.url} did not prove that it holds the key "
                            f"in {local_key_path()} (is it the `nads serve` that wrote it? "
                            "another program may listen on this port): the key was not sent; "
                            "set NADS_KEY to send a key", self.url + PROOF_PATH)
        self._http.headers["Authorization"] = f"Bearer {self.key}"
        self._key_unproven = False

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            self._prove_local_key()
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise NadsError(0, f"cannot reach the service ({exc}); is NADS_URL right?",
                            self.url + path) from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise NadsError(r.status_code, detail, str(r.request.url))
        return r

    # Jobs

    def kinds(self) -> list[dict[str, Any]]:
        """The job kinds the service runs (GET /v1/kinds, asked once): name, title, unit,
        figures, the spec's JSON schema and the `nads submit` options that set its fields."""
        if self._kinds is None:
            self._kinds = self._request("GET", "/v1/kinds").json()
        return self._kinds

    def kind(self, name: str) -> dict[str, Any]:
        """The kind `name` of `kinds()`; ValueError naming the service's kinds otherwise."""
        kinds = self.kinds()
        for kind in kinds:
            if kind["name"] == name:
                return kind
        raise ValueError(f"kind: {name!r}; expected one of "
                         f"{', '.join(k['name'] for k in kinds)}")

    def submit(self, kind: str, spec: dict[str, Any], accept_long: bool = False,
               accept_underpowered: bool = False) -> Job:
        """Submits a job of `kind` (one of `kinds()`: nads, probe, poison) with the spec as the
        service takes it.
        A job estimated to run longer than the service's limit on its workers is refused (422
        with the estimate and what fits) unless `accept_long`; a probe whose sizes cannot
        separate a learnable direction from chance is refused (422 with the smallest sizes
        that can) unless `accept_underpowered`. Its estimate: `job.raw["estimate"]["run"]`
        (run_s, basis), and for a probe `["power"]`."""
        self.kind(kind)
        params = {name: "true" for name, on in (("accept_long", accept_long),
                                                ("accept_underpowered", accept_underpowered))
                  if on} or None
        return Job.from_json(self._request("POST", f"/v1/jobs/{kind}", json=spec,
                                           params=params).json())

    def status(self, job_id: str) -> Job:
        return Job.from_json(self._request("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self, kind: str | None = None, status: str | None = None,
             limit: int | None = 20) -> Iterator[Job]:
        """The caller's jobs, newest first (all of them with limit=None), page by page."""
        params: dict[str, Any] = {"limit": min(limit or 100, 100)}
        params |= {k: v for k, v in (("kind", kind), ("status", status)) if v}
        seen = 0
        while True:
            page = self._request("GET", "/v1/jobs", params=params).json()
            for item in page["items"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Job.from_json(item)
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait(self, job_id: str, *, timeout: float | None = None, interval: float = 1.0,
             on_progress: Callable[[Job], None] | None = None) -> Job:
        """Polls until the job is succeeded, failed or cancelled (TimeoutError after
        `timeout` s); `on_progress(job)` after every poll."""
        return _poll(self.status, job_id, "job", timeout, interval, on_progress)

    def artifact(self, job_id: str, name: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/artifacts/{name}").content

    def download(self, job_id: str, out: str | Path, names: list[str] | None = None
                 ) -> list[Path]:
        """Writes the job's artifacts (or those named) into directory `out`."""
        job = self.status(job_id)  # job_id may be a prefix: job.id is the whole id
        available = {a.name for a in job.artifacts}
        wanted = names or sorted(available)
        missing = [n for n in wanted if n not in available]
        if missing:
            raise NadsError(404, f"job {job.id} has no {', '.join(missing)}; it has: "
                            f"{', '.join(sorted(available)) or 'none yet'}", self.url)
        # The names come from the service: each must be one plain file name inside `out`
        # (a hostile server's `../x` or `/abs/x` wrote wherever it chose), checked before
        # anything is written
        for name in wanted:
            if not _plain_file_name(name):
                raise NadsError(0, f"artifact name {name!r} from the service is not a plain "
                                f"file name; nothing was written", self.url)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in wanted:
            path = out / name
            self._prove_local_key()
            with path.open("wb") as f, self._http.stream(
                    "GET", f"/v1/jobs/{job.id}/artifacts/{quote(name, safe='')}") as r:
                if r.status_code >= 400:
                    r.read()
                    raise NadsError(r.status_code, r.text, str(r.request.url))
                for chunk in r.iter_bytes():
                    f.write(chunk)
            paths.append(path)
        return paths

    def nads(self, job_id: str) -> NADArrays:
        """The arrays of a succeeded NAD job."""
        return NADArrays(*(_npy(self.artifact(job_id, f"{n}.npy"))
                           for n in ("nads", "eigenvalues", "eval_point")))

    # Catalog (public)

    def catalog_ls(self) -> list[CatalogEntry]:
        return [CatalogEntry.from_json(e) for e in self._request("GET", "/v1/catalog").json()]

    def catalog_entry(self, arch: str) -> CatalogEntry:
        return CatalogEntry.from_json(self._request("GET", f"/v1/catalog/{arch}").json())

    def catalog_file(self, arch: str, name: str = "nads.npy", k: int | None = None) -> bytes:
        params = {"k": k} if k is not None else None
        return self._request("GET", f"/v1/catalog/{arch}/{name}", params=params).content

    def catalog(self, arch: str, k: int | None = None, *, what: str = "nads") -> np.ndarray:
        """The catalog's NADs of `arch` (first k rows with `k`); what="eigenvalues" for those."""
        return _npy(self.catalog_file(arch, f"{what}.npy", k))

    # Architectures

    def arch_upload(self, path: str | Path, name: str, input_shape: tuple[int, int, int],
                    init: str | None = None) -> Architecture:
        """Uploads a TorchScript archive or a torch.export program (validated by a worker)."""
        path = Path(path)
        data = {"name": name, "input_shape": ",".join(str(v) for v in input_shape)}
        if init:
            data["init"] = init
        with path.open("rb") as f:
            r = self._request("POST", "/v1/architectures", data=data,
                              files={"file": (path.name, f, "application/octet-stream")})
        return Architecture.from_json(r.json())

    def architecture(self, arch_id: str) -> Architecture:
        return Architecture.from_json(self._request("GET", f"/v1/architectures/{arch_id}").json())

    def architectures(self) -> list[Architecture]:
        """The caller's architectures, newest first."""
        return [Architecture.from_json(a)
                for a in self._request("GET", "/v1/architectures").json()["items"]]

    def arch_delete(self, arch_id: str) -> None:
        """Forgets the architecture (DELETE /v1/architectures/{id}): queued and running jobs
        that use it keep running (their specs pin the archive); new jobs cannot name it. 409
        (`NadsError`) while its validation runs: delete it when that ends."""
        self._request("DELETE", f"/v1/architectures/{arch_id}")

    def wait_architecture(self, arch_id: str, *, timeout: float | None = None,
                          interval: float = 1.0,
                          on_progress: Callable[[Architecture], None] | None = None
                          ) -> Architecture:
        """Polls until a worker has validated the architecture (ready or rejected: see
        `reason`; TimeoutError after `timeout` s); `on_progress(architecture)` after every
        poll."""
        return _poll(self.architecture, arch_id, "architecture", timeout, interval,
                     on_progress)


Polled = TypeVar("Polled", Job, Architecture)


def _poll(fetch: Callable[[str], Polled], given_id: str, what: str, timeout: float | None,
          interval: float, on_progress: Callable[[Polled], None] | None) -> Polled:
    """`fetch(id)` every `interval` s until its result is `done`; TimeoutError after `timeout`.
    A prefix is fetched once: then the whole id, which a newer id cannot make ambiguous."""
    deadline = None if timeout is None else time.monotonic() + timeout
    item_id = given_id
    while True:
        item = fetch(item_id)
        item_id = item.id
        if on_progress is not None:
            on_progress(item)
        if item.done:
            return item
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{what} {item_id} still {item.status} after {timeout} s")
        time.sleep(interval)
