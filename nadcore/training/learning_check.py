"""Did the training behind a probe or poison result learn anything? One torch-free rule, used by
the merges of both kinds (worker/kinds/probe.py, worker/kinds/poison.py), which put its verdict
and a hint in the job's summary (shown by `nads status` / `--wait` and the web page).

**Chance, statistically.** A classifier that guesses among K balanced classes is right on each
of n independent test samples with probability p = 1/K, so its accuracy is Binomial(n, p) / n:
mean p, standard deviation sqrt(p (1 - p) / n). An accuracy within Z = 3 standard deviations of
p cannot be told from guessing (a guesser lands outside that band with probability 0.27 %):
for the binary probe (p = 1/2) the band is 50 % +- 150 / sqrt(n) percentage points, +-1.5 at the
paper's 10,000 test samples, +-3.4 at 2,000 (the issue's 48.6-51.1 % at 2,000 lies inside).

**A loss that did not move.** The probe also records the training loss (cross-entropy on 2
logits; mean over the last epoch). Guessing costs ln 2 = 0.693 nats per sample; a calibrated
binary classifier that is right with probability a costs H(a) = -a ln a - (1 - a) ln(1 - a),
and H(0.6) = 0.673 = ln 2 - 0.020. A final training loss above ln 2 - 0.02 therefore means the
network fits its own training set no better than a calibrated 60 % guess: training did not
move off chance. A final loss more than 0.1 above ln 2 means training **diverged** when it
rose since the first epoch, or when the first epoch's mean exceeded EXPLODED = 100 nats (a
per-sample loss of 100 nats needs logits about 100 apart on the wrong side: an explosion, not
an initialization; LeNet and logistic regression start D(v) at 0.69-1.1 nats, and lr 1e6
measured 5.5e6 nats in the first epoch). A loss still falling from an ordinary start did not
diverge: the run is too short. A loss that is NaN or inf diverged (the engines stop such a
training, `nadcore.training.recipe.Diverged`; partials stored before that reach here).

A probe direction **did not learn** when both hold: test accuracy inside the chance band and
training loss within the tolerance of ln 2 (or above it). Test accuracy at chance with a
training loss well below ln 2 is not flagged: the network fitted its training set and did not
generalize, which is what the paper reports for directions an architecture cannot learn. A
direction whose training **diverged** is flagged whatever its test accuracy: the accuracy of
a network whose loss blew up measures the blow-up, not the direction (measured: lr 100,
momentum 0.9, no clipping, logistic regression: 55.3 % on 4,000 test samples, outside the
band, with a training loss of 1842 nats). A NaN accuracy never counts as learned.

A poison model records accuracies only, and the binomial band does not apply to it: a network
stuck at its random initialization is a fixed function of the images that correlates with the
classes by chance (measured: LeNet on 300 digits with lr 1e-9, 21.7 % training accuracy, far
outside the guessing band 10 +- 5.2 %). The poison experiment presupposes a fitted training
set (the paper's recipe fits it to 98-100 %, BENCHMARKS.md), so a poison model **did not
learn** when its accuracy on its own (poisoned) training set stays below halfway between
chance (1/K) and a perfect fit. Its clean test accuracy is not judged: a low one with a fitted
training set is the experiment's finding (the network latched onto the carrier). The clean run
(the same recipe on the unpoisoned training set: the baseline every model is compared with) is
held to the same rule: a baseline that did not fit its training set is no baseline, whatever
the poisoned models did, and it counts among the models that did not (`clean_fitted` false).

The job-level flag `did_not_learn` is set when no direction (no index) learned: then the
result carries no information about the directions. Some directions at chance next to others
well above it are the contrast a probe measures; they are listed, not flagged.

**Severity.** Every verdict says how a reader should take it (`severity`, which the web page
and the CLI show as is rather than guess from the text): `"info"` for a probe whose directions
partly learned (8 of 12 at chance is what a NAD probe is expected to find), `"warning"` when
the result says nothing (no direction or model learned), training diverged, or some poison
models did not fit their training set (the others did: the recipe, not the finding), and
None when everything learned. A job that *failed* is an error; no verdict is one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z = 3.0  # standard deviations of the chance band
LOSS_TOLERANCE = 0.02  # nats: ln 2 - H(0.6), see the module docstring
DIVERGED = 0.1  # nats above ln K: training diverged
EXPLODED = 100.0  # nats, a first epoch's mean loss: an explosion (module docstring)
LISTED = 64  # indices listed in a summary
INFO, WARNING = "info", "warning"  # a verdict's severity (module docstring)


def chance_band(n: int, num_classes: int = 2) -> tuple[float, float]:
    """(chance, margin) in percent: accuracies within chance +- margin on n samples cannot be
    told from guessing among num_classes balanced classes (Z standard deviations)."""
    p = 1.0 / num_classes
    return 100.0 * p, 100.0 * Z * math.sqrt(p * (1.0 - p) / max(1, n))


def near_chance(accuracy: float, n: int, num_classes: int = 2) -> bool:
    """accuracy (percent) on n samples is inside the chance band."""
    chance, margin = chance_band(n, num_classes)
    return abs(accuracy - chance) <= margin


def loss_at_chance(loss: float, num_classes: int = 2) -> bool:
    """A mean cross-entropy that did not go below ln K - LOSS_TOLERANCE (or diverged above)."""
    return not loss < math.log(num_classes) - LOSS_TOLERANCE


def did_not_learn(accuracy: float, n: int, num_classes: int = 2,
                  train_loss: float | None = None) -> bool:
    """The rule of the module docstring for one trained network (a NaN accuracy: did not)."""
    if not math.isfinite(accuracy):
        return True
    return near_chance(accuracy, n, num_classes) and (
        train_loss is None or loss_at_chance(train_loss, num_classes))


def diverged(train_loss: float, first_loss: float, num_classes: int = 2) -> bool:
    """The final training loss is NaN or inf, or more than DIVERGED above ln K after rising
    since the first epoch or after a first epoch above EXPLODED (module docstring)."""
    if not math.isfinite(train_loss):
        return True
    return train_loss > math.log(num_classes) + DIVERGED and (
        train_loss > first_loss or not first_loss <= EXPLODED)


def _verdict(failed: list[int], n: int, rule: str, hint: str, outcome: str,
             expected: bool = False) -> dict[str, Any]:
    """`expected`: some of `failed` at chance is a finding, not a problem (unless none
    learned). `outcome`: what became of the failed ones, as the CLI and the page say it ("3 of
    12 at chance", "1 of 5 did not fit their training set")."""
    nothing = bool(n) and len(failed) == n
    severity = None if not failed else INFO if expected and not nothing else WARNING
    return {"did_not_learn": nothing, "not_learned": len(failed), "of": n,
            "indices": failed[:LISTED], "rule": rule, "hint": hint if failed else None,
            "severity": severity, "outcome": outcome}


def probe_learning(test_accuracies: Sequence[float], train_losses: Sequence[float],
                   num_test: int, num_train: int, epochs: int, lr: float,
                   first_losses: Sequence[float] | None = None) -> dict[str, Any]:
    """The summary's `learning` of a probe job: which directions did not learn, and what to
    change. `train_losses` are the final epoch's, `first_losses` the first epoch's (`diverged`:
    flagged whatever the accuracy, lower lr). `num_train`, `epochs` and `lr` are
    the spec's (the hint compares them with the paper's recipe: below it, more of them; at it,
    the chance is the architecture's)."""
    first = train_losses if first_losses is None else first_losses
    blown = [i for i, (loss, start) in enumerate(zip(train_losses, first, strict=True))
             if diverged(float(loss), float(start))]
    failed = sorted(set(blown).union(
        i for i, (a, loss) in enumerate(zip(test_accuracies, train_losses, strict=True))
        if did_not_learn(float(a), num_test, 2, float(loss))))
    chance, margin = chance_band(num_test)
    rule = (f"test accuracy within {chance:.0f} +- {margin:.1f} % ({Z:.0f} standard deviations "
            f"of guessing on {num_test} test samples) and final training loss above "
            f"ln 2 - {LOSS_TOLERANCE} nats; or, whatever the accuracy, training diverged: "
            f"final training loss NaN, inf, or above ln 2 + {DIVERGED} nats and risen since "
            f"the first epoch or after a first epoch above {EXPLODED:g} nats")
    if blown:
        hint = (f"training diverged on {len(blown)} direction(s) (final training loss NaN, "
                "inf or far above ln 2: their accuracies measure the blow-up, not the "
                f"direction): lower training.lr (now {lr:g})")
    elif 0 < len(failed) < len(test_accuracies):
        hint = (f"{len(test_accuracies) - len(failed)} of {len(test_accuracies)} learned; the "
                "others are at chance with this recipe (the architecture's directional bias, "
                "or too few samples for them)")
    elif num_train < 10_000 or epochs < 20:
        hint = (f"{num_train} samples x {epochs} epochs is below the paper's 10,000 x 20: more "
                "data.num_train or training.epochs, or \"preset\": \"quick\" or \"paper\"")
    else:
        hint = ("at the paper's recipe the architecture does not learn along these directions; "
                "probe a low frequency (fourier (0, 1), sin) as a control")
    return _verdict(failed, len(test_accuracies), rule, hint,
                    "at chance or diverged" if blown else "at chance", expected=not blown)


def fitted_threshold(num_classes: int) -> float:
    """Training accuracy (percent) a poison model must reach: halfway from chance to 100 %."""
    return (100.0 + 100.0 / num_classes) / 2.0


def poison_learning(train_accuracies: Sequence[float], num_classes: int, epochs: int,
                    clean_train_accuracy: float | None = None) -> dict[str, Any]:
    """The summary's `learning` of a poison job: which models did not fit their own (poisoned)
    training set, and whether the clean run (`clean_train_accuracy`, None for a job without
    one) fitted its clean one (the module docstring)."""
    threshold = fitted_threshold(num_classes)
    failed = [i for i, a in enumerate(train_accuracies) if not float(a) >= threshold]
    rule = (f"accuracy on the poisoned training set below {threshold:.0f} % (halfway between "
            f"chance, {100 / num_classes:.0f} % for {num_classes} classes, and a perfect fit)")
    if 0 < len(failed) < len(train_accuracies):
        hint = (f"{len(failed)} model(s) did not fit their training set in {epochs} epochs "
                "while the others did: a smaller training.lr, or more training.epochs")
    else:
        hint = (f"the network did not fit its training set in {epochs} epochs: more "
                "training.epochs, a smaller training.lr if it diverged, or \"preset\": "
                "\"paper\"")
    outcome = "did not fit their training set"
    if clean_train_accuracy is None:
        return _verdict(failed, len(train_accuracies), rule, hint, outcome)
    clean_fitted = float(clean_train_accuracy) >= threshold
    if not clean_fitted:
        then = hint if failed else "more training.epochs or a smaller training.lr"
        hint = (f"the clean run fitted {float(clean_train_accuracy):.1f} % of its training set, "
                f"below {threshold:.0f} %: clean_accuracy is no baseline to compare the "
                f"poisoned models with; {then}")
    # the clean run counts as one more model: what did not fit, of how many; but the job says
    # nothing when no poisoned model fitted, however well the clean run did
    verdict = _verdict(failed + ([] if clean_fitted else [len(train_accuracies)]),
                       len(train_accuracies) + 1, rule, hint, outcome)
    nothing = bool(train_accuracies) and len(failed) == len(train_accuracies)
    return {**verdict, "did_not_learn": nothing, "indices": failed[:LISTED],
            "clean_fitted": clean_fitted}
