"""Each kind's side of the sandbox child (`nadcore.<kind>.sandboxed`, named by the request:
nadcore/uploaded/isolated.py holds no branch per kind). Run here on built-in architectures,
outside a sandbox: the answer is what the worker reads back (tests/service cover the sandbox)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from nadcore.nads import sandboxed as nads_sandboxed
from nadcore.nads.partial import PartialNADs
from nadcore.probe import sandboxed as probe_sandboxed

NAD = {"architecture": "logreg", "input_shape": [1, 4, 4], "num_networks": 8, "seed": 1}


def test_a_nad_shard_and_a_whole_nad_job(tmp_path: Path) -> None:
    infos: list[dict] = []
    part = nads_sandboxed.run("shard", {"spec": NAD, "start": 0, "stop": 4}, tmp_path,
                              lambda done, total: None, infos.append)
    loaded = PartialNADs.load(io.BytesIO(part))
    assert (loaded.start, loaded.stop) == (0, 4) and not infos
    whole = nads_sandboxed.run("whole", {"spec": NAD | {"target_stability": 0.5}}, tmp_path,
                               lambda done, total: None, infos.append)
    with np.load(io.BytesIO(whole), allow_pickle=False) as z:
        assert set(z.files) == {"nads", "eigenvalues", "eval_point"}
    assert 2 <= infos[0]["num_networks"] <= 8 and "stability" in infos[0]


def test_a_task_the_kind_does_not_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task: unknown task 'whole'"):
        probe_sandboxed.run("whole", {}, tmp_path, lambda done, total: None, lambda i: None)
    with pytest.raises(ValueError, match="task: unknown task 'merge'"):
        nads_sandboxed.run("merge", {"spec": NAD}, tmp_path, lambda d, t: None, lambda i: None)
