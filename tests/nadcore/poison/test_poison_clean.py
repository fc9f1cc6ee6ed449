"""Every poison job has a clean run (issue 17): one model on the unpoisoned data with the same
seed and recipe, planned as the last model position, merged into `clean_accuracy` and the
baseline of the figures; a job stored before clean runs still merges (without a baseline)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.kinds.poison import poison_shards
from nadcore.poison.datasets import limit, load_digits
from nadcore.poison.engine import run_poison, train_classifier
from nadcore.poison.spec import PoisonSpec, clean_position
from nadcore.training.shards import PoisonPartial, run_poison_shard
from worker.kinds.poison import metrics, split_clean


def _spec(**kw: object) -> PoisonSpec:
    base = {"architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"job": "J"},
            "indices": [0], "training": {"epochs": 1}}
    return PoisonSpec.model_validate({**base, **kw})


def test_the_plan_ends_with_the_clean_run() -> None:
    assert clean_position(_spec(indices=[0, 600])) == 2
    assert poison_shards(_spec(indices=[0, 600])) == [(0, 3)]
    assert poison_shards(_spec(indices=[3, 40, 7], shards=2)) == [(0, 2), (2, 4)]
    flip = _spec(mode="flip")
    assert clean_position(flip) == 1 and poison_shards(flip) == [(0, 2)]
    # A stored spec from before reads as it did (no new field): the clean run is planned
    # from the positions alone.
    assert PoisonSpec.model_validate(_spec(indices=[1, 2]).model_dump(mode="json")) == _spec(
        indices=[1, 2])


def test_the_clean_run_is_the_unpoisoned_training_with_position_0s_seeds() -> None:
    data = limit(load_digits(), 120, 60)
    rng = np.random.default_rng(0)
    nads = np.linalg.qr(rng.standard_normal((1024, 12)))[0].T.astype(np.float32)
    spec = _spec(indices=[0, 2], eps=1.0, training={"epochs": 2, "batch_size": 32})
    shard = run_poison_shard(spec, data, nads, 1, 3, progress=lambda d, t: None,
                             should_stop=lambda: False)
    assert shard.train.shape == (2, 2)
    clean = train_classifier(spec, data, data.x_train, index_position=0, device="cpu")
    np.testing.assert_array_equal(shard.test[1], clean.test_accuracy)  # bit for bit
    np.testing.assert_array_equal(shard.train[1], clean.train_accuracy)
    [poisoned] = run_poison(spec, data, nads, positions=range(0, 1), device="cpu")
    [again] = run_poison(spec, data, nads, positions=range(2, 3), device="cpu")
    assert again.info["mode"] == "clean"
    # Same initialization and batches as position 0; only the data differ. (eps = 1 moves
    # every training image by far more than float rounding, so the runs cannot agree.)
    assert not (np.array_equal(poisoned.train_accuracy, again.train_accuracy)
                and np.array_equal(poisoned.test_accuracy, again.test_accuracy))


def _partial(start: int, stop: int, epochs: int = 3) -> PoisonPartial:
    rows = np.arange(start, stop, dtype=np.float64)[:, None] + np.zeros(epochs)
    return PoisonPartial(start, stop, rows + 10, rows + 50, {})


@pytest.mark.parametrize("shards", [[(0, 3)], [(0, 1), (1, 3)]])
def test_the_merge_splits_off_the_clean_run(shards: list[tuple[int, int]]) -> None:
    spec = _spec(indices=[5, 9])
    train, test, clean = split_clean(spec, [_partial(a, b) for a, b in shards][::-1])
    assert train.shape == test.shape == (2, 3)
    assert clean is not None and clean.shape == (3, 2)
    np.testing.assert_array_equal(clean[:, 0], [12.0] * 3)  # position 2: train
    np.testing.assert_array_equal(clean[:, 1], [52.0] * 3)  # and clean test
    entry = metrics(spec, train, test, clean)["clean"]
    assert entry["final_test_accuracy"] == 52.0 and entry["train_accuracy"] == [12.0] * 3


def test_a_job_planned_before_clean_runs_merges_without_a_baseline() -> None:
    spec = _spec(indices=[5, 9])
    train, test, clean = split_clean(spec, [_partial(0, 2)])
    assert clean is None and train.shape == (2, 3)
    assert metrics(spec, train, test, clean)["clean"] is None
    with pytest.raises(ValueError, match="partials cover 1 of 2"):
        split_clean(spec, [_partial(0, 1)])
