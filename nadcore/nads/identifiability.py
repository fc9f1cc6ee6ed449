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

**A covariance of rank below k.** The band presumes a covariance with at least k directions of
variance. Where the gradient covariance has rank r < k (zero: every network has the same input
gradient at x0, as when the output does not depend on the input, the finite-difference step is
lost in float32 rounding at x0, or autograd meets a piecewise-constant layer), the NADs past r
are whatever the eigensolver returns for a zero eigenvalue: the same arbitrary basis in both
halves, so their stability is spuriously 1 (measured: 1.0 at every k for a network that ignores
its input). A k past the rank is therefore never above chance (`gradient_rank`). An eigenvalue
counts as zero when it is at most lambda_1 D eps32^2: the gradients are float32, whose rounding
leaves variances below eps32^2 of the largest unresolved, and D of them add up (the shipped
entries' smallest eigenvalue is 1.4e-4 lambda_1, far above).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Z = 3.0
EPS32 = 2.0**-23  # float32 machine epsilon
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


def gradient_rank(eigenvalues: Sequence[float] | None, dim: int) -> int | None:
    """How many of the kept eigenvalues (descending) are not zero to float32 rounding (the
    module docstring), when some are: the rank of the gradient covariance; None when none is
    zero (the rank is at least the number kept) or none is given."""
    values = [float(v) for v in (eigenvalues if eigenvalues is not None else [])]
    if not values:
        return None
    top = max(values)
    if not top > 0:
        return 0
    rank = sum(1 for v in values if v > top * dim * EPS32**2)
    return rank if rank < len(values) else None


def assess(stability: Mapping[Any, float], dim: int, num_networks: int,
           eigenvalues: Sequence[float] | None = None) -> dict[str, Any]:
    """The summary's `identifiability`: each resolved k's stability beside chance and the top
    of its noise band, whether the NADs are identifiable (None when no k was resolved), up to
    which k, and why not when they are not. With the result's `eigenvalues`, a k past the rank
    of the gradient covariance is never above chance (`gradient_rank`, module docstring)."""
    rank = gradient_rank(eigenvalues, dim)
    rows = []
    for key, value in sorted(stability.items(), key=lambda kv: int(kv[0])):
        k = int(key)
        upper = noise_upper(k, dim)
        rows.append({"k": k, "stability": round(float(value), 6),
                     "chance": round(chance(k, dim), 6), "noise_upper": round(upper, 6),
                     "above_chance": bool(float(value) > upper)
                     and (rank is None or k <= rank)})
    rule = (f"identifiable at k when the split-half stability exceeds the top of the noise "
            f"band of random subspaces (chance k/D = k/{dim}; {Z:.0f}-sigma tail) and k is "
            "at most the rank of the gradient covariance")
    ranked = {} if rank is None else {"gradient_rank": rank}
    if rank == 0:
        return {"identifiable": False, "up_to_k": None, "ks": rows, "rule": rule, **ranked,
                "reason": "the gradient covariance is zero: every network has the same input "
                          "gradient at the evaluation point (the output does not depend on the "
                          "input there or not on the parameters, the finite-difference step is "
                          "lost in float32 rounding at x0, or autograd meets a piecewise-"
                          "constant layer), so these NADs are an arbitrary basis and their "
                          "stability means nothing"}
    if not rows:
        return {"identifiable": None, "up_to_k": None, "ks": [], "rule": rule,
                "reason": f"{num_networks} networks: halves of {num_networks // 2} resolve no "
                          "k; more networks are needed to tell"}
    above = [r["k"] for r in rows if r["above_chance"]]
    if above:
        return {"identifiable": True, "up_to_k": max(above), "ks": rows, "rule": rule,
                **ranked, "reason": None}
    shown = "; ".join(f"k = {r['k']}: {r['stability']:.4f} vs chance {r['chance']:.4f} "
                      f"(noise up to {r['noise_upper']:.4f})" for r in rows)
    reason = (f"split-half stability within the noise of chance at every k ({shown}): the two "
              "halves' top NADs overlap no more than random subspaces do, so these NADs are "
              "an arbitrary basis, not directions the architecture prefers. If the gradient "
              "covariance is isotropic (logreg: the input gradient is the weight vector, with "
              "i.i.d. entries) no number of networks changes this; otherwise more networks may")
    if rank is not None:
        reason = (f"the gradient covariance has rank {rank}: past k = {rank} the NADs are an "
                  f"arbitrary basis; {reason}")
    return {"identifiable": False, "up_to_k": None, "ks": rows, "rule": rule, **ranked,
            "reason": reason}
