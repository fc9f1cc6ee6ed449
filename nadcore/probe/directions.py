"""The directions a probe job trains on (docs/science.md, section 3): unit Fourier images of chosen
frequencies (each direction once: `nadcore.probe.fourier_grid`), rows of a NAD array, seeded random
vectors or given rows, as (n, C*H*W) float32 unit rows in direction-index order. NumPy only
(`jobs.kinds.probe.count_directions` counts the rows of `make_directions` without building
them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nadcore.probe.fourier_grid import grid, half_plane, self_conjugate
from nadcore.probe.spec import (
    CustomDirections,
    FourierDirections,
    NADDirections,
    ProbeSpec,
    RandomDirections,
)


def fourier_frequencies(d: FourierDirections, h: int, w: int) -> list[tuple[int, int]]:
    """The (ky, kx) of each row: the listed ones (the spec refuses conjugate pairs and zero
    sine images), or the half-plane of the grid (`nadcore.probe.fourier_grid`)."""
    if d.frequencies is not None:
        return [(int(ky), int(kx)) for ky, kx in d.frequencies]
    return half_plane(grid(h, w, d.grid_stride), h, w, d.phase)


def fourier_image(ky: int, kx: int, input_shape: Sequence[int], phase: str = "cos") -> np.ndarray:
    """The unit-norm real image cos (or sin) of 2 pi (ky y / H + kx x / W), same in every
    channel, flattened to C*H*W float32."""
    c, h, w = input_shape
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    angle = 2 * np.pi * ((ky * y) % h / h + (kx * x) % w / w)  # reduced: exact at large k
    img = np.cos(angle) if phase == "cos" else np.sin(angle)
    if phase == "sin" and self_conjugate(ky, kx, h, w):
        raise ValueError(f"the sine image of ({ky}, {kx}) is identically zero")
    full = np.broadcast_to(img, (c, h, w)).reshape(-1)
    return (full / np.linalg.norm(full)).astype(np.float32)


def direction_frequencies(spec: ProbeSpec) -> list[tuple[int, int]] | None:
    """For fourier directions: the (ky, kx) of each row of make_directions; else None."""
    if not isinstance(spec.directions, FourierDirections):
        return None
    _, h, w = spec.input_shape
    return fourier_frequencies(spec.directions, h, w)


def _unit_rows(rows: np.ndarray, what: str) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(rows)):
        bad = int(np.nonzero(~np.all(np.isfinite(rows), axis=1))[0][0])
        raise ValueError(f"{what}: row {bad} has non-finite values")
    norms = np.linalg.norm(rows, axis=1)
    if np.any(norms == 0):
        raise ValueError(f"{what}: row {int(np.nonzero(norms == 0)[0][0])} is zero; "
                         "a direction needs a non-zero vector")
    return (rows / norms[:, None]).astype(np.float32)


def make_directions(spec: ProbeSpec, nad_array: np.ndarray | None = None) -> np.ndarray:
    """(n, C*H*W) float32 unit rows, in the order of the spec.

    fourier: the listed frequencies, or the grid's half-plane in row-major (ky, kx) order (each
    direction once; a sine grid skips the frequencies whose sine image is zero;
    `direction_frequencies` lists the rows). nad: the
    selected rows of `nad_array` (k, C*H*W). random: Gaussian vectors from `directions.seed`,
    normalized. custom: the given rows, normalized (zero rows rejected).
    """
    c, h, w = spec.input_shape
    dim = c * h * w
    d = spec.directions
    if isinstance(d, FourierDirections):
        freqs = fourier_frequencies(d, h, w)
        if not freqs:
            raise ValueError(
                f"directions: this {d.phase} grid (grid_stride {d.grid_stride}) of a {h}x{w} "
                "image has only frequencies whose sine image is zero; use a smaller grid_stride "
                "or phase cos"
            )
        return np.stack([fourier_image(ky, kx, spec.input_shape, d.phase) for ky, kx in freqs])
    if isinstance(d, NADDirections):
        if nad_array is None:
            raise ValueError("directions: kind 'nad' needs the NAD array")
        nads = np.asarray(nad_array)
        if nads.ndim != 2:
            raise ValueError(f"the NAD array must be 2-D (k, D), got shape {nads.shape}")
        if nads.shape[1] != dim:
            if c > 1 and nads.shape[1] == h * w:
                raise ValueError(
                    f"the NAD array has D = {nads.shape[1]} = H*W (NADs of 1-channel inputs) "
                    f"but input_shape {tuple(spec.input_shape)} has {c} channels: probe with "
                    f"input_shape (1, {h}, {w}) or use NADs computed on {c} channels"
                )
            raise ValueError(
                f"the NAD array has D = {nads.shape[1]} per row, input_shape "
                f"{tuple(spec.input_shape)} needs C*H*W = {dim}"
            )
        rows = d.rows()
        k = nads.shape[0]
        too_big = [i for i in rows if i >= k]
        if too_big:
            name = "indices" if d.indices is not None else "stop"
            raise ValueError(
                f"directions.{name}: NAD row {too_big[0]} is out of range; the NAD array has "
                f"{k} rows (indices must be < {k})"
            )
        return _unit_rows(nads[rows], "directions.indices")
    if isinstance(d, RandomDirections):
        rng = np.random.default_rng(np.random.SeedSequence(d.seed))
        return _unit_rows(rng.standard_normal((d.count, dim)), "directions")
    if isinstance(d, CustomDirections):
        rows = np.asarray(d.values, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != dim:
            raise ValueError(f"directions.values: rows must have C*H*W = {dim} values")
        return _unit_rows(rows, "directions.values")
    raise TypeError(f"unknown directions kind {type(d).__name__}")
