"""nadcore.probe.power: what a probe's test set can resolve (closed form against the binomial)
and what the measured yardstick reaches at its training budget."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from nadcore.probe.power import (
    MEASURED,
    assess,
    num_test_for,
    passes_for,
    reference,
    refusal,
    resolvable,
)


@pytest.mark.parametrize("num_test", [256, 2000, 10_000])
def test_resolvable_accuracy_has_its_power_under_the_binomial(num_test: int) -> None:
    """At the resolvable accuracy a, a Binomial(n, a) test score lands above the chance band's
    top (50 + 150 / sqrt(n) %) with probability ~80 % (exactly, not the normal approximation
    the formula uses: within 4 points), and num_test_for inverts resolvable."""
    a = resolvable(num_test) / 100
    top = 0.5 + 1.5 / math.sqrt(num_test)
    power = stats.binom.sf(math.floor(top * num_test), num_test, a)
    assert power == pytest.approx(0.8, abs=0.04)
    assert num_test_for(100 * a) in (num_test, num_test + 1)
    assert num_test_for(50.0) is None and num_test_for(50.001) is None  # beyond 10^6


def test_reference_interpolates_the_measured_curve_in_log_passes() -> None:
    for passes, accuracy in MEASURED:
        assert reference(passes) == pytest.approx(accuracy)
        assert passes_for(accuracy) == pytest.approx(passes, rel=1e-6, abs=1)
    middle = math.sqrt(6_000 * 50_000)  # halfway in log between the first two points
    assert reference(middle) == pytest.approx((51.2 + 66.1) / 2)
    assert reference(10) == 51.2 and reference(10**9) == 80.6  # flat beyond the ends
    assert passes_for(90.0) is None


def test_what_separates_and_what_does_not() -> None:
    quick = assess(10_000, 5, 2000)  # 66.1 % against 54.3 %
    assert quick["can_separate"] is True and "smallest_num_test" not in quick
    issue = assess(2000, 3, 2000)  # the issue's setting: 51.2 % against 54.3 %
    assert issue["can_separate"] is False
    assert reference(issue["smallest_sample_passes"]) >= issue["resolvable_accuracy"]
    field, reason = refusal(issue, 2000)
    assert field == "data.num_train" and "accept_underpowered=true" in reason
    tiny = assess(64, 1, 64)  # below the measured range: more test samples would not help
    assert tiny["can_separate"] is False and tiny["smallest_num_test"] is None
    # a stronger signal or a smaller input than the yardstick's: not known, never refused
    assert assess(64, 1, 64, snr=1.0)["can_separate"] is None
    assert assess(64, 1, 64, dim=64)["can_separate"] is None
    assert assess(10_000, 5, 2000, dim=64)["can_separate"] is True
    # a weaker signal than the yardstick's: "can" is not known either (epsilon 1e-12, sigma 3
    # at the paper's sizes was "can separate"; nothing can be learned from it)
    weak = assess(10_000, 20, 10_000, snr=1e-12 / 3)
    assert weak["can_separate"] is None and "weaker or its input larger" in weak["basis"]
    # so is a larger input (more dimensions of noise), where the yardstick says "can"
    large = assess(10_000, 5, 2000, dim=3 * 32 * 32)
    assert large["can_separate"] is None and "3,072 input values" in large["basis"]
    assert assess(2000, 3, 2000, dim=3 * 32 * 32)["can_separate"] is False
    assert assess(2000, 3, 2000, snr=1e-12 / 3)["can_separate"] is False  # cannot: still cannot
