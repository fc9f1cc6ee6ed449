"""The built-in model zoo: the paper's CIFAR-style architectures (docs/science.md, "The
architectures") and torchvision's classification builders.

`nadcore.networks.factory.build_model(name, input_shape, num_outputs)` returns a freshly initialized
module of one of them with the architecture's own default initialization; the engine draws
networks faster through `nadcore.networks.init`, which reproduces exactly these distributions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nadcore.networks.layers import HeNormalConv2d
from nadcore.specs.architecture import BUILTIN_ARCHITECTURES


class LogReg(nn.Module):
    """One Linear layer on the flattened input."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 1):
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class LeNet(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 1):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        h, w = (h - 4) // 2 - 4, (w - 4) // 2 - 4
        h, w = h // 2, w // 2
        _require_positive("lenet", input_shape, h, w)
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # relu(maxpool(.)) == maxpool(relu(.)) exactly; pooling first quarters the ReLU work.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with BatchNorm, as in the paper's NAD script."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 1):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for v in VGG11_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            else:
                layers += [HeNormalConv2d(c, v, 3, padding=1), nn.BatchNorm2d(v),
                           nn.ReLU(inplace=True)]
                c = v
        _require_positive("vgg11", input_shape, h, w)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * h * w, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, stride 1, four stages of two BasicBlocks, 4x4 average pool."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 1):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
            h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
        h, w = h // 4, w // 4
        _require_positive("resnet18", input_shape, h, w)
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(512 * h * w, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU in place on the BatchNorm's fresh output (x itself is kept for the
        # concatenation): bitwise the same, one large tensor fewer per layer; finite
        # differences on the CPU 1.2x faster (BENCHMARKS.md, Catalog on the CPU)
        out = self.conv1(F.relu(self.bn1(x), inplace=True))
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x), inplace=True)), 2)


DENSENET121_BLOCKS = (6, 12, 24, 16)


class DenseNet121(nn.Module):
    """CIFAR DenseNet-121: growth 32, blocks (6, 12, 24, 16), reduction 0.5."""

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int = 1, growth: int = 32):
        super().__init__()
        c, h, w = input_shape
        planes = 2 * growth
        self.conv1 = nn.Conv2d(c, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i, n in enumerate(DENSENET121_BLOCKS):
            layers = []
            for _ in range(n):
                layers.append(Bottleneck(planes, growth))
                planes += growth
            stages.append(nn.Sequential(*layers))
            if i < len(DENSENET121_BLOCKS) - 1:
                out_planes = planes // 2
                stages.append(Transition(planes, out_planes))
                planes = out_planes
                h, w = h // 2, w // 2
        h, w = h // 4, w // 4
        _require_positive("densenet121", input_shape, h, w)
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes * h * w, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(self.conv1(x)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The outputs from the last dense block's features (nadcore.nads.first_block calls it
        too)."""
        out = F.avg_pool2d(F.relu(self.bn(features), inplace=True), 4)
        return self.linear(out.flatten(1))


BUILTIN_CLASSES: dict[str, type[nn.Module]] = {
    "logreg": LogReg,
    "lenet": LeNet,
    "vgg11": VGG11,
    "resnet18": ResNet18,
    "densenet121": DenseNet121,
}
assert tuple(BUILTIN_CLASSES) == BUILTIN_ARCHITECTURES


class ArchitectureError(ValueError):
    """The architecture is unknown or cannot take the requested input shape."""


def _require_positive(name: str, shape: tuple[int, int, int], h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ArchitectureError(
            f"{name} cannot take input shape {tuple(shape)}: the feature map shrinks to "
            f"{h}x{w} before the classifier; use a larger H and W"
        )


def torchvision_builders() -> list[str]:
    """Names of torchvision's classification builders (usable as 'torchvision:<name>')."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def torchvision_factory(name: str) -> Callable[[tuple[int, int, int], int], nn.Module]:
    """The builder 'torchvision:<name>' as (input_shape, num_outputs) -> module."""
    import torchvision.models as tvm

    if name not in torchvision_builders():
        raise ArchitectureError(
            f"unknown torchvision classification builder {name!r}; "
            f"known: {', '.join(torchvision_builders())}"
        )

    def build(input_shape: tuple[int, int, int], num_outputs: int) -> nn.Module:
        kwargs: dict = {"weights": None, "num_classes": num_outputs}
        if name in ("googlenet", "inception_v3"):
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        return tvm.get_model(name, **kwargs)

    return build
