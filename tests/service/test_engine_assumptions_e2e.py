"""Validation checks what the engine assumes, through the API to a real worker's sandbox
(nadcore/uploaded/engine_assumptions.py): a network whose samples' outputs depend on the rest of the
batch (anything computing a batch statistic), that writes its buffers (BatchNorm exported in
training mode) or that is not deterministic (dropout) is rejected with the reason and the fix;
a tuple, list or dict output is rejected naming its structure unless the upload names the
element to use, which jobs then use. A network that mixes samples only where the engine runs
it (here: under a job's bf16 autocast) passes validation and its job fails, naming the block."""

from __future__ import annotations

import io
import warnings

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from nadcore import subspace_overlap
from tests.support import wait_for_job

from .test_architectures_e2e import wait_validated

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]
SHAPE = [1, 8, 8]
FIX_EXPORT = "call model.eval() before torch.export.export or torch.jit.script"


def exported(model: nn.Module) -> bytes:
    """torch.export with a dynamic batch, in the model's CURRENT mode (as a user would)."""
    program = torch.export.export(model, (torch.randn(2, *SHAPE),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def scripted(model: nn.Module) -> bytes:
    """torch.jit.script in the model's current mode."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def upload(client: httpx.Client, data: bytes, filename: str, output: str | None = None
           ) -> httpx.Response:
    fields = {"name": filename.split(".")[0], "input_shape": ",".join(map(str, SHAPE))}
    if output is not None:
        fields["output"] = output
    return client.post("/v1/architectures", data=fields,
                       files={"file": (filename, data, "application/octet-stream")})


def validated(client: httpx.Client, uploads: dict[str, httpx.Response]) -> dict[str, dict]:
    """All uploads sent first (the worker validates them side by side), then awaited."""
    for name, r in uploads.items():
        assert r.status_code == 201, (name, r.text)
    return {name: wait_validated(client, r.json()["id"], timeout=180)
            for name, r in uploads.items()}


def bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


class Centered(nn.Module):
    """Subtracts the batch mean whatever its mode: mixes samples in TorchScript too."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc(x - x.mean(0, keepdim=True))


class TwoHeads(nn.Module):
    """(2 logits, 5 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.small, self.large = nn.Linear(64, 2), nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.small(x), self.large(x)


class TwoNamedHeads(TwoHeads):
    """{"small": 2 logits, "large": 5 logits}."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        x = x.flatten(1)
        return {"small": self.small(x), "large": self.large(x)}


class MixesInBf16(nn.Module):
    """Independent in float32 (validation's precision); under bf16 autocast, where its
    convolution's output is bfloat16, it subtracts that output's batch mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if h.dtype == torch.bfloat16:
            h = h - h.mean(0, keepdim=True)
        return self.fc(torch.relu(h).flatten(1))


def test_a_model_that_mixes_samples_only_where_the_engine_runs_it_fails_its_job(
        alice: httpx.Client) -> None:
    """Before the engine's own check (nadcore.nads.gradients) its bf16 job succeeded with the
    NADs of its 128-input finite-difference blocks; now it fails naming the block and keeps no
    result, and its fp32 job still succeeds."""
    row = validated(alice, {"bf16": upload(alice, scripted(MixesInBf16().eval()),
                                           "mixes_bf16.pt")})["bf16"]
    assert row["status"] == "ready", row
    body = {"architecture": {"id": row["id"]}, "input_shape": SHAPE, "num_networks": 4}
    jobs = {}
    for precision in ("fp32", "bf16"):
        r = alice.post("/v1/jobs/nads", json={**body, "precision": precision})
        assert r.status_code == 202, r.text
        jobs[precision] = wait_for_job(alice, r.json()["id"])
    assert jobs["fp32"]["status"] == "succeeded", jobs["fp32"]
    job = jobs["bf16"]
    assert job["status"] == "failed", job
    assert "file: a re-initialized network mixes the samples of a batch where the engine runs " \
        "it: in a finite-difference block of 128 inputs on cpu at bf16" in job["error"], job
    assert "(bf16 rounding explains " in job["error"], job["error"]
    assert alice.get(f"/v1/jobs/{job['id']}/artifacts/nads.npy").status_code == 404


def test_models_that_mix_samples_or_are_random_are_rejected_with_the_fix(
        alice: httpx.Client) -> None:
    dropout = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    rows = validated(alice, {
        "bn_train.pt2": upload(alice, exported(bn_cnn().train()), "bn_train.pt2"),
        "bn_eval.pt2": upload(alice, exported(bn_cnn().eval()), "bn_eval.pt2"),
        "dropout_train.pt2": upload(alice, exported(dropout.train()), "dropout_train.pt2"),
        "centered.pt": upload(alice, scripted(Centered().eval()), "centered.pt"),
        "bn_train.pt": upload(alice, scripted(bn_cnn().train()), "bn_train.pt"),
    })
    # BatchNorm exported in training mode updates its running statistics: refused before it
    # runs, naming them (it used to be refused as mixing samples, with no word of its state)
    reason = rows["bn_train.pt2"]["reason"]
    assert rows["bn_train.pt2"]["status"] == "rejected", rows["bn_train.pt2"]
    assert reason.startswith("file: the network writes its buffer(s) '1.num_batches_tracked', "
                             "'1.running_mean', '1.running_var' in place") and \
        FIX_EXPORT in reason, reason
    assert rows["dropout_train.pt2"]["status"] == "rejected"
    assert "is not deterministic: two evaluations of the same batch differ" in \
        rows["dropout_train.pt2"]["reason"] and FIX_EXPORT in rows["dropout_train.pt2"]["reason"]
    reason = rows["centered.pt"]["reason"]
    assert rows["centered.pt"]["status"] == "rejected", rows["centered.pt"]
    assert reason.startswith("file: a re-initialized network (seed 0, network 0) mixes the "
                             "samples of a batch") and FIX_EXPORT in reason, reason
    assert "finite differences would measure the batch, not the network" in reason
    # The same network in eval mode is usable, the check's figures in its report.
    good = rows["bn_eval.pt2"]
    assert good["status"] == "ready", good
    checks = good["info"]["engine_checks"]
    assert checks["alone"] <= checks["tolerance"] and checks["repeat"] == 0.0
    # TorchScript keeps its modules' train/eval switch, and the service evaluates a scripted
    # network in eval mode (nadcore.uploaded.network): scripted in training mode, the same CNN is
    # usable and what jobs compute is the eval-mode network's.
    assert rows["bn_train.pt"]["status"] == "ready", rows["bn_train.pt"]
    # ... and its NADs are those of the eval-mode export: the same init plan draws the same
    # networks (seed 0), both evaluated in eval mode: the top-4 subspaces agree to rounding
    body = {"input_shape": SHAPE, "num_networks": 8, "method": "autograd", "seed": 0}
    nads = {}
    for name in ("bn_train.pt", "bn_eval.pt2"):
        r = alice.post("/v1/jobs/nads", json={**body, "architecture": {"id": rows[name]["id"]}})
        assert r.status_code == 202, r.text
        job = wait_for_job(alice, r.json()["id"])
        assert job["status"] == "succeeded", job
        nads[name] = np.load(io.BytesIO(
            alice.get(f"/v1/jobs/{job['id']}/artifacts/nads.npy").content))
    assert subspace_overlap(nads["bn_train.pt"], nads["bn_eval.pt2"], 4) > 0.999


def test_structured_outputs_are_named_or_rejected(alice: httpx.Client) -> None:
    r = upload(alice, exported(TwoHeads().eval()), "bad.pt2", output="a b")
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "output"
    rows = validated(alice, {
        "tuple": upload(alice, exported(TwoHeads().eval()), "tuple.pt2"),
        "tuple_1": upload(alice, exported(TwoHeads().eval()), "tuple_1.pt2", output="1"),
        "dict": upload(alice, scripted(TwoNamedHeads().eval()), "dict.pt"),
        "dict_large": upload(alice, scripted(TwoNamedHeads().eval()), "dict_large.pt",
                             output="large"),
        "tensor_0": upload(alice, exported(Centered().eval()), "tensor_0.pt2", output="0"),
    })
    assert rows["tuple"]["status"] == "rejected"
    assert rows["tuple"]["reason"] == (
        "output: the network returns tuple(Tensor(1, 2), Tensor(1, 5)), not one tensor; name "
        "the element to use with the upload's field output (an index 0..1)")
    assert rows["dict"]["status"] == "rejected"
    assert "dict(small: Tensor(1, 2), large: Tensor(1, 5))" in rows["dict"]["reason"]
    assert "keys 'small', 'large'" in rows["dict"]["reason"]
    assert rows["tensor_0"]["status"] == "rejected"
    assert rows["tensor_0"]["reason"].startswith("output: the network returns one tensor")
    for name in ("tuple_1", "dict_large"):  # the 5-logit head, as named
        row = rows[name]
        assert row["status"] == "ready", row
        assert row["info"]["num_outputs"] == 5 and row["output"] == name.split("_")[1]
    # A job pins the element and the engine uses it: output_index 4 exists only in the
    # 5-logit head (the first element has 2 outputs).
    arch = rows["tuple_1"]
    body = {"architecture": {"id": arch["id"]}, "input_shape": SHAPE, "num_networks": 4,
            "output_index": 4, "method": "autograd"}
    r = alice.post("/v1/jobs/nads", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["architecture"]["output"] == "1"
    job = wait_for_job(alice, r.json()["id"])
    assert job["status"] == "succeeded", job
    r = alice.post("/v1/jobs/nads", json={**body, "output_index": 5})
    assert r.status_code == 422 and "has 5 output(s)" in r.text, r.text
