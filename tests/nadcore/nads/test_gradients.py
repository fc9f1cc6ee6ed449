import math

import numpy as np
import pytest
import torch
from torch import nn

from nadcore import NADSpec, PartialNADs, estimate_nads, finalize
from nadcore.nads.engine import ShardRunner, merge_key
from nadcore.nads.gradients import GradientEvaluator
from nadcore.networks.factory import model_factory
from nadcore.networks.init import NetworkSampler
from nadcore.specs.architecture import BUILTIN_ARCHITECTURES
from tests.helpers import autograd_gradient, naive_finite_differences, one_network


def _runner(arch, shape, method="finite_difference", scale=100.0, seed=0, n=4, **kw):
    spec = NADSpec(architecture=arch, input_shape=shape, num_networks=n, method=method,
                   scale=scale, seed=seed)
    return ShardRunner(spec, device="cpu", **kw)


def test_logreg_gradient_is_its_weight_both_methods():
    fd = _runner("logreg", (1, 8, 8))
    ag = _runner("logreg", (1, 8, 8), method="autograd")
    state = fd.sampler.sample(range(6))
    weights = state["linear.weight"][:, 0, :]
    torch.testing.assert_close(fd.evaluator(state), weights, rtol=0, atol=2e-6)
    torch.testing.assert_close(ag.evaluator(state), weights, rtol=0, atol=1e-7)


def test_logreg_covariance_is_isotropic_marchenko_pastur():
    """The built-in logreg's eigenvalues against the Marchenko-Pastur law of its init. Its NADs
    are arbitrary (isotropic: any orthonormal set is right), so the eigenVECTORS are checked
    against closed forms in tests/nadcore/nads/test_decompose_reference.py (planted covariances, an
    anisotropic linear model) and by the circulant network below."""
    n, d = 3000, 64
    res = estimate_nads("logreg", (1, 8, 8), n, seed=1)
    sigma2 = (1 / math.sqrt(d)) ** 2 / 3  # variance of U(-1/sqrt(D), 1/sqrt(D))
    ev = res.eigenvalues
    assert ev.mean() == pytest.approx(sigma2, rel=0.03)
    ratio = d / n
    lo, hi = sigma2 * (1 - math.sqrt(ratio)) ** 2, sigma2 * (1 + math.sqrt(ratio)) ** 2
    assert ev.min() > 0.85 * lo and ev.max() < 1.15 * hi, (ev.min(), ev.max(), lo, hi)
    # and the spread is real: an isotropic cloud still has eigenvalues across the band
    assert ev.max() > 1.05 * sigma2 and ev.min() < 0.95 * sigma2
    np.testing.assert_allclose(res.nads @ res.nads.T, np.eye(len(ev)), atol=1e-5)
    assert np.all(np.diff(ev) <= 0)


class TanhMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.Tanh(), nn.Linear(32, 16),
                                 nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def test_smooth_model_small_step_matches_autograd():
    template = TanhMLP().eval()
    x0 = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(0))
    state = NetworkSampler(TanhMLP, template, 5, torch.device("cpu")).sample(range(8))
    fd = GradientEvaluator(template, x0, "finite_difference", 1e-2)(state)
    ag = GradientEvaluator(template, x0, "autograd", 1.0)(state)
    err = (fd - ag).abs().max() / ag.abs().max()
    assert err < 2e-3
    # the paper's large step is a different quantity on a nonlinear model
    big = GradientEvaluator(template, x0, "finite_difference", 100.0)(state)
    assert (big - ag).abs().max() / ag.abs().max() > 0.1


class CircularLinearNet(nn.Module):
    """Linear: fixed circular filter P, random circular 3x3 convs, random linear readout.

    E[g g^T] = c P^T P, circulant, so its eigenvectors are real Fourier modes: each NAD lives
    on one frequency pair (k, -k). P's spectrum is chosen distinct across pairs.
    """

    size = 8

    def __init__(self):
        super().__init__()
        n = self.size
        freqs = torch.fft.fftfreq(n)
        ky, kx = torch.meshgrid(freqs, freqs, indexing="ij")
        # distinct |P(k)| per pair, symmetric under k -> -k (so P is real)
        key = (ky * 1.37 + kx * 0.71).abs() + 3 * (ky.abs() + 1.9 * kx.abs())
        spectrum = torch.exp(-1.5 * key)
        self.register_buffer("p_hat", spectrum)
        self.conv = nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular", bias=False)
        self.readout = nn.Linear(4 * n * n, 1, bias=False)

    def forward(self, x):
        filtered = torch.fft.ifft2(torch.fft.fft2(x) * self.p_hat).real
        return self.readout(self.conv(filtered).flatten(1))


def test_circular_linear_network_nads_are_fourier_modes():
    n = CircularLinearNet.size
    template = CircularLinearNet().eval()
    x0 = torch.randn(1, n, n, generator=torch.Generator().manual_seed(0))
    sampler = NetworkSampler(CircularLinearNet, template, 0, torch.device("cpu"), mode="builder")
    evaluator = GradientEvaluator(template, x0, "finite_difference", 1.0)
    grads = torch.cat([evaluator(sampler.sample(range(i, i + 500))) for i in range(0, 3000, 500)])
    # the engine's own decomposition (finalize), not one written here; the spec only gives
    # finalize D = 64, N and k (any built-in of a 1x8x8 input)
    spec = NADSpec(architecture="logreg", input_shape=(1, n, n), num_networks=3000, seed=0)
    part = PartialNADs.from_gradients(merge_key(spec), 0, grads, x0.numpy(), "gradients")
    nads = torch.from_numpy(finalize(spec, part).nads).double()
    for i in range(8):
        energy = torch.fft.fft2(nads[i].view(n, n)).abs() ** 2
        energy = energy / energy.sum()
        pair = energy + torch.roll(torch.flip(energy, (0, 1)), (1, 1), (0, 1))  # k and -k
        best = pair.max().item() if pair.argmax() != 0 else energy.max().item()
        assert best > 0.9, (i, best)


@pytest.mark.parametrize("arch", BUILTIN_ARCHITECTURES)
def test_batched_equals_one_network_at_a_time(arch):
    small = arch in ("logreg", "lenet")
    shape = (1, 16, 16) if small else (1, 32, 32)
    pixels = range(0, 256) if small else range(300, 316 if arch == "densenet121" else 364)
    nets = 3 if small else 2
    fd = _runner(arch, shape)
    factory = lambda: model_factory(arch)(shape, 1)  # noqa: E731
    state = fd.sampler.sample(range(nets))
    x0 = fd.evaluator.x0
    models = [one_network(factory, state, j) for j in range(nets)]  # the reference, once
    refs = [naive_finite_differences(m, x0, 100.0, pixels) for m in models]
    for strategy, channels_last in (("vmap", False), ("loop", False), ("loop", True)):
        fd.evaluator.strategy = strategy
        fd.evaluator.channels_last = channels_last and arch != "logreg"
        batched = fd.evaluator(state, pixels).numpy()
        for j, ref in enumerate(refs):
            np.testing.assert_allclose(batched[j], ref, rtol=1e-3, atol=1e-6 * np.abs(ref).max())
    ag = _runner(arch, shape, method="autograd")
    batched = ag.evaluator(state).numpy()
    for j, model in enumerate(models):
        ref = autograd_gradient(model, x0)
        np.testing.assert_allclose(batched[j], ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_compiled_forward_passes_agree_with_eager_to_float32_rounding():
    """The catalog build's torch.compile'd forward passes (gradients.compiled_forward) give a
    built-in network's finite-difference gradients to float32 rounding of eager mode's, and
    say so in the partial's plan; they are refused where they do not apply."""
    eager = _runner("lenet", (1, 16, 16), n=3)
    compiled = _runner("lenet", (1, 16, 16), n=3, compiled=True)
    assert eager.plan.strategy == "loop"
    want, got = eager.partial(0, 3), compiled.partial(0, 3)
    scale = float(np.abs(want.gradients).max())
    np.testing.assert_allclose(got.gradients, want.gradients, rtol=0, atol=1e-5 * scale)
    assert got.meta["plan"]["compiled"] is True and want.meta["plan"]["compiled"] is False
    from nadcore.nads.gradients import compiled_forward

    for method, strategy in (("autograd", "loop"), ("finite_difference", "vmap")):
        with pytest.raises(ValueError, match="compiled: only for a built-in"):
            compiled_forward(eager.template, method, strategy)


@pytest.mark.parametrize("shape", [(1, 32, 32), (2, 32, 36), (1, 33, 35)])
def test_densenet_first_block_where_a_pixel_reaches_equals_the_whole_forward(shape):
    """nadcore.nads.first_block: DenseNet-121's outputs at one-pixel perturbations, its first
    block and transition computed on windows around each pixel, equal the plain forward of the
    perturbed inputs to float32 rounding: at corners, edges and the middle (odd and even rows
    and columns, an odd-sized map whose last row and column the pool drops), in every channel
    of a non-square input, for both signs, with BatchNorm statistics that shift zeros; and the
    engine uses it for DenseNet-121's finite differences in a loop, not for other networks or
    autograd."""
    from nadcore.nads.first_block import FirstBlockLocal

    torch.manual_seed(0)
    net = model_factory("densenet121")(shape, 2).eval()
    for m in net.modules():  # BatchNorm(0) != 0: padding read as data would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    x0 = torch.randn(shape)
    c, h, w = shape
    corners = [0, w - 1, (h - 1) * w, h * w - 1]
    others = [5, 3 * w, 7 * w + (w - 1), 16 * w + 18, 30 * w + 2, (h - 2) * w + (w - 2)]
    index = torch.tensor([k * h * w + p for k in range(c) for p in corners + others])
    delta = torch.where(torch.arange(len(index)) % 2 == 0, 100.0, -100.0)
    inputs = x0.reshape(1, -1).repeat(len(index), 1)
    inputs[torch.arange(len(index)), index] += delta
    with torch.no_grad():
        want = net(inputs.view(-1, *shape))
        got = FirstBlockLocal(net)(x0, index, delta)
        assert got.shape == want.shape == (len(index), 2)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * want.abs().max().item())

    assert _runner("densenet121", (1, 32, 32), n=2).evaluator.local
    assert not _runner("resnet18", (1, 32, 32), n=2).evaluator.local
    assert not _runner("densenet121", (1, 32, 32), n=2, method="autograd").evaluator.local
