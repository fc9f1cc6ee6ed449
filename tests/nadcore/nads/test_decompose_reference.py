"""The engine's decomposition checked against answers it did not compute.

Gradients are planted: G = Z diag(sqrt(lambda)) U^T + m with a random orthonormal U, known
distinct eigenvalues lambda and a constant offset m (which the centering must remove), and fed
through the engine's own paths after the gradient step (`finalize`: covariance, randomized SVD,
moments, sharded merge of partials; the split-half stability). The NADs must come out as the
rows U^T, the eigenvalues as lambda, within tolerances derived here, not measured:

- exact planting (Z centered with Z^T Z = (N-1) I): the sample covariance is U diag(lambda) U^T
  exactly in real arithmetic, so the only error is rounding (the gradient block is float32);
  Weyl's inequality bounds the eigenvalue error by ||E||_2 and Davis-Kahan the angle of
  eigenvector i by ||E||_2 / gap_i;
- random planting (Z Gaussian): the error is the sampling error of N networks, whose first-order
  size is known (Anderson 1963): sd(lambda_i^) = lambda_i sqrt(2/N) and
  E[sin^2 angle_i] = (1/N) sum_{j != i} lambda_i lambda_j / (lambda_i - lambda_j)^2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nadcore import NADSpec, PartialNADs, finalize, merge_partials
from nadcore.nads.engine import merge_key
from nadcore.nads.gradients import GradientEvaluator
from nadcore.networks.init import NetworkSampler

U32 = 2.0 ** -24  # unit roundoff of float32: the gradient block and the NADs are float32
SHAPE = (1, 4, 6)  # D = 24: a full eigendecomposition is instant, every index can be checked
D = 24


def _orthonormal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # Haar-distributed columns


def _whitened(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) with centered columns and Z^T Z = (n - 1) I exactly (up to float64 rounding)."""
    z = rng.standard_normal((n, d))
    z -= z.mean(0)
    q, _ = np.linalg.qr(z)  # columns: combinations of centered columns, so still centered
    return math.sqrt(n - 1) * q


LAMBDA = 2.0 * 0.75 ** np.arange(D)  # distinct; neighbouring ratio 0.75, smallest 2.7e-3


def _spec(n: int, **kw) -> NADSpec:
    # finalize only reads D, N, k, the decomposition and the seed of the spec; logreg on a
    # 1x4x6 input is any built-in with D = 24
    return NADSpec(architecture="logreg", input_shape=SHAPE, num_networks=n, seed=0, **kw)


def _partials(spec: NADSpec, grads: np.ndarray, cuts: list[int], representation: str
              ) -> list[PartialNADs]:
    """The block as the shards [0, c1), [c1, c2), ... of `spec` would have returned it."""
    bounds = [0, *cuts, grads.shape[0]]
    g = torch.from_numpy(grads.astype(np.float32))
    x0 = np.zeros(SHAPE, np.float32)
    return [PartialNADs.from_gradients(merge_key(spec), lo, g[lo:hi], x0, representation)
            for lo, hi in zip(bounds, bounds[1:], strict=False)]


def _rounding_bound(grads32: np.ndarray) -> float:
    """||E||_2 for the covariance of the float32 block against the exact one: each entry of G is
    rounded by at most u|G_ij|, so ||dG||_2 <= u ||G||_F, and the centered covariance moves by at
    most (2 ||G_c||_2 ||dG||_2 + ||dG||_2^2) / (N - 1), with ||G_c||_2 = sqrt((N-1) lambda_max);
    the factor 1.1 covers the float64 arithmetic of the covariance (1e-16 relative)."""
    n = grads32.shape[0]
    dg = U32 * float(np.linalg.norm(grads32.astype(np.float64)))
    return 1.1 * (2 * math.sqrt((n - 1) * LAMBDA[0]) * dg + dg * dg) / (n - 1)


def _gaps(values: np.ndarray) -> np.ndarray:
    diff = np.abs(values[:, None] - values[None, :])
    np.fill_diagonal(diff, np.inf)
    return diff.min(1)


def _check_exact(res, u: np.ndarray, eps: float, k: int) -> None:
    """Weyl for eigenvalues; Davis-Kahan for eigenvectors, plus the float32 storage of the NADs
    (each row moves by at most u in norm, so |<u_i^, u_i>| by at most 2u)."""
    assert res.nads.shape == (k, D) and res.eigenvalues.shape == (k,)
    np.testing.assert_array_less(np.abs(res.eigenvalues - LAMBDA[:k]), eps)
    cos = np.abs(np.sum(res.nads.astype(np.float64) * u.T[:k], axis=1))
    sin_bound = np.minimum(eps / _gaps(LAMBDA)[:k], 1.0)
    np.testing.assert_array_less(1 - cos, sin_bound ** 2 + 2 * U32 * math.sqrt(D))


@pytest.mark.parametrize(
    ("decomposition", "representation", "cuts"),
    [("covariance", "gradients", []),           # one shard, D x D covariance
     ("covariance", "gradients", [37, 38, 101]),  # shards merged (out of order below)
     ("covariance", "moments", [37, 38, 101]),   # O(D^2) partials: sums and outer products
     ("lowrank", "gradients", [37, 38, 101])],   # randomized SVD of the block, no D x D matrix
)
def test_planted_covariance_through_every_path(decomposition, representation, cuts):
    rng = np.random.default_rng(11)
    n = 240
    u = _orthonormal(D, rng)
    offset = rng.standard_normal(D)  # a mean gradient: the PCA must centre it away
    grads = (_whitened(n, D, rng) * np.sqrt(LAMBDA)) @ u.T + offset
    grads32 = grads.astype(np.float32)
    # lowrank is asked for the top 8 only: with q = k + 10 = 18 probes and 6 power iterations
    # its projection error is (sigma_19 / sigma_8)^13 = 0.75^(11 * 13 / 2) = 1e-9 relative,
    # far below float32 rounding
    k = 8 if decomposition == "lowrank" else D
    spec = _spec(n, decomposition=decomposition, k=k)
    parts = _partials(spec, grads32, cuts, representation)
    res = finalize(spec, merge_partials(reversed(parts)))
    assert res.decomposition == decomposition and res.info["representation"] == representation
    eps = _rounding_bound(grads32)
    if decomposition == "lowrank":
        # torch.svd_lowrank works in float32 throughout (centering, QR, SVD): backward-stable
        # algorithms whose error is a small multiple of u ||G||_2 per step (Golub & Van Loan,
        # 5.2 / 8.6); allow 10 D u lambda_max for the ~2 niter + 3 orthogonal steps of q x D
        eps += 10 * D * U32 * LAMBDA[0]
    _check_exact(res, u, eps, k)
    # sanity of the bound: it must be far smaller than what it guards (the smallest gap)
    assert eps < 0.01 * _gaps(LAMBDA)[:k].min()


def test_planted_covariance_within_the_sampling_error_of_n():
    """Gaussian Z, not whitened: the NADs of N networks differ from U by sampling error only."""
    rng = np.random.default_rng(5)
    n = 4000
    u = _orthonormal(D, rng)
    grads = (rng.standard_normal((n, D)) * np.sqrt(LAMBDA)) @ u.T + 3.0
    spec = _spec(n)
    res = finalize(spec, merge_partials(_partials(spec, grads, [1500], "gradients")))
    lam = LAMBDA
    # first-order eigenvalue error: sd lambda_i sqrt(2 / N); the second-order bias
    # (1/N) sum_j lambda_i lambda_j / (lambda_i - lambda_j) is smaller than one sd here.
    # 5 sd: a two-sided normal tail of 6e-7 per eigenvalue, 1.4e-5 for all 24
    assert np.all(np.abs(res.eigenvalues - lam) <= 5 * lam * math.sqrt(2 / n))
    cos2 = np.sum(res.nads.astype(np.float64) * u.T, axis=1) ** 2
    with np.errstate(divide="ignore"):
        pair = lam[:, None] * lam[None, :] / (lam[:, None] - lam[None, :]) ** 2
    np.fill_diagonal(pair, 0.0)
    expected_sin2 = pair.sum(1) / n
    # sin^2 is a weighted sum of squared normals with mean expected_sin2; at worst one term,
    # i.e. chi^2_1 times its mean, exceeds 20 x its mean with probability 7.7e-6
    np.testing.assert_array_less(1 - cos2, 20 * expected_sin2)
    # and the check has teeth: a random unit vector has 1 - cos^2 = 1 - 1/D on average
    assert (20 * expected_sin2).max() < 0.5


@pytest.mark.parametrize(("decomposition", "representation"),
                         [("covariance", "gradients"), ("covariance", "moments"),
                          ("lowrank", "gradients")])
def test_split_half_stability_is_its_closed_form(decomposition, representation):
    """Even-indexed networks: covariance U diag(lambda) U^T; odd ones: the same with u_0 turned
    by theta towards u_{D-1}. The odd half's top-k subspace is span(cos t u_0 + sin t u_{D-1},
    u_1 .. u_{k-1}), so ||U_k^T V_k||_F^2 / k = (k - 1 + cos^2 theta) / k exactly."""
    rng = np.random.default_rng(3)
    half = 120
    theta = 0.6
    u = _orthonormal(D, rng)
    v = u.copy()
    v[:, 0] = math.cos(theta) * u[:, 0] + math.sin(theta) * u[:, -1]
    v[:, -1] = -math.sin(theta) * u[:, 0] + math.cos(theta) * u[:, -1]
    grads = np.empty((2 * half, D))
    grads[0::2] = (_whitened(half, D, rng) * np.sqrt(LAMBDA)) @ u.T - 1.0
    grads[1::2] = (_whitened(half, D, rng) * np.sqrt(LAMBDA)) @ v.T + 2.0
    grads32 = grads.astype(np.float32)
    spec = _spec(2 * half, decomposition=decomposition, k=16)
    res = finalize(spec, merge_partials(_partials(spec, grads32, [77], representation)))
    assert set(res.stability) == {1, 4, 16}  # the ks of STABILITY_KS with k <= D, k < half
    # each of the k vectors is off by sin <= eps / gap (Davis-Kahan, as above), which moves
    # its squared cosines with the other half's subspace by at most 2 sin; the float32 NADs
    # add 2u sqrt(D) per vector
    eps = _rounding_bound(grads32) * 2  # a half has N/2 - 1 degrees of freedom: twice the bound
    if decomposition == "lowrank":
        eps += 10 * D * U32 * LAMBDA[0]
    for k, got in res.stability.items():
        sin = (eps / _gaps(LAMBDA)[:k]).max()
        tol = 2 * sin + 2 * U32 * math.sqrt(D)
        assert got == pytest.approx((k - 1 + math.cos(theta) ** 2) / k, abs=tol), (k, tol)


class AnisotropicLinear(nn.Module):
    """f(x) = w^T A^T x with a fixed A = U diag(sqrt(lambda)) and w a torch.nn.Linear weight,
    redrawn per network by PyTorch's default init, U(-1/sqrt(D), 1/sqrt(D)), variance 1/(3D).

    The input gradient is A w, so the gradient covariance is (1/(3D)) U diag(lambda) U^T: the
    NADs are U's columns and the eigenvalues lambda / (3D), in closed form. In U's basis the
    gradient's coordinates are sqrt(lambda_i) w_i, independent, uniform: their sample variances
    have variance 0.8 sigma^4 / N (kurtosis 9/5), below the Gaussian 2 sigma^4 / N used below,
    and their sample covariances the Gaussian's sigma_i^2 sigma_j^2 / N.
    """

    shape = (1, 6, 6)
    dim = 36
    eigen = 1.5 * 0.8 ** np.arange(36)
    basis = _orthonormal(36, np.random.default_rng(2024))  # the same A in every network
    matrix = torch.from_numpy((basis * np.sqrt(eigen)).astype(np.float32))

    def __init__(self):
        super().__init__()  # A is a constant of the class, not a parameter to re-draw
        self.linear = nn.Linear(self.dim, 1)

    def forward(self, x):
        return self.linear(x.flatten(1) @ self.matrix.to(x.device))


def test_linear_model_with_anisotropic_weights_nads_in_closed_form():
    """Through the engine's sampler (network j from seed (0, j), the init plan), its gradient
    evaluator (the paper's finite differences, step 100: exact for a linear model up to
    rounding) and its decomposition."""
    template = AnisotropicLinear().eval()
    n, d = 3000, AnisotropicLinear.dim
    x0 = torch.randn(AnisotropicLinear.shape, generator=torch.Generator().manual_seed(0))
    sampler = NetworkSampler(AnisotropicLinear, template, 0, torch.device("cpu"))
    evaluator = GradientEvaluator(template, x0, "finite_difference", 100.0)
    grads = torch.cat([evaluator(sampler.sample(range(i, i + 500))) for i in range(0, n, 500)])
    spec = NADSpec(architecture="logreg", input_shape=AnisotropicLinear.shape, num_networks=n,
                   seed=0)  # finalize reads D, N, k from it (a 1x6x6 built-in: D = 36)
    key = merge_key(spec)
    res = finalize(spec, PartialNADs.from_gradients(key, 0, grads, x0.numpy(), "gradients"))
    lam = AnisotropicLinear.eigen / (3 * d)
    u = AnisotropicLinear.basis
    # eigenvalues within 5 first-order sd (see the module docstring); the finite differences
    # add a float32 rounding of ~1e-7 relative to every gradient, far below lambda sqrt(2/N)
    assert np.all(np.abs(res.eigenvalues - lam) <= 5 * lam * math.sqrt(2 / n))
    with np.errstate(divide="ignore"):
        pair = lam[:, None] * lam[None, :] / (lam[:, None] - lam[None, :]) ** 2
    np.fill_diagonal(pair, 0.0)
    expected_sin2 = pair.sum(1) / n
    cos2 = np.sum(res.nads.astype(np.float64) * u.T, axis=1) ** 2
    # the top 8 NADs (sin^2 bound: chi^2_1 tail at 20 x its mean, 7.7e-6, as above); the
    # bound stays well below the 1 - 1/D of a direction that is not a NAD
    top = 8
    assert (20 * expected_sin2[:top]).max() < 0.5
    np.testing.assert_array_less(1 - cos2[:top], 20 * expected_sin2[:top])
