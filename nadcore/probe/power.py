"""Can a probe of this size separate a learnable direction from chance? Torch-free; the service
answers before a probe is queued (jobs/kinds/probe.py) and refuses one that cannot, unless the
user accepts it (`accept_underpowered=true`).

Two sizes decide it.

**The test set** (num_test = n). The learning check (`nadcore.training.learning_check`) calls a
direction at chance when its accuracy lies within 50 +- Z 50 / sqrt(n) % (Z = 3). A direction
whose true accuracy is a is seen outside that band with probability 1 - beta when
(a - 1/2) sqrt(n) >= Z / 2 + z_beta sqrt(a (1 - a)) (normal approximation of the binomial):
`resolvable(n)` is the smallest such a at power 80 % (z = 0.8416), `num_test_for(a)` the
smallest such n. At 2,000 test samples: 54.3 %; at 10,000: 51.9 %; at 256: 61.9 %.

**The training budget** (num_train x epochs sample passes): what accuracy a learnable direction
reaches at all. Measured, not derived (BENCHMARKS.md, "Presets and the learning check"): LeNet
on 1x32x32 inputs, the sine (0, 1), the direction the paper's LeNet learns best, at sigma 3,
epsilon 1, batch 128, lr 0.5: 51.2 % after 6,000 sample passes (2,000 x 3), 66.1 % after 50,000
(`quick`), 77.4 % after 100,000, 80.6 % after 200,000 (the paper's recipe). `reference(p)`
interpolates that curve in log p (flat beyond its ends). It is one architecture's curve on one
input size, a yardstick rather than a prediction: another architecture or input size learns
faster or slower (logreg reaches 99.7 % after 50,000 passes of 10,000 samples, 55 % after
40,000 of 2,000), which is why a user may accept a run the yardstick calls underpowered.

A probe **can separate** when reference(passes) >= resolvable(num_test): a direction learnt as
well as the yardstick's would be told from chance by this test set. The yardstick's problem is
a signal of epsilon / sigma = 1/3 among D = 1,024 input dimensions; a probe with a stronger
signal or fewer dimensions is assumed no harder, so the yardstick only bounds it from below:
when the yardstick says "cannot", such a probe is reported as unknown (`can_separate` None)
and not refused. Likewise a weaker signal (epsilon / sigma below 1/3) or a larger input
(more than 1,024 values: more dimensions of noise to learn past) is no easier, so the
yardstick bounds it from above: when the yardstick says "can", such a probe is unknown too
(epsilon 1e-12 was reported as able to separate at the paper's sizes, where no network can
learn anything: measured, logistic regression at 47-49 %).
"""

from __future__ import annotations

import math
from typing import Any

from nadcore.training.learning_check import Z

POWER = 0.8
Z_POWER = 0.8416  # the standard normal's 80 % quantile
# (sample passes, test accuracy %): LeNet, 1x32x32, sine (0, 1); BENCHMARKS.md
MEASURED = ((6_000, 51.2), (50_000, 66.1), (100_000, 77.4), (200_000, 80.6))
MAX_TEST = 1_000_000  # DataSettings' bound on num_test


def resolvable(num_test: int) -> float:
    """The smallest accuracy (%) seen outside the chance band of `num_test` samples with
    probability POWER."""
    a = 0.5 + (Z / 2 + Z_POWER / 2) / math.sqrt(num_test)  # a start above the answer
    for _ in range(50):  # fixed point of a = 1/2 + (Z/2 + z sqrt(a (1 - a))) / sqrt(n)
        a = 0.5 + (Z / 2 + Z_POWER * math.sqrt(a * (1 - a))) / math.sqrt(num_test)
    return 100.0 * min(a, 1.0)


def num_test_for(accuracy: float) -> int | None:
    """The smallest num_test that resolves `accuracy` (%); None when none up to MAX_TEST."""
    a = accuracy / 100.0
    if a <= 0.5:
        return None
    n = math.ceil(((Z / 2 + Z_POWER * math.sqrt(a * (1 - a))) / (a - 0.5)) ** 2)
    return n if n <= MAX_TEST else None


def reference(passes: float) -> float:
    """The yardstick's accuracy (%) after `passes` sample passes (module docstring)."""
    (p0, a0), (p1, a1) = MEASURED[0], MEASURED[-1]
    if passes <= p0:
        return a0
    if passes >= p1:
        return a1
    for (lo, alo), (hi, ahi) in zip(MEASURED, MEASURED[1:], strict=False):
        if passes <= hi:
            t = math.log(passes / lo) / math.log(hi / lo)
            return alo + t * (ahi - alo)
    return a1


def passes_for(accuracy: float) -> int | None:
    """The fewest sample passes at which the yardstick reaches `accuracy` (%); None beyond
    its measured range."""
    if accuracy <= MEASURED[0][1]:
        return MEASURED[0][0]
    for (lo, alo), (hi, ahi) in zip(MEASURED, MEASURED[1:], strict=False):
        if accuracy <= ahi:
            t = (accuracy - alo) / (ahi - alo)
            return math.ceil(lo * (hi / lo) ** t)
    return None


YARDSTICK_SNR, YARDSTICK_DIM = 1 / 3, 1024  # epsilon / sigma and D of the measurements


def assess(num_train: int, epochs: int, num_test: int, snr: float = YARDSTICK_SNR,
           dim: int = YARDSTICK_DIM) -> dict[str, Any]:
    """The estimate's `power`: what the test set resolves, what the yardstick reaches at this
    training budget, whether that separates (None: not known, for a problem easier than the
    yardstick's: signal epsilon / sigma = `snr` above 1/3, or `dim` below 1,024 inputs, where
    it says "cannot"; or a harder one, `snr` below 1/3 or `dim` above 1,024, where it says
    "can"), and the smallest sizes that would."""
    passes = num_train * epochs
    needed, reached = resolvable(num_test), reference(passes)
    separates: bool | None = reached >= needed
    if not separates and (snr > YARDSTICK_SNR * (1 + 1e-9) or dim < YARDSTICK_DIM):
        separates = None
    weaker = separates and (snr < YARDSTICK_SNR * (1 - 1e-9) or dim > YARDSTICK_DIM)
    if weaker:
        separates = None
    power = {"resolvable_accuracy": round(needed, 2), "reference_accuracy": round(reached, 2),
             "sample_passes": passes, "can_separate": separates,
             "basis": (f"test set: {num_test} samples see accuracies from {needed:.1f} % "
                       f"outside the chance band ({Z:.0f} sigma) with {POWER:.0%} power; "
                       f"training: {passes:,} sample passes (num_train x epochs), where the "
                       f"yardstick (LeNet 1x32x32, sine (0, 1), BENCHMARKS.md) reaches "
                       f"{reached:.1f} %")}
    if weaker:
        power["basis"] += (f"; this probe's signal (epsilon / sigma = {snr:.3g}, {dim:,} "
                           "input values) is weaker or its input larger than the yardstick's "
                           "(1/3, 1,024), which only bounds it from above: not known")
    elif separates is None:
        power["basis"] += ("; this probe's signal is stronger (epsilon / sigma) or its input "
                           "smaller than the yardstick's, which only bounds it from below: not "
                           "known")
    if not separates:
        # a larger test set helps only where the yardstick was measured to learn at all
        power["smallest_num_test"] = (num_test_for(reached) if passes >= MEASURED[0][0]
                                      else None)
        power["smallest_sample_passes"] = passes_for(needed)
    return power


def refusal(power: dict[str, Any], num_test: int) -> tuple[str, str]:
    """(field, reason) of a probe that cannot separate: what to change, and the flag."""
    ways = []
    if power.get("smallest_sample_passes"):
        ways.append(f"data.num_train x training.epochs >= {power['smallest_sample_passes']:,} "
                    f"(now {power['sample_passes']:,})")
    if power.get("smallest_num_test"):
        ways.append(f"data.num_test >= {power['smallest_num_test']:,} (now {num_test:,})")
    field = "data.num_test" if not power.get("smallest_sample_passes") else "data.num_train"
    change = "; or ".join(ways) if ways else "more data.num_train, training.epochs and " \
        "data.num_test"
    return field, (f"this probe cannot separate a learnable direction from chance: "
                   f"{power['basis']}, below {power['resolvable_accuracy']:.1f} %. The "
                   f"smallest sizes that can: {change} (\"preset\": \"quick\" or \"paper\" "
                   "can); or submit with accept_underpowered=true to run it anyway")
