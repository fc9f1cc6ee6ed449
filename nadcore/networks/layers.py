"""nadcore's own layers, a leaf module (torch only): the built-in architectures
(`nadcore.networks.zoo`), the init plans (`nadcore.networks.init`) and uploaded architectures
(`nadcore.uploaded.network`, which recognizes them by recorded type name) all use them."""

from __future__ import annotations

import math

from torch import nn


class HeNormalConv2d(nn.Conv2d):
    """Conv2d initialized as in the paper's VGG: weight ~ N(0, 2/(k*k*out)), bias 0."""

    def reset_parameters(self) -> None:
        n = self.kernel_size[0] * self.kernel_size[1] * self.out_channels
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / n))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def init_std(self) -> float:
        return math.sqrt(2.0 / (self.kernel_size[0] * self.kernel_size[1] * self.out_channels))
