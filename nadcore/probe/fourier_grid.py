"""Which Fourier frequencies a probe trains: each real direction once. Pure Python (the
torch-free job admission counts the same list the engine builds).

The real image of frequency (ky, kx) of an H x W plane (numpy's `fft2` indices, 0 <= ky < H,
0 <= kx < W) is cos or sin of 2 pi (ky y / H + kx x / W). Its conjugate frequency
(-ky mod H, -kx mod W) gives the same cosine and the negated sine: the same direction up to
sign, so D(v) and D(-v) are one distribution with the labels swapped and a probe learns them
equally. A probe therefore trains the **half-plane**: of each conjugate pair on the grid the
one with the smaller (ky, kx), and each self-conjugate frequency (2 ky = 0 mod H and
2 kx = 0 mod W: DC and the Nyquist rows and columns of even sizes) once; its sine image is
identically zero, so a sine grid skips it. A heatmap draws each result at both frequencies of
its pair (`mirror`).
"""

from __future__ import annotations

from collections.abc import Iterable

Frequency = tuple[int, int]


def conjugate(ky: int, kx: int, h: int, w: int) -> Frequency:
    """The frequency whose real image is the same direction up to sign."""
    return (-ky) % h, (-kx) % w


def self_conjugate(ky: int, kx: int, h: int, w: int) -> bool:
    """(ky, kx) is its own conjugate: its sine image is identically zero."""
    return conjugate(ky, kx, h, w) == (ky, kx)


def mirror(ky: int, kx: int, h: int, w: int) -> Frequency | None:
    """The other frequency of the pair of (ky, kx); None for a self-conjugate one."""
    other = conjugate(ky, kx, h, w)
    return None if other == (ky, kx) else other


def half_plane(frequencies: Iterable[Frequency], h: int, w: int, phase: str) -> list[Frequency]:
    """`frequencies` (in their order) with each direction once: a frequency is dropped when its
    conjugate is among them and comes first in (ky, kx) order; a sine phase drops the
    self-conjugate frequencies (zero images)."""
    given = list(frequencies)
    present = set(given)
    kept = []
    for ky, kx in given:
        other = conjugate(ky, kx, h, w)
        if other == (ky, kx):
            if phase != "sin":
                kept.append((ky, kx))
        elif not (other in present and other < (ky, kx)):
            kept.append((ky, kx))
    return kept


def grid(h: int, w: int, stride: int) -> list[Frequency]:
    """Every stride-th frequency of the H x W plane, row-major."""
    return [(ky, kx) for ky in range(0, h, stride) for kx in range(0, w, stride)]


def repeated(frequencies: Iterable[Frequency], h: int, w: int
             ) -> tuple[Frequency, Frequency] | None:
    """The first listed frequency that repeats an earlier one or its conjugate, with that
    earlier one; None when every listed frequency is its own direction."""
    seen: dict[Frequency, Frequency] = {}
    for f in frequencies:
        f = (int(f[0]), int(f[1]))
        if f in seen:
            return f, seen[f]
        seen[f] = f
        seen.setdefault(conjugate(*f, h, w), f)
    return None
