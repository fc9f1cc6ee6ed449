"""The worker finds each kind's runner through the registry; a SEQUENTIAL plan needs a runner
that can run a whole job, and a kind whose runner cannot is named in the error."""

from __future__ import annotations

import pytest

from jobs.kinds import REGISTRY
from worker.kinds import runner, whole_job_runner


def test_every_registered_kind_has_a_runner_with_the_shard_methods():
    for kind in REGISTRY:
        found = runner(kind)
        for method in ("needs", "run_shard", "merge"):
            assert callable(getattr(found, method, None)), (kind, method)


def test_a_whole_job_needs_run_whole_and_result_files():
    nads = whole_job_runner("nads")  # early stopping plans a NAD job SEQUENTIAL
    assert callable(nads.run_whole) and callable(nads.result_files)
    with pytest.raises(TypeError, match="kind 'probe': its runner has no run_whole or "
                                        "result_files"):
        whole_job_runner("probe")
