"""Results that say when they mean nothing (issue 17): the rule of nadcore.training.learning_check
on real training runs and on its boundaries, the presets of the probe and poison specs, and the
progress line of `nads ... --wait`."""

from __future__ import annotations

import io
import math

import pytest
import torch

from nadcore.poison.spec import PoisonSpec, PoisonTraining
from nadcore.probe.engine import make_directions, run_probe
from nadcore.probe.spec import PRESETS, ProbeSpec, TrainingSettings
from nadcore.training.learning_check import (
    LOSS_TOLERANCE,
    chance_band,
    did_not_learn,
    near_chance,
    poison_learning,
    probe_learning,
)
from nads.progress import ProgressDisplay, bar_line
from nads.summary_text import learning_severity as severity
from nads.summary_text import not_learned as warning
from nads.terminal import EscapingStream


def test_chance_band_is_three_binomial_standard_deviations() -> None:
    assert chance_band(10_000) == pytest.approx((50.0, 1.5))
    assert chance_band(2_000)[1] == pytest.approx(150 / math.sqrt(2000))  # 3.35 points
    assert chance_band(1437, 10) == pytest.approx((10.0, 300 * math.sqrt(0.09 / 1437)))
    # the 48.6-51.1 % at 2,000 test samples is inside; 53.4 % is outside
    assert near_chance(48.6, 2000) and near_chance(51.1, 2000)
    assert not near_chance(53.4, 2000) and not near_chance(46.6, 2000)


def test_loss_tolerance_is_a_calibrated_sixty_percent_guess() -> None:
    entropy = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert math.log(2) - entropy == pytest.approx(LOSS_TOLERANCE, abs=5e-4)
    assert did_not_learn(50.5, 2000, 2, train_loss=0.690)  # stuck at ln 2
    assert did_not_learn(50.5, 2000, 2, train_loss=3.0)  # diverged
    assert not did_not_learn(50.5, 2000, 2, train_loss=0.40)  # fitted, did not generalize
    assert not did_not_learn(66.0, 2000, 2, train_loss=0.690)  # learned on the test set


def test_a_probe_that_cannot_learn_is_flagged_and_one_that_learns_is_not() -> None:
    """Real training: the issue's LeNet setup (2,000 samples, 3 epochs, train loss stuck at
    0.69) and logistic regression on 8 x 8 inputs, which learns D(v) in 3 epochs."""
    torch.set_num_threads(1)
    stuck = ProbeSpec.model_validate({
        "architecture": "lenet", "input_shape": [1, 32, 32],
        "directions": {"kind": "fourier", "frequencies": [[0, 1]], "phase": "sin"},
        "data": {"num_train": 2000, "num_test": 2000}, "training": {"epochs": 3}})
    learns = ProbeSpec.model_validate({
        "architecture": "logreg", "input_shape": [1, 8, 8],
        "directions": {"kind": "random", "count": 3, "seed": 1},
        "data": {"num_train": 1000, "num_test": 500}, "training": {"epochs": 3}})
    verdicts = []
    for spec in (stuck, learns):
        res = run_probe(spec, make_directions(spec))
        verdicts.append(probe_learning(res.accuracies.tolist(), res.curves[:, -1, 0].tolist(),
                                       spec.data.num_test, spec.data.num_train,
                                       spec.training.epochs, spec.training.lr))
    flagged, fine = verdicts
    assert flagged["did_not_learn"] and flagged["indices"] == [0]
    assert flagged["hint"] == ("2000 samples x 3 epochs is below the paper's 10,000 x 20: more "
                               "data.num_train or training.epochs, or \"preset\": \"quick\" or "
                               "\"paper\"")
    assert warning({"learning": flagged}).startswith("nothing learned: ")
    assert not fine["did_not_learn"] and fine["not_learned"] == 0 and fine["hint"] is None
    assert warning({"learning": fine}) is None and warning({}) is None  # an old summary


def test_probe_hints_follow_the_diagnosis() -> None:
    partial = probe_learning([50.2, 80.0], [0.692, 0.40], 10_000, 10_000, 20, 0.5)
    assert not partial["did_not_learn"] and partial["indices"] == [0]
    assert partial["hint"].startswith("1 of 2 learned")
    paper = probe_learning([50.2, 49.9], [0.692, 0.693], 10_000, 10_000, 20, 0.5)
    assert paper["did_not_learn"] and "does not learn along these directions" in paper["hint"]
    # a loss that rose above ln 2 diverged; one still falling from a large start is too short
    diverged = probe_learning([50.2], [5.0], 10_000, 10_000, 20, 0.5, first_losses=[0.9])
    assert diverged["hint"].startswith("training diverged") and "(now 0.5)" in diverged["hint"]
    falling = probe_learning([50.2], [0.80], 256, 256, 2, 0.5, first_losses=[1.08])
    assert falling["did_not_learn"] and "below the paper's 10,000 x 20" in falling["hint"]


def test_severity_says_a_partial_probe_is_a_finding_and_a_void_result_a_warning() -> None:
    """A NAD probe's "8 of 12 at chance" is what it is expected to find (info); nothing
    learned, a diverged training or a poison model that did not fit is a warning; all
    learned, no severity. The page and the CLI show the verdict's severity, not a guess."""
    partial = probe_learning([50.2] * 8 + [80.0] * 4, [0.692] * 8 + [0.40] * 4, 10_000, 10_000,
                             20, 0.5)
    assert partial["not_learned"] == 8 and partial["severity"] == "info"
    assert severity({"learning": partial}) == "info"
    nothing = probe_learning([50.2, 49.9], [0.692, 0.693], 10_000, 10_000, 20, 0.5)
    assert nothing["severity"] == "warning"
    diverged = probe_learning([50.2, 80.0], [5.0, 0.4], 10_000, 10_000, 20, 0.5,
                              first_losses=[0.9, 0.9])
    assert diverged["severity"] == "warning"
    assert warning({"learning": diverged}).startswith("1 of 2 at chance or diverged: ")
    assert warning({"learning": partial}).startswith("8 of 12 at chance: ")
    assert poison_learning([99.0, 30.0], 10, 8)["severity"] == "warning"
    fine = probe_learning([80.0], [0.40], 10_000, 10_000, 20, 0.5)
    assert fine["severity"] is None and severity({"learning": fine}) is None
    old = {k: v for k, v in nothing.items() if k != "severity"}  # a summary from before
    assert severity({"learning": old}) == "warning" and severity({}) is None


def test_poison_flags_a_model_that_did_not_fit_its_training_set() -> None:
    # digits, 10 classes: a fit is at least 55 % (halfway from chance to 100 %); LeNet at its
    # random initialization measured 21.7 %, above the guessing band, and is flagged
    stuck = poison_learning([21.7], 10, 1)
    assert stuck["did_not_learn"] and "training.epochs" in stuck["hint"]
    # a model that fits its poisoned training set but fails the clean test is the finding
    assert not poison_learning([99.0, 98.5], 10, 8)["did_not_learn"]
    partial = poison_learning([99.0, 30.0], 10, 8)
    assert not partial["did_not_learn"] and partial["indices"] == [1]


def test_poison_flags_a_clean_baseline_that_did_not_fit() -> None:
    """The clean run is the baseline of every poisoned model: one that did not fit its training
    set (lr too small for the clean data, say) makes `clean_accuracy` meaningless even where
    every poisoned model fitted, and the verdict says so."""
    unfit = poison_learning([99.0, 98.5], 10, 8, clean_train_accuracy=30.0)
    assert unfit["severity"] == "warning" and unfit["clean_fitted"] is False
    assert unfit["not_learned"] == 1 and unfit["of"] == 3 and unfit["indices"] == []
    assert "clean run fitted 30.0 %" in unfit["hint"] and not unfit["did_not_learn"]
    assert warning({"learning": unfit}).startswith(
        "1 of 3 did not fit their training set: the clean run")
    fitted = poison_learning([99.0, 98.5], 10, 8, clean_train_accuracy=99.0)
    assert fitted["severity"] is None and fitted["clean_fitted"] is True
    # no poisoned model fitted: the result says nothing, however well the clean run fitted
    stuck = poison_learning([21.7, 30.0], 10, 8, clean_train_accuracy=99.0)
    assert stuck["did_not_learn"] and stuck["clean_fitted"] and stuck["not_learned"] == 2
    both = poison_learning([21.7], 10, 8, clean_train_accuracy=20.0)
    assert both["did_not_learn"] and both["indices"] == [0] and "training.epochs" in both["hint"]


PROBE = {"architecture": "lenet", "directions": {"kind": "random", "count": 1}}


def test_presets_fill_only_what_is_not_given_and_are_stored_resolved() -> None:
    quick = ProbeSpec.model_validate({**PROBE, "preset": "quick", "training": {"lr": 0.1}})
    assert quick.training.lr == 0.1  # explicit wins
    assert quick.training.epochs == PRESETS["quick"]["training"]["epochs"]
    assert quick.data.num_train == PRESETS["quick"]["data"]["num_train"]
    stored = quick.model_dump(mode="json")
    assert stored["preset"] == "quick" and stored["data"]["num_test"] == 2000
    assert ProbeSpec.model_validate(stored) == quick  # reproducible from the stored spec
    # a model built in Python: only its explicitly set fields win
    built = ProbeSpec(**PROBE, preset="quick", training=TrainingSettings(lr=0.2))
    assert built.training.lr == 0.2 and built.training.epochs == 5
    # the paper's preset is the defaults; no preset (a spec stored before presets) too
    assert ProbeSpec.model_validate({**PROBE, "preset": "paper"}).training == TrainingSettings()
    old = ProbeSpec.model_validate(PROBE)
    assert old.preset is None and old.training == TrainingSettings()
    with pytest.raises(ValueError, match="preset"):
        ProbeSpec.model_validate({**PROBE, "preset": "fast"})
    poison = {"architecture": "lenet", "dataset": {"name": "digits"},
              "nads": {"catalog": "lenet"}, "indices": [0]}
    p = PoisonSpec.model_validate({**poison, "preset": "quick", "training": {"momentum": 0.5}})
    assert p.training.epochs == 8 and p.training.momentum == 0.5 and p.training.lr == 0.21
    assert PoisonSpec.model_validate({**poison, "preset": "paper"}).training == PoisonTraining()
    assert PoisonSpec.model_validate(poison).training == PoisonTraining()


def test_progress_line_on_a_terminal_is_redrawn_in_place() -> None:
    assert bar_line("ab12cd34", "running", 0.4, "shard 1/2", width=10) == (
        "ab12cd34 [####......]  40%  running  shard 1/2")
    assert bar_line("x", "queued", -1.0, "", width=4) == "x [....]   0%  queued"
    assert bar_line("x", "succeeded", 1.5, "", width=4) == "x [####] 100%  succeeded"
    out = io.StringIO()
    shown = ProgressDisplay(out, "job", tty=True)
    shown.update("running", 0.5, "a long message")
    shown.update("running", 0.5, "short")
    shown.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    first, second = text.rstrip("\n").split("\r")[1:]
    assert len(second) == len(first)  # the shorter line blanks what the longer one left
    assert second.rstrip().endswith("running  short")


def test_progress_redraw_is_the_only_carriage_return_a_terminal_gets() -> None:
    """Through the CLI's escaping stream a message's own carriage return (which would let a
    service overwrite the line: `ok\\rFAILED`) is shown escaped; the redraw's is not."""
    out = io.StringIO()
    shown = ProgressDisplay(EscapingStream(out), "job", tty=True)
    shown.update("running", 0.5, "ok\rFAILED")
    shown.update("running", 0.6, "ok")
    shown.close()
    assert out.getvalue().count("\r") == 2  # one per redraw
    assert "ok\\x0dFAILED" in out.getvalue() and out.getvalue().startswith("\rjob [")


def test_progress_without_a_terminal_prints_only_changes() -> None:
    out = io.StringIO()
    shown = ProgressDisplay(out, "job", tty=False)
    polls = [("queued", 0.0)] * 5 + [("running", 0.004)] * 3 + [("running", 0.5)] * 4 + [
        ("running", 0.509), ("succeeded", 1.0)]
    for status, fraction in polls:
        shown.update(status, fraction, "")
    shown.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[-1] for line in lines] == ["queued", "running", "running", "succeeded"]
    assert "\r" not in out.getvalue()
