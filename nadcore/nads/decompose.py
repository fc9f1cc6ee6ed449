"""From gradients (or their moments) to NADs: PCA, low-rank PCA and split-half stability."""

from __future__ import annotations

import numpy as np
import torch

from nadcore.nads.spec import STABILITY_KS


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Make each row's largest-magnitude entry positive, so outputs do not flip sign."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, idx))
    signs[signs == 0] = 1
    return vectors * signs


def covariance_from_moments(count: int, total: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance (D, D) from N, sum of g and sum of g g^T (float64)."""
    mean = total / count
    return (outer - count * torch.outer(mean, mean)) / (count - 1)


def covariance_from_gradients(grads: torch.Tensor) -> torch.Tensor:
    g = grads.to(torch.float64)
    g = g - g.mean(dim=0, keepdim=True)
    return g.T @ g / (g.shape[0] - 1)


def top_eigen(cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenvalues (descending) and eigenvectors (rows) of a symmetric matrix."""
    values, vectors = torch.linalg.eigh(cov)
    values = values.flip(0)[:k].clamp_min(0)
    vectors = vectors.flip(1)[:, :k].T
    return values, _fix_signs(vectors)


def top_lowrank(grads: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k PCA of the (N, D) gradients by randomized SVD (no D x D matrix)."""
    g = grads.to(torch.float32)
    g = g - g.mean(dim=0, keepdim=True)
    q = min(k + 10, *g.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, s, v = torch.svd_lowrank(g, q=q, niter=6)
    values = (s[:k].to(torch.float64) ** 2) / (g.shape[0] - 1)
    return values, _fix_signs(v[:, :k].T.to(torch.float64))


def subspace_overlap(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, k: int) -> float:
    """||U_k(A) U_k(B)^T||_F^2 / k for row-orthonormal NAD arrays a and b (1 = same subspace)."""
    ua = torch.as_tensor(np.asarray(a)[:k], dtype=torch.float64)
    ub = torch.as_tensor(np.asarray(b)[:k], dtype=torch.float64)
    return float((ua @ ub.T).pow(2).sum() / k)


def stability_ks(dim: int, half: int) -> list[int]:
    """The k of STABILITY_KS that the halves can resolve (k < half size, k <= D)."""
    return [k for k in STABILITY_KS if k <= dim and k < half]


def split_half_stability(
    cov_a: torch.Tensor | None,
    cov_b: torch.Tensor | None,
    ks: list[int],
    grads_a: torch.Tensor | None = None,
    grads_b: torch.Tensor | None = None,
) -> dict[int, float]:
    """Overlap of the top-k NADs of two disjoint halves, for each k in ks."""
    if not ks:
        return {}
    kmax = max(ks)
    if cov_a is not None:
        _, ua = top_eigen(cov_a, kmax)
        _, ub = top_eigen(cov_b, kmax)
    else:
        _, ua = top_lowrank(grads_a, kmax)
        _, ub = top_lowrank(grads_b, kmax)
    return {k: subspace_overlap(ua, ub, k) for k in ks}
