import math

import pytest
import torch
from torch import nn

from nadcore.nads.cost import estimate_cost
from nadcore.nads.spec import NADSpec
from nadcore.networks.factory import ArchitectureError, build_model
from nadcore.networks.init import NetworkSampler, UnknownModuleError, init_plan
from nadcore.networks.zoo import torchvision_builders
from nadcore.specs.architecture import BUILTIN_ARCHITECTURES
from nadcore.specs.layer_counts import layer_count


def _macs_by_hooks(model: nn.Module, shape) -> int:
    """Independent count: multiply-adds of every Conv2d/Linear, read off real forward shapes."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()  # in/groups * kh * kw
            total += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("arch", BUILTIN_ARCHITECTURES)
@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 40, 36)])
def test_builtin_shapes_params_and_flops(arch, shape):
    model = build_model(arch, shape, num_outputs=3)
    assert model(torch.randn(2, *shape)).shape == (2, 3)
    count = layer_count(arch, shape, 3)
    assert count.params == sum(p.numel() for p in model.parameters())
    assert count.macs == _macs_by_hooks(model, shape)


def test_paper_sizes():
    # CIFAR ResNet-18 has 11.17 M parameters; LeNet's FD costs about 1.7 GFLOP per network.
    assert layer_count("resnet18", (3, 32, 32), 10).params == 11_173_962
    cost = estimate_cost(NADSpec(architecture="lenet", num_networks=10_000))
    assert cost.forward_passes == 10_000 * 2048
    assert 1.6e9 < cost.flops_per_network < 1.8e9
    assert cost.result_bytes == 10_000 * 1024 * 4
    assert cost.memory_bytes == cost.result_bytes + cost.model_bytes > cost.result_bytes


@pytest.mark.parametrize(
    "arch,shape",
    [("lenet", (1, 8, 8)), ("resnet18", (1, 16, 16)), ("vgg11", (3, 16, 16)),
     ("densenet121", (1, 8, 8))],
)
def test_shape_too_small_is_a_clear_error(arch, shape):
    with pytest.raises(ArchitectureError, match=rf"{arch} cannot take input shape"):
        build_model(arch, shape)
    assert layer_count(arch, shape) is None


def test_torchvision_builder_and_shape_errors():
    assert "resnet18" in torchvision_builders()
    model = build_model("torchvision:resnet18", (3, 64, 64), num_outputs=1)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    with pytest.raises(ArchitectureError, match="vit_b_16 cannot take input shape"):
        build_model("torchvision:vit_b_16", (3, 32, 32))
    with pytest.raises(ArchitectureError, match="unknown torchvision"):
        build_model("torchvision:not_a_model", (3, 32, 32))
    with pytest.raises(ArchitectureError, match="unknown architecture"):
        build_model("alexnet9", (1, 32, 32))


@pytest.mark.parametrize("arch", ["lenet", "vgg11", "resnet18"])
def test_init_plan_matches_pytorch_defaults(arch):
    """Per-parameter mean and variance of the fast init equal those of the modules' own init.
    The bounds below scale with n, the draws per tensor (networks x its size): 8 networks
    give millions on ResNet-18's convolutions (24 networks took 35 s there)."""
    shape, networks = (1, 32, 32), 8
    template = build_model(arch, shape)
    sampler = NetworkSampler(lambda: None, template, seed=3, device=torch.device("cpu"))
    state = sampler.sample(range(networks))
    torch.manual_seed(0)
    reference = [build_model(arch, shape).state_dict() for _ in range(networks)]
    for rule in init_plan(template):
        ours = state[rule.name].double()
        theirs = torch.stack([r[rule.name] for r in reference]).double()
        if rule.kind == "constant":
            assert torch.equal(ours, theirs), rule.name
            continue
        n = ours.numel()
        var = theirs.var().item()
        assert ours.mean().abs().item() < 6 * math.sqrt(var / n) + 1e-12, rule.name
        # relative standard error of a variance estimate is about sqrt(2/n) (uniform: less)
        assert abs(ours.var().item() / var - 1) < 6 * math.sqrt(2 / n) + 0.02, rule.name
        if rule.kind == "uniform":
            # same support: both inside the bound, and PyTorch's own draws reach it
            assert ours.abs().max().item() <= rule.value * (1 + 1e-6)
            assert theirs.abs().max().item() <= rule.value * (1 + 1e-6)
            assert theirs.abs().max().item() >= rule.value * (1 - 20 / n)


def test_vgg_convs_use_the_paper_init():
    template = build_model("vgg11", (1, 32, 32))
    rules = {r.name: r for r in init_plan(template)}
    assert rules["features.0.weight"].kind == "normal"
    assert rules["features.0.weight"].value == pytest.approx(math.sqrt(2 / (9 * 64)))
    assert rules["features.0.bias"].kind == "constant" and rules["features.0.bias"].value == 0
    assert rules["classifier.0.weight"].kind == "uniform"
    assert rules["features.1.running_var"].value == 1.0


def test_unknown_module_type_is_named():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    model = nn.Sequential(nn.Linear(3, 3), Odd())
    with pytest.raises(UnknownModuleError, match=r"Odd \(1\.scale\)"):
        init_plan(model)
