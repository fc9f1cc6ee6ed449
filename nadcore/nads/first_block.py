"""DenseNet-121's finite differences with its first dense block and transition computed only where
a one-pixel perturbation reaches them.

A perturbation of input pixel i changes the stem convolution's output in a 3x3 window around
i, and every 3x3 convolution of the first dense block grows that window by one pixel (the 1x1
convolutions, eval-mode BatchNorm and ReLU act pixel by pixel): after the block, a 15x15 window
of the 32x32 map. The block holds 45 % of the network's time on a CPU (its 256 channels at full
resolution, memory-bound), so computing each layer on its window around i, the unperturbed
input's activations everywhere else, gives the same outputs to float32 rounding for about 60 %
of the time (BENCHMARKS.md, Catalog on the CPU). Outside the image a window holds zeros after
BatchNorm and ReLU, which is the convolutions' own zero padding.

The transition after the block (BatchNorm, ReLU, a 1x1 convolution, a 2x2 average pool) is
pixel by pixel too, up to its pool: it runs on the 16x16 region, aligned to the pool's cells,
that holds the window, and its 8x8 pooled output is written over the unperturbed input's
(1.1x more, BENCHMARKS.md). The rest of the network runs on the full map as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nadcore.networks.zoo import DenseNet121, Transition


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
    transition = net.features[1]  # its forward: BatchNorm, ReLU, 1x1 convolution, 2x2 pool
    assert type(transition) is Transition and transition.conv.kernel_size == (1, 1)


class FirstBlockLocal(nn.Module):
    """Outputs of `net` at x0 + delta[b] e_index[b] for each b, computed as the module
    docstring says. Called through `functional_call` with the network's state under `net.`."""

    def __init__(self, net: DenseNet121):
        super().__init__()
        _check_shape(net)
        self.net = net
        # the largest reach before a pixel: the last layer's input window (radius r + 2 below)
        # and the transition's region (from r + 1 = 8 before, rounded down to even)
        self.pad = len(net.features[0]) + 2

    def _crop(self, padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int
              ) -> torch.Tensor:
        """(len(top), C, size, size) regions of padded (1, C, H+2pad, W+2pad) whose top-left
        corners are (top, left) in the unpadded map."""
        k = torch.arange(size, device=padded.device)
        iy = (self.pad + top)[:, None, None] + k[None, :, None]
        ix = (self.pad + left)[:, None, None] + k[None, None, :]
        return padded[0][:, iy, ix].permute(1, 0, 2, 3).contiguous()

    def _window(self, padded: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, r: int
                ) -> torch.Tensor:
        """(len(ys), C, 2r+1, 2r+1) windows of padded around (ys, xs)."""
        return self._crop(padded, ys - r, xs - r, 2 * r + 1)

    def forward(self, x0: torch.Tensor, index: torch.Tensor, delta: torch.Tensor
                ) -> torch.Tensor:
        net, pad = self.net, self.pad
        _, h, w = x0.shape
        image = x0.unsqueeze(0)
        block = net.features[0]
        base = [net.conv1(image)]  # the unperturbed activations, once per call
        for layer in block:
            base.append(layer(base[-1]))
        padded = [F.pad(b, (pad,) * 4) for b in base]
        inside = F.pad(torch.ones_like(image[:, :1]), (pad,) * 4)
        channel, ys, xs = index // (h * w), index % (h * w) // w, index % w
        rows = torch.arange(len(index), device=x0.device)
        # the stem on the input's window of radius 2: its output on radius 1, exact
        window = self._window(F.pad(image, (pad,) * 4), ys, xs, 2)
        window[rows, channel, 2, 2] += delta
        patch = F.conv2d(window, net.conv1.weight)
        r = 1  # the patch: the changed activations, radius r around the pixel
        for i, layer in enumerate(block):
            # output radius r + 1 needs the input on radius r + 2: the base's beyond r
            window = self._window(padded[i], ys, xs, r + 2)
            window[:, :, 2:-2, 2:-2] = patch
            mask = self._window(inside, ys, xs, r + 2)
            # outside the image: zeros into the 3x3 convolution (its padding); the 1x1 one
            # keeps pixels apart, so one mask after it is enough
            out = layer.conv1(F.relu(layer.bn1(window)))
            out = F.relu(layer.bn2(out)) * mask
            out = F.conv2d(out, layer.conv2.weight)  # radius r + 1
            patch = torch.cat([out, window[:, :, 1:-1, 1:-1]], 1)
            r += 1
        # the transition on the region of whole pool cells that holds the window (r = 7: 16x16,
        # its top-left corner even), the base's outside the window: outside the image it
        # reads padding, but only into pool cells outside the image, which nothing reads
        trans = net.features[1]
        top = (ys - r).div(2, rounding_mode="floor") * 2
        left = (xs - r).div(2, rounding_mode="floor") * 2
        region = self._crop(padded[-1], top, left, 2 * r + 2)
        _write(region, patch, ys - r - top, xs - r - left)
        features = trans(base[-1]).expand(len(index), -1, -1, -1).clone()
        _write(features, trans(region), top // 2, left // 2)
        return net.classify(net.features[2:](features))


def _write(out: torch.Tensor, values: torch.Tensor, top: torch.Tensor, left: torch.Tensor
           ) -> None:
    """out[b, :, top[b] + i, left[b] + j] = values[b, :, i, j] where that lies inside out's
    map, in place. A place outside the map writes the value of its nearest place inside (that
    place's own value, so repeated indices agree), which keeps `out` the map's own size."""
    n, _, height, width = values.shape
    k_y = torch.arange(height, device=out.device)
    k_x = torch.arange(width, device=out.device)
    iy = (top[:, None] + k_y).clamp(0, out.shape[-2] - 1)
    ix = (left[:, None] + k_x).clamp(0, out.shape[-1] - 1)
    at = torch.arange(n, device=out.device)[:, None, None]
    out[at, :, iy[:, :, None], ix[:, None, :]] = \
        values[at, :, (iy - top[:, None])[:, :, None], (ix - left[:, None])[:, None, :]]
