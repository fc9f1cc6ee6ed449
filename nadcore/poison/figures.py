"""The poison kind's figures: accuracy_vs_index.png (final accuracies against the poison
index), curves.png (accuracy per epoch) and examples.png (clean, poisoned and their difference).
What every kind's figures share: `nadcore.figures`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nadcore.figures import LINES_MAX, epochs_axis, index_axis, points, save, training_curves
from nadcore.poison.spec import PoisonSpec


def _dataset_name(spec: PoisonSpec) -> str:
    return spec.dataset.name or "an uploaded dataset"


def _poison_what(spec: PoisonSpec) -> str:
    return "flipped NAD basis" if spec.mode == "flip" else f"poison eps = {spec.eps:g}"


# ---------------------------------------------------------------------------------------------
# Training curves (metrics)


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
    few = len(labels) <= LINES_MAX
    for ax, values, column in ((left, test, 1), (right, train, 0)):
        training_curves(ax, values, labels, {"linestyle": "-", "color": "C3"},
                "flipped" if spec.mode == "flip" else "poisoned", colours=few)
        if clean is not None:
            ax.plot(np.arange(1, epochs + 1), clean[:, column], color="black", linewidth=2,
                    marker="o" if epochs <= 30 else None, markersize=3,
                    label="clean training")
        epochs_axis(ax, epochs)
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
    save(poison_curves_figure(spec, indices, train, test, clean, name), path)


# ---------------------------------------------------------------------------------------------
# Final accuracies, examples


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
    style = points(len(xs))
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
    save(poison_accuracy_figure(spec, indices, train, test, clean_test, name), path)


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
    save(examples_figure(spec, index, clean, changed, labels), path)
