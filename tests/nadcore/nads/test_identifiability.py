"""nadcore.nads.identifiability: chance k/D, the noise band of split-half overlaps of isotropic
gradients (checked against simulated split halves), and the verdicts on the shipped catalog."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from nadcore.nads.identifiability import assess, chance, noise_upper, overlap_std
from nads.summary_text import not_identifiable as warning
from nads.summary_text import report
from store.settings import SHIPPED_CATALOG_DIR


def _top(gradients: np.ndarray, k: int) -> np.ndarray:
    g = gradients - gradients.mean(0)
    _, vectors = np.linalg.eigh(g.T @ g)
    return vectors[:, ::-1][:, :k].T


def _split_half_overlaps(dim: int, networks: int, ks: list[int], draws: int,
                         seed: int) -> np.ndarray:
    """(draws, len(ks)) split-half overlaps of isotropic Gaussian gradients, computed the way
    the engine defines them (even and odd networks, centred covariance, top-k eigenvectors)."""
    rng = np.random.default_rng(seed)
    out = np.empty((draws, len(ks)))
    for i in range(draws):
        g = rng.standard_normal((networks, dim))
        a, b = _top(g[0::2], max(ks)), _top(g[1::2], max(ks))
        out[i] = [((a[:k] @ b[:k].T) ** 2).sum() / k for k in ks]
    return out


def test_k1_is_the_beta_distribution_of_a_squared_cosine() -> None:
    """At k = 1 the overlap is <a, b>^2 of independent uniform unit vectors: Beta(1/2, (D-1)/2),
    whose mean and variance the formula must give, and whose upper tail is the band."""
    for dim in (16, 256, 1024):
        beta = stats.beta(0.5, (dim - 1) / 2)
        assert chance(1, dim) == pytest.approx(beta.mean())
        assert overlap_std(1, dim) == pytest.approx(beta.std())
        assert noise_upper(1, dim) == pytest.approx(beta.isf(stats.norm.sf(3)))
    assert noise_upper(64, 64) == 1.0  # the whole space


@pytest.mark.parametrize("networks", [24, 200])
def test_the_noise_band_matches_simulated_split_halves_whatever_n(networks: int) -> None:
    """D = 32, isotropic Gaussian gradients, 4,000 split halves: the mean is chance k/D, the
    spread the formula's (within 8 %: the standard error of a standard deviation from 4,000
    draws is ~1.1 %), and no more than the band's 0.135 % land above it (5.4 expected in
    4,000; 20 would be 6 standard deviations too many) - at 24 networks as at 200: under
    isotropy N does not matter."""
    dim, ks, draws = 32, [1, 4, 8], 4000
    overlaps = _split_half_overlaps(dim, networks, ks, draws, seed=networks)
    for j, k in enumerate(ks):
        values = overlaps[:, j]
        assert values.mean() == pytest.approx(chance(k, dim),
                                              abs=4 * overlap_std(k, dim) / math.sqrt(draws))
        assert values.std() == pytest.approx(overlap_std(k, dim), rel=0.08)
        assert (values > noise_upper(k, dim)).sum() <= 20, k


def test_the_shipped_logreg_entry_is_not_identifiable_and_lenet_is() -> None:
    """The shipped logreg entry's stability at k = 64 is 0.0620, chance 64/1024 = 0.0625
    (noise up to 0.0664); LeNet's agrees far above chance at every k."""
    def provenance(name: str) -> dict:
        return json.loads((SHIPPED_CATALOG_DIR / name / "provenance.json").read_text())

    logreg = provenance("logreg")
    verdict = assess(logreg["stability"], 1024, logreg["networks"])
    assert verdict["identifiable"] is False and verdict["up_to_k"] is None
    row = verdict["ks"][-1]
    assert (row["k"], row["chance"]) == (64, 0.0625)
    assert row["stability"] == pytest.approx(0.0620, abs=1e-4)
    assert row["noise_upper"] == pytest.approx(0.0664, abs=1e-4)
    assert "isotropic" in verdict["reason"] and warning(verdict).startswith("NADs not ident")
    lenet = provenance("lenet")
    verdict = assess(lenet["stability"], 1024, lenet["networks"])
    assert verdict["identifiable"] is True and verdict["up_to_k"] == 64
    assert warning(verdict) is None


def test_no_resolved_k_says_so_and_report_lines() -> None:
    verdict = assess({}, 1024, 3)
    assert verdict["identifiable"] is None and "resolve no k" in verdict["reason"]
    summary = {"identifiability": assess({"1": 0.9, "4": 0.5}, 64, 20),
               "catalog": {"entry": "lenet", "networks": 10_000, "shared_networks": 20,
                           "ks": [{"k": 1, "overlap": 0.8, "chance": 1 / 64}]}}
    lines = report(summary)
    assert lines[0] == ("split-half stability: 0.9 at k=1 (chance 0.01562), 0.5 at k=4 "
                        "(chance 0.0625); identifiable up to k=4")
    assert "the first 20 networks are the same ones" in lines[1]
    assert report({"learning": {}}) == []
