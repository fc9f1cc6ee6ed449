"""The clean run of a poison job on an uploaded architecture: it is trained in the sandbox like
the poisoned models (the last shard's last position), merged into `clean_accuracy`, the
`clean` entry of metrics.json and the baseline of the figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support import submit_job, wait_for_job


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_a_poison_job_on_an_uploaded_lenet_trains_its_clean_run_in_the_sandbox(
        alice: httpx.Client, tmp_path: Path) -> None:
    import torch

    from nadcore.networks.factory import build_model

    model = build_model("lenet", (1, 32, 32), 10, "cpu").eval()  # 10 classes: digits
    program = torch.export.export(model, (torch.zeros(2, 1, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "lenet10.pt2"
    torch.export.save(program, str(path))
    r = alice.post("/v1/architectures", data={"name": "my-lenet", "input_shape": "1,32,32"},
                   files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while (arch := alice.get(f"/v1/architectures/{r.json()['id']}").json())["status"] == (
            "validating"):
        assert time.monotonic() < deadline, arch
        time.sleep(0.3)
    assert arch["status"] == "ready", arch
    shipped = Path(__file__).resolve().parents[2] / "catalog_data" / "lenet" / "nads.npy"
    r = alice.post("/v1/uploads", data={"kind": "nads"},
                   files={"file": ("lenet.npy", shipped.read_bytes(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    body = {"architecture": {"id": arch["id"]}, "nads": {"upload": r.json()["id"]},
            "dataset": {"name": "digits", "limit_train": 200, "limit_test": 100},
            "indices": [0, 5], "training": {"epochs": 2, "batch_size": 64}, "shards": 2}
    job = submit_job(alice, body, "/v1/jobs/poison")
    # positions 0, 1: indices 0 and 5; 2: the clean run, alone in the second shard
    assert [(s["start"], s["stop"]) for s in job["shards"]] == [(0, 2), (2, 3)]
    job = wait_for_job(alice, job["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    metrics = json.loads(alice.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").content)
    clean = metrics["clean"]
    assert len(clean["test_accuracy"]) == len(clean["train_accuracy"]) == 2
    assert job["summary"]["clean_accuracy"] == pytest.approx(clean["final_test_accuracy"],
                                                             abs=1e-4)
    assert [m["index"] for m in metrics["indices"]] == [0, 5]
    names = {a["name"] for a in job["artifacts"]}
    assert {"accuracy_vs_index.png", "curves.png", "examples.png"} <= names
