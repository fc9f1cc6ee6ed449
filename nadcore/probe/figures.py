"""The probe kind's figures: heatmap.png (accuracy over the Fourier frequencies probed),
accuracy_vs_index.png (accuracy against the NAD index) and curves.png (training curves per
direction). What every kind's figures share: `nadcore.figures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nadcore.figures import (
    LINES_MAX,
    epochs_axis,
    index_axis,
    points,
    save,
    shifted,
    training_curves,
)
from nadcore.probe.fourier_grid import mirror
from nadcore.probe.spec import ProbeSpec

VMIN, VMAX = 50.0, 100.0  # percent: chance to perfect
_ANNOTATE_MAX = 64  # cells labelled with their accuracy when at most this many were probed
_MAX_TICKS = 17
_LATTICE_SPARSITY = 3  # a probed axis is drawn as its regular lattice if at most 3x as long
LOG2 = math.log(2.0)  # cross-entropy of a two-class guess: a probe that learned nothing


def _ticks(values: Sequence[int]) -> tuple[list[int], list[str]]:
    """At most about _MAX_TICKS positions of `values` (drawn at 0..len-1), always including
    the value 0 when present."""
    stride = max(1, -(-len(values) // _MAX_TICKS))
    anchor = list(values).index(0) if 0 in values else 0
    positions = [p for p in range(len(values)) if (p - anchor) % stride == 0]
    return positions, [str(values[p]) for p in positions]


def _cmap() -> Colormap:
    return colormaps["viridis"].with_extremes(bad="lightgrey")


# ---------------------------------------------------------------------------------------------
# Heatmap over the frequencies probed; accuracy against the NAD index


def probed_axis(values: Sequence[int]) -> tuple[list[int], bool]:
    """The signed frequencies a heatmap axis shows for the probed `values`, and whether they
    are to scale: the regular lattice min..max with the values' common step (frequencies of it
    not probed are drawn grey) when it is at most _LATTICE_SPARSITY times as many, else the
    probed values alone, side by side."""
    vs = sorted(set(int(v) for v in values))
    if len(vs) < 2:
        return vs, True
    step = reduce(math.gcd, (b - a for a, b in zip(vs, vs[1:], strict=False)))
    lattice = list(range(vs[0], vs[-1] + 1, step))
    if len(lattice) <= _LATTICE_SPARSITY * len(vs):
        return lattice, True
    return vs, False


def heatmap_figure(spec: ProbeSpec, accuracies: np.ndarray, frequencies: np.ndarray,
                   name: str | None = None,
                   intervals: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """Accuracy over the frequency plane (signed frequencies, fft-shifted), scale 50-100 %.

    The axes are the frequencies probed and their mirrors (`probed_axis`): the whole plane for
    a full grid, the lattice or the listed values otherwise; frequencies of the drawn grid not
    probed are grey. Each direction is trained once (`nadcore.probe.fourier_grid`): its result is
    drawn at (ky, kx) and, mirrored, at (-ky, -kx), where the number is in brackets, so the
    figure is point-symmetric by construction. With `intervals` (low, high), a cell whose
    confidence interval contains 50 % is hatched: it cannot be told from chance. The DC cell
    (ky, kx) = (0, 0) is outlined when it is on the grid.
    """
    c, h, w = spec.input_shape
    cells = []  # (signed ky, signed kx, accuracy, hatched, mirrored)
    for i, (ky, kx) in enumerate(frequencies.tolist()):
        at_chance = intervals is not None and intervals[0][i] <= 50.0 <= intervals[1][i]
        a = float(accuracies[i])
        cells.append((shifted(ky, h), shifted(kx, w), a, at_chance, False))
        other = mirror(ky, kx, h, w)
        if other is not None:
            cells.append((shifted(other[0], h), shifted(other[1], w), a, at_chance, True))
    (ys, y_scaled), (xs, x_scaled) = probed_axis([y for y, *_ in cells]), \
        probed_axis([x for _, x, *_ in cells])
    row, col = {v: i for i, v in enumerate(ys)}, {v: i for i, v in enumerate(xs)}
    grid = np.full((len(ys), len(xs)), np.nan)
    for y, x, a, *_ in cells:
        grid[row[y], col[x]] = a

    side = min(9.0, 3.5 + 0.18 * max(len(ys), len(xs)))
    fig = Figure(figsize=(side + 1.4, side + 0.5))
    ax = fig.add_subplot()
    image = ax.imshow(grid, origin="lower", cmap=_cmap(), vmin=VMIN, vmax=VMAX,
                      interpolation="nearest")
    ax.set_xticks(*_ticks(xs))
    ax.set_yticks(*_ticks(ys))
    ax.tick_params(labelsize=7 if max(len(xs), len(ys)) > 9 else 9)
    ax.set_xlabel("kx, signed frequency probed (cycles per image width)"
                  + ("" if x_scaled else "; probed values only, not to scale"), fontsize=8)
    ax.set_ylabel("ky, signed frequency probed (cycles per image height)"
                  + ("" if y_scaled else "; probed values only, not to scale"), fontsize=8)
    dc = 0 in row and 0 in col
    if dc:
        ax.add_patch(Rectangle((col[0] - 0.5, row[0] - 0.5), 1, 1, fill=False,
                               edgecolor="red", linewidth=1.5, label="DC (0, 0)"))
    hatched = 0
    for y, x, _, at_chance, _ in cells:
        if at_chance:
            hatched += 1
            ax.add_patch(Rectangle((col[x] - 0.5, row[y] - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="white", linewidth=0, alpha=0.6))
    if len(cells) <= _ANNOTATE_MAX:
        for y, x, a, _, mirrored in cells:
            ax.text(col[x], row[y], f"({a:.1f})" if mirrored else f"{a:.1f}", ha="center",
                    va="center", fontsize=6 if mirrored else 7,
                    color="white" if a < 75 else "black")
    probed = len(frequencies)
    shown = len(cells)
    missing = int(np.isnan(grid).sum())
    what = (f"{probed} directions trained once, drawn at (ky, kx) and mirrored at (-ky, -kx)"
            if shown > probed else f"{probed} directions")
    what += (f"; {shown} of {h * w} frequencies" if shown < h * w else
             f"; all {h * w} frequencies")
    if missing:
        what += "; grey: not probed"
    if dc:
        what += "; red square: DC"
    if intervals is not None and hatched:
        what += "\nhatched: confidence interval contains 50 % (not distinguishable from chance)"
    ax.set_title(f"{name or spec.architecture} ({c}x{h}x{w}): test accuracy on D(v), Fourier "
                 f"{spec.directions.phase}\n{what}", fontsize=8)
    fig.colorbar(image, ax=ax, label="test accuracy (%), 50 = chance", fraction=0.046,
                 pad=0.04)
    fig.tight_layout()
    return fig


def render_heatmap(spec: ProbeSpec, accuracies: np.ndarray, frequencies: np.ndarray,
                   path: Path, name: str | None = None,
                   intervals: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    save(heatmap_figure(spec, accuracies, frequencies, name, intervals), path)


def accuracy_vs_index_figure(spec: ProbeSpec, accuracies: np.ndarray, indices: Sequence[int],
                             name: str | None = None, source: str | None = None) -> Figure:
    """Test accuracy on D(u_i) against the NAD index i, one point per index probed (chance
    level dashed); `source` names where the NADs come from."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    order = np.argsort(np.asarray(indices), kind="stable")
    xs = np.asarray(indices)[order]
    ys = np.asarray(accuracies)[order]
    ax.plot(xs, ys, color="tab:blue", label="test accuracy", **points(len(xs)))
    ax.axhline(50.0, color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_ylim(min(40.0, float(ys.min()) - 2), 101.0)
    index_axis(ax, xs)
    ax.set_xlabel("NAD index i" + (" (log scale above 1)" if ax.get_xscale() == "symlog"
                                   else ""))
    ax.set_ylabel("test accuracy (%)")
    c, h, w = spec.input_shape
    of = f", u_i = NADs of {source}" if source else ""
    ax.set_title(f"{name or spec.architecture} ({c}x{h}x{w}): test accuracy on D(u_i){of}",
                 fontsize=9)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def render_accuracy_vs_index(spec: ProbeSpec, accuracies: np.ndarray, indices: Sequence[int],
                             path: Path, name: str | None = None,
                             source: str | None = None) -> None:
    save(accuracy_vs_index_figure(spec, accuracies, indices, name, source), path)


# ---------------------------------------------------------------------------------------------
# Training curves (curves.npy)


def probe_curves_figure(spec: ProbeSpec, curves: np.ndarray, labels: Sequence[str],
                        name: str | None = None) -> Figure:
    """curves.npy of a probe job, (n, epochs, 4): train loss, train accuracy, test loss, test
    accuracy per epoch. Left the losses (log 2: a guess), right the accuracies (50 %: chance);
    one line per direction up to LINES_MAX directions, else the median and a band."""
    n, epochs, _ = curves.shape
    fig = Figure(figsize=(11.0, 4.2))
    loss, acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    few = n <= LINES_MAX
    for ax, (train_col, test_col) in ((loss, (0, 2)), (acc, (1, 3))):
        training_curves(ax, curves[:, :, train_col], labels, {"linestyle": "-", "color": "C0"},
                "train", colours=few)
        training_curves(ax, curves[:, :, test_col], labels, {"linestyle": "--", "color": "C1"},
                "test", colours=few)
        epochs_axis(ax, epochs)
    loss.axhline(LOG2, color="grey", linestyle=":", linewidth=1, label="log 2 (a guess)")
    loss.set_ylabel("cross-entropy loss")
    acc.axhline(50.0, color="grey", linestyle=":", linewidth=1, label="chance (50 %)")
    acc.set_ylabel("accuracy (%)")
    acc.set_ylim(min(40.0, float(curves[:, :, (1, 3)].min()) - 2), 101.0)
    for ax in (loss, acc):
        ax.legend(fontsize=6, ncol=2 if few and n > 3 else 1)
    c, h, w = spec.input_shape
    fig.suptitle(f"{name or spec.architecture} ({c}x{h}x{w}): training curves of "
                 f"{n} {spec.directions.kind} direction{'s' if n != 1 else ''} "
                 "(solid: train, dashed: test)", fontsize=9)
    fig.tight_layout()
    return fig


def render_probe_curves(spec: ProbeSpec, curves: np.ndarray, labels: Sequence[str], path: Path,
                        name: str | None = None) -> None:
    save(probe_curves_figure(spec, curves, labels, name), path)
