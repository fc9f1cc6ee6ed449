"""Confidence intervals of a probe's per-direction accuracy. Torch-free (SciPy's quantiles).

One replicate: the test accuracy is a binomial proportion over the num_test independent test
samples, and the interval is Wilson's score interval (it stays inside [0, 100] and keeps its
coverage near 0 and 100 %, where the normal approximation p +- z sqrt(p (1 - p) / n) does not).
It covers the test-set noise only: how the accuracy varies from one training (initialization,
training draw, shuffling) to the next is not in it.

Several replicates (each a training with its own seeds): the mean over them, with Student's t
interval mean +- t(1 - alpha/2, R - 1) s / sqrt(R), s the replicates' standard deviation. It
covers both the test-set noise and the training-to-training variation, and is wide for few
replicates (t = 12.7 for two, 4.3 for three) because two or three trainings say little about
their spread. Its width comes from the replicates' sample spread alone, which can be zero when
they happen to agree (all at 100 %, or all the same count of test samples right): then it
would read [100, 100], certain from a finite test set. So it is never narrower than the Wilson
interval of the mean on one test set (the test-set noise that is there whatever the
replicates show), and it is cut to [0, 100], where accuracies lie.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def wilson(accuracy: np.ndarray, n: int, confidence: float = CONFIDENCE
           ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (low, high), in percent, of accuracies (percent) on n samples."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = np.asarray(accuracy, dtype=np.float64) / 100.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return 100.0 * (centre - half), 100.0 * (centre + half)


def across_replicates(per_replicate: np.ndarray, confidence: float = CONFIDENCE
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Student t interval (low, high) of the mean of each column of (R, n) accuracies, R >= 2."""
    values = np.asarray(per_replicate, dtype=np.float64)
    r = values.shape[0]
    t = float(stats.t.ppf(0.5 + confidence / 2, r - 1))
    mean = values.mean(0)
    half = t * values.std(0, ddof=1) / math.sqrt(r)
    return mean - half, mean + half


def direction_intervals(per_replicate: np.ndarray, num_test: int,
                        confidence: float = CONFIDENCE
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Mean accuracy of each direction over its replicates (R, n), its interval (low, high)
    and how it was computed (Wilson on the test set for R = 1, Student t across replicates)."""
    values = np.asarray(per_replicate, dtype=np.float64)
    mean = values.mean(0)
    if values.shape[0] == 1:
        low, high = wilson(mean, num_test, confidence)
        how = (f"Wilson {confidence:.0%} interval of a binomial proportion on {num_test} test "
               "samples (test-set noise; one training per direction)")
    else:
        t_low, t_high = across_replicates(values, confidence)
        w_low, w_high = wilson(mean, num_test, confidence)
        low = np.clip(np.minimum(t_low, w_low), 0.0, 100.0)
        high = np.clip(np.maximum(t_high, w_high), 0.0, 100.0)
        how = (f"Student t {confidence:.0%} interval of the mean of {values.shape[0]} "
               "replicates (test-set noise and training-to-training variation), cut to "
               f"[0, 100] and never narrower than the Wilson interval on {num_test} test "
               "samples")
    return mean, low, high, how
