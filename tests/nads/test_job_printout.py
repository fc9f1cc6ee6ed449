"""What `nads status` / `--wait` print about a result's meaning: the learning verdict at its own
severity (issue 27): a probe whose directions partly learned (a NAD probe's expected finding)
is an `info:` line, a result that says nothing a `warning:` line."""

from __future__ import annotations

import pytest

from nadcore.training.learning_check import probe_learning
from nads.client import Job
from nads.client_commands import _print_job


def _job(learning: dict) -> Job:
    return Job.from_json({"id": "0" * 32, "kind": "probe", "status": "succeeded",
                          "progress": {"fraction": 1.0, "message": "done"}, "spec": {},
                          "summary": {"learning": learning,
                                      "did_not_learn": learning["did_not_learn"]},
                          "error": None, "artifacts": []})


def test_partly_at_chance_is_info_and_nothing_learned_a_warning(
        capsys: pytest.CaptureFixture[str]) -> None:
    partly = probe_learning([50.2] * 8 + [80.0] * 4, [0.692] * 8 + [0.40] * 4, 10_000, 10_000,
                            20, 0.5)
    _print_job(_job(partly), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("info: 8 of 12 at chance: 4 of 12 learned"), lines
    nothing = probe_learning([50.2, 49.9], [0.692, 0.693], 10_000, 10_000, 20, 0.5)
    _print_job(_job(nothing), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("warning: nothing learned: "), lines
