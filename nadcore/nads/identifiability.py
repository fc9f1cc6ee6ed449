"""How much a set of NADs means: split-half stability against chance. Torch-free (SciPy).

The split-half stability at k is the overlap ||U_k(A)^T U_k(B)||_F^2 / k of the top-k NADs of
the even- and of the odd-indexed networks (`nadcore.nads.decompose`): 1 when the halves agree.

**Chance, and its noise.** When the gradient covariance is isotropic (Sigma = s^2 I: no
direction preferred), the top-k subspace of each half's sample covariance is a uniformly random
k-dimensional subspace of R^D, independent of the other half's: for Gaussian gradients exactly,
by rotation invariance, *whatever the number of networks N* (N only decides which k the halves
can resolve: k < N/2); for i.i.d. non-Gaussian entries, such as logreg's uniform weights, to
the precision of random-matrix universality. For two independent uniform k-subspaces of R^D,
t = tr(P_A P_B) has mean k^2 / D and variance 2 k^2 (D - k)^2 / (D^2 (D - 1) (D + 2)), so the
overlap t / k has

    mean k / D (chance),   variance 2 (D - k)^2 / (D^2 (D - 1) (D + 2)).

(At k = 1, t = <a, b>^2 for independent uniform unit vectors, which is Beta(1/2, (D - 1)/2):
mean 1/D, variance 2 (D - 1) / (D^2 (D + 2)), the formula's value.) The noise band is the
upper tail of the Beta distribution with this mean and variance (exact at k = 1, moment-matched
above; tests/nadcore/nads/test_identifiability.py checks it against simulated split halves) at the
probability of a standard normal beyond Z = 3 (0.135 %), the confidence of the probe's chance
band (`nadcore.training.learning_check`). At D = 1,024: chance 0.0625 at k = 64 with a standard
deviation of 0.0013, and a stability up to 0.0664 is chance: the shipped logreg entry's 0.0620
is (its gradient is its weight vector, whose entries are i.i.d.: an isotropic covariance).

A stability above the band at some k means the halves agree on a top-k subspace more than
random subspaces do: the NADs are **identifiable** up to the largest such k. Within the band at
every k resolved, they are **not identifiable**: an arbitrary basis, not directions of the
architecture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Z = 3.0
TAIL = 0.5 * math.erfc(Z / math.sqrt(2))  # 0.00135: one-sided normal tail beyond Z


def chance(k: int, dim: int) -> float:
    """The mean split-half overlap at k of an isotropic covariance: k / D."""
    return k / dim


def overlap_std(k: int, dim: int) -> float:
    """Standard deviation of the overlap of two independent uniform k-subspaces of R^D."""
    return (2.0 * (dim - k) ** 2 / (dim**2 * (dim - 1) * (dim + 2))) ** 0.5


def noise_upper(k: int, dim: int) -> float:
    """The largest overlap at k that random subspaces reach with probability TAIL or more."""
    from scipy import stats  # here: the CLI imports this module and must start fast

    if k >= dim:
        return 1.0  # the whole space: every overlap is 1
    mean, var = chance(k, dim), overlap_std(k, dim) ** 2
    size = mean * (1 - mean) / var - 1
    return float(stats.beta.isf(TAIL, mean * size, (1 - mean) * size))


def assess(stability: Mapping[Any, float], dim: int, num_networks: int) -> dict[str, Any]:
    """The summary's `identifiability`: each resolved k's stability beside chance and the top
    of its noise band, whether the NADs are identifiable (None when no k was resolved), up to
    which k, and why not when they are not."""
    rows = []
    for key, value in sorted(stability.items(), key=lambda kv: int(kv[0])):
        k = int(key)
        upper = noise_upper(k, dim)
        rows.append({"k": k, "stability": round(float(value), 6),
                     "chance": round(chance(k, dim), 6), "noise_upper": round(upper, 6),
                     "above_chance": bool(float(value) > upper)})
    rule = (f"identifiable at k when the split-half stability exceeds the top of the noise "
            f"band of random subspaces (chance k/D = k/{dim}; {Z:.0f}-sigma tail)")
    if not rows:
        return {"identifiable": None, "up_to_k": None, "ks": [], "rule": rule,
                "reason": f"{num_networks} networks: halves of {num_networks // 2} resolve no "
                          "k; more networks are needed to tell"}
    above = [r["k"] for r in rows if r["above_chance"]]
    if above:
        return {"identifiable": True, "up_to_k": max(above), "ks": rows, "rule": rule,
                "reason": None}
    shown = "; ".join(f"k = {r['k']}: {r['stability']:.4f} vs chance {r['chance']:.4f} "
                      f"(noise up to {r['noise_upper']:.4f})" for r in rows)
    reason = (f"split-half stability within the noise of chance at every k ({shown}): the two "
              "halves' top NADs overlap no more than random subspaces do, so these NADs are "
              "an arbitrary basis, not directions the architecture prefers. If the gradient "
              "covariance is isotropic (logreg: the input gradient is the weight vector, with "
              "i.i.d. entries) no number of networks changes this; otherwise more networks may")
    return {"identifiable": False, "up_to_k": None, "ks": rows, "rule": rule,
            "reason": reason}
