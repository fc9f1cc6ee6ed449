"""The figures of every kind (nadcore/figures.py, nadcore/<kind>/figures.py) read as matplotlib
objects before they are saved: colour bars, signed frequency axes with DC marked, heatmaps over
the frequencies probed, points (not lines) per index, the clean baseline, what the examples'
difference scale is, training curves, integer ticks and names in titles. (Their pixels and the
service's use of them: tests/service/test_web.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nadcore import figures
from nadcore.nads import figures as nad_figures
from nadcore.poison import figures as poison_figures
from nadcore.poison.spec import PoisonSpec
from nadcore.probe import figures as probe_figures
from nadcore.probe.directions import direction_frequencies
from nadcore.probe.spec import ProbeSpec


def _draw(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()  # tick labels are set when drawn
    return fig


def _labels(axis: object) -> list[str]:
    return [t.get_text().replace("\u2212", "-") for t in axis.get_ticklabels()]


def _colorbars(fig: Figure) -> list[str]:
    """Labels of the colour-bar axes of a figure."""
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    return [ax._colorbar.ax.get_ylabel() for ax in bars]


def _is_integer_axis(ticks: np.ndarray) -> bool:
    return bool(np.all(np.asarray(ticks) == np.round(ticks)))


def _probe(**directions: object) -> ProbeSpec:
    return ProbeSpec.model_validate({"architecture": "logreg", "input_shape": [1, 8, 8],
                                     "directions": {"kind": "fourier", **directions},
                                     "data": {"num_train": 64, "num_test": 64},
                                     "training": {"epochs": 3}})


POISON = {"architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"catalog": "lenet"},
          "indices": [0, 3, 10], "eps": 0.05, "training": {"epochs": 4}}


# ---------- NAD gallery and spectrum ----------

def test_gallery_has_colour_bars_and_signed_frequency_axes_with_dc_marked() -> None:
    rng = np.random.default_rng(0)
    nads = np.linalg.qr(rng.standard_normal((16 * 12, 5)))[0].T
    fig, shown = nad_figures.nad_gallery_figure(nads, (1, 16, 12), "lenet (1x16x12)")
    _draw(fig)
    assert shown == 5
    assert _colorbars(fig) == ["u / max|u|", "|F|² / max"]
    fourier = [ax for ax in fig.axes if ax.get_xlabel() == "kx" or ax.get_xticks().size == 3]
    assert len(fourier) == 5
    for ax in fourier:  # cell centres at -n//2 .. (n-1)//2, DC in the middle
        assert ax.get_xlim() == (-6.5, 5.5) and ax.get_ylim() == (-8.5, 7.5)
        assert _labels(ax.xaxis) == ["-6", "0", "5"]
        stubs = [line for line in ax.get_lines() if line.get_color() == nad_figures.DC_COLOUR]
        assert len(stubs) == 4  # two on kx = 0, two on ky = 0: DC where they meet
        assert {tuple(line.get_xdata()) for line in stubs} >= {(0, 0)}
    assert _labels(fourier[0].yaxis) == ["-8", "0", "7"]
    assert fourier[0].get_ylabel() == "ky"


def test_fourier_extent_puts_the_energy_at_its_signed_frequency() -> None:
    h, w, ky, kx = 8, 10, 2, -3
    y, x = np.mgrid[0:h, 0:w]
    energy = nad_figures.fourier_energy(np.cos(2 * np.pi * (ky * y / h + kx * x / w))[None])
    left, right, bottom, top = nad_figures.frequency_extent(h, w)
    row, col = np.unravel_index(int(np.argmax(energy)), energy.shape)
    centre = (bottom + 0.5 + row, left + 0.5 + col)  # origin lower: row 0 at the bottom
    assert centre in {(ky, kx), (-ky, -kx)}
    assert nad_figures.frequency_ticks(8) == [-4, 0, 3]
    assert nad_figures.frequency_ticks(7) == [-3, 0, 3]


def test_spectrum_has_integer_index_ticks() -> None:
    fig = _draw(nad_figures.spectrum_figure(np.geomspace(1, 1e-3, 5), "t"))
    assert _is_integer_axis(fig.axes[0].get_xticks())


def test_titles_name_an_uploaded_architecture() -> None:
    arch = {"id": "ab" * 16, "sha256": "c" * 64, "init": None}
    summary = {"architecture": arch, "input_shape": [1, 8, 8], "method": "autograd",
               "num_networks": 10, "architecture_name": "my-net"}
    assert nad_figures.nad_title(summary).startswith("my-net (uploaded) (1x8x8)")
    assert "custom:" not in nad_figures.nad_title(summary)
    assert figures.architecture_label(arch, None) == "uploaded architecture abababab"
    assert figures.architecture_label("lenet") == "lenet"


# ---------- probe ----------

@pytest.mark.parametrize(("values", "axis", "to_scale"), [
    ([0, 1, 3, 4], [0, 1, 2, 3, 4], True),  # holes of a lattice drawn (grey)
    ([-4, -2, 0, 2], [-4, -2, 0, 2], True),  # a strided grid: its own step
    ([0, 1, 30], [0, 1, 30], False),  # far apart: the values alone, side by side
    ([5], [5], True),
])
def test_probed_axis(values: list[int], axis: list[int], to_scale: bool) -> None:
    assert probe_figures.probed_axis(values) == (axis, to_scale)


def test_heatmap_over_the_listed_frequencies_only() -> None:
    spec = _probe(frequencies=[[0, 1], [1, 2], [3, 3], [4, 4]])
    freqs = np.asarray(direction_frequencies(spec))
    fig = _draw(probe_figures.heatmap_figure(spec, np.array([55.0, 70, 91, 62]), freqs, "logreg"))
    ax = fig.axes[0]
    # (4, 4) is the Nyquist frequency of an 8-pixel axis: signed -4
    assert _labels(ax.xaxis) == ["-4", "-3", "-2", "-1", "0", "1", "2", "3"]
    assert _labels(ax.yaxis) == ["-4", "-3", "-2", "-1", "0", "1", "2", "3"]
    assert "signed frequency probed" in ax.get_xlabel()
    assert "DC at the centre" not in ax.get_xlabel()
    grid = ax.get_images()[0].get_array()
    # (0, 1), (1, 2), (3, 3) drawn at their conjugates too; (4, 4) is its own conjugate
    assert int(np.ma.count_masked(grid)) == 64 - 7  # not probed: grey
    assert ("4 directions trained once, drawn at (ky, kx) and mirrored at (-ky, -kx); 7 of 64 "
            "frequencies; grey: not probed; red square: DC") in ax.get_title()
    assert _colorbars(fig) == ["test accuracy (%), 50 = chance"]
    dc = [p for p in ax.patches if p.get_label() == "DC (0, 0)"]
    assert len(dc) == 1 and dc[0].get_xy() == (4 - 0.5, 4 - 0.5)  # the cell of (0, 0)


def test_heatmap_of_a_strided_grid_has_its_own_axes() -> None:
    spec = ProbeSpec.model_validate({"architecture": "logreg", "input_shape": [1, 16, 16],
                                     "directions": {"kind": "fourier", "grid_stride": 4},
                                     "data": {"num_train": 64, "num_test": 64}})
    freqs = np.asarray(direction_frequencies(spec))
    fig = _draw(probe_figures.heatmap_figure(spec, np.full(len(freqs), 75.0), freqs))
    ax = fig.axes[0]
    assert _labels(ax.xaxis) == ["-8", "-4", "0", "4"]
    assert ax.get_images()[0].get_array().shape == (4, 4)
    # 16 frequencies: 4 their own conjugates (0 and 8 on each axis), 6 pairs: 10 trained
    assert "10 directions trained once" in ax.get_title()
    assert "16 of 256 frequencies" in ax.get_title()
    full = _probe()
    freqs = np.asarray(direction_frequencies(full))
    fig = _draw(probe_figures.heatmap_figure(full, np.full(len(freqs), 75.0), freqs))
    assert "34 directions trained once" in fig.axes[0].get_title()
    assert "all 64 frequencies" in fig.axes[0].get_title()


def test_heatmap_draws_each_result_mirrored_and_hatches_intervals_at_chance() -> None:
    """A cell and its conjugate show the one trained result (the mirror in brackets); a cell
    whose confidence interval holds 50 % is hatched, and the title says what hatching means."""
    spec = _probe(frequencies=[[0, 1], [2, 3]], phase="sin")
    freqs = np.asarray(direction_frequencies(spec))
    low, high = np.array([70.0, 45.0]), np.array([80.0, 56.0])
    fig = _draw(probe_figures.heatmap_figure(spec, np.array([75.0, 50.5]), freqs, "logreg",
                                             (low, high)))
    ax = fig.axes[0]
    grid = ax.get_images()[0].get_array()
    xs, ys = [int(t) for t in _labels(ax.xaxis)], [int(t) for t in _labels(ax.yaxis)]
    cell = {(y, x): grid[ys.index(y), xs.index(x)] for y in ys for x in xs}
    assert cell[(0, 1)] == cell[(0, -1)] == 75.0  # (0, -1) = (0, 7): the conjugate of (0, 1)
    assert cell[(2, 3)] == cell[(-2, -3)] == 50.5
    assert sorted(t.get_text() for t in ax.texts) == ["(50.5)", "(75.0)", "50.5", "75.0"]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 2  # (2, 3) and its mirror
    assert "hatched: confidence interval contains 50 %" in ax.get_title()


def test_accuracy_vs_index_is_points_with_integer_ticks_and_the_source_named() -> None:
    spec = ProbeSpec.model_validate({"architecture": "lenet", "input_shape": [1, 32, 32],
                                     "directions": {"kind": "nad", "catalog": "lenet",
                                                    "indices": [7, 0, 3]},
                                     "data": {"num_train": 64, "num_test": 64}})
    fig = _draw(probe_figures.accuracy_vs_index_figure(spec, np.array([60.0, 90, 80]), [7, 0, 3],
                                                       "lenet", "the catalog's lenet"))
    ax = fig.axes[0]
    points = ax.get_lines()[0]
    assert points.get_linestyle() == "None" and points.get_marker() == "o"
    assert list(points.get_xdata()) == [0, 3, 7]
    assert _is_integer_axis(ax.get_xticks())
    assert "NADs of the catalog's lenet" in ax.get_title()


def _spread(ax: object, xs: list[int]) -> list[float]:
    """Gaps between consecutive x values as fractions of the axes' width, as drawn."""
    to_axes = ax.transData + ax.transAxes.inverted()
    fractions = [to_axes.transform((x, 50.0))[0] for x in xs]
    return [b - a for a, b in zip(fractions, fractions[1:], strict=False)]


LOW = [0, 1, 4, 16]  # where NADs differ most: apart on the page, not piled up at the left


def test_accuracy_vs_index_spreads_the_low_indices_on_a_log_like_axis() -> None:
    indices = [0, 1, 4, 16, 64, 256, 1050]
    spec = ProbeSpec.model_validate({"architecture": "lenet", "input_shape": [1, 32, 32],
                                     "directions": {"kind": "nad", "catalog": "lenet",
                                                    "indices": indices},
                                     "data": {"num_train": 64, "num_test": 64}})
    fig = _draw(probe_figures.accuracy_vs_index_figure(spec, np.linspace(95, 50, 7), indices))
    ax = fig.axes[0]
    assert min(_spread(ax, LOW)) > 0.08, _spread(ax, LOW)
    lo, hi = ax.get_xlim()
    assert lo < 0 and hi > 1050  # every point inside, 0 off the frame
    assert _labels(ax.xaxis) == ["0", "1", "2", "5", "10", "20", "50", "100", "200", "500",
                                 "1000"]  # plain integers, not 10^k
    assert "log scale" in ax.get_xlabel()
    poison = PoisonSpec.model_validate(POISON | {"indices": indices})
    fig = _draw(poison_figures.poison_accuracy_figure(poison, indices, np.full(7, 99.0),
                                                      np.linspace(20, 96, 7), 96.5))
    assert min(_spread(fig.axes[0], LOW)) > 0.08
    assert _labels(fig.axes[0].xaxis)[:3] == ["0", "1", "2"]


def test_probe_curves_show_every_direction_or_a_band() -> None:
    spec = _probe(frequencies=[[0, 1], [1, 2]])
    curves = np.zeros((2, 3, 4), np.float32)
    curves[..., 0] = curves[..., 2] = probe_figures.LOG2
    curves[..., 1] = curves[..., 3] = 50.0
    fig = _draw(probe_figures.probe_curves_figure(spec, curves, ["(0, 1)", "(1, 2)"], "logreg"))
    loss, acc = fig.axes
    assert loss.get_ylabel() == "cross-entropy loss" and acc.get_ylabel() == "accuracy (%)"
    labels = [line.get_label() for line in loss.get_lines()]
    assert labels == ["train (0, 1)", "train (1, 2)", "test (0, 1)", "test (1, 2)",
                      "log 2 (a guess)"]
    assert _is_integer_axis(loss.get_xticks()) and loss.get_xlim() == (0.5, 3.5)
    one = _draw(probe_figures.probe_curves_figure(spec, curves[:, :1], ["(0, 1)", "(1, 2)"]))
    lo, hi = one.axes[0].get_xlim()
    shown = [t for t in one.axes[0].get_xticks() if lo <= t <= hi]
    assert shown == [1.0]  # one epoch: tick 1, not 0.6, 0.8, ...
    many = np.repeat(curves, 20, axis=0)
    fig = _draw(probe_figures.probe_curves_figure(_probe(), many, [str(i) for i in range(40)]))
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["train: median", "test: median", "log 2 (a guess)"]
    assert len(fig.axes[0].collections) == 2  # the 10-90 % bands


# ---------- poison ----------

def test_poison_accuracy_has_points_a_clean_baseline_and_eps_in_the_title() -> None:
    spec = PoisonSpec.model_validate(POISON)
    fig = _draw(poison_figures.poison_accuracy_figure(spec, spec.indices, np.array([99.0, 98, 97]),
                                                      np.array([20.0, 60, 80]), 96.5, "lenet"))
    ax = fig.axes[0]
    test, train, baseline = ax.get_lines()
    for line in (test, train):
        assert line.get_linestyle() == "None"  # indices are points, not joined
    assert list(baseline.get_ydata()) == [96.5, 96.5]
    assert baseline.get_label() == "clean training (no poison): 96.5 % clean test"
    assert "eps = 0.05" in ax.get_title() and ax.get_title().startswith("lenet on digits")
    assert _is_integer_axis(ax.get_xticks())
    flip = PoisonSpec.model_validate(POISON | {"mode": "flip", "indices": [0]})
    fig = _draw(poison_figures.poison_accuracy_figure(flip, [0], np.array([90.0]),
                                                      np.array([50.0])))
    assert _labels(fig.axes[0].xaxis) == ["flipped basis"]
    assert "no clean run" in fig.axes[0].get_title()


def test_poison_curves_draw_the_clean_run() -> None:
    spec = PoisonSpec.model_validate(POISON)
    train, test = np.full((3, 4), 90.0), np.full((3, 4), 30.0)
    clean = np.stack([np.linspace(50, 99, 4), np.linspace(45, 97, 4)], axis=1)
    fig = _draw(poison_figures.poison_curves_figure(spec, spec.indices, train, test, clean))
    left, right = fig.axes
    black = [line for line in left.get_lines() if line.get_label() == "clean training"]
    assert len(black) == 1 and list(black[0].get_ydata()) == list(clean[:, 1])
    assert [line.get_label() for line in left.get_lines()][:3] == [
        "poisoned i=0", "poisoned i=3", "poisoned i=10"]
    assert _is_integer_axis(left.get_xticks())
    assert "poison eps = 0.05" in fig._suptitle.get_text()


def test_examples_explain_the_difference_scale() -> None:
    spec = PoisonSpec.model_validate(POISON)
    rng = np.random.default_rng(0)
    clean = rng.random((3, 1, 8, 8))
    changed = clean - 0.4  # out of [0, 1]: shown clipped, and said so
    fig = _draw(poison_figures.examples_figure(spec, 0, clean, changed, np.array([0, 1, 2])))
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "scaled to +-max|x' - x| = 0.4" in title and "eps = 0.05" in title
    assert "hollows the digits" in title
    assert _colorbars(fig) == ["pixel value (shown clipped to [0, 1])", "x' - x"]
    assert "reverse order" in poison_figures.examples_explanation(
        PoisonSpec.model_validate(POISON | {"mode": "flip", "indices": [0]}), 1.0)
