"""DenseNet-121's finite differences with its first dense block computed only where a one-pixel
perturbation reaches it.

A perturbation of input pixel i changes the stem convolution's output in a 3x3 window around
i, and every 3x3 convolution of the first dense block grows that window by one pixel (the 1x1
convolutions, eval-mode BatchNorm and ReLU act pixel by pixel): after the block, a 15x15 window
of the 32x32 map. The block holds 45 % of the network's time on a CPU (its 256 channels at full
resolution, memory-bound), so computing each layer on its window around i, the unperturbed
input's activations everywhere else, gives the same outputs to float32 rounding for about 60 %
of the time (BENCHMARKS.md, Catalog on the CPU). Outside the image a window holds zeros after
BatchNorm and ReLU, which is the convolutions' own zero padding. The rest of the network runs on
the full map as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nadcore.networks.zoo import DenseNet121


def applies(template: nn.Module, method: str, strategy: str) -> bool:
    """Whether `FirstBlockLocal` computes this plan's forward passes: a built-in DenseNet-121's
    finite differences in a loop over networks."""
    return (type(template) is DenseNet121 and method == "finite_difference"
            and strategy == "loop")


def _check_shape(net: DenseNet121) -> None:
    """The window arithmetic assumes the zoo's layers: fail loudly where they changed."""
    stem = net.conv1
    assert (stem.kernel_size, stem.padding, stem.stride) == ((3, 3), (1, 1), (1, 1)), stem
    for layer in net.features[0]:
        assert layer.conv1.kernel_size == (1, 1) and layer.conv2.kernel_size == (3, 3)
        assert layer.conv2.padding == (1, 1) and layer.conv2.stride == (1, 1)
        assert layer.conv1.bias is None and layer.conv2.bias is None


class FirstBlockLocal(nn.Module):
    """Outputs of `net` at x0 + delta[b] e_index[b] for each b, computed as the module
    docstring says. Called through `functional_call` with the network's state under `net.`."""

    def __init__(self, net: DenseNet121):
        super().__init__()
        _check_shape(net)
        self.net = net
        self.pad = len(net.features[0]) + 2  # the largest window radius, r + 2 below

    def _crop(self, padded: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, r: int
              ) -> torch.Tensor:
        """(len(ys), C, 2r+1, 2r+1) windows of padded (1, C, H+2pad, W+2pad) around (ys, xs)."""
        k = torch.arange(-r, r + 1, device=padded.device)
        iy = (self.pad + ys)[:, None, None] + k[None, :, None]
        ix = (self.pad + xs)[:, None, None] + k[None, None, :]
        return padded[0][:, iy, ix].permute(1, 0, 2, 3).contiguous()

    def forward(self, x0: torch.Tensor, index: torch.Tensor, delta: torch.Tensor
                ) -> torch.Tensor:
        net, pad = self.net, self.pad
        _, h, w = x0.shape
        image = x0.unsqueeze(0)
        block = net.features[0]
        base = [net.conv1(image)]  # the unperturbed activations, once per call
        for layer in block:
            base.append(layer(base[-1]))
        padded = [F.pad(b, (pad,) * 4) for b in base[:-1]]  # the layers' inputs
        inside = F.pad(torch.ones_like(image[:, :1]), (pad,) * 4)
        channel, ys, xs = index // (h * w), index % (h * w) // w, index % w
        rows = torch.arange(len(index), device=x0.device)
        # the stem on the input's window of radius 2: its output on radius 1, exact
        window = self._crop(F.pad(image, (pad,) * 4), ys, xs, 2)
        window[rows, channel, 2, 2] += delta
        patch = F.conv2d(window, net.conv1.weight)
        r = 1  # the patch: the changed activations, radius r around the pixel
        for i, layer in enumerate(block):
            # output radius r + 1 needs the input on radius r + 2: the base's beyond r
            window = self._crop(padded[i], ys, xs, r + 2)
            window[:, :, 2:-2, 2:-2] = patch
            mask = self._crop(inside, ys, xs, r + 2)
            out = F.relu(layer.bn1(window)) * mask
            out = F.relu(layer.bn2(layer.conv1(out))) * mask
            out = F.conv2d(out, layer.conv2.weight)  # radius r + 1
            patch = torch.cat([out, window[:, :, 1:-1, 1:-1]], 1)
            r += 1
        # the block's output: the base's, the window's pixels inside the image written over
        # it. A window position outside the image writes the window's value at its nearest
        # pixel inside, the same value that pixel writes itself, so repeated indices agree
        # and the copy keeps the map's own size.
        features = base[-1].expand(len(index), -1, -1, -1).clone()
        k = torch.arange(-r, r + 1, device=x0.device)
        iy = (ys[:, None] + k).clamp(0, h - 1)
        ix = (xs[:, None] + k).clamp(0, w - 1)
        wy, wx = iy - ys[:, None] + r, ix - xs[:, None] + r  # their places in the window
        at = rows[:, None, None]
        features[at, :, iy[:, :, None], ix[:, None, :]] = \
            patch[at, :, wy[:, :, None], wx[:, None, :]]
        return net.classify(net.features[1:](features))
