"""The NAD kind's figures: preview.png (the first NADs in pixels and in Fourier energy) and
spectrum.png (the eigenvalues and the variance they explain). What every kind's figures share:
`nadcore.figures`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nadcore.figures import architecture_label, integer_ticks, save

DC_COLOUR = "cyan"  # the stubs that mark DC on the Fourier row
GALLERY_MAX = 8  # NADs shown in preview.png
_GALLERY_LEFT, _GALLERY_RIGHT = 1.0, 1.3  # inches: row labels and ky ticks; colour bars


def spatial_view(nad: np.ndarray) -> np.ndarray:
    """The (H, W) image drawn for one NAD of shape (C, H, W): channel 0 (signed)."""
    return nad[0]


def fourier_energy(nad: np.ndarray) -> np.ndarray:
    """|fft2|^2 of one NAD of shape (C, H, W), summed over channels and fft-shifted: DC at
    (H // 2, W // 2), frequency (ky, kx) at (H // 2 + ky, W // 2 + kx) as
    `nadcore.figures.shifted` signs it. By Parseval it sums to H * W * ||nad||^2."""
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
    save(fig, path)
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
    ax.xaxis.set_major_locator(integer_ticks())
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
    save(spectrum_figure(eigenvalues, title), path)


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
