"""Gradients that carry no direction: a result whose gradient covariance is zero (every network
has the same input gradient at x0), or of lower rank than the k its stability is judged at,
must not be called identifiable.

With a zero covariance the eigenvectors are whatever eigh returns for a zero matrix: the same
arbitrary basis in both halves, so the split-half stability is exactly 1 at every k, which
`assess` took for a perfectly identifiable result. Reproduced with a built-in and the spec's own
bounds (an eval_point of 1e5 and a step of 1e-4: x0 + s == x0 in float32), with an uploaded
network whose output does not depend on its input, with one whose output does not depend on its
parameters, with autograd through torch.round, and with an output that reads 2 pixels (rank 2,
stability 1 at k = 4 and 16 from the arbitrary part)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nadcore import NADSpec, run_spec
from nadcore.nads.spec import bf16_spacing
from nadcore.specs.architecture import ArchitectureRef
from nadcore.uploaded.network import register_archive
from nadcore.uploaded.validation import validate

SHAPE = (1, 6, 6)


class _Tanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 8)
        self.out = nn.Linear(8, 2)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc(x.flatten(1))))


class Constant(_Tanh):
    """Ignores its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(torch.zeros_like(x))


class Rounded(_Tanh):
    """Quantizes its input: its autograd input gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(torch.round(x))


class TwoPixels(_Tanh):
    """Reads pixels 0 and 1 only: a gradient covariance of rank 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return self.f(torch.cat([flat[:, :2], torch.zeros_like(flat[:, 2:])], 1))


def _uploaded(model: nn.Module, tmp_path) -> ArchitectureRef:  # noqa: ANN001
    path = tmp_path / f"{type(model).__name__}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    validate(path, SHAPE, "torch-default")  # the service accepts each of them
    return ArchitectureRef(id="0" * 32, sha256=register_archive(path), init="torch-default")


def _identifiability(architecture: str | ArchitectureRef, **kw: object) -> dict:
    spec = NADSpec(architecture=architecture, input_shape=kw.pop("input_shape", SHAPE),
                   num_networks=40, seed=1, **kw)
    return run_spec(spec, device="cpu").summary()["identifiability"]


def test_a_step_lost_in_float32_is_not_identifiable() -> None:
    """lenet at x0 = 1e5 with the smallest step the spec allows: every difference is 0."""
    ident = _identifiability("lenet", input_shape=(1, 16, 16), scale=1e-4,
                             eval_point=[1e5] * 256)
    assert ident["identifiable"] is False and ident["up_to_k"] is None
    assert ident["gradient_rank"] == 0 and "zero" in ident["reason"]


@pytest.mark.parametrize(("model", "method"), [(Constant(), "finite_difference"),
                                               (Rounded(), "autograd")])
def test_a_zero_gradient_is_not_identifiable(tmp_path, model, method) -> None:  # noqa: ANN001
    ident = _identifiability(_uploaded(model, tmp_path), method=method)
    assert ident["identifiable"] is False and ident["gradient_rank"] == 0
    assert not any(row["above_chance"] for row in ident["ks"])


def test_a_rank_two_gradient_is_identifiable_up_to_its_rank_at_most(tmp_path) -> None:  # noqa: ANN001
    for decomposition in ("covariance", "lowrank"):
        ident = _identifiability(_uploaded(TwoPixels(), tmp_path), method="autograd",
                                 decomposition=decomposition)
        assert ident["gradient_rank"] == 2, decomposition
        assert ident["up_to_k"] in (1, None), ident  # never 4 or 16: beyond the rank
        assert [row["above_chance"] for row in ident["ks"] if row["k"] > 2] == [False, False]


def test_full_rank_results_are_unchanged() -> None:
    ident = _identifiability("logreg")
    assert ident.get("gradient_rank") is None  # no eigenvalue is zero: no cap
    np.testing.assert_equal(ident["identifiable"] in (True, False), True)


def test_bf16_refuses_a_step_it_cannot_represent() -> None:
    """Measured: lenet 1x16x16, 40 networks, step 1e-4: fp32 top eigenvalue 1.3e-5, bf16 2.05
    (the autocast input x0 + 1e-4 rounds to x0 or to the next bf16, a jump of an ulp / 2e-4),
    summarized as identifiable up to k = 16."""
    with pytest.raises(ValueError, match="scale: a step of 0.0001 is below what bf16 resolves"):
        NADSpec(architecture="lenet", input_shape=(1, 16, 16), scale=1e-4, precision="bf16")
    # |x0| <= 6 (the default N(0, I)): bf16 values 2^-5 apart there, so the least step is 3.125
    assert bf16_spacing(6.0) == 2.0**-5 and bf16_spacing(0.1) == 2.0**-7
    NADSpec(architecture="lenet", input_shape=(1, 16, 16), scale=3.125, precision="bf16")
    with pytest.raises(ValueError, match="at least 100 of those, 3.125"):
        NADSpec(architecture="lenet", input_shape=(1, 16, 16), scale=3.1, precision="bf16")
    # a given x0 sets the bound; fp32 and autograd take any step
    point = [1000.0] + [0.0] * 255
    with pytest.raises(ValueError, match="at least 100 of those, 400"):
        NADSpec(architecture="lenet", input_shape=(1, 16, 16), scale=100, precision="bf16",
                eval_point=point)
    NADSpec(architecture="lenet", input_shape=(1, 16, 16), scale=1e-4, precision="fp32")
    NADSpec(architecture="lenet", input_shape=(1, 16, 16), scale=1e-4, precision="bf16",
            method="autograd")
