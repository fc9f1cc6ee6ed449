"""PNG figures of NAD, probe and poison jobs, rendered once by the merge task (matplotlib, Agg
canvas, no pyplot state). Colour scales are fixed, or say what they are scaled to, so that
figures of different jobs compare at a glance; every colour scale has a colour bar.

Each figure is built by a `*_figure` function (a `Figure`, which tests read: tick labels,
limits, colour-bar axes) and written by the matching `render_*`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from nadcore.poison.spec import PoisonSpec
from nadcore.probe.fourier_grid import mirror
from nadcore.probe.spec import ProbeSpec

VMIN, VMAX = 50.0, 100.0  # percent: chance to perfect
_ANNOTATE_MAX = 64  # cells labelled with their accuracy when at most this many were probed
_MAX_TICKS = 17
_LATTICE_SPARSITY = 3  # a probed axis is drawn as its regular lattice if at most 3x as long
_LINES_MAX = 8  # training curves drawn one per direction (index) up to this many, else a band
LOG2 = math.log(2.0)  # cross-entropy of a two-class guess: a probe that learned nothing
DC_COLOUR = "cyan"


def shifted(k: int, n: int) -> int:
    """Signed frequency of fft index k along an axis of size n, as `np.fft.fftshift` places it
    (DC at 0, in the middle of the figure; -n//2 .. (n-1)//2)."""
    return (k + n // 2) % n - n // 2


def _ticks(values: Sequence[int]) -> tuple[list[int], list[str]]:
    """At most about _MAX_TICKS positions of `values` (drawn at 0..len-1), always including
    the value 0 when present."""
    stride = max(1, -(-len(values) // _MAX_TICKS))
    anchor = list(values).index(0) if 0 in values else 0
    positions = [p for p in range(len(values)) if (p - anchor) % stride == 0]
    return positions, [str(values[p]) for p in positions]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def _cmap() -> Colormap:
    return colormaps["viridis"].with_extremes(bad="lightgrey")


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def _integer_ticks() -> MaxNLocator:
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
        ax.xaxis.set_major_locator(_integer_ticks())
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
    ticks = [0] + [m * 10 ** e for e in range(len(str(top)) + 1) for m in (1, 2, 5)
                   if m * 10 ** e <= top * 1.2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlim(-0.3 if min(xs) == 0 else min(xs) * 0.8, top * 1.25)


def _points(count: int) -> dict:
    """Marker style of one point per index: visible for few points, small for many."""
    return {"linestyle": "none", "marker": "o", "markersize": 5 if count <= 64 else 2.5}


# ---------------------------------------------------------------------------------------------
# Probe: heatmap over the frequencies probed


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
    _save(heatmap_figure(spec, accuracies, frequencies, name, intervals), path)


def accuracy_vs_index_figure(spec: ProbeSpec, accuracies: np.ndarray, indices: Sequence[int],
                             name: str | None = None, source: str | None = None) -> Figure:
    """Test accuracy on D(u_i) against the NAD index i, one point per index probed (chance
    level dashed); `source` names where the NADs come from."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    order = np.argsort(np.asarray(indices), kind="stable")
    xs = np.asarray(indices)[order]
    ys = np.asarray(accuracies)[order]
    ax.plot(xs, ys, color="tab:blue", label="test accuracy", **_points(len(xs)))
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
    _save(accuracy_vs_index_figure(spec, accuracies, indices, name, source), path)


# ---------------------------------------------------------------------------------------------
# Training curves (probe curves.npy, poison metrics)


def _epochs_axis(ax: Axes, epochs: int) -> None:
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.grid(alpha=0.3)


def _curves(ax: Axes, values: np.ndarray, labels: Sequence[str], style: dict,
            what: str, colours: bool = True) -> None:
    """values (n, epochs): one line per row for few rows, else the median and the 10-90 %
    band over rows."""
    epochs = np.arange(1, values.shape[1] + 1)
    marker = "o" if values.shape[1] <= 30 else None
    if values.shape[0] <= _LINES_MAX:
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


def probe_curves_figure(spec: ProbeSpec, curves: np.ndarray, labels: Sequence[str],
                        name: str | None = None) -> Figure:
    """curves.npy of a probe job, (n, epochs, 4): train loss, train accuracy, test loss, test
    accuracy per epoch. Left the losses (log 2: a guess), right the accuracies (50 %: chance);
    one line per direction up to _LINES_MAX directions, else the median and a band."""
    n, epochs, _ = curves.shape
    fig = Figure(figsize=(11.0, 4.2))
    loss, acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    few = n <= _LINES_MAX
    for ax, (train_col, test_col) in ((loss, (0, 2)), (acc, (1, 3))):
        _curves(ax, curves[:, :, train_col], labels, {"linestyle": "-", "color": "C0"},
                "train", colours=few)
        _curves(ax, curves[:, :, test_col], labels, {"linestyle": "--", "color": "C1"},
                "test", colours=few)
        _epochs_axis(ax, epochs)
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
    _save(probe_curves_figure(spec, curves, labels, name), path)


def _dataset_name(spec: PoisonSpec) -> str:
    return spec.dataset.name or "an uploaded dataset"


def _poison_what(spec: PoisonSpec) -> str:
    return "flipped NAD basis" if spec.mode == "flip" else f"poison eps = {spec.eps:g}"


def poison_curves_figure(spec: PoisonSpec, indices: Sequence[int], train: np.ndarray,
                         test: np.ndarray, clean: np.ndarray | None,
                         name: str | None = None) -> Figure:
    """Accuracy per epoch of every model of a poison job: clean test (left) and the training
    set it was trained on (right); `clean` (epochs, 2) is the clean run (train, test), in black.
    """
    epochs = train.shape[1]
    fig = Figure(figsize=(11.0, 4.2))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    labels = ["(flipped)"] if spec.mode == "flip" else [f"i={i}" for i in indices]
    few = len(labels) <= _LINES_MAX
    for ax, values, column in ((left, test, 1), (right, train, 0)):
        _curves(ax, values, labels, {"linestyle": "-", "color": "C3"},
                "flipped" if spec.mode == "flip" else "poisoned", colours=few)
        if clean is not None:
            ax.plot(np.arange(1, epochs + 1), clean[:, column], color="black", linewidth=2,
                    marker="o" if epochs <= 30 else None, markersize=3,
                    label="clean training")
        _epochs_axis(ax, epochs)
        ax.set_ylim(-2.0, 102.0)
        ax.legend(fontsize=6, ncol=2 if few and len(labels) > 3 else 1)
    left.set_ylabel("clean-test accuracy (%)")
    right.set_ylabel("training accuracy (%), on the set it was trained on")
    fig.suptitle(f"{name or spec.architecture} on {_dataset_name(spec)}: {_poison_what(spec)}, "
                 f"{epochs} epochs; accuracy per epoch", fontsize=9)
    fig.tight_layout()
    return fig


def render_poison_curves(spec: PoisonSpec, indices: Sequence[int], train: np.ndarray,
                         test: np.ndarray, clean: np.ndarray | None, path: Path,
                         name: str | None = None) -> None:
    _save(poison_curves_figure(spec, indices, train, test, clean, name), path)


# ---------------------------------------------------------------------------------------------
# Poison: final accuracies, examples


def poison_accuracy_figure(spec: PoisonSpec, indices: Sequence[int], train: np.ndarray,
                           test: np.ndarray, clean_test: float | None = None,
                           name: str | None = None) -> Figure:
    """Final clean-test (and poisoned-train) accuracy against the poison index, one point per
    index (indices are not a continuum: no line joins them), and the clean run's clean-test
    accuracy as the baseline. Flip mode has no index: one point, labelled."""
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    flip = spec.mode == "flip"
    order = np.argsort(np.asarray(indices), kind="stable")
    xs = np.zeros(1) if flip else np.asarray(indices)[order]
    style = _points(len(xs))
    ax.plot(xs, np.asarray(test)[order], color="tab:blue", label="clean test", **style)
    ax.plot(xs, np.asarray(train)[order], color="tab:orange", label="poisoned train",
            **style | {"marker": "x"})
    if clean_test is not None:
        ax.axhline(clean_test, color="black", linestyle="--", linewidth=1,
                   label=f"clean training (no poison): {clean_test:.1f} % clean test")
    ax.set_ylim(-2.0, 102.0)
    index_axis(ax, xs.tolist())
    if flip:
        ax.set_xticks([0], ["flipped basis"])
        ax.set_xlabel("")
    else:
        ax.set_xlabel("poison NAD index i" + (" (log scale above 1)"
                                              if ax.get_xscale() == "symlog" else ""))
    ax.set_ylabel("final accuracy (%)")
    baseline = "" if clean_test is not None else " (no clean run: a job from before clean runs)"
    ax.set_title(f"{name or spec.architecture} on {_dataset_name(spec)}: {_poison_what(spec)}, "
                 f"{spec.training.epochs} epochs{baseline}", fontsize=9)
    ax.legend(loc="best", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def render_poison_accuracy(spec: PoisonSpec, indices: Sequence[int], train: np.ndarray,
                           test: np.ndarray, path: Path, clean_test: float | None = None,
                           name: str | None = None) -> None:
    _save(poison_accuracy_figure(spec, indices, train, test, clean_test, name), path)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> something imshow draws: grey for 1 channel, RGB for 3, else the
    channel mean."""
    image = np.clip(image, 0.0, 1.0)
    if image.shape[0] == 3:
        return image.transpose(1, 2, 0), None
    return image.mean(axis=0), "gray"


def examples_explanation(spec: PoisonSpec, bound: float) -> str:
    """What the difference row of examples.png shows, and why it can be much larger than eps."""
    scale = f"difference x' - x (channel mean) scaled to +-max|x' - x| = {bound:.3g}"
    if spec.mode == "flip":
        return (f"{scale}. x' = U flip(U^T x): the image's NAD coefficients in reverse order "
                "(an isometry).")
    return (f"{scale}; eps = {spec.eps:g}. x' = x + (+-eps - <x, v>) v sets the coefficient of "
            "x along its class's carrier v (a unit NAD) to +-eps: the change removes the "
            "image's own component along v, which can far exceed eps (a smooth, DC-like NAD "
            "carries the mean brightness, so removing it hollows the digits).")


def examples_figure(spec: PoisonSpec, index: int, clean: np.ndarray, changed: np.ndarray,
                    labels: np.ndarray) -> Figure:
    """A few training images: clean, poisoned (or flipped), and the difference (channel mean,
    symmetric colour scale), with a colour bar per scale and what the difference means."""
    n = clean.shape[0]
    fig = Figure(figsize=(1.6 * n + 1.6, 6.2))
    grid = fig.add_gridspec(3, n + 1, width_ratios=[1.0] * n + [0.08], left=0.07, right=0.9,
                            top=0.8, bottom=0.03, wspace=0.08, hspace=0.12)
    diff = (changed - clean).mean(axis=1)
    bound = float(np.abs(diff).max()) or 1.0
    rows = ("clean", "flipped" if spec.mode == "flip" else f"poisoned (i={index})",
            "difference x' - x")
    images = [None, None, None]
    for j in range(n):
        for r, title in enumerate(rows):
            ax = fig.add_subplot(grid[r, j])
            if r == 2:
                images[r] = ax.imshow(diff[j], cmap="seismic", vmin=-bound, vmax=bound,
                                      interpolation="nearest")
            else:
                image, cmap = _display(clean[j] if r == 0 else changed[j])
                images[r] = ax.imshow(image, cmap=cmap or "gray", vmin=0.0, vmax=1.0,
                                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
            if r == 0:
                ax.set_title(f"label {int(labels[j])}", fontsize=8)
    outside = float(changed.min()) < 0.0 or float(changed.max()) > 1.0
    fig.colorbar(images[0], cax=fig.add_subplot(grid[0:2, n]),
                 label="pixel value" + (" (shown clipped to [0, 1])" if outside else ""))
    fig.colorbar(images[2], cax=fig.add_subplot(grid[2, n]), label="x' - x")
    fig.suptitle("\n".join(textwrap.wrap(examples_explanation(spec, bound),
                                         width=int(13 * fig.get_figwidth()))), fontsize=8)
    return fig


def render_examples(spec: PoisonSpec, index: int, clean: np.ndarray, changed: np.ndarray,
                    labels: np.ndarray, path: Path) -> None:
    _save(examples_figure(spec, index, clean, changed, labels), path)


# ---------------------------------------------------------------------------------------------
# NAD jobs: the gallery and the spectrum


GALLERY_MAX = 8  # NADs shown in preview.png
_GALLERY_LEFT, _GALLERY_RIGHT = 1.0, 1.3  # inches: row labels and ky ticks; colour bars


def spatial_view(nad: np.ndarray) -> np.ndarray:
    """The (H, W) image drawn for one NAD of shape (C, H, W): channel 0 (signed)."""
    return nad[0]


def fourier_energy(nad: np.ndarray) -> np.ndarray:
    """|fft2|^2 of one NAD of shape (C, H, W), summed over channels and fft-shifted: DC at
    (H // 2, W // 2), frequency (ky, kx) at (H // 2 + ky, W // 2 + kx) as `shifted` signs it.
    By Parseval it sums to H * W * ||nad||^2."""
    energy = np.abs(np.fft.fft2(nad.astype(np.float64), axes=(-2, -1))) ** 2
    return np.fft.fftshift(energy.sum(axis=0))


def frequency_extent(h: int, w: int) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) of an fft-shifted (H, W) array drawn with
    origin "lower": cell centres at the signed frequencies -n//2 .. (n-1)//2."""
    return (-(w // 2) - 0.5, (w - 1) // 2 + 0.5, -(h // 2) - 0.5, (h - 1) // 2 + 0.5)


def frequency_ticks(n: int) -> list[int]:
    """The lowest, DC and the highest signed frequency of an axis of size n."""
    return sorted({-(n // 2), 0, (n - 1) // 2})


def _mark_dc(ax: Axes, extent: tuple[float, float, float, float]) -> None:
    """Short stubs at kx = 0 and ky = 0 from the frame inwards: DC where they would meet,
    without covering the low frequencies around it."""
    left, right, bottom, top = extent
    stub = 0.12 * (right - left)
    for xs, ys in (((0, 0), (bottom, bottom + stub)), ((0, 0), (top - stub, top)),
                   ((left, left + stub), (0, 0)), ((right - stub, right), (0, 0))):
        ax.plot(xs, ys, color=DC_COLOUR, linewidth=1.2, solid_capstyle="butt")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def gallery_size(count: int) -> tuple[int, int]:
    """(width, height) in pixels of a preview.png showing `count` NADs (at dpi 100)."""
    return max(600, int(round(100 * (_GALLERY_LEFT + 1.45 * count + _GALLERY_RIGHT)))), 400


def nad_gallery_figure(nads: np.ndarray, input_shape: Sequence[int], title: str,
                       count: int = GALLERY_MAX) -> tuple[Figure, int]:
    """The first `count` NADs, one per column, and the number shown. Top row: the NAD in pixel
    space (channel 0 when C > 1) divided by its largest |value| (diverging, -1..1). Bottom
    row: its Fourier energy (summed over channels) divided by its largest value, on signed
    frequency axes (origin lower: ky up), DC marked by stubs at kx = 0 and ky = 0 on the
    frame. One colour bar per row."""
    c, h, w = (int(v) for v in input_shape)
    if nads.ndim != 2 or nads.shape[0] == 0 or nads.shape[1] != c * h * w:
        raise ValueError(f"nads: expected (k >= 1, {c * h * w}) rows, got {nads.shape}")
    n = min(count, nads.shape[0])
    width, height = gallery_size(n)
    fig = Figure(figsize=(width / 100, height / 100))
    inches = width / 100
    grid = fig.add_gridspec(2, n + 1, width_ratios=[1.0] * n + [0.1],
                            left=_GALLERY_LEFT / inches, right=1 - 0.75 / inches, top=0.8,
                            bottom=0.12, wspace=0.12, hspace=0.18)
    extent = frequency_extent(h, w)
    pixels = fourier = None
    for j in range(n):
        nad = nads[j].reshape(c, h, w)
        top, bottom = fig.add_subplot(grid[0, j]), fig.add_subplot(grid[1, j])
        image = spatial_view(nad)
        pixels = top.imshow(image / (float(np.abs(image).max()) or 1.0), cmap="RdBu_r",
                            vmin=-1.0, vmax=1.0, interpolation="nearest")
        energy = fourier_energy(nad)
        fourier = bottom.imshow(energy / (float(energy.max()) or 1.0), cmap="magma", vmin=0.0,
                                vmax=1.0, origin="lower", extent=extent,
                                interpolation="nearest")
        _mark_dc(bottom, extent)
        top.set_title(f"u{j}", fontsize=9)
        top.set_xticks([])
        top.set_yticks([])
        bottom.set_xticks(frequency_ticks(w))
        bottom.set_yticks(frequency_ticks(h))
        bottom.tick_params(labelsize=6, length=2, pad=1)
        if j == 0:
            top.set_ylabel("pixels" if c == 1 else "pixels (ch 0)", fontsize=8)
            bottom.set_ylabel("ky", fontsize=8, labelpad=1)
            bottom.set_xlabel("kx", fontsize=8, labelpad=1)
        else:
            bottom.tick_params(labelleft=False)
    fig.colorbar(pixels, cax=fig.add_subplot(grid[0, n]), ticks=[-1, 0, 1]).set_label(
        "u / max|u|", fontsize=7)
    bar = fig.colorbar(fourier, cax=fig.add_subplot(grid[1, n]), ticks=[0, 0.5, 1])
    bar.set_label("|F|² / max" + ("" if c == 1 else " (ch sum)"), fontsize=7)
    for b in fig.axes[-2:]:
        b.tick_params(labelsize=6)
    fig.text(0.5 * _GALLERY_LEFT / inches, 0.46, f"Fourier energy\n{DC_COLOUR} marks: DC",
             rotation=90, ha="center", va="center", fontsize=7)
    fig.suptitle(textwrap.shorten(title, width=width // 6, placeholder="…"), fontsize=9)
    return fig, n


def render_nad_gallery(nads: np.ndarray, input_shape: Sequence[int], path: Path,
                       title: str, count: int = GALLERY_MAX) -> int:
    """preview.png (`nad_gallery_figure`); returns the NADs shown."""
    fig, n = nad_gallery_figure(nads, input_shape, title, count)
    _save(fig, path)
    return n


def spectrum_figure(eigenvalues: np.ndarray, title: str) -> Figure:
    """The eigenvalues of the gradient covariance against their index (log scale when they are
    positive) and the cumulative share of the variance they explain."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    index = np.arange(values.size)
    positive = values > 0
    marker = "o" if values.size <= 64 else None
    ax.plot(index[positive], values[positive], marker=marker, markersize=3, linewidth=1,
            color="tab:blue")
    if positive.any() and values[positive].max() > 0:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("NAD index i")
    ax.set_ylabel(r"eigenvalue $\lambda_i$", color="tab:blue")
    ax.grid(alpha=0.3)
    total = float(np.clip(values, 0, None).sum())
    if total > 0:
        share = ax.twinx()
        share.plot(index, 100 * np.cumsum(np.clip(values, 0, None)) / total, color="tab:orange",
                   linewidth=1)
        share.set_ylim(0, 101)
        share.set_ylabel("cumulative share (%)", color="tab:orange")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def render_spectrum(eigenvalues: np.ndarray, path: Path, title: str) -> None:
    """spectrum.png (`spectrum_figure`)."""
    _save(spectrum_figure(eigenvalues, title), path)


def architecture_label(architecture: str | dict, name: str | None = None) -> str:
    """What a figure calls an architecture: a built-in's name; an uploaded one's user-given
    `name` (its id only when the name is not known, e.g. the architecture was deleted)."""
    if isinstance(architecture, dict):  # an uploaded architecture: {"id", "sha256", "init"}
        return f"{name} (uploaded)" if name else f"uploaded architecture {architecture['id'][:8]}"
    return str(architecture)


def nad_title(summary: dict) -> str:
    """One line of provenance for the NAD figures: architecture, shape, method, networks."""
    shape = "x".join(str(v) for v in summary["input_shape"])
    method = summary["method"].replace("_", " ")
    if summary.get("scale") is not None:
        method += f", scale {summary['scale']:g}"
    arch = architecture_label(summary["architecture"], summary.get("architecture_name"))
    return f"{arch} ({shape}), {method}, {summary['num_networks']} networks"


def render_nad_figures(nads: np.ndarray, eigenvalues: np.ndarray, summary: dict,
                       folder: Path) -> list[Path]:
    """preview.png and spectrum.png of a NAD result, written into `folder`."""
    title = nad_title(summary)
    preview, spectrum = folder / "preview.png", folder / "spectrum.png"
    render_nad_gallery(nads, summary["input_shape"], preview, title)
    stability = summary.get("stability") or {}
    if stability:
        k = max(stability, key=int)
        title += f"; split-half stability {stability[k]:.3f} at k = {k}"
    render_spectrum(eigenvalues, spectrum, title)
    return [preview, spectrum]
