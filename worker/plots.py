"""PNG figures of probe and poison jobs, rendered once by the merge task (matplotlib, Agg
canvas, no pyplot state). Colour scales are fixed so that figures of different jobs compare at
a glance."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nadcore.poison_spec import PoisonSpec
from nadcore.probe_spec import ProbeSpec

VMIN, VMAX = 50.0, 100.0  # percent: chance to perfect
_ANNOTATE_MAX = 64  # cells labelled with their accuracy when at most this many were probed
_MAX_TICKS = 17


def shifted(k: int, n: int) -> int:
    """Signed frequency of fft index k along an axis of size n, as `np.fft.fftshift` places it
    (DC at 0, in the middle of the figure; -n//2 .. (n-1)//2)."""
    return (k + n // 2) % n - n // 2


def _ticks(values: list[int]) -> tuple[list[int], list[str]]:
    stride = max(1, -(-len(values) // _MAX_TICKS))
    positions = list(range(0, len(values), stride))
    return positions, [str(values[p]) for p in positions]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def render_heatmap(spec: ProbeSpec, accuracies: np.ndarray, frequencies: np.ndarray,
                   path: Path) -> None:
    """Accuracy over the frequency plane, fft-shifted (DC at the centre), scale 50-100 %.

    Rows and columns are the signed frequencies present (the whole plane for a full grid);
    frequencies not probed are grey. With a cosine phase (ky, kx) and (-ky, -kx) are the same
    image, so a full grid is point-symmetric.
    """
    _, h, w = spec.input_shape
    fy = [shifted(int(ky), h) for ky in frequencies[:, 0]]
    fx = [shifted(int(kx), w) for kx in frequencies[:, 1]]
    ys, xs = sorted(set(fy)), sorted(set(fx))
    row, col = {v: i for i, v in enumerate(ys)}, {v: i for i, v in enumerate(xs)}
    grid = np.full((len(ys), len(xs)), np.nan)
    for a, y, x in zip(accuracies, fy, fx, strict=True):
        grid[row[y], col[x]] = a

    side = min(9.0, 3.5 + 0.18 * max(len(ys), len(xs)))
    fig = Figure(figsize=(side + 1.4, side))
    ax = fig.add_subplot()
    cmap = _cmap()
    image = ax.imshow(grid, origin="lower", cmap=cmap, vmin=VMIN, vmax=VMAX,
                      interpolation="nearest")
    ax.set_xticks(*_ticks(xs))
    ax.set_yticks(*_ticks(ys))
    ax.set_xlabel("kx (signed, DC at the centre)")
    ax.set_ylabel("ky (signed, DC at the centre)")
    if len(accuracies) <= _ANNOTATE_MAX:
        for a, y, x in zip(accuracies, fy, fx, strict=True):
            ax.text(col[x], row[y], f"{a:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if a < 75 else "black")
    c, _, _ = spec.input_shape
    ax.set_title(f"{spec.architecture} ({c}x{h}x{w}): test accuracy on D(v), "
                 f"Fourier {spec.directions.phase}", fontsize=10)
    fig.colorbar(image, ax=ax, label="test accuracy (%)", fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, path)


def _cmap() -> Colormap:
    cmap = colormaps["viridis"].copy()
    cmap.set_bad("lightgrey")
    return cmap


def render_accuracy_vs_index(spec: ProbeSpec, accuracies: np.ndarray, indices: Sequence[int],
                             path: Path) -> None:
    """Test accuracy on D(u_i) against the NAD index i (chance level dashed)."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    order = np.argsort(np.asarray(indices), kind="stable")
    xs = np.asarray(indices)[order]
    ys = np.asarray(accuracies)[order]
    ax.plot(xs, ys, marker="o" if len(xs) <= 64 else None, markersize=3, linewidth=1)
    ax.axhline(50.0, color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_ylim(min(40.0, float(ys.min()) - 2), 101.0)
    ax.set_xlabel("NAD index i")
    ax.set_ylabel("test accuracy (%)")
    c, h, w = spec.input_shape
    ax.set_title(f"{spec.architecture} ({c}x{h}x{w}): test accuracy on D(u_i), "
                 f"NADs of job {spec.directions.job}", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def render_poison_accuracy(spec: PoisonSpec, indices: Sequence[int], train: np.ndarray,
                           test: np.ndarray, path: Path) -> None:
    """Final clean-test (and poisoned-train) accuracy against the poison index; a single index
    is still a point. Flip mode has no index: one point at x = 0."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    order = np.argsort(np.asarray(indices), kind="stable")
    xs = np.asarray(indices)[order]
    marker = "o" if len(xs) <= 64 else None
    ax.plot(xs, np.asarray(test)[order], marker=marker, markersize=4, linewidth=1,
            label="clean test")
    ax.plot(xs, np.asarray(train)[order], marker=marker, markersize=3, linewidth=0.8,
            linestyle=":", label="poisoned train")
    ax.set_ylim(-2.0, 102.0)
    if len(xs) == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("flipped basis (no index)" if spec.mode == "flip" else "poison NAD index i")
    ax.set_ylabel("final accuracy (%)")
    what = "flipped basis" if spec.mode == "flip" else f"eps = {spec.eps:g}"
    source = spec.dataset.name or f"upload {spec.dataset.upload}"
    ax.set_title(f"{spec.architecture} on {source}, {what}, {spec.training.epochs} epochs",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> something imshow draws: grey for 1 channel, RGB for 3, else the
    channel mean."""
    image = np.clip(image, 0.0, 1.0)
    if image.shape[0] == 3:
        return image.transpose(1, 2, 0), None
    return image.mean(axis=0), "gray"


def render_examples(spec: PoisonSpec, index: int, clean: np.ndarray, changed: np.ndarray,
                    labels: np.ndarray, path: Path) -> None:
    """A few training images: clean, poisoned (or flipped), and the difference (channel mean,
    symmetric colour scale)."""
    n = clean.shape[0]
    fig = Figure(figsize=(1.6 * n + 0.6, 5.4))
    diff = (changed - clean).mean(axis=1)
    bound = float(np.abs(diff).max()) or 1.0
    rows = ("clean", "flipped" if spec.mode == "flip" else f"poisoned (i={index})",
            "difference")
    for j in range(n):
        for r, title in enumerate(rows):
            ax = fig.add_subplot(3, n, r * n + j + 1)
            if r == 2:
                ax.imshow(diff[j], cmap="seismic", vmin=-bound, vmax=bound,
                          interpolation="nearest")
            else:
                image, cmap = _display(clean[j] if r == 0 else changed[j])
                ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
            if r == 0:
                ax.set_title(f"label {int(labels[j])}", fontsize=8)
    fig.suptitle(f"{spec.mode}: difference scale +-{bound:.3g}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


GALLERY_MAX = 8  # NADs shown in preview.png


def spatial_view(nad: np.ndarray) -> np.ndarray:
    """The (H, W) image drawn for one NAD of shape (C, H, W): channel 0 (signed)."""
    return nad[0]


def fourier_energy(nad: np.ndarray) -> np.ndarray:
    """|fft2|^2 of one NAD of shape (C, H, W), summed over channels and fft-shifted: DC at
    (H // 2, W // 2), frequency (ky, kx) at (H // 2 + ky, W // 2 + kx) as `shifted` signs it.
    By Parseval it sums to H * W * ||nad||^2."""
    energy = np.abs(np.fft.fft2(nad.astype(np.float64), axes=(-2, -1))) ** 2
    return np.fft.fftshift(energy.sum(axis=0))


def gallery_size(count: int) -> tuple[int, int]:
    """(width, height) in pixels of a preview.png showing `count` NADs (at dpi 100)."""
    return max(600, int(round(100 * (1.0 + 1.45 * count)))), 340


def render_nad_gallery(nads: np.ndarray, input_shape: Sequence[int], path: Path,
                       title: str, count: int = GALLERY_MAX) -> int:
    """preview.png: the first `count` NADs, one per column. Top row: the NAD in pixel space
    (channel 0 when C > 1), diverging colour map symmetric around 0 per NAD; bottom row: its
    Fourier energy (summed over channels), DC at the centre. Returns the NADs shown."""
    c, h, w = (int(v) for v in input_shape)
    if nads.ndim != 2 or nads.shape[0] == 0 or nads.shape[1] != c * h * w:
        raise ValueError(f"nads: expected (k >= 1, {c * h * w}) rows, got {nads.shape}")
    n = min(count, nads.shape[0])
    width, height = gallery_size(n)
    fig = Figure(figsize=(width / 100, height / 100))
    grid = fig.add_gridspec(2, n, left=1.0 / (width / 100), right=0.99, top=0.83, bottom=0.03,
                            wspace=0.08, hspace=0.08)
    spatial_label = "pixels" if c == 1 else "pixels (ch 0)"
    fourier_label = "|F|², DC centre" if c == 1 else "|F|², ch sum"
    for j in range(n):
        nad = nads[j].reshape(c, h, w)
        top, bottom = fig.add_subplot(grid[0, j]), fig.add_subplot(grid[1, j])
        image = spatial_view(nad)
        bound = float(np.abs(image).max()) or 1.0
        top.imshow(image, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        bottom.imshow(fourier_energy(nad), cmap="magma", vmin=0.0, interpolation="nearest")
        top.set_title(f"u{j}", fontsize=9)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
        if j == 0:
            top.set_ylabel(spatial_label, fontsize=8)
            bottom.set_ylabel(fourier_label, fontsize=8)
    fig.suptitle(textwrap.shorten(title, width=width // 6, placeholder="…"), fontsize=9)
    _save(fig, path)
    return n


def render_spectrum(eigenvalues: np.ndarray, path: Path, title: str) -> None:
    """spectrum.png: the eigenvalues of the gradient covariance against their index (log scale
    when they are positive) and the cumulative share of the variance they explain."""
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
    _save(fig, path)


def nad_title(summary: dict) -> str:
    """One line of provenance for the NAD figures: architecture, shape, method, networks."""
    shape = "x".join(str(v) for v in summary["input_shape"])
    method = summary["method"].replace("_", " ")
    if summary.get("scale") is not None:
        method += f", scale {summary['scale']:g}"
    arch = summary["architecture"]
    if isinstance(arch, dict):  # an uploaded architecture: {"id", "sha256", "init"}
        arch = f"custom:{arch['id'][:8]}"
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
