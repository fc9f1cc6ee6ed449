"""nadcore.uploaded.network: uploaded TorchScript archives and torch.export programs as
architectures.

An uploaded model built from torch.nn modules is re-drawn with the built-in init plan, so an
uploaded LeNet draws exactly the built-in LeNet's networks: NADs, probe accuracies must agree.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nadcore import NADSpec, run_spec, subspace_overlap
from nadcore.networks.init import NetworkSampler
from nadcore.poison.datasets import ImageDataset
from nadcore.poison.engine import train_classifier
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.engine import run_probe
from nadcore.probe.spec import ProbeSpec
from nadcore.specs.architecture import ArchitectureRef
from nadcore.uploaded.network import UploadedArchitectureError, register_archive, uploaded_model
from nadcore.uploaded.validation import validate
from nads.export_command import export_architecture
from tests.bad_models import NaN, Raises, WrongShape, scripted_bytes

FORMATS = ("pt", "pt2")


def _save(model: nn.Module, path, example_shape: tuple[int, ...]) -> str:
    """TorchScript (.pt) or torch.export (.pt2, dynamic batch) of an eager module."""
    model = model.eval()
    example = torch.zeros((2, *example_shape))
    if str(path).endswith(".pt2"):
        program = torch.export.export(model, (example,),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(model), str(path))
    return str(path)


def _ref(path, init: str = "torch-default") -> ArchitectureRef:
    return ArchitectureRef(id="0" * 32, sha256=register_archive(path), init=init)


@pytest.mark.parametrize("suffix", FORMATS)
def test_uploaded_lenet_gives_the_builtin_nads(tmp_path, suffix):
    path = export_architecture("lenet", (1, 16, 16), tmp_path / f"lenet.{suffix}")
    ref = _ref(path)
    kw = dict(input_shape=(1, 16, 16), num_networks=48, seed=5, method="autograd")
    uploaded = run_spec(NADSpec(architecture=ref, **kw), device="cpu")
    builtin = run_spec(NADSpec(architecture="lenet", **kw), device="cpu")
    assert subspace_overlap(uploaded.nads, builtin.nads, 16) >= 0.9
    # same init plan, same seeds: the same networks, so the same NADs to float rounding
    np.testing.assert_allclose(uploaded.eigenvalues, builtin.eigenvalues, rtol=1e-4)
    assert uploaded.summary()["architecture"]["sha256"] == ref.sha256
    expected = "loop" if suffix == "pt" else "vmap"  # TorchScript: no stateless API
    assert uploaded.info["plan"]["strategy"] == expected


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_finite_differences_match_the_builtin(tmp_path, suffix, strategy):
    path = export_architecture("logreg", (1, 6, 6), tmp_path / f"logreg.{suffix}")
    kw = dict(input_shape=(1, 6, 6), num_networks=20, seed=2)
    uploaded = run_spec(NADSpec(architecture=_ref(path), **kw), device="cpu", strategy=strategy)
    builtin = run_spec(NADSpec(architecture="logreg", **kw), device="cpu", strategy=strategy)
    np.testing.assert_allclose(uploaded.eigenvalues, builtin.eigenvalues, rtol=1e-5)
    assert subspace_overlap(uploaded.nads, builtin.nads, 8) > 0.999


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 32)
        self.ln = nn.LayerNorm(32)
        self.gn = nn.GroupNorm(4, 8)
        self.out = nn.Linear(32, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.bn(self.conv(x))).relu().flatten(1)
        return self.out(self.ln(self.fc(x)))


@pytest.mark.parametrize("suffix", FORMATS)
def test_reinit_draws_pytorch_defaults_per_layer(tmp_path, suffix):
    eager = _Mixed()
    with torch.no_grad():  # uploaded tensors that a re-draw must not keep
        for p in eager.parameters():
            p.fill_(7.0)
        eager.bn.running_mean.fill_(3.0)
        eager.bn.running_var.fill_(9.0)
    ref = _ref(_save(eager, tmp_path / f"mixed.{suffix}", (2, 6, 6)))
    model = uploaded_model(ref)
    n = 300
    state = NetworkSampler(lambda: model, model, 11, torch.device("cpu")).sample(range(n))
    # the independent slow path: PyTorch's own constructors, n times
    torch.manual_seed(0)
    reference = [_Mixed().state_dict() for _ in range(n)]
    for name, drawn in state.items():
        key = name.removeprefix("net.")
        ref_values = torch.stack([s[key] for s in reference]).to(torch.float64)
        got = drawn.to(torch.float64)
        if ref_values.std() == 0:  # constants: BatchNorm, LayerNorm, GroupNorm
            assert torch.equal(got, ref_values), name
            continue
        v_ref, v_got = ref_values.var().item(), got.var().item()
        assert v_got == pytest.approx(v_ref, rel=0.08), name
        # uniform bounds of kaiming_uniform_(a=sqrt(5)): 1/sqrt(fan_in)
        fan_in = math.prod(got.shape[2:]) if got.dim() > 2 else got.shape[-1]
        if key.endswith("weight"):
            assert got.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7, name
    assert not torch.equal(state["net.conv.weight"][0], state["net.conv.weight"][1])
    again = NetworkSampler(lambda: model, model, 11, torch.device("cpu")).sample([7, 3])
    assert torch.equal(again["net.fc.weight"][0], state["net.fc.weight"][7])  # (seed, j) alone


class _Raw(nn.Module):
    """A parameter of a user class: no PyTorch default to follow."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((4,), 0.5))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) * self.scale)


@pytest.mark.parametrize("suffix", FORMATS)
def test_policies_and_unknown_module_types(tmp_path, suffix):
    path = _save(_Raw(), tmp_path / f"raw.{suffix}", (1, 2, 2))
    with pytest.raises(UploadedArchitectureError, match=r"scale \(_Raw\).*normal:<std>"):
        uploaded_model(_ref(path))
    with pytest.raises(UploadedArchitectureError, match="scale"):
        validate(tmp_path / f"raw.{suffix}", (1, 2, 2), "torch-default")
    info = validate(tmp_path / f"raw.{suffix}", (1, 2, 2), "normal:0.1")
    assert info["unknown_params"] == ["scale (_Raw)"] and info["num_outputs"] == 2
    for policy, var, bound in (("normal:0.1", 0.01, None), ("uniform:0.2", 0.04 / 3, 0.2)):
        model = uploaded_model(_ref(path, policy))
        state = NetworkSampler(lambda m=model: m, model, 0, torch.device("cpu")).sample(
            range(400))
        values = torch.cat([v.reshape(-1) for v in state.values()]).to(torch.float64)
        assert values.var().item() == pytest.approx(var, rel=0.1), policy
        if bound is not None:
            assert values.abs().max() <= bound
    keep = uploaded_model(_ref(path, "keep"))
    kept = NetworkSampler(lambda: keep, keep, 0, torch.device("cpu")).sample([0, 5])
    assert torch.equal(kept["net.scale"], torch.full((2, 4), 0.5))


def test_rejections_say_why(tmp_path):
    shape = (1, 2, 2)
    cases = {
        "zip": (b"hello, not an archive", "not a zip archive"),
        "pickle": (pickle.dumps({"weights": [1, 2]}), "plain pickle.*torch.export.save"),
        "raises": (scripted_bytes(Raises()), "raises on a batch.*deliberately broken"),
        "shape": (scripted_bytes(WrongShape()),
                  r"outputs of shape \(1, 2, 2\); expected \(1,\) or \(1, m\)"),
        "nan": (scripted_bytes(NaN()), "non-finite outputs"),
    }
    buf = io.BytesIO()
    torch.save(WrongShape(), buf)
    cases["torch.save"] = (buf.getvalue(), "torch.save checkpoint.*torch.jit.save")
    for name, (data, reason) in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(UploadedArchitectureError, match=reason):
            validate(path, shape, "torch-default")
    # torch.export programs: wrong shape and NaN; a static batch dimension is explained
    with pytest.raises(UploadedArchitectureError, match=r"outputs of shape"):
        validate(_save_path(WrongShape(), tmp_path / "shape.pt2", shape), shape, "torch-default")
    with pytest.raises(UploadedArchitectureError, match="non-finite"):
        validate(_save_path(NaN(), tmp_path / "nan.pt2", shape), shape, "torch-default")
    static = torch.export.export(WrongShape().eval(), (torch.zeros((2, *shape)),))
    torch.export.save(static, str(tmp_path / "static.pt2"))
    with pytest.raises(UploadedArchitectureError, match="dynamic batch dimension"):
        validate(tmp_path / "static.pt2", shape, "torch-default")


def _save_path(model: nn.Module, path, shape):
    _save(model, path, shape)
    return path


@pytest.mark.parametrize("suffix", FORMATS)
def test_probe_trains_an_uploaded_model_like_the_builtin(tmp_path, suffix):
    shape = (1, 4, 4)
    eager = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))  # the built-in logreg, 2 logits
    ref = _ref(_save(eager, tmp_path / f"logreg2.{suffix}", shape))
    kw = dict(input_shape=shape, directions={"kind": "random", "count": 2, "seed": 1},
              data={"num_train": 64, "num_test": 64}, training={"epochs": 2, "batch_size": 16})
    directions = np.eye(16, dtype=np.float32)[:2]
    uploaded = run_probe(ProbeSpec(architecture=ref, **kw), directions, device="cpu")
    builtin = run_probe(ProbeSpec(architecture="logreg", **kw), directions, device="cpu",
                        strategy="loop")
    np.testing.assert_allclose(uploaded.curves, builtin.curves, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix", FORMATS)
def test_poison_trains_a_redrawn_uploaded_model(tmp_path, suffix):
    shape = (1, 4, 4)
    eager = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = _ref(_save(eager, tmp_path / f"mlp.{suffix}", shape))
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.rand((60, *shape), generator=gen) * 0.2 + y.view(-1, 1, 1, 1) * 0.4
    data = ImageDataset(x, y, x.clone(), y.clone(), 3, "toy")
    spec = PoisonSpec(architecture=ref, dataset={"name": "digits"}, nads={"job": "x"},
                      indices=[0], training={"epochs": 20, "batch_size": 20, "lr": 0.1,
                                             "mean": (0.5,), "std": (0.5,)})
    a = train_classifier(spec, data, x, device="cpu")
    b = train_classifier(spec, data, x, device="cpu")
    np.testing.assert_array_equal(a.test_accuracy, b.test_accuracy)  # seeded re-draw
    # The three classes are separated in every pixel ([0, .2], [.4, .6], [.8, 1]), so a model
    # that trains must learn them; one that does not (a re-draw that broke training) stays at
    # chance, 1/3: Hoeffding puts 60 label-independent predictions above 33.3 + 34.7 = 68 %
    # with probability <= 2 exp(-2 * 60 * 0.347^2) = 1e-6. 20 epochs (60 SGD steps) for it to
    # get past that with certainty on separable data.
    assert a.test_accuracy[-1] > 100 / 3 + 100 * math.sqrt(math.log(2e6) / (2 * 60))
    assert a.info["architecture"]["sha256"] == ref.sha256
    with pytest.raises(ValueError, match="3 output"):
        train_classifier(spec, ImageDataset(x, y % 2, x, y % 2, 2, "two"), x, device="cpu")




@pytest.mark.parametrize("recorded", ["nadcore.networks.layers.HeNormalConv2d",
                                      "nadcore.layers.HeNormalConv2d",
                                      "nadcore.architectures.HeNormalConv2d"])
def test_the_papers_conv_is_known_under_its_module_before_and_after_the_moves(recorded):
    """HeNormalConv2d moved from nadcore.architectures to nadcore.layers (issue 16), then to
    nadcore.networks.layers (issue 28); an archive exported before records the module it had
    then and must still draw the built-in's N(0, 2/(k*k*out)) (an unknown type would leave the
    upload unusable with init torch-default)."""
    from nadcore.networks.layers import HeNormalConv2d
    from nadcore.uploaded.network import Loaded, module_rules

    module = nn.Sequential(HeNormalConv2d(1, 4, 3))
    rules, unknown = module_rules(Loaded(module, "pt2", {"0": recorded}))
    assert unknown == []
    assert (rules["0.weight"].kind, rules["0.weight"].value) == ("normal", math.sqrt(2 / 36))
    assert (rules["0.bias"].kind, rules["0.bias"].value) == ("constant", 0.0)


def test_an_uploaded_architecture_is_called_uploaded_not_custom() -> None:
    """"custom" means user directions (nadcore/probe/directions.py); logs and messages call
    an uploaded architecture `uploaded:<id>`."""
    assert str(ArchitectureRef(id="ab" * 16)) == "uploaded:" + "ab" * 16
