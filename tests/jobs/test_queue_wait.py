"""Queue position and wait (jobs/queue_wait.py): the users' shards played forward on the
connected processes in the dispatcher's order (jobs/dispatch.py next_user), running shards
keeping their process for what their progress leaves, a cost unknown before it runs making
the times behind it unknown."""

from __future__ import annotations

from datetime import timedelta

from jobs.fleet import CALIBRATION
from jobs.queue_wait import QueueSpot, simulate
from store.models import QUEUED, RUNNING, Job, Shard, Worker, utcnow

CATALOG = 99


def _worker(name: str, processes: int, rate: float = 1e9) -> Worker:
    return Worker(name=name, hostname="h", pid=1, processes=processes,
                  queues="catalog,cpu,gpu", gpus=0, device="Test CPU",
                  throughput={CALIBRATION: rate}, last_seen=utcnow())


def _job(pk: int, user: int, gflop_per_shard: float | None, shards: int,
         status: str = QUEUED) -> Job:
    """A NAD job of `shards` one-network shards, each `gflop_per_shard` GFLOP (None:
    unknown cost), all held."""
    flops = None if gflop_per_shard is None else gflop_per_shard * 1e9 * shards
    job = Job(pk=pk, id=f"job{pk}", user_id=user, kind="nads", status=status,
              mode="sharded", spec={}, estimate={"flops": flops})
    job.shards = [Shard(id=pk * 100 + i, index=i, start=i, stop=i + 1, status=QUEUED,
                        fraction=0.0, task_id=None) for i in range(shards)]
    return job


def _run(shard: Shard, worker: str, fraction: float, ran_s: float) -> None:
    shard.status, shard.worker, shard.fraction = RUNNING, worker, fraction
    shard.task_id, shard.started_at = "t", utcnow() - timedelta(seconds=ran_s)


def test_waiting_jobs_take_their_turn_in_the_dispatchers_order() -> None:
    """2 processes at 1 GFLOP/s. Alice's 4-shard job and her 1-shard job, then Bob's: at
    0 s Alice's first shard and Bob's (the user with fewer in flight) start; Alice's second
    job goes after her first job's shards (the oldest job first)."""
    first, second, bobs = _job(1, 1, 2.0, 4), _job(2, 1, 1.0, 1), _job(3, 2, 1.0, 1)
    spots = simulate([first, second, bobs], [_worker("w", 2)], CATALOG)
    assert spots[1] == QueueSpot(position=1, shards_ahead=0, wait_s=0.0, done_s=5.0)
    assert spots[3] == QueueSpot(position=2, shards_ahead=1, wait_s=0.0, done_s=1.0)
    # Alice's 4 shards: [0, 2] and [1, 3], [2, 4] and [3, 5] on the two processes
    assert spots[2] == QueueSpot(position=3, shards_ahead=5, wait_s=4.0, done_s=5.0)


def test_running_shards_hold_their_process_for_what_their_progress_leaves() -> None:
    """One process: Alice's shard of 4 s is half done, so Bob's job waits 2 s and ends at 3 s;
    Alice's job runs (position 0) and ends after her held shard too, at 7 s."""
    alices, bobs = _job(1, 1, 4.0, 2, status=RUNNING), _job(2, 2, 1.0, 1)
    _run(alices.shards[0], "w", 0.5, ran_s=2.0)
    spots = simulate([alices, bobs], [_worker("w", 1)], CATALOG)
    assert spots[2] == QueueSpot(position=1, shards_ahead=1, wait_s=2.0, done_s=3.0)
    assert spots[1] == QueueSpot(position=0, shards_ahead=1, wait_s=0.0, done_s=7.0)


def test_a_catalog_shard_holds_its_process_but_the_catalog_is_not_listed() -> None:
    catalog, bobs = _job(1, CATALOG, 3.0, 1, status=RUNNING), _job(2, 2, 1.0, 1)
    _run(catalog.shards[0], "w", 0.0, ran_s=0.0)
    spots = simulate([catalog, bobs], [_worker("w", 1)], CATALOG)
    assert list(spots) == [2]
    assert spots[2] == QueueSpot(position=1, shards_ahead=1, wait_s=3.0, done_s=4.0)


def test_sent_shards_go_first_and_a_shard_on_a_worker_gone_runs_again() -> None:
    """Bob's shard is at the broker already: it goes before Alice's older held job. Carol's
    shard ran on a worker that is gone: it is held again."""
    alices, bobs, carols = _job(1, 1, 1.0, 1), _job(2, 2, 1.0, 1), _job(3, 3, 1.0, 1)
    bobs.shards[0].task_id, bobs.shards[0].updated_at = "sent", utcnow()
    _run(carols.shards[0], "gone", 0.9, ran_s=5.0)
    spots = simulate([alices, bobs, carols], [_worker("w", 1)], CATALOG)
    assert spots[2] == QueueSpot(position=0, shards_ahead=0, wait_s=0.0, done_s=1.0)
    assert spots[1] == QueueSpot(position=1, shards_ahead=1, wait_s=1.0, done_s=2.0)
    assert spots[3].done_s == 3.0 and spots[3].shards_ahead == 2


def test_a_cost_unknown_ahead_makes_the_wait_unknown_but_not_the_position() -> None:
    unknown, bobs = _job(1, 1, None, 1), _job(2, 2, 1.0, 1)
    spots = simulate([unknown, bobs], [_worker("w", 1)], CATALOG)
    assert spots[1] == QueueSpot(position=1, shards_ahead=0, wait_s=0.0, done_s=None)
    assert spots[2] == QueueSpot(position=2, shards_ahead=1, wait_s=None, done_s=None)
    nobody = simulate([bobs], [], CATALOG)
    assert nobody[2] == QueueSpot(position=0, shards_ahead=0, wait_s=None, done_s=None)
