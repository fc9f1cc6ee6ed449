"""The public NAD catalog: the paper's five architectures, built by ordinary sharded NAD jobs.

The paper's rule is "10,000 networks unless split-half stability 0.95 at k = 64 is reached
sooner". Stopping early is sequential by nature, sharding is parallel; a catalog build does both
in rounds. Round r is an ordinary sharded NAD job of the system user "catalog" over networks
[0, N_r), N_r = min(cap, r x round_networks), with shards of `shard_networks` networks. Network
j is drawn from (seed, j) whatever N is, so the shards of earlier rounds are reused as they are
(their rows are created already succeeded, pointing at the same partial blobs): round r computes
only the new networks. When a round's job has merged, its summary holds the split-half
stability of the merged partials; `advance` then either records the entry as ready or submits
the next round. The merge task calls `advance` for catalog jobs, the reconciler sweeps every
entry (lost hooks), and `nads catalog build` / `nads serve` start or resume builds.

Resumable: a finished entry is left alone; a failed or cancelled round is submitted again with
its succeeded shards reused. Nothing here imports torch (the CLI and `nads serve` use it).
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import state
from jobs.dispatch import enqueue_merge, enqueue_shard
from nadcore.nads.cost import estimate_cost
from nadcore.nads.identifiability import assess
from nadcore.nads.spec import NADSpec
from nadcore.specs.architecture import BUILTIN_ARCHITECTURES
from store.auth import CATALOG_USER
from store.models import (
    CANCELLED,
    CATALOG_BUILDING,
    CATALOG_FAILED,
    CATALOG_READY,
    FAILED,
    NADS,
    ORIGIN_BUILT,
    ORIGIN_SHIPPED,
    QUEUED,
    SHARDED,
    SUCCEEDED,
    Artifact,
    CatalogEntry,
    Job,
    Shard,
    User,
    utcnow,
)
from store.settings import Settings

log = logging.getLogger(__name__)

CATALOG_ARCHITECTURES = BUILTIN_ARCHITECTURES  # logreg, lenet, vgg11, resnet18, densenet121
CATALOG_INPUT_SHAPE = (1, 32, 32)
PAPER_NETWORKS = 10_000  # the paper's build; an entry of fewer says a full build is pending


class CatalogError(ValueError):
    """A catalog request names an unknown architecture or a bad setting."""


def check_names(names: list[str]) -> list[str]:
    """The names, validated against the five architectures of the paper."""
    unknown = [n for n in names if n not in CATALOG_ARCHITECTURES]
    if unknown:
        raise CatalogError(f"arch: unknown {', '.join(map(repr, unknown))}; the catalog holds "
                           f"{', '.join(CATALOG_ARCHITECTURES)}")
    return names


def parse_names(text: str) -> list[str]:
    """'logreg,lenet' -> ['logreg', 'lenet'] ('' -> [])."""
    return check_names([n.strip() for n in text.split(",") if n.strip()])


def target_spec(name: str, settings: Settings) -> NADSpec:
    """The paper's settings (finite differences, scale 100, 1x32x32, seed 0) at the cap."""
    return NADSpec(architecture=name, input_shape=CATALOG_INPUT_SHAPE,
                   num_networks=settings.catalog_networks, method="finite_difference",
                   scale=100.0, seed=0)


def round_spec(entry: CatalogEntry, networks: int) -> NADSpec:
    """The spec of the round job over networks [0, networks)."""
    shards = math.ceil(networks / entry.shard_networks)
    return NADSpec.model_validate(entry.spec | {"num_networks": networks, "shards": shards})


def _catalog_user(session: Session) -> User:
    user = session.scalar(select(User).where(User.name == CATALOG_USER))
    if user is None:
        user = User(name=CATALOG_USER)
        session.add(user)
        session.flush()
    return user


def ensure_entry(session: Session, name: str, settings: Settings) -> CatalogEntry:
    """The entry of `name`, created (building, no job yet) with the current settings."""
    entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == name))
    if entry is None:
        if settings.catalog_round_networks % settings.catalog_shard_networks:
            raise CatalogError(
                f"NADS_CATALOG_ROUND_NETWORKS ({settings.catalog_round_networks}) must be a "
                f"multiple of NADS_CATALOG_SHARD_NETWORKS ({settings.catalog_shard_networks})")
        entry = CatalogEntry(
            name=name, status=CATALOG_BUILDING,
            spec=target_spec(name, settings).model_dump(mode="json"),
            target_stability=settings.catalog_target_stability,
            stability_k=settings.catalog_stability_k,
            round_networks=settings.catalog_round_networks,
            shard_networks=settings.catalog_shard_networks,
        )
        session.add(entry)
        session.commit()
    return entry


def _reusable_partials(session: Session, entry: CatalogEntry) -> dict[tuple[int, int], str]:
    """(start, stop) -> partial blob of every succeeded shard of this entry's earlier rounds.

    Every round shares the target spec but for N, and partials do not depend on N."""
    if entry.job_pk is None:
        return {}
    rows = session.execute(
        select(Shard.start, Shard.stop, Shard.partial_sha256)
        .join(Job, Job.pk == Shard.job_pk)
        .where(Job.pk == entry.job_pk, Shard.status == SUCCEEDED,
               Shard.partial_sha256.is_not(None))
    ).all()
    return {(a, b): sha for a, b, sha in rows}


def _submit_round(session: Session, app: Celery, entry: CatalogEntry, networks: int,
                  rounds_seen: int) -> Job | None:
    """Creates the round job over [0, networks), reusing earlier partials; None when another
    process advanced the entry first (the `rounds` counter is the compare-and-set guard)."""
    if not state.start_catalog_round(session, entry.id, rounds_seen):
        return None
    spec = round_spec(entry, networks)
    reuse = _reusable_partials(session, entry)
    job = Job(id=uuid.uuid4().hex, user_id=_catalog_user(session).id, kind=NADS, mode=SHARDED,
              spec=spec.model_dump(mode="json"), estimate=estimate_cost(spec).as_dict())
    now = utcnow()
    for i, (a, b) in enumerate(spec.shard_ranges()):
        sha = reuse.get((a, b))
        job.shards.append(
            Shard(index=i, start=a, stop=b, status=SUCCEEDED, fraction=1.0, partial_sha256=sha,
                  finished_at=now) if sha else Shard(index=i, start=a, stop=b))
    session.add(job)
    session.flush()
    if not state.attach_catalog_round(session, entry.id, rounds_seen + 1, job.pk):
        session.rollback()  # restarted meanwhile: the job goes with it
        return None
    session.commit()
    session.refresh(entry)
    todo = [s for s in job.shards if s.status == QUEUED]
    log.info("catalog %s: round %d, job %s over %d networks (%d of %d shards reused)",
             entry.name, entry.rounds, job.id, networks, len(job.shards) - len(todo),
             len(job.shards))
    # everything computed already: straight to the merge
    if not todo and state.start_job(session, job.pk) and state.claim_merge(session, job.pk):
        enqueue_merge(app, job.id)
    for shard in todo:
        if not enqueue_shard(app, session, job, shard):
            break  # the reconciler sends the rest
    return job


def _finish(session: Session, entry: CatalogEntry, job: Job) -> bool:
    """The entry is ready with its round `job`'s result; False when its round is another."""
    summary = job.summary or {}
    nads = session.scalar(select(Artifact).where(Artifact.job_pk == job.pk,
                                                 Artifact.name == "nads.npy"))
    stability = (summary.get("stability") or {}).get(str(entry.stability_k))
    done = state.finish_catalog_entry(
        session, entry.id, job.pk, networks=summary.get("num_networks"), stability=stability,
        stopped_early=summary.get("num_networks", 0) < entry.spec["num_networks"],
        sha256=nads.sha256 if nads else None, built_at=job.finished_at or utcnow())
    session.refresh(entry)
    if not done:
        return False
    log.info("catalog %s: ready, %s networks, stability %s at k=%d", entry.name,
             entry.networks, entry.stability, entry.stability_k)
    return True


def _active(session: Session, entry: CatalogEntry) -> CatalogEntry | None:
    """Another entry whose build has a round job going (builds run one after the other)."""
    return session.scalar(select(CatalogEntry).where(
        CatalogEntry.id != entry.id, CatalogEntry.status == CATALOG_BUILDING,
        CatalogEntry.job_pk.is_not(None)).limit(1))


def advance(session: Session, app: Celery, entry: CatalogEntry, *, resume: bool) -> str:
    """Moves one entry on: first round, next round, ready. A failed or cancelled round is
    submitted again when `resume` (a build command), else the entry is marked failed.
    Returns what it did, for logs and the CLI."""
    if entry.status == CATALOG_READY:
        return "ready"
    job = session.get(Job, entry.job_pk) if entry.job_pk is not None else None
    cap = entry.spec["num_networks"]
    if job is None:
        if _active(session, entry) is not None:
            return "waiting"  # one architecture at a time: the queue stays short for users
        done = _submit_round(session, app, entry, min(cap, entry.round_networks), entry.rounds)
        return "submitted round 1" if done else "busy"
    if job.status == SUCCEEDED:
        summary = job.summary or {}
        n = int(summary.get("num_networks", job.spec["num_networks"]))
        stability = (summary.get("stability") or {}).get(str(entry.stability_k))
        if n >= cap or (stability is not None and stability >= entry.target_stability):
            return "ready" if _finish(session, entry, job) else "busy"
        done = _submit_round(session, app, entry, min(cap, n + entry.round_networks),
                             entry.rounds)
        return f"submitted round {entry.rounds}" if done else "busy"
    if job.status in (FAILED, CANCELLED):
        if resume:
            done = _submit_round(session, app, entry, job.spec["num_networks"], entry.rounds)
            return f"resubmitted round {entry.rounds}" if done else "busy"
        if entry.status != CATALOG_FAILED:
            state.fail_catalog_entry(session, entry.id, job.pk,
                                     f"round {entry.rounds} job {job.id} {job.status}: "
                                     f"{job.error or 'no error recorded'}")
        return "failed"
    return "building"


def _restart(session: Session, entry: CatalogEntry, settings: Settings) -> None:
    """Turns a ready entry (shipped or built) into a new build from scratch with the current
    settings; its files are no longer served until the build is ready."""
    if settings.catalog_round_networks % settings.catalog_shard_networks:
        raise CatalogError(
            f"NADS_CATALOG_ROUND_NETWORKS ({settings.catalog_round_networks}) must be a "
            f"multiple of NADS_CATALOG_SHARD_NETWORKS ({settings.catalog_shard_networks})")
    state.restart_catalog_entry(session, entry.id,
                                target_spec(entry.name, settings).model_dump(mode="json"),
                                settings)
    session.refresh(entry)


def build(session: Session, app: Celery, settings: Settings, names: list[str],
          replace: bool = False) -> dict[str, str]:
    """Starts or resumes the builds of `names` (one at a time: the others wait their turn,
    started by the merge of the previous one); finished entries are left alone, unless
    `replace`: then a ready entry (shipped with the repository or built earlier) is computed
    again from scratch."""
    entries = [ensure_entry(session, name, settings) for name in check_names(names)]
    done = {}
    for entry in _paper_order(entries):
        if replace and entry.status == CATALOG_READY:
            _restart(session, entry, settings)
        what = advance(session, app, entry, resume=True)
        if what == "ready" and entry.origin == ORIGIN_SHIPPED:
            what = "ready (shipped with the repository; --replace recomputes it)"
        done[entry.name] = what
    return done


def on_job_done(session: Session, app: Celery, job_id: str) -> None:
    """Called by the merge task: advances the entry whose current round is `job_id`, if any."""
    entry = session.scalar(select(CatalogEntry).join(Job, Job.pk == CatalogEntry.job_pk)
                           .where(Job.id == job_id))
    if entry is not None and advance(session, app, entry, resume=False) in ("ready", "failed"):
        sweep(session, app)  # the next waiting entry, if any


def _paper_order(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    order = {name: i for i, name in enumerate(CATALOG_ARCHITECTURES)}
    return sorted(entries, key=lambda e: order.get(e.name, len(order)))


def sweep(session: Session, app: Celery) -> None:
    """Advances every entry still building (the reconciler's pass: a lost hook is redone)."""
    entries = session.scalars(select(CatalogEntry)
                              .where(CatalogEntry.status == CATALOG_BUILDING)).all()
    for entry in sorted(_paper_order(list(entries)), key=lambda e: e.job_pk is None):
        session.refresh(entry)
        advance(session, app, entry, resume=False)


@dataclass(frozen=True)
class RoundProgress:
    networks_done: int
    fraction: float


def progress_of(entry: CatalogEntry, job: Job | None) -> RoundProgress:
    """Networks computed over the cap (an upper bound on the work left: a build can stop
    early); 1.0 once ready."""
    if entry.status == CATALOG_READY:
        return RoundProgress(entry.networks or 0, 1.0)
    if job is None:
        return RoundProgress(0, 0.0)
    done = sum((s.stop - s.start) * (1.0 if s.status == SUCCEEDED else s.fraction)
               for s in job.shards)
    return RoundProgress(int(done), round(min(done / entry.spec["num_networks"], 0.99), 4))


def full_build_pending(entry: CatalogEntry) -> bool:
    """A ready entry of fewer networks than the paper's that did not stop on its stability
    target (a CPU build of 2,000 networks, say): a 10,000-network build is still to come."""
    return (entry.status == CATALOG_READY and not entry.stopped_early
            and (entry.networks or 0) < PAPER_NETWORKS)


def _stability_text(entry: CatalogEntry) -> str:
    by_k = (entry.provenance or {}).get("stability") or {}
    if by_k:
        return "split-half stability " + ", ".join(
            f"{float(v):.3f} at k={k}" for k, v in sorted(by_k.items(), key=lambda i: int(i[0])))
    if entry.stability is None:
        return "split-half stability not measured"
    return f"split-half stability {entry.stability:.3f} at k={entry.stability_k}"


def _message(entry: CatalogEntry, job: Job | None, progress: RoundProgress) -> str:
    cap = entry.spec["num_networks"]
    if entry.status == CATALOG_READY:
        why = (f"stability {entry.stability:.3f} >= {entry.target_stability} at "
               f"k={entry.stability_k}" if entry.stopped_early else "the cap was reached")
        if full_build_pending(entry):
            why = (f"{entry.networks:,} of the paper's {PAPER_NETWORKS:,}; a "
                   f"{PAPER_NETWORKS:,}-network build is pending")
        text = f"ready: {entry.networks} networks ({why}); {_stability_text(entry)}"
        if entry.origin == ORIGIN_SHIPPED and entry.provenance:
            prov = entry.provenance
            return (f"{text}; shipped with the repository, computed on "
                    f"{prov.get('device_name')} ({prov.get('precision')}) in "
                    f"{prov.get('wall_seconds', 0):.0f} s")
        return text
    if entry.status == CATALOG_FAILED:
        return f"failed: {entry.error}; `nads catalog build --arch {entry.name}` resumes it"
    if job is None:
        return "waiting for another catalog build to finish"
    return (f"round {entry.rounds}: {progress.networks_done} of {job.spec['num_networks']} "
            f"networks (at most {cap})")


def describe(entry: CatalogEntry, job: Job | None) -> dict[str, Any]:
    """The public JSON of an entry (GET /v1/catalog)."""
    spec = entry.spec
    progress = progress_of(entry, job)
    return {
        "name": entry.name,
        "status": entry.status,
        "progress": progress.fraction,
        "message": _message(entry, job, progress),
        "networks_done": progress.networks_done,
        "input_shape": list(spec["input_shape"]),
        "method": spec["method"],
        "scale": spec["scale"],
        "seed": spec["seed"],
        "networks": entry.networks,
        "max_networks": spec["num_networks"],
        "stability": entry.stability,
        "stability_k": entry.stability_k,
        "target_stability": entry.target_stability,
        "stopped_early": entry.stopped_early,
        "paper_networks": PAPER_NETWORKS,
        "full_build_pending": full_build_pending(entry),
        "rounds": entry.rounds,
        "sha256": entry.sha256,
        "built_at": entry.built_at.isoformat() + "Z" if entry.built_at else None,
        "job_id": job.id if job is not None else None,
        "error": entry.error,
        "origin": entry.origin or ORIGIN_BUILT,
        "precision": _precision(entry, job),
        "provenance": entry.provenance,
        "identifiability": _identifiability(entry, job),
        "num_nads": _num_nads(entry, job),
    }


def _num_nads(entry: CatalogEntry, job: Job | None) -> int | None:
    """Rows of the served nads.npy (what `?k=` may ask for at most); None until ready."""
    if entry.status != CATALOG_READY:
        return None
    source = entry.provenance if entry.provenance is not None else (
        (job.summary or {}) if job is not None else {})
    rows = source.get("num_nads")
    return int(rows) if rows is not None else None


def _identifiability(entry: CatalogEntry, job: Job | None) -> dict[str, Any] | None:
    """What the served NADs' split-half stability means (`nadcore.nads.identifiability`): from the
    shipped provenance or the final round's summary; None while nothing is served."""
    if entry.status != CATALOG_READY:
        return None
    source = entry.provenance if entry.provenance is not None else (
        (job.summary or {}) if job is not None else {})
    stability = source.get("stability")
    if not stability:
        return None
    dim = math.prod(entry.spec["input_shape"])
    return assess(stability, dim, entry.networks or 0)


def _precision(entry: CatalogEntry, job: Job | None) -> str | None:
    """The precision the served arrays were computed at (resolved: fp32, tf32, bf16)."""
    if entry.provenance is not None:
        return entry.provenance.get("precision")
    return (job.summary or {}).get("precision") if job is not None else None
