"""What the figures of every kind share (PNG, matplotlib's Agg canvas, no pyplot state): how
a figure is saved, the signed frequencies of an fft-shifted axis, the NAD-index axis, points per
index, training curves per epoch and what a figure calls an architecture. Colour scales are fixed,
or say what they are scaled to, so that figures of different jobs compare at a glance; every
colour scale has a colour bar.

Each kind draws its own in `nadcore/<kind>/figures.py`, rendered once by the worker's merge: a
`*_figure` function builds a `Figure` (which tests read: tick labels, limits, colour-bar axes)
and the matching `render_*` writes it. They take numpy arrays and specs, never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

LINES_MAX = 8  # training curves drawn one per direction (index) up to this many, else a band


def shifted(k: int, n: int) -> int:
    """Signed frequency of fft index k along an axis of size n, as `np.fft.fftshift` places it
    (DC at 0, in the middle of the figure; -n//2 .. (n-1)//2)."""
    return (k + n // 2) % n - n // 2


def save(fig: Figure, path: Path) -> None:
    """`fig` as a PNG at `path` (100 dpi, no software stamp: the same figure, the same bytes)."""
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def integer_ticks() -> MaxNLocator:
    """Integer ticks (indices, epochs), even when the view holds a single integer (one epoch:
    MaxNLocator's default would fall back to fractional ticks)."""
    return MaxNLocator(integer=True, min_n_ticks=1)


# NAD indices up to this are drawn on a linear axis; beyond, a log-like one (`index_axis`).
LINEAR_INDICES_MAX = 10


def index_axis(ax: Axes, indices: Sequence[int]) -> None:
    """The x axis of an accuracy-versus-NAD-index plot. Indices up to LINEAR_INDICES_MAX:
    linear, integer ticks. Beyond: symlog (linear between 0 and 1, logarithmic above, as the
    notebook's semilogx of i + 1 but keeping index 0), so that the low indices where NADs differ
    most (0, 1, 4, 16) spread out instead of piling up at the left of an axis to 1,000; ticks
    at 0 and the 1-2-5 steps, written as plain integers."""
    xs = [int(i) for i in indices]
    top = max(xs) if xs else 0
    if top <= LINEAR_INDICES_MAX:
        if len(set(xs)) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)
        ax.xaxis.set_major_locator(integer_ticks())
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
    ticks = [0] + [m * 10 ** e for e in range(len(str(top)) + 1) for m in (1, 2, 5)
                   if m * 10 ** e <= top * 1.2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlim(-0.3 if min(xs) == 0 else min(xs) * 0.8, top * 1.25)


def points(count: int) -> dict:
    """Marker style of one point per index: visible for few points, small for many."""
    return {"linestyle": "none", "marker": "o", "markersize": 5 if count <= 64 else 2.5}


# ---------------------------------------------------------------------------------------------
# Training curves (probe curves.npy, poison metrics)


def epochs_axis(ax: Axes, epochs: int) -> None:
    """The x axis of a per-epoch plot: epochs 1..`epochs`, integer ticks, a grid."""
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(integer_ticks())
    ax.grid(alpha=0.3)


def training_curves(ax: Axes, values: np.ndarray, labels: Sequence[str], style: dict,
                    what: str, colours: bool = True) -> None:
    """values (n, epochs): one line per row for few rows, else the median and the 10-90 %
    band over rows."""
    epochs = np.arange(1, values.shape[1] + 1)
    marker = "o" if values.shape[1] <= 30 else None
    if values.shape[0] <= LINES_MAX:
        for i, (v, label) in enumerate(zip(values, labels, strict=True)):
            colour = f"C{i % 10}" if colours else style.get("color")
            ax.plot(epochs, v, marker=marker, markersize=3, color=colour,
                    label=f"{what} {label}", **{k: s for k, s in style.items() if k != "color"})
        return
    lo, mid, hi = np.percentile(values, [10, 50, 90], axis=0)
    colour = style.get("color", "C0")
    ax.fill_between(epochs, lo, hi, color=colour, alpha=0.2,
                    label=f"{what}: 10-90 % of {values.shape[0]}")
    ax.plot(epochs, mid, color=colour, marker=marker, markersize=3,
            linestyle=style.get("linestyle", "-"), label=f"{what}: median")


def architecture_label(architecture: str | dict, name: str | None = None) -> str:
    """What a figure calls an architecture: a built-in's name; an uploaded one's user-given
    `name` (its id only when the name is not known, e.g. the architecture was deleted)."""
    if isinstance(architecture, dict):  # an uploaded architecture: {"id", "sha256", "init"}
        return f"{name} (uploaded)" if name else f"uploaded architecture {architecture['id'][:8]}"
    return str(architecture)
