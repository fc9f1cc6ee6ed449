"""nadcore.training.recipe: the paper's recipe shared by probe and poison."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nadcore.control import Cancelled
from nadcore.training.recipe import batches, fit, has_batchnorm, lr_at, sgd, stacked_sgd_step


def _recipe(**kw) -> SimpleNamespace:
    base = {"epochs": 2, "batch_size": 4, "lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3,
            "grad_clip": 0.5}
    return SimpleNamespace(**{**base, **kw})


def test_the_learning_rate_falls_linearly_to_zero_at_the_last_batch() -> None:
    recipe = _recipe(epochs=2, lr=0.4)
    lrs = [lr_at(recipe, step, 5) for step in range(10)]
    assert lrs[0] == pytest.approx(0.4 * 0.9) and lrs[-1] == 0.0
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_batchnorm_drops_a_trailing_batch_of_one() -> None:
    assert batches(9, 4, drop_single=False) == [(0, 4), (4, 8), (8, 9)]
    assert batches(9, 4, drop_single=True) == [(0, 4), (4, 8)]
    assert batches(1, 4, drop_single=True) == [(0, 1)]  # a single batch is kept
    assert has_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    assert not has_batchnorm(nn.Linear(2, 2))


@pytest.mark.parametrize("clip", [0.5, None])
def test_the_stacked_step_is_torch_sgd_with_clipping_per_model(clip) -> None:
    """The probe's vmap update against torch.optim.SGD + clip_grad_norm_ on each model alone:
    the same arithmetic up to summation order in the norm (float32: 1e-6 relative)."""
    recipe = _recipe(grad_clip=clip)
    gen = torch.Generator().manual_seed(0)
    models = [nn.Linear(6, 2) for _ in range(3)]
    x = torch.randn(3, 8, 6, generator=gen) * 5  # large inputs: the clipping bites
    y = torch.randint(0, 2, (3, 8), generator=gen)
    stacked = [torch.stack([m.weight.detach() for m in models]).requires_grad_(True),
               torch.stack([m.bias.detach() for m in models]).requires_grad_(True)]
    momentum = None
    opts = [sgd(m, recipe) for m in models]
    for step in range(4):
        lr = lr_at(recipe, step, 4)
        for m, opt, xs, ys in zip(models, opts, x, y, strict=True):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            F.cross_entropy(m(xs), ys).backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(m.parameters(), clip)
            opt.step()
        out = torch.einsum("nbi,noi->nbo", x, stacked[0]) + stacked[1][:, None]
        losses = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
        grads = torch.autograd.grad(losses.view(3, -1).mean(1).sum(), stacked)
        with torch.no_grad():
            momentum = stacked_sgd_step(stacked, list(grads), momentum, lr, recipe)
    for r, m in enumerate(models):
        torch.testing.assert_close(stacked[0][r], m.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stacked[1][r], m.bias, rtol=1e-5, atol=1e-6)


def test_fit_evaluates_after_every_epoch_and_stops_between_epochs() -> None:
    recipe = _recipe(epochs=3)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 4, generator=gen), torch.randint(0, 2, (10,), generator=gen)
    seen = []

    def after(epoch, stats):
        seen.append((epoch, stats.seen, model.training))

    fit(model, x, y, recipe, spans=batches(10, 4, False), permutation=lambda: torch.arange(10),
        dropout_seed=5, device=torch.device("cpu"), after_epoch=after)
    assert seen == [(0, 10, False), (1, 10, False), (2, 10, False)]  # eval mode for evaluation
    calls = iter([False, True])
    with pytest.raises(Cancelled, match="before epoch 2 of 3"):
        fit(model, x, y, recipe, spans=batches(10, 4, False),
            permutation=lambda: torch.arange(10), dropout_seed=5, device=torch.device("cpu"),
            after_epoch=after, should_stop=lambda: next(calls))
