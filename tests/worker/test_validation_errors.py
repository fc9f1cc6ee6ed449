"""An unexpected error while validating rejects the upload once instead of leaving it
`validating` (which the reconciler would send again for ever)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from store.models import READY, REJECTED
from store.settings import Settings
from worker import architecture_validation, uploaded


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))), path)
    return path


def test_an_error_of_ours_rejects_the_upload_with_the_services_words(
        archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(uploaded, "validate", broken)
    status, info, reason = architecture_validation.run_checks(
        archive, [1, 2, 2], "default", Settings(data_dir=tmp_path))
    assert (status, info) == (REJECTED, None)
    assert reason.startswith("file: the worker failed while validating this archive")
    assert "recursion" not in reason  # the service's own words, not the exception's


def test_the_sandboxs_verdict_still_decides(
        archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploaded, "validate", lambda *a, **k: ({"format": "torchscript"}, None))
    status, info, _ = architecture_validation.run_checks(
        archive, [1, 2, 2], "default", Settings(data_dir=tmp_path))
    assert status == READY and info == {"format": "torchscript"}
