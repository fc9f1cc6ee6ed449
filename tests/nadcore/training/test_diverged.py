"""Trainings that diverge say so (no number that means nothing reported as a result).

A training whose loss becomes NaN or inf has NaN outputs, and argmax of NaN picks class 0 for
every sample: measured, a probe direction then read exactly 50.0 % (its balanced test set) and
a poison model on digits 4.0 % clean-test accuracy (the share of class 0 among the first 100
test digits), its clean baseline too, both stored as results. The engines now stop such a
training with `Diverged`, a ValueError whose message starts with training.lr (the job fails
with it). A training whose loss stays finite but far above ln 2 is flagged by the learning
check as diverged whatever its test accuracy (measured: logistic regression, lr 100, momentum
0.9, no clipping: training loss 1337 -> 1842 nats, test accuracy 55.3 % on 4,000 samples,
outside the chance band, and no warning at all)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nadcore.poison.datasets import limit, load_digits
from nadcore.poison.engine import run_poison
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.engine import make_directions, run_probe
from nadcore.probe.spec import ProbeSpec
from nadcore.training.learning_check import probe_learning
from nadcore.training.recipe import Diverged


def _probe(training: dict, num_test: int = 200) -> ProbeSpec:
    return ProbeSpec.model_validate({
        "architecture": "logreg", "input_shape": [1, 8, 8],
        "directions": {"kind": "fourier", "frequencies": [[0, 1], [1, 1]]},
        "data": {"num_train": 200, "num_test": num_test},
        "training": {"epochs": 3, "batch_size": 32, **training}})


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_a_probe_whose_loss_turns_nan_stops_and_names_the_learning_rate(strategy: str) -> None:
    """lr 1e5 with weight decay 100 and no clipping: NaN in the first epoch (measured); both
    directions read 50.0 % before."""
    torch.set_num_threads(1)
    spec = _probe({"lr": 1e5, "weight_decay": 100.0, "grad_clip": None})
    with pytest.raises(Diverged, match=r"^training\.lr: direction 0 diverged: its training "
                                       r"loss is nan in epoch 1 of 3") as caught:
        run_probe(spec, make_directions(spec), strategy=strategy)
    message = str(caught.value)
    assert "lr 100000, momentum 0, weight_decay 100, no grad_clip" in message
    assert "lower training.lr, training.weight_decay or set training.grad_clip" in message


def test_a_probe_with_finite_training_loss_but_nan_test_outputs_stops() -> None:
    """lr 1e4, momentum 0.9, weight decay 100: the first epoch's training loss is finite
    (1.5e34) while the model's outputs on the test set are already NaN (measured)."""
    torch.set_num_threads(1)
    spec = _probe({"lr": 1e4, "momentum": 0.9, "weight_decay": 100.0, "grad_clip": None})
    with pytest.raises(Diverged, match=r"^training\.lr: direction 0 diverged: its test loss is "
                                       r"nan in epoch 1 of 3"):
        run_probe(spec, make_directions(spec), strategy="loop")


def test_a_poison_model_whose_loss_turns_nan_stops_and_names_the_model() -> None:
    """Before: 11.5 % train, 4.0 % clean test for the poisoned model and its clean baseline."""
    torch.set_num_threads(1)
    data = limit(load_digits(), 200, 100)
    nads = np.linalg.qr(np.random.default_rng(0).standard_normal((1024, 40)))[0].T
    spec = PoisonSpec.model_validate({
        "architecture": "logreg", "dataset": {"name": "digits"}, "nads": {"job": "J"},
        "indices": [3], "training": {"epochs": 1, "batch_size": 32, "lr": 1e5,
                                     "weight_decay": 100.0, "grad_clip": None}})
    with pytest.raises(Diverged, match=r"^training\.lr: the model poisoned at index 3 "
                                       r"diverged: its training loss is nan in epoch 1 of 1"):
        run_poison(spec, data, nads, positions=range(0, 1), device="cpu")
    with pytest.raises(Diverged, match=r"^training\.lr: the clean run diverged"):
        run_poison(spec, data, nads, positions=range(1, 2), device="cpu")


def test_a_probe_whose_loss_blows_up_finitely_is_flagged_whatever_its_accuracy() -> None:
    """Real training: lr 100, momentum 0.9, no clipping, 4,000 test samples (chance band
    50 +- 2.4 %): test accuracy above the band, training loss hundreds of nats."""
    torch.set_num_threads(1)
    spec = _probe({"lr": 100.0, "momentum": 0.9, "grad_clip": None, "epochs": 4}, 4000)
    res = run_probe(spec, make_directions(spec))
    assert (res.accuracies > 53.0).all() and (res.curves[:, -1, 0] > 100).all()
    verdict = probe_learning(res.accuracies.tolist(), res.curves[:, -1, 0].tolist(),
                             spec.data.num_test, spec.data.num_train, spec.training.epochs,
                             spec.training.lr, res.curves[:, 0, 0].tolist())
    assert verdict["indices"] == [0, 1] and verdict["severity"] == "warning"
    assert verdict["hint"].startswith("training diverged on 2 direction(s)")
    assert "lower training.lr (now 100)" in verdict["hint"]


def test_divergence_rules_of_the_learning_check() -> None:
    # a loss that exploded in the first epoch and is still far above ln 2 (lr 1e6, measured:
    # 5.5e6 -> 2.7e6 nats, 55.5 % on 200 test samples): diverged, not "too short"
    exploded = probe_learning([55.5], [2.66e6], 200, 200, 3, 1e6, first_losses=[5.5e6])
    assert exploded["hint"].startswith("training diverged") and exploded["severity"] == "warning"
    # a non-finite loss (or accuracy) is never a finding ("info") nor learned
    nan = probe_learning([50.0, 80.0], [math.nan, 0.4], 10_000, 10_000, 20, 0.5)
    assert nan["indices"] == [0] and nan["severity"] == "warning"
    assert nan["hint"].startswith("training diverged on 1 direction(s)")
    assert probe_learning([math.nan], [0.4], 10_000, 10_000, 20, 0.5)["did_not_learn"]
    # unchanged: a loss still falling from an ordinary start is too short, not diverged
    falling = probe_learning([50.2], [0.80], 256, 256, 2, 0.5, first_losses=[1.08])
    assert "below the paper's 10,000 x 20" in falling["hint"]
